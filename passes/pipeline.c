/* pipeline.c - the default pass pipeline as a plain list, and the driver
 * that runs it (verify after each pass, print after a named pass). */
#include <string.h>

#include "passes.h"

const bm_pass bm_pipeline[] = {
    {"shape", bm_pass_shape, false},
    {"fold", bm_pass_fold, false},
    {"cse", bm_pass_cse, false},
    {"dce", bm_pass_dce, false},
    {"hoist_take_row", bm_pass_hoist_take_row, false},
    {"quantize", bm_pass_quantize, false},
    {"lower_moe", bm_pass_lower_moe, false},
    {"layout_conv", bm_pass_layout_conv, false},
    {"fuse_horizontal", bm_pass_fuse_horizontal, true},
    {"fuse_attention", bm_pass_fuse_attention, true},
    {"lower_attention", bm_pass_lower_attention, false},
    {"fuse_dequant", bm_pass_fuse_dequant, true},
    {"fuse_epilogue", bm_pass_fuse_epilogue, true},
    {"fuse_elementwise", bm_pass_fuse_elementwise, true},
    {"dce", bm_pass_dce, false},
    {"plan_memory", bm_pass_plan_memory, false},
};
const int bm_pipeline_len = (int)(sizeof bm_pipeline / sizeof bm_pipeline[0]);

static const bm_pass *find_pass(const char *name) {
  for (int i = 0; i < bm_pipeline_len; i++)
    if (strcmp(bm_pipeline[i].name, name) == 0) return &bm_pipeline[i];
  return NULL;
}

/* Runs one pass, then the verifier and the printer as the options ask. */
static bm_status run_one(bm_graph *g, const bm_pass *p, const bm_pass_options *o) {
  bm_status s = p->run(g, o);
  if (s) return bm_status_wrap(s, "pass '%s'", p->name);
  if (o->verify_each) {
    s = bm_graph_verify(g);
    if (s) return bm_status_wrap(s, "verify after pass '%s'", p->name);
  }
  if (o->print && o->print_after &&
      (strcmp(o->print_after, "all") == 0 || strcmp(o->print_after, p->name) == 0))
    o->print(p->name, g, o->print_user);
  return NULL;
}

static bm_status check_args(bm_graph *g, const bm_pass_options *o) {
  if (!g || !o) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "pass pipeline: NULL argument");
  bm_status err = bm_graph_status(g);
  if (err)
    return bm_status_make(bm_status_code(err), "graph '%s' has a builder error: %s",
                          g->name ? g->name : "?", bm_status_message(err));
  return NULL;
}

bm_status bm_pipeline_run(bm_graph *g, const bm_pass_options *o) {
  BM_RETURN_IF_ERROR(check_args(g, o));
  if (o->print_after && strcmp(o->print_after, "all") != 0 && !find_pass(o->print_after))
    return bm_status_make(BM_ERR_INVALID_ARGUMENT,
                          "unknown pass '%s' for print-after (try 'all' or a pass name "
                          "such as 'fuse_epilogue')",
                          o->print_after);
  for (int i = 0; i < bm_pipeline_len; i++) {
    const bm_pass *p = &bm_pipeline[i];
    if (p->is_fusion && o->no_fuse) continue;
    BM_RETURN_IF_ERROR(run_one(g, p, o));
  }
  return NULL;
}

bm_status bm_pass_run_named(bm_graph *g, const char *name, const bm_pass_options *o) {
  BM_RETURN_IF_ERROR(check_args(g, o));
  const bm_pass *p = name ? find_pass(name) : NULL;
  if (!p) return bm_status_make(BM_ERR_NOT_FOUND, "unknown pass '%s'", name ? name : "(null)");
  return run_one(g, p, o);
}
