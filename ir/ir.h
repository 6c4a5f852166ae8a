/* ir.h - bm's graph IR: dtypes, symbolic shapes, the op table, nodes,
 * graphs, modules and the C graph-builder API.
 *
 * A module holds the functions (graphs) of one package and the weights they
 * share. A graph is a list of nodes in topological order; a node is one op
 * applied to up to BM_MAX_IN input nodes. Builders record, passes
 * transform, backends lower: nothing here computes a tensor except the
 * reference interpreter (interp.h).
 *
 * Memory: every node, name and constant lives in the module's arena and is
 * freed once by bm_module_destroy().
 *
 * Errors: builder calls never abort on bad input. A builder that is given
 * impossible shapes (or a NULL input) records the first error in the graph
 * and returns NULL; later calls that receive NULL return NULL quietly.
 * Check bm_graph_status() once after building.
 */
#ifndef BM_IR_H
#define BM_IR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../runtime/bm_abi.h"
#include "../runtime/bm_runtime.h" /* bm_status, bm_dtype, BM_MAX_DIMS */

#define BM_MAX_IN 8     /* inputs of one node, epilogue operands included */
#define BM_MAX_PROG 24  /* instructions of a fused elementwise program */
#define BM_MAX_SYMS 8   /* symbolic dimensions per graph */

/* ------------------------------------------------------------------ arena */

typedef struct bm_arena bm_arena;
bm_arena *bm_arena_create(void);
void bm_arena_destroy(bm_arena *a);
void *bm_arena_alloc(bm_arena *a, size_t size);       /* zeroed, 16-aligned; NULL on OOM */
char *bm_arena_strdup(bm_arena *a, const char *s);

/* ------------------------------------------------------------------ ops */

enum {
  BM_OPF_SOURCE = 1 << 0,   /* no inputs: input, weight, const */
  BM_OPF_EW = 1 << 1,       /* elementwise */
  BM_OPF_UNARY = 1 << 2,
  BM_OPF_BINARY = 1 << 3,
  BM_OPF_REDUCE = 1 << 4,
  BM_OPF_VIEW = 1 << 5,     /* may alias its input's storage */
  BM_OPF_EPILOGUE = 1 << 6, /* can carry a fused elementwise epilogue */
  BM_OPF_INPLACE = 1 << 7,  /* writes into its first input's storage (a STATE): the result
                             * aliases it, but a kernel still runs (KV_WRITE) */
};

enum {
  BM_ATTR_TRANS = 1 << 0,   /* trans_a, trans_b */
  BM_ATTR_CONV = 1 << 1,    /* stride, pad, dilation, groups */
  BM_ATTR_PERM = 1 << 2,    /* perm */
  BM_ATTR_SLICE = 1 << 3,   /* axis, begin, end, step */
  BM_ATTR_AXIS = 1 << 4,    /* axis */
  BM_ATTR_PAD = 1 << 5,     /* pads, value */
  BM_ATTR_SCALE = 1 << 6,   /* scale (integer upsample factor) */
  BM_ATTR_AXES = 1 << 7,    /* axes (bit mask), keepdim */
  BM_ATTR_EPS = 1 << 8,     /* eps */
  BM_ATTR_GROUPS = 1 << 9,  /* groups */
  BM_ATTR_ROPE = 1 << 10,   /* rope_mode */
  BM_ATTR_ATTN = 1 << 11,   /* attn_scale, causal, window, softcap */
  BM_ATTR_PROG = 1 << 12,   /* prog */
  BM_ATTR_TOPK = 1 << 13,   /* topk, fill */
  BM_ATTR_ACT = 1 << 14,    /* act */
};

/* ATTENTION's optional inputs, in this order after q, k, v (bm_attrs.attn_flags). */
enum {
  BM_ATTN_HAS_MASK = 1 << 0,   /* additive mask */
  BM_ATTN_HAS_KV_LEN = 1 << 1, /* kv_len i32|i64 (B): valid cache length per row */
};

