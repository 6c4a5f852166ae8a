/* null.c - the null backend: supports nothing and compiles nothing. It is
 * the template for a new backend (copy it, fill supports and compile). */
#include "codegen.h"

static int null_supports(const bm_node *n) {
  (void)n;
  return 0;
}

static bm_status null_compile(bm_module *m, const bm_target *t, bm_object *out) {
  (void)t;
  (void)out;
  return bm_status_make(BM_ERR_UNSUPPORTED, "backend 'null': cannot compile model '%s' (unimplemented)",
                        m && m->name ? m->name : "?");
}

const bm_backend bm_backend_null = {
    .name = "null",
    .supports = null_supports,
    .compile = null_compile,
};
