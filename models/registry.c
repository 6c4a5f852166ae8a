/* registry.c - the list of models bmc can build (one row per models/ file). */
#include <string.h>

#include "models.h"

extern const bm_model_def bm_model_tiny;

const bm_model_def *const bm_models[] = {
    &bm_model_tiny,
};
const int bm_models_count = (int)(sizeof bm_models / sizeof bm_models[0]);

const bm_model_def *bm_model_find(const char *name) {
  for (int i = 0; i < bm_models_count; i++)
    if (name && strcmp(bm_models[i]->name, name) == 0) return bm_models[i];
  return NULL;
}

bm_status bm_model_build(const char *name, const bm_model_options *o, bm_module **out,
                         bm_weight_source **src_out) {
  *out = NULL;
  *src_out = NULL;
  const bm_model_def *def = bm_model_find(name);
  if (!def) {
    char known[512] = "";
    for (int i = 0; i < bm_models_count; i++) {
      if (i) strncat(known, ", ", sizeof known - strlen(known) - 1);
      strncat(known, bm_models[i]->name, sizeof known - strlen(known) - 1);
    }
    return bm_status_make(BM_ERR_NOT_FOUND, "unknown model '%s' (known models: %s)", name, known);
  }
  bm_model_options def_opts = {0};
  if (!o) o = &def_opts;
  bm_weight_source *src = NULL;
  bm_status s = o->weights ? bm_weight_source_open(o->weights, &src)
                           : bm_weight_source_generated(o->seed, &src);
  if (s) return s;
  bm_module *m = bm_module_create(def->name);
  if (!m) {
    bm_weight_source_close(src);
    return bm_status_make(BM_ERR_OUT_OF_MEMORY, "model '%s'", name);
  }
  s = def->build(m, src, o);
  for (int i = 0; !s && i < m->ngraphs; i++)
    if (bm_graph_status(m->graphs[i]))
      s = bm_status_make(bm_status_code(bm_graph_status(m->graphs[i])), "model '%s', function '%s': %s",
                         name, m->graphs[i]->name, bm_status_message(bm_graph_status(m->graphs[i])));
  if (s) {
    bm_module_destroy(m);
    bm_weight_source_close(src);
    return s;
  }
  *out = m;
  *src_out = src;
  return NULL;
}