typedef enum bm_op {
#define X(e, name, mn, mx, fl, at, sh, rf) BM_OP_##e,
#include "ops.def"
#undef X
  BM_OP_COUNT
} bm_op;

typedef struct bm_op_info {
  const char *name;
  int min_in, max_in;
  unsigned flags;
  unsigned attrs;
} bm_op_info;

extern const bm_op_info bm_op_table[BM_OP_COUNT];
static inline const char *bm_op_name(bm_op op) { return bm_op_table[op].name; }
int bm_op_from_name(const char *s, bm_op *out); /* 0 on success */

/* ------------------------------------------------------------------ shapes */

/* A dimension: value = (sym >= 0 ? mul * value_of(sym) : 0) + add.
 * Static dims have sym = -1. Use bm_dim_c() / bm_dim_s() to make them. */
typedef struct bm_dim {
  int64_t add;
  int32_t sym;
  int32_t mul;
} bm_dim;

static inline bm_dim bm_dim_c(int64_t v) { bm_dim d = {v, -1, 0}; return d; }
static inline bm_dim bm_dim_s(int sym) { bm_dim d = {0, sym, 1}; return d; }
static inline bool bm_dim_is_static(bm_dim d) { return d.sym < 0 || d.mul == 0; }
static inline bool bm_dim_eq(bm_dim a, bm_dim b) {
  if (bm_dim_is_static(a) && bm_dim_is_static(b)) return a.add == b.add;
  return a.sym == b.sym && a.mul == b.mul && a.add == b.add;
}
static inline bool bm_dim_is_one(bm_dim d) { return bm_dim_is_static(d) && d.add == 1; }

typedef struct bm_sym {
  const char *name;
  int64_t max; /* upper bound: memory is planned for it */
} bm_sym;

/* ------------------------------------------------------------------ fused programs */

/* A straight-line f32 program used by FUSED nodes and by epilogues.
 * Registers 0..nin-1 hold the program's inputs; instruction j writes
 * register nin + j. The result is the last register written (register 0
 * if n == 0). For FUSED nodes the inputs are node->in[0..nin-1]. For an
 * epilogue, register 0 is the op's own result and registers 1..nin-1 are
 * the node's last nin-1 inputs (broadcast against the output). */
enum { BM_PROG_IMM_B = 1 }; /* operand b is the immediate, not a register */

typedef struct bm_prog_ins {
  uint8_t op;    /* a BM_OPF_EW unary or binary op (not CAST, not FUSED) */
  uint8_t a, b;  /* registers */
  uint8_t flags; /* BM_PROG_* */
  float imm;
} bm_prog_ins;

typedef struct bm_prog {
  uint8_t n;   /* instructions; 0 = no epilogue */
  uint8_t nin; /* input registers */
  bm_prog_ins ins[BM_MAX_PROG];
} bm_prog;

/* Checks that p is a well-formed program with nin input registers: every
 * instruction an elementwise unary or binary op (not CAST or FUSED) reading
 * registers already written, unused operand fields zero. `what` names it in
 * the message ("program", "epilogue"). The one check used by shape
 * inference, the interpreter and the backends. */
bm_status bm_prog_check(const bm_prog *p, int nin, const char *what);

/* ------------------------------------------------------------------ attributes */

/* Named attributes; each op reads the ones its BM_ATTR_* mask names and
 * leaves the rest zero (so memcmp-equality works for CSE). */
