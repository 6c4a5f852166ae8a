/* registry.c - the list of models bmc can build (one row per models/ file
 * or family), and bm_model_build for names and model folders. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "hf_config.h"
#include "models.h"

extern const bm_model_def bm_model_tiny;
extern const bm_model_def bm_model_hf_llm;
extern const bm_model_def bm_model_sd;

const bm_model_def *const bm_models[] = {
    &bm_model_tiny,
    &bm_model_hf_llm,
    &bm_model_sd,
};
const int bm_models_count = (int)(sizeof bm_models / sizeof bm_models[0]);

const bm_model_def *bm_model_find(const char *name) {
  for (int i = 0; i < bm_models_count; i++)
    if (name && strcmp(bm_models[i]->name, name) == 0) return bm_models[i];
  return NULL;
}

static void append(char *buf, size_t size, const char *s) {
  strncat(buf, s, size - strlen(buf) - 1);
}

/* The model that builds the folder at path, or an error naming what the
 * folder holds and what is supported. */
static bm_status find_for_path(const char *path, const bm_model_def **out) {
  *out = NULL;
  for (int i = 0; i < bm_models_count; i++)
    if (bm_models[i]->detect && bm_models[i]->detect(path)) {
      *out = bm_models[i];
      return NULL;
    }
  char supported[1024] = "";
  for (int i = 0; i < bm_models_count; i++)
    if (bm_models[i]->formats) {
      if (supported[0]) append(supported, sizeof supported, "; ");
      append(supported, sizeof supported, bm_models[i]->formats);
    }
  char mt[64], arch[128];
  bm_status s = bm_hf_config_peek(path, mt, sizeof mt, arch, sizeof arch);
  if (s) {
    bm_status r = bm_status_make(BM_ERR_NOT_FOUND,
                                 "'%s' is not a model folder bm can build (%s); supported: %s", path,
                                 bm_status_message(s), supported);
    bm_status_free(s);
    return r;
  }
  return bm_status_make(BM_ERR_UNSUPPORTED,
                        "%s/config.json: unsupported architecture: model_type '%s'%s%s%s; supported: %s",
                        path, mt, arch[0] ? " (architectures [" : "", arch, arch[0] ? "])" : "",
                        supported);
}

bm_status bm_model_build(const char *name, const bm_model_options *o, bm_module **out,
                         bm_weight_source **src_out) {
  *out = NULL;
  *src_out = NULL;
  bm_model_options opts = {0};
  if (o) opts = *o;
  const bm_model_def *def = bm_model_find(name);
  struct stat st;
  if (!def && name && stat(name, &st) == 0) {
    BM_RETURN_IF_ERROR(find_for_path(name, &def));
    opts.path = name;
    if (!opts.weights && !opts.random_weights) opts.weights = name;
  }
  if (!def) {
    char known[512] = "";
    for (int i = 0; i < bm_models_count; i++) {
      if (i) append(known, sizeof known, ", ");
      append(known, sizeof known, bm_models[i]->name);
    }
    return bm_status_make(BM_ERR_NOT_FOUND,
                          "unknown model '%s' (known models: %s; or give the path of a model folder)",
                          name ? name : "(null)", known);
  }
  if (opts.dtype != BM_DTYPE_F32 && opts.dtype != BM_DTYPE_F16 && opts.dtype != BM_DTYPE_BF16)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "model '%s': compute dtype %s (supported: f32, f16, bf16)",
                          name, (unsigned)opts.dtype < BM_DTYPE_COUNT ? bm_dtype_name(opts.dtype) : "?");
  if (opts.random_weights && opts.weights)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT,
                          "model '%s': generated weights and the checkpoint '%s' exclude each other", name,
                          opts.weights);
  bm_weight_source *src = NULL;
  bm_status s = opts.weights ? bm_weight_source_open(opts.weights, &src)
                             : bm_weight_source_generated(opts.seed, &src);
  if (s) return s;
  bm_module *m = bm_module_create(def->name);
  if (!m) {
    bm_weight_source_close(src);
    return bm_status_make(BM_ERR_OUT_OF_MEMORY, "model '%s'", name);
  }
  s = def->build(m, src, &opts);
  for (int i = 0; !s && i < m->ngraphs; i++)
    if (bm_graph_status(m->graphs[i]))
      s = bm_status_make(bm_status_code(bm_graph_status(m->graphs[i])), "model '%s', function '%s': %s",
                         name, m->graphs[i]->name, bm_status_message(bm_graph_status(m->graphs[i])));
  if (s) {
    if (opts.extra_json && *opts.extra_json) {
      free(*opts.extra_json);
      *opts.extra_json = NULL;
    }
    bm_module_destroy(m);
    bm_weight_source_close(src);
    return s;
  }
  *out = m;
  *src_out = src;
  return NULL;
}
