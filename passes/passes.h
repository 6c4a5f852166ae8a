/* passes.h - graph-to-graph passes and the pipeline that runs them.
 *
 * One pass per file in passes/. Every pass has the same signature, leaves
 * a graph that passes bm_graph_verify(), and can be printed after
 * (bmc --print-after NAME). The pipeline (pipeline.c) is a plain list.
 */
#ifndef BM_PASSES_H
#define BM_PASSES_H

#include "../ir/ir.h"

typedef struct bm_pass_options {
  bool no_fuse;             /* skip every fusion pass (for fused-vs-unfused tests) */
  bool verify_each;         /* run bm_graph_verify after every pass */
  /* Backend capability check used by fusion passes: nonzero if the backend
   * can run this (fused) node. NULL = assume everything is supported. */
  int (*supports)(const bm_node *n);
  const char *print_after;  /* pass name, or "all"; NULL = none */
  void (*print)(const char *pass, const bm_graph *g, void *user); /* called for print_after */
  void *print_user;
} bm_pass_options;

typedef bm_status (*bm_pass_fn)(bm_graph *g, const bm_pass_options *o);

typedef struct bm_pass {
  const char *name;
  bm_pass_fn run;
  bool is_fusion;           /* skipped when no_fuse */
} bm_pass;

bm_status bm_pass_shape(bm_graph *g, const bm_pass_options *o);        /* shape.c: re-infer, check */
bm_status bm_pass_fold(bm_graph *g, const bm_pass_options *o);         /* fold.c: constant folding */
bm_status bm_pass_dce(bm_graph *g, const bm_pass_options *o);          /* dce.c */
bm_status bm_pass_cse(bm_graph *g, const bm_pass_options *o);          /* cse.c */
bm_status bm_pass_lower_moe(bm_graph *g, const bm_pass_options *o);    /* lower_moe.c: MOE -> MOE_UP + MOE_DOWN */
bm_status bm_pass_fuse_attention(bm_graph *g, const bm_pass_options *o);   /* fuse_attention.c */
bm_status bm_pass_fuse_dequant(bm_graph *g, const bm_pass_options *o);     /* fuse_dequant.c */
bm_status bm_pass_fuse_epilogue(bm_graph *g, const bm_pass_options *o);    /* fuse_epilogue.c: ew ops into matmul/conv/norm (GroupNorm+SiLU is a row) */
bm_status bm_pass_fuse_elementwise(bm_graph *g, const bm_pass_options *o); /* fuse_elementwise.c: chains -> FUSED */
bm_status bm_pass_plan_memory(bm_graph *g, const bm_pass_options *o);      /* plan_memory.c */

/* The default pipeline, in order. */
extern const bm_pass bm_pipeline[];
extern const int bm_pipeline_len;
/* Runs the pipeline on g. */
bm_status bm_pipeline_run(bm_graph *g, const bm_pass_options *o);
/* Runs a single named pass (tests). */
bm_status bm_pass_run_named(bm_graph *g, const char *name, const bm_pass_options *o);

#endif