typedef struct bm_attrs {
  int32_t trans_a, trans_b;                /* MATMUL */
  int32_t stride[2], pad[2], dilation[2];  /* CONV2D (h, w) */
  int32_t groups;                          /* CONV2D, GROUP_NORM */
  int32_t layout;                          /* CONV2D: BM_CONV_NCHW (0) or BM_CONV_NHWC */
  int32_t perm[BM_MAX_DIMS];               /* PERMUTE */
  int32_t axis;                            /* SLICE, CONCAT, SOFTMAX (normalized >= 0) */
  int64_t begin, end, step;                /* SLICE (end clamped to the dim; INT64_MAX = to the end) */
  int64_t pads[2 * BM_MAX_DIMS];           /* PAD */
  float value;                             /* PAD fill value */
  int32_t scale;                           /* UPSAMPLE */
  uint32_t axes;                           /* SUM, MEAN, REDUCE_MAX: bit i = reduce axis i */
  int32_t keepdim;
  float eps;                               /* norms */
  int32_t rope_mode;                       /* ROPE: 0 halves, 1 interleaved */
  float attn_scale;                        /* ATTENTION: 0 = 1/sqrt(D) */
  int32_t causal, window;
  float softcap;
  int32_t attn_flags;                      /* ATTENTION: BM_ATTN_* (which optional inputs) */
  int32_t topk;                            /* TOPK_MASK: entries kept per row (>= 1) */
  float fill;                              /* TOPK_MASK: value of the others */
  int32_t act;                             /* MOE, MOE_UP: BM_OP_SILU or BM_OP_GELU_TANH */
  bm_prog prog;                            /* FUSED, and epilogues of BM_OPF_EPILOGUE ops */
} bm_attrs;

/* CONV2D layouts (attribute `layout`): NCHW is x (N, C, H, W) and w (O, Cg,
 * KH, KW); NHWC is x (N, H, W, C) and w (O, KH, KW, Cg) (the CUDA TMA conv,
 * passes/layout_conv.c). The output is (N, O, OH, OW) in both. */
enum { BM_CONV_NCHW = 0, BM_CONV_NHWC = 1 };

/* ------------------------------------------------------------------ nodes */

/* Where a node's value lives after memory planning. */
typedef enum bm_storage {
  BM_STORAGE_NONE = 0,  /* not planned yet */
  BM_STORAGE_ARENA,     /* activation arena at `offset` */
  BM_STORAGE_WEIGHT,    /* package weight (WEIGHT and CONST nodes) */
  BM_STORAGE_ALIAS,     /* shares `alias`'s storage (a view: no kernel; BM_OPF_INPLACE ops: a kernel) */
  BM_STORAGE_STATE,     /* a persistent STATE tensor (session memory, shared by name) */
} bm_storage;

typedef struct bm_node bm_node;
struct bm_node {
  bm_op op;
  int id;                   /* index in graph->nodes after the last compaction */
  bm_dtype dtype;
  int ndim;
  bm_dim shape[BM_MAX_DIMS];  /* row-major, contiguous */
  int nin;
  bm_node *in[BM_MAX_IN];
  bm_attrs a;

  const char *name;         /* INPUT/WEIGHT: the binding name; else optional */
  const void *data;         /* WEIGHT: bound data (borrowed, may be NULL until bound); CONST: arena copy */
  size_t data_size;         /* bytes of `data` */

  /* filled by passes and codegen */
  bm_storage storage;
  int64_t offset;           /* ARENA: byte offset */
  int64_t nbytes;           /* bytes at the symbols' upper bounds */
  bm_node *alias;           /* ALIAS: the node whose storage this shares */
  int64_t view_offset;      /* ALIAS: byte offset into alias's storage (a SLICE view, bm_slice_view) */
  const char *kernel;       /* symbol of the kernel computing it, NULL if none */
  bm_task_expr tasks;       /* that kernel's task space */
  uint64_t scratch;         /* that kernel's per-thread scratch bytes */
};

/* Number of inputs that belong to the op itself (excluding epilogue operands). */
static inline int bm_node_base_nin(const bm_node *n) {
  if ((bm_op_table[n->op].flags & BM_OPF_EPILOGUE) && n->a.prog.n > 0)
    return n->nin - (n->a.prog.nin - 1);
  return n->nin;
}

/* ------------------------------------------------------------------ graphs */

typedef struct bm_module bm_module;

typedef struct bm_output {
  const char *name;
  bm_node *node;
} bm_output;

