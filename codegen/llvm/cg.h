/* cg.h - internal helpers of the LLVM CPU backend, shared by the kernel
 * emitters (one file per op family in codegen/llvm/).
 *
 * An emitter lowers one node to one function with the bm_abi.h signature:
 *   void SYMBOL(void *const *bufs, const int64_t *syms, int64_t begin,
 *               int64_t end, void *scratch)
 * bufs[0..nin-1] are the node's inputs (epilogue operands included, all
 * contiguous row-major in their dtype), bufs[nin] is the output. It must
 * set n->tasks (the task space) and n->scratch (bytes per thread) and
 * process exactly tasks [begin, end).
 *
 * Values: "width" 1 means an f32 scalar, w > 1 an LLVM <w x float> vector.
 * All math helpers accept either.
 */
#ifndef BM_CG_H
#define BM_CG_H

#include <llvm-c/Core.h>
#include <llvm-c/TargetMachine.h>

#include "../codegen.h"

typedef struct bm_cg {
  LLVMContextRef ctx;
  LLVMModuleRef mod;
  LLVMBuilderRef b;
  LLVMTargetMachineRef tm;
  const bm_target *target;
  bm_graph *graph;          /* graph of the node being emitted */
  int vec;                  /* f32 lanes of the preferred vector: 16 (AVX-512), 8 (AVX2), 4 */
  bool has_fma;
  bool has_f16c;            /* hardware f16 <-> f32 conversion (else integer code) */
  int graph_index;          /* index of `graph` in the module */
  char cpu_name[64];        /* resolved target CPU (function attribute "target-cpu") */
  char cpu_features[4096];  /* full LLVM feature string ("target-features") */
  /* common types */
  LLVMTypeRef t_void, t_i1, t_i8, t_i16, t_i32, t_i64, t_f16, t_bf16, t_f32, t_f64, t_ptr;
  LLVMTypeRef t_kernel;     /* the bm_kernel_fn type */
} bm_cg;

typedef struct bm_cg_fn {
  bm_cg *cg;
  bm_node *node;
  LLVMValueRef fn;
  LLVMValueRef bufs, syms, begin, end, scratch; /* the ABI parameters */
} bm_cg_fn;

typedef bm_status (*bm_cg_emit_fn)(bm_cg *cg, bm_node *n, const char *symbol);

/* ---- function scaffolding */
/* Creates SYMBOL with the kernel signature; builder at the entry block. */
void bm_cg_fn_begin(bm_cg *cg, bm_node *n, const char *symbol, bm_cg_fn *f);
void bm_cg_fn_end(bm_cg_fn *f);                         /* ret void */
LLVMValueRef bm_cg_buf(bm_cg_fn *f, int i);             /* bufs[i] as ptr; i == nin: output */
LLVMValueRef bm_cg_dim(bm_cg_fn *f, bm_dim d);          /* i64 value of a dim */
LLVMValueRef bm_cg_numel(bm_cg_fn *f, const bm_node *n);/* i64 element count (bound) */
LLVMValueRef bm_cg_i64(bm_cg *cg, int64_t v);
LLVMValueRef bm_cg_i32(bm_cg *cg, int32_t v);
LLVMValueRef bm_cg_f32(bm_cg *cg, float v);
LLVMValueRef bm_cg_splat(bm_cg_fn *f, LLVMValueRef scalar, int width); /* width 1: scalar */
/* A task expression from a dim: ceil(dim / div) * factor. */
bm_task_expr bm_cg_tasks(bm_dim d, int64_t div, int64_t factor);

/* ---- control flow: for (iv = start; iv < end; iv += step) */
typedef struct bm_cg_loop {
  LLVMValueRef iv;          /* i64 induction variable, valid in the body */
  LLVMBasicBlockRef cond, body, exit;
  LLVMValueRef phi, step;
  LLVMBasicBlockRef latch_from;
} bm_cg_loop;
void bm_cg_loop_begin(bm_cg_fn *f, bm_cg_loop *l, LLVMValueRef start, LLVMValueRef end,
                      LLVMValueRef step);
