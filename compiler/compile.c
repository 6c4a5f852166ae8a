/* compile.c - the compiler driver (see compile.h). */
#include "compile.h"

#include <string.h>

void bm_compile_options_init(bm_compile_options *o) {
  memset(o, 0, sizeof *o);
  o->target.backend = "cpu";
  o->target.opt_level = 3;
}

bm_status bm_compile_module(bm_module *m, const bm_compile_options *o, const char *out_path) {
  if (!m || !o || !out_path)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "bm_compile_module: NULL argument");
  if (m->ngraphs == 0)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "model '%s' has no functions", m->name);
  const bm_backend *be;
  BM_RETURN_IF_ERROR(bm_backend_find(o->target.backend ? o->target.backend : "cpu", &be));

  bm_pass_options po = o->passes;
  if (!po.supports) po.supports = be->supports;
  for (int i = 0; i < m->ngraphs; i++) {
    bm_graph *g = m->graphs[i];
    BM_RETURN_IF_ERROR(bm_graph_status(g) ? bm_status_make(bm_status_code(bm_graph_status(g)), "%s",
                                                           bm_status_message(bm_graph_status(g)))
                                          : NULL);
    bm_status s = bm_pipeline_run(g, &po);
    if (s) return bm_status_wrap(s, "function '%s'", g->name);
  }

  bm_object code = {0};
  bm_status s = be->compile(m, &o->target, &code);
  if (s) {
    bm_object_free(&code);
    return s;
  }
  bm_package_meta meta = {
      .model = m->name,
      .compiler_version = BM_VERSION,
      .options_json = o->options_json,
      .target_backend = be->name,
      .compress = o->compress,
      .zstd_level = 3,
      .extra_json = o->extra_json,
  };
  s = bm_package_write(out_path, m, &code, &meta);
  bm_object_free(&code);
  return s;
}