typedef struct bm_graph {
  bm_module *module;
  const char *name;         /* function name, e.g. "main", "prefill" */
  bm_node **nodes;          /* topological order */
  int nnodes, cap;
  bm_sym syms[BM_MAX_SYMS];
  int nsyms;
  bm_node **inputs;         /* INPUT nodes in declaration order */
  int ninputs, inputs_cap;
  bm_output *outputs;
  int noutputs, outputs_cap;
  bm_status err;            /* first builder error (owned) */
  int64_t arena_bytes;      /* set by memory planning */
} bm_graph;

struct bm_module {
  bm_arena *arena;
  const char *name;         /* model name */
  bm_graph **graphs;
  int ngraphs, cap;
};

bm_module *bm_module_create(const char *name);      /* NULL on OOM */
void bm_module_destroy(bm_module *m);
bm_graph *bm_graph_create(bm_module *m, const char *name); /* NULL on OOM */
bm_status bm_graph_status(const bm_graph *g);       /* borrowed; NULL = OK */
/* Records err as the graph's error if it has none (takes ownership). */
void bm_graph_fail(bm_graph *g, bm_status err);
bm_graph *bm_module_find_graph(const bm_module *m, const char *name);

/* Declares a symbolic dimension; returns its index or -1 (error recorded). */
int bm_sym_declare(bm_graph *g, const char *name, int64_t max);
int bm_sym_find(const bm_graph *g, const char *name);

/* Number of elements at the symbols' upper bounds, or -1 on overflow. */
int64_t bm_node_numel_max(const bm_graph *g, const bm_node *n);
/* Formats a dim as "64", "seq", "2*seq", "seq+1", "2*seq-3" / a shape as
 * "(1, seq, 64)" into buf (symbol names from g, "s<k>" if g is NULL);
 * returns buf. 96 bytes are enough for a dim, 512 for a shape. */
const char *bm_dim_str(const bm_graph *g, bm_dim d, char *buf, size_t size);
const char *bm_shape_str(const bm_graph *g, int ndim, const bm_dim *shape, char *buf,
                         size_t size);
/* Value of a dim given bound symbol values. */
static inline int64_t bm_dim_eval(bm_dim d, const int64_t *syms) {
  return (bm_dim_is_static(d) ? 0 : (int64_t)d.mul * syms[d.sym]) + d.add;
}

/* ------------------------------------------------------------------ generic construction */

/* Creates a node for `op` with the given inputs and attributes, infers its
 * shape and dtype from the op table, and appends it. On error records it and
 * returns NULL. Used by every typed builder and by the text parser. */
bm_node *bm_node_make(bm_graph *g, bm_op op, int nin, bm_node *const *in,
                      const bm_attrs *a);
/* Same, with the output dtype and shape given (RESHAPE, CAST, sources) and
 * checked by shape inference. */
bm_node *bm_node_make_typed(bm_graph *g, bm_op op, int nin, bm_node *const *in,
                            const bm_attrs *a, bm_dtype dtype, int ndim,
                            const bm_dim *shape);
/* Re-runs shape inference on n (after a pass changed it). */
bm_status bm_node_infer(bm_graph *g, bm_node *n);

/* ------------------------------------------------------------------ builder API */
/* All return NULL on error (recorded in g). dims given as int64 use
 * negative values -(k+1) to mean "symbol k" (see BM_SYM()). */
#define BM_SYM(k) (-(int64_t)(k) - 1)

bm_node *bm_input(bm_graph *g, const char *name, bm_dtype t, int ndim, const int64_t *shape);
bm_node *bm_weight(bm_graph *g, const char *name, bm_dtype t, int ndim, const int64_t *shape,
                   const void *data, size_t nbytes); /* data may be NULL (bind later) */
bm_node *bm_const(bm_graph *g, bm_dtype t, int ndim, const int64_t *shape, const void *data); /* copied */
bm_node *bm_scalar(bm_graph *g, float v);                  /* f32, rank 0 */
void bm_output_add(bm_graph *g, const char *name, bm_node *n);

