/* passes.h - graph-to-graph passes and the pipeline that runs them.
 *
 * One pass per file in passes/. Every pass has the same signature, leaves
 * a graph that passes bm_graph_verify(), and can be printed after
 * (bmc --print-after NAME). The pipeline (pipeline.c) is a plain list.
 */
#ifndef BM_PASSES_H
#define BM_PASSES_H

#include "../ir/ir.h"

/* Weight-only quantization of matmul weights (quantize.c). */
typedef enum bm_quant_mode {
  BM_QUANT_NONE = 0,
  BM_QUANT_INT8, /* i8 per output channel, symmetric: scale = max|w| / 127 */
  BM_QUANT_INT4, /* packed i4 in groups along K, symmetric (ggml Q4_0 style, see quantize.c) */
} bm_quant_mode;

typedef struct bm_pass_options {
  bool no_fuse;             /* skip every fusion pass (for fused-vs-unfused tests) */
  bool verify_each;         /* run bm_graph_verify after every pass */
  /* Backend capability check used by fusion passes: nonzero if the backend
   * can run this (fused) node. NULL = assume everything is supported. */
  int (*supports)(const bm_node *n);
  /* The same question with the graph (so the symbols' maxima: the rows of a
   * matmul), used where the answer depends on sizes (fuse_dequant's QMATMUL,
   * fuse_horizontal's MATMUL_GLU / RMS_MATMUL). NULL = ask `supports`. */
  int (*supports_in)(const bm_graph *g, const bm_node *n);
  const char *print_after;  /* pass name, or "all"; NULL = none */
  void (*print)(const char *pass, const bm_graph *g, void *user); /* called for print_after */
  void *print_user;
  /* quantize pass: matmul weights (N, K) f32/f16/bf16 used only as
   * matmul(x, w, trans_b) become dequant(q, scale); gather tables (embeddings)
   * always stay float. quant_group: int4 group size (0 = 32). quant_keep:
   * comma-separated fnmatch patterns of weight names kept in float, e.g.
   * "lm_head.weight" (NULL = none). */
  bm_quant_mode quant;
  int quant_group;
  const char *quant_keep;
} bm_pass_options;

/* The backend's answer for node n of g: supports_in if set, else supports,
 * else yes (no options or no hook: everything is supported). */
static inline int bm_pass_supports(const bm_pass_options *o, const bm_graph *g, const bm_node *n) {
  if (!o) return 1;
  if (o->supports_in) return o->supports_in(g, n);
  return o->supports ? o->supports(n) : 1;
}

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
bm_status bm_pass_quantize(bm_graph *g, const bm_pass_options *o);     /* quantize.c: weight-only int8/int4 */
bm_status bm_pass_lower_moe(bm_graph *g, const bm_pass_options *o);    /* lower_moe.c: MOE -> MOE_UP + MOE_DOWN */
bm_status bm_pass_lower_attention(bm_graph *g, const bm_pass_options *o); /* lower_attention.c: ATTENTION -> GEMMs + softmax where the backend prefers */
bm_status bm_pass_layout_conv(bm_graph *g, const bm_pass_options *o);  /* layout_conv.c: CONV2D -> NHWC x, (O, KH, KW, Cg) w where supported */
bm_status bm_pass_fuse_attention(bm_graph *g, const bm_pass_options *o);   /* fuse_attention.c */
bm_status bm_pass_fuse_dequant(bm_graph *g, const bm_pass_options *o);     /* fuse_dequant.c */
bm_status bm_pass_fuse_epilogue(bm_graph *g, const bm_pass_options *o);    /* fuse_epilogue.c: ew ops into matmul/conv/norm (GroupNorm+SiLU is a row) */
bm_status bm_pass_fuse_elementwise(bm_graph *g, const bm_pass_options *o); /* fuse_elementwise.c: chains -> FUSED */
bm_status bm_pass_fuse_horizontal(bm_graph *g, const bm_pass_options *o); /* fuse_horizontal.c: q/k/v linears -> one */
bm_status bm_pass_plan_memory(bm_graph *g, const bm_pass_options *o);      /* plan_memory.c */
bm_status bm_pass_hoist_take_row(bm_graph *g, const bm_pass_options *o);   /* hoist_take_row.c: row-wise ops below take_row (BM_HOIST_TAKE_ROW=1) */

/* True if SLICE n is a contiguous part of its input whose storage can be
 * shared (a view, no kernel): step 1, every dim before the axis at most 1 at
 * the symbols' maxima, the dims after it static, its input's storage in
 * the activation arena, and the byte offset (*byte_offset) a multiple of 64
 * (plan_memory.c). */
bool bm_slice_view(const bm_graph *g, const bm_node *n, int64_t *byte_offset);

/* Compile-time quantization of a row-major (n, k) f32 matrix (quantize.c).
 * i8: q (n, k), scale (n, 1) = max|row| / 127, q = round(w / scale).
 * i4: q packed two per byte over the whole matrix (element e = r*k + c in
 * byte e/2, even e in the low nibble), scale (n, k/group): per group the
 * entry m of largest magnitude gives scale = m / -8, q = clamp(round(w /
 * scale), -8, 7) (m itself maps to -8 exactly); group must divide k (the
 * high nibble of a last odd byte is left as it was). A non-finite weight is
 * an error naming `name`, the row and the column. */
bm_status bm_quantize_i8(const char *name, const float *w, int64_t n, int64_t k, int8_t *q,
                         float *scale);
bm_status bm_quantize_i4(const char *name, const float *w, int64_t n, int64_t k, int64_t group,
                         uint8_t *q, float *scale);

/* The default pipeline, in order. */
extern const bm_pass bm_pipeline[];
extern const int bm_pipeline_len;
/* Runs the pipeline on g. */
bm_status bm_pipeline_run(bm_graph *g, const bm_pass_options *o);
/* Runs a single named pass (tests). */
bm_status bm_pass_run_named(bm_graph *g, const char *name, const bm_pass_options *o);

#endif