void bm_cg_loop_end(bm_cg_fn *f, bm_cg_loop *l);        /* builder continues after the loop */
/* Loop-carried values: declare before loop_begin's body work via phi helpers. */
LLVMValueRef bm_cg_loop_phi(bm_cg_fn *f, bm_cg_loop *l, LLVMTypeRef t, LLVMValueRef init);
void bm_cg_loop_phi_next(bm_cg_loop *l, LLVMValueRef phi, LLVMValueRef next); /* before loop_end */
/* if (cond) { ... }: begin positions the builder in the then-block. */
typedef struct bm_cg_if { LLVMBasicBlockRef then_bb, merge_bb; } bm_cg_if;
void bm_cg_if_begin(bm_cg_fn *f, bm_cg_if *c, LLVMValueRef cond);
void bm_cg_if_end(bm_cg_fn *f, bm_cg_if *c);

/* ---- memory: element index idx (i64) into base of dtype t, converted to/from f32.
 * width > 1 loads/stores `width` consecutive elements. */
LLVMValueRef bm_cg_load(bm_cg_fn *f, LLVMValueRef base, bm_dtype t, LLVMValueRef idx, int width);
void bm_cg_store(bm_cg_fn *f, LLVMValueRef base, bm_dtype t, LLVMValueRef idx, LLVMValueRef v,
                 int width);
LLVMValueRef bm_cg_load_i64(bm_cg_fn *f, LLVMValueRef base, bm_dtype t, LLVMValueRef idx); /* integer dtypes */
/* Masked tail variants: only the first n (i64, < width) lanes are touched. */
LLVMValueRef bm_cg_load_partial(bm_cg_fn *f, LLVMValueRef base, bm_dtype t, LLVMValueRef idx,
                                int width, LLVMValueRef n);
void bm_cg_store_partial(bm_cg_fn *f, LLVMValueRef base, bm_dtype t, LLVMValueRef idx,
                         LLVMValueRef v, int width, LLVMValueRef n);

/* ---- math (scalar or vector f32) */
LLVMValueRef bm_cg_unary(bm_cg_fn *f, bm_op op, LLVMValueRef x);   /* any unary BM_OPF_EW op but CAST */
LLVMValueRef bm_cg_binary(bm_cg_fn *f, bm_op op, LLVMValueRef a, LLVMValueRef b);
LLVMValueRef bm_cg_exp(bm_cg_fn *f, LLVMValueRef x);
LLVMValueRef bm_cg_fma(bm_cg_fn *f, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c);
LLVMValueRef bm_cg_fmax(bm_cg_fn *f, LLVMValueRef a, LLVMValueRef b);
LLVMValueRef bm_cg_hsum(bm_cg_fn *f, LLVMValueRef v);  /* vector -> scalar */
LLVMValueRef bm_cg_hmax(bm_cg_fn *f, LLVMValueRef v);

/* ---- fused programs */
/* Evaluates prog with register values regs[0..prog->nin-1] (all of one width). */
LLVMValueRef bm_cg_prog(bm_cg_fn *f, const bm_prog *prog, LLVMValueRef *regs);
/* Applies n's epilogue (if any) to v, the value of `width` consecutive
 * output elements along the last axis starting at output coordinates
 * coords[0..ndim-1] (i64). Loads the epilogue operands with broadcasting. */
LLVMValueRef bm_cg_epilogue(bm_cg_fn *f, LLVMValueRef v, LLVMValueRef *coords, int width);
/* Offset (i64, elements) into input `in` (broadcast to out's shape) of the
 * output element at coords. */
LLVMValueRef bm_cg_bcast_offset(bm_cg_fn *f, const bm_node *in, const bm_node *out,
                                LLVMValueRef *coords);

/* ---- additional helpers (cg.c) */
/* Splits the row-major index space prod(dims[0..ndim-1]) into tasks of about
 * `grain` units each, sets *tasks, and returns in *lo, *hi (i64) the unit
 * range covered by tasks [begin, end). Works for any number of symbolic
 * dims (a leading product that is linear in one symbol is split; the rest
 * is the unit size). */
void bm_cg_task_range(bm_cg_fn *f, int ndim, const bm_dim *dims, int64_t grain,
                      bm_task_expr *tasks, LLVMValueRef *lo, LLVMValueRef *hi);