bm_node *bm_unary(bm_graph *g, bm_op op, bm_node *x);
bm_node *bm_binary(bm_graph *g, bm_op op, bm_node *a, bm_node *b);
bm_node *bm_cast(bm_graph *g, bm_node *x, bm_dtype t);
bm_node *bm_add(bm_graph *g, bm_node *a, bm_node *b);
bm_node *bm_sub(bm_graph *g, bm_node *a, bm_node *b);
bm_node *bm_mul(bm_graph *g, bm_node *a, bm_node *b);
bm_node *bm_div(bm_graph *g, bm_node *a, bm_node *b);
bm_node *bm_silu(bm_graph *g, bm_node *x);
bm_node *bm_gelu(bm_graph *g, bm_node *x);       /* erf */
bm_node *bm_gelu_tanh(bm_graph *g, bm_node *x);
bm_node *bm_quick_gelu(bm_graph *g, bm_node *x);

bm_node *bm_matmul(bm_graph *g, bm_node *a, bm_node *b, bool trans_a, bool trans_b);
/* x (..., in) @ w(out, in)^T + bias(out); bias may be NULL. */
bm_node *bm_linear(bm_graph *g, bm_node *x, bm_node *w, bm_node *bias);
bm_node *bm_conv2d(bm_graph *g, bm_node *x, bm_node *w, bm_node *bias, int stride_h,
                   int stride_w, int pad_h, int pad_w, int dil_h, int dil_w, int groups);
bm_node *bm_dequant(bm_graph *g, bm_node *q, bm_node *scale);
bm_node *bm_qmatmul(bm_graph *g, bm_node *x, bm_node *q, bm_node *scale);

bm_node *bm_reshape(bm_graph *g, bm_node *x, int ndim, const int64_t *shape); /* one -1 allowed? no: explicit; BM_SYM ok */
bm_node *bm_reshape_d(bm_graph *g, bm_node *x, int ndim, const bm_dim *shape);
bm_node *bm_permute(bm_graph *g, bm_node *x, const int *perm);
bm_node *bm_transpose(bm_graph *g, bm_node *x, int d0, int d1);
bm_node *bm_slice(bm_graph *g, bm_node *x, int axis, int64_t begin, int64_t end, int64_t step);
bm_node *bm_concat(bm_graph *g, int n, bm_node *const *xs, int axis);
bm_node *bm_gather(bm_graph *g, bm_node *table, bm_node *idx);
bm_node *bm_pad(bm_graph *g, bm_node *x, const int64_t *pads, float value); /* 2*ndim entries */
bm_node *bm_upsample_nearest(bm_graph *g, bm_node *x, int scale);

bm_node *bm_reduce(bm_graph *g, bm_op op, bm_node *x, uint32_t axes, bool keepdim);
bm_node *bm_sum(bm_graph *g, bm_node *x, int axis, bool keepdim);
bm_node *bm_mean(bm_graph *g, bm_node *x, int axis, bool keepdim);
bm_node *bm_reduce_max(bm_graph *g, bm_node *x, int axis, bool keepdim);
bm_node *bm_softmax(bm_graph *g, bm_node *x, int axis);

bm_node *bm_layer_norm(bm_graph *g, bm_node *x, bm_node *w, bm_node *b, float eps);
bm_node *bm_group_norm(bm_graph *g, bm_node *x, bm_node *w, bm_node *b, int groups, float eps);
bm_node *bm_rms_norm(bm_graph *g, bm_node *x, bm_node *w, float eps);

bm_node *bm_rope(bm_graph *g, bm_node *x, bm_node *pos, bm_node *freqs, int mode);
bm_node *bm_attention(bm_graph *g, bm_node *q, bm_node *k, bm_node *v, bm_node *mask,
                      float scale, bool causal, int window, float softcap);

/* ------------------------------------------------------------------ LLM builders (issue 3)
 * Declared here so model files can be written against them; implemented
 * with their ops.def rows (STATE, KV_WRITE, TOPK_MASK, MOE and the kv_len
 * form of ATTENTION). */

/* A named persistent tensor (e.g. a KV cache): zero when a session is
 * created, kept across runs, shared by name by all functions of a package. */
bm_node *bm_state(bm_graph *g, const char *name, bm_dtype t, int ndim, const int64_t *shape);
/* cache (Bmax, H, L, D) (a STATE or a previous KV_WRITE), rows (B, H, S, D),
 * pos i32|i64 (B): writes rows[b, h, i] to cache[b, h, pos[b] + i] (rows past
 * L are dropped) and returns the updated cache (same storage, in place). */
bm_node *bm_kv_write(bm_graph *g, bm_node *cache, bm_node *rows, bm_node *pos);
/* Attention over a cache: as bm_attention, but k/v are (Bmax, Hkv, L, D)
 * caches and kv_len i32|i64 (B) gives each row's valid length: keys
 * j >= kv_len[b] are invisible and the causal offset of row b is
 * kv_len[b] - Sq. mask may be NULL. */
bm_node *bm_attention_kv(bm_graph *g, bm_node *q, bm_node *k, bm_node *v, bm_node *mask,
                         bm_node *kv_len, float scale, bool causal, int window, float softcap);
/* Keeps the k largest entries of each row (last axis; ties: lower index
 * first) and sets the others to fill. */
bm_node *bm_topk_mask(bm_graph *g, bm_node *x, int k, float fill);
/* Mixture-of-experts feed-forward: x (T, D), gates (T, E) with 0 for
 * unused experts, w_gate and w_up (E, F, D), w_down (E, D, F):
 * out[t] = sum_e gates[t, e] * w_down[e] (act(w_gate[e] x[t]) * (w_up[e] x[t])),
 * act SILU or GELU_TANH. Experts with a zero gate are skipped. */
bm_node *bm_moe(bm_graph *g, bm_node *x, bm_node *gates, bm_node *w_gate, bm_node *w_up,
                bm_node *w_down, bm_op act);
/* x (B, S, ...), idx i32|i64 (B) -> (B, 1, ...): row idx[b] of each batch
 * entry (clamped to [0, S - 1]), e.g. a prefill's last real token. */
bm_node *bm_take_row(bm_graph *g, bm_node *x, bm_node *idx);
/* Stacks n bound WEIGHTs of equal dtype and shape S into one new WEIGHT
 * `name` of shape (n, S...) whose data (copied into the module arena) is
 * their concatenation: e.g. E per-expert (F, D) matrices -> (E, F, D) for
 * bm_moe. Every part must be bound (data != NULL). */
bm_node *bm_weight_stack(bm_graph *g, const char *name, int n, bm_node *const *weights);

/* ------------------------------------------------------------------ graph utilities */

/* Replaces every use of `old` by `repl` (inputs and outputs). */
void bm_graph_replace_uses(bm_graph *g, bm_node *old, bm_node *repl);
/* Number of uses of each node (by id) including graph outputs; caller frees. */
int *bm_graph_use_counts(const bm_graph *g);
/* Removes nodes not reachable from outputs, restores topological order and
 * renumbers ids. Inputs are kept even if unused. */
bm_status bm_graph_compact(bm_graph *g);
/* Checks every invariant (arity, shapes re-inferred, topological order,
 * dtypes, attribute ranges, symbols). Returns a status naming the node. */
bm_status bm_graph_verify(const bm_graph *g);

/* ------------------------------------------------------------------ text form */

/* Dumps a graph as text (malloc'd, caller frees). Weights are referenced by
 * name; constants are written inline. */
bm_status bm_graph_to_text(const bm_graph *g, char **out);
/* Parses one graph from text into module m. Weight data is left unbound. */
bm_status bm_graph_parse(bm_module *m, const char *text, bm_graph **out);

#endif /* BM_IR_H */