/* Upper bound of a dim (symbols at their max). */
int64_t bm_cg_dim_max(const bm_cg *cg, bm_dim d);
/* Body of a vectorized loop: `width` elements starting at idx; nvalid is NULL
 * for a full vector, else the i64 count (< width) of valid lanes (tail). */
typedef void (*bm_cg_body_fn)(bm_cg_fn *f, LLVMValueRef idx, int width, LLVMValueRef nvalid,
                              void *ctx);
/* for (i = start; i < end; i += width) body(i, width); the tail runs once
 * with nvalid set (masked) or, with scalar_tail, as a scalar loop (width 1). */
void bm_cg_vec_for(bm_cg_fn *f, LLVMValueRef start, LLVMValueRef end, int width,
                   bool scalar_tail, bm_cg_body_fn body, void *ctx);
/* bm_cg_epilogue for a tail: only the first nvalid (i64) lanes are valid
 * (nvalid NULL = all `width`). */
LLVMValueRef bm_cg_epilogue_partial(bm_cg_fn *f, LLVMValueRef v, LLVMValueRef *coords, int width,
                                    LLVMValueRef nvalid);
/* coords[0..ndim-1] of the row-major linear index idx over dims. */
void bm_cg_unravel(bm_cg_fn *f, LLVMValueRef idx, int ndim, const bm_dim *dims,
                   LLVMValueRef *coords);
/* Raw element copy (no conversion; any dtype but I4): `width` elements. */
LLVMValueRef bm_cg_load_raw(bm_cg_fn *f, LLVMValueRef base, bm_dtype t, LLVMValueRef idx, int width);
void bm_cg_store_raw(bm_cg_fn *f, LLVMValueRef base, bm_dtype t, LLVMValueRef idx, LLVMValueRef v,
                     int width);
/* Integer store (saturating, like bm_store_i64) of an i64 value. */
void bm_cg_store_i64(bm_cg_fn *f, LLVMValueRef base, bm_dtype t, LLVMValueRef idx, LLVMValueRef v);
/* min/max of i64 values; select. */
LLVMValueRef bm_cg_imin(bm_cg_fn *f, LLVMValueRef a, LLVMValueRef b);
LLVMValueRef bm_cg_imax(bm_cg_fn *f, LLVMValueRef a, LLVMValueRef b);
/* Calls a C library function `name` (float -> float, e.g. "sinf") per lane. */
LLVMValueRef bm_cg_libm1(bm_cg_fn *f, const char *name, LLVMValueRef x);
/* Stack slot of type t in the entry block. */
LLVMValueRef bm_cg_alloca(bm_cg_fn *f, LLVMTypeRef t, const char *name);
/* Can kernels load / store this dtype? */
bool bm_cg_dtype_loadable(bm_dtype t);
bool bm_cg_dtype_storable(bm_dtype t);

/* ---- target machine (target.c) */
/* Creates cg->tm for target t (host by default), sets cg->vec, has_fma,
 * has_f16c and fills out->triple, cpu, features, required. */
bm_status bm_cg_target_init(bm_cg *cg, const bm_target *t, bm_object *out);
/* Writes the module as LLVM IR text, or as assembly if path ends in ".s". */
bm_status bm_cg_dump_module(bm_cg *cg, const char *path);

/* ---- emitters (one file each) */
bm_status bm_cg_emit_elementwise(bm_cg *cg, bm_node *n, const char *symbol); /* elementwise.c: unary, binary, cast, FUSED */
bm_status bm_cg_emit_movement(bm_cg *cg, bm_node *n, const char *symbol);    /* movement.c: reshape(copy), permute, slice, concat, gather, pad, upsample, dequant */
bm_status bm_cg_emit_reduce(bm_cg *cg, bm_node *n, const char *symbol);      /* reduce.c: sum, mean, reduce_max, softmax */
bm_status bm_cg_emit_norm(bm_cg *cg, bm_node *n, const char *symbol);        /* norm.c: layer/group/rms norm */
bm_status bm_cg_emit_rope(bm_cg *cg, bm_node *n, const char *symbol);        /* rope.c */
bm_status bm_cg_emit_matmul(bm_cg *cg, bm_node *n, const char *symbol);      /* matmul.c: matmul, qmatmul */
bm_status bm_cg_emit_conv2d(bm_cg *cg, bm_node *n, const char *symbol);      /* conv.c */
bm_status bm_cg_emit_attention(bm_cg *cg, bm_node *n, const char *symbol);   /* attention.c: flash attention */
bm_status bm_cg_emit_llm(bm_cg *cg, bm_node *n, const char *symbol);         /* llm.c: kv_write, topk_mask, moe_up, moe_down */


/* ---- the tiled GEMM engine (matmul.c; conv.c uses it for conv2d)
 * For each batch b < nbatch: C_b (M, N) = A_b (M, K) @ B_b (K, N), stored
 * with an optional per-row bias and the node's epilogue applied once, after
 * the whole K reduction. A and C are dense; B is read as b_kind says. The
 * engine emits the kernel: task space, scratch, packing, the register-blocked
 * micro-kernel (MR x NR from cg->vec), and a streaming GEMV path for tasks
 * with at most 3 rows. */
typedef enum bm_cg_gemm_b {
  BM_CG_GEMM_B_KN,     /* B_b[k, n] = b[b_off + k*ldb + n] (b_dt) */
  BM_CG_GEMM_B_NK,     /* B_b[k, n] = b[b_off + n*ldb + k] (b_dt) */
  BM_CG_GEMM_B_Q,      /* B[k, n] = q[n*K + k] * scale[n*(K/q_group) + k/q_group]; q b_dt i8|i4 */
  BM_CG_GEMM_B_LOADER, /* B_b[k, n..n+w) through load_b_prep / load_b (conv2d: im2col) */
} bm_cg_gemm_b;

typedef struct bm_cg_gemm bm_cg_gemm;
struct bm_cg_gemm {
  /* static description, filled by the caller */
  bm_dim m;              /* rows per batch; exact if m_linear, else only its bound is used */
  bool m_linear;
  bm_dim nbatch;         /* batches; exact if nbatch_linear, else only its bound is used */
  bool nbatch_linear;
  int64_t n_max, k_max;  /* bounds of N and K */
  bm_dtype a_dt, b_dt, c_dt, bias_dt;
  bool a_trans;          /* A_b[m, k] = a[a_off + k*lda + m] instead of a[a_off + m*lda + k] */
  bm_cg_gemm_b b_kind;
  int64_t q_group;       /* B_Q: group size along K */
  bool vec_epilogue;     /* the epilogue may see vectors along n (else lane by lane) */
  void *ctx;
  /* callbacks, called while the kernel body is emitted */
  void (*setup)(bm_cg_fn *f, bm_cg_gemm *g); /* sets the run-time values below */
  /* element offsets of batch b (i64); *bias_off may be left NULL without bias */
  void (*batch)(bm_cg_fn *f, bm_cg_gemm *g, LLVMValueRef b, LLVMValueRef *a_off,
                LLVMValueRef *b_off, LLVMValueRef *c_off, LLVMValueRef *bias_off);
  /* output coordinates of C_b[m, n] for the epilogue */
  void (*coords)(bm_cg_fn *f, bm_cg_gemm *g, LLVMValueRef b, LLVMValueRef m, LLVMValueRef n,
                 LLVMValueRef *coords);
  /* B_LOADER: prepare B_b[., n..n+width) (nvalid NULL = all lanes) into st,
   * then load it at row k; invalid lanes and padding read 0. */
  void (*load_b_prep)(bm_cg_fn *f, bm_cg_gemm *g, LLVMValueRef b_off, LLVMValueRef n, int width,
                      LLVMValueRef nvalid, LLVMValueRef st[4]);
  LLVMValueRef (*load_b)(bm_cg_fn *f, bm_cg_gemm *g, LLVMValueRef st[4], LLVMValueRef k, int width);
  /* run-time values, set by setup: i64 sizes and leading dims, buffer pointers */
  LLVMValueRef M, N, K, nb, lda, ldb, ldc;
  LLVMValueRef a, b, c, scale, bias; /* scale: B_Q; bias: NULL = none (indexed bias_off + m) */
};
/* Emits the kernel SYMBOL for node n as described by g; sets n->tasks, n->scratch. */
bm_status bm_cg_emit_gemm(bm_cg *cg, bm_node *n, const char *symbol, bm_cg_gemm *g);

#endif
