/* emit_internal.h - what the files of the C-like emitter share: the kernel
 * context (ck), the small-string helpers and the index/shape/epilogue helpers
 * of emit.c, and the emitters that live in their own files (emit_gemm.c,
 * emit_attention.c). Not a public header: only codegen/clike includes it. */
#ifndef BM_CLIKE_EMIT_INTERNAL_H
#define BM_CLIKE_EMIT_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "clike.h"

/* The kernel being emitted: one node of one graph. Emitters write the body
 * with P(...) and set threads, min_blocks, smem and tasks. */
typedef struct ck {
  bm_sb *b;            /* the kernel body */
  const bm_graph *g;
  const bm_node *n;
  const bm_clike_lang *L;
  const char *I;       /* index type: "int" or "bm_i64" */
  int threads;
  int min_blocks;      /* blocks per multiprocessor for __launch_bounds__ (0: 1) */
  int smem;            /* dynamic shared memory bytes (0: static shared memory only) */
  int cluster;         /* blocks per cluster along x (CUDA sm_90a images: __cluster_dims__
                        * through BM_KATTR; the other images launch the same grid without
                        * clusters, so the body must work both ways); 0, 1: none */
  bool pdl_in_body;    /* the body calls BM_PDL_WAIT() / BM_PDL_TRIGGER() itself (CUDA
                        * programmatic dependent launch: it does weight-only work
                        * first); otherwise the kernel header waits on entry */
  bm_task_expr tasks;
  /* file-scope text emitted before the kernel (once, with the kernel); in it
   * and in the body, BM_KSYM(x) pastes x onto the kernel's symbol (e.g. a
   * global the runtime looks up by name: emit_gemm.c's tensor-map data) */
  bm_sb decl;
} ck;

#define P(...) bm_sb_printf(k->b, __VA_ARGS__)

/* A small string (dims, offsets, expressions). */
typedef struct str {
  char s[1024];
} str;

/* printf into a str */
str ck_strf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The largest value of dim d (symbols at their max). */
int64_t ck_dim_max(const bm_graph *g, bm_dim d);
/* The value of a dim in the kernel's index type. */
str ck_dimx(const ck *k, bm_dim d);
/* Product of dims [lo, hi) ("1" if empty). */
str ck_prodx(const ck *k, const bm_dim *dims, int lo, int hi);
/* Same shape? All dims one? */
bool ck_same_dims(const bm_node *a, const bm_node *b);
bool ck_is_single(const bm_node *a);
/* Offset into input `in` broadcast (right-aligned) to a shape of rank r,
 * given coordinate variables <c>0..<c>{r-1}. */
str ck_bcast_off(const ck *k, const bm_node *in, int r, const char *c);
/* Declares <c>0..<c>{r-1} and unravels linear index `idx` over dims. */
void ck_unravel(ck *k, const char *idx, int r, const bm_dim *dims, const char *c);
/* Load expressions: element `off` of buffer `buf` as float / as an exact integer. */
str ck_ld(const ck *k, int buf, bm_dtype t, str off);
str ck_ldi(const ck *k, int buf, bm_dtype t, str off);
/* A float literal (inf/nan spelled as the prelude names). */
str ck_flt(float v);
bool ck_is_int_dtype(bm_dtype t);
/* The f32 expression of unary op `op` on x / binary op on a, b. */
str ck_unary_expr(bm_op op, const char *x);
str ck_binary_expr(bm_op op, const char *a, const char *b);
/* Emits a program over registers <r>0..<r>{nin-1} (declared by the caller);
 * returns the name of the result register. */
str ck_emit_prog(ck *k, const bm_prog *p, const char *r, const char *indent);
/* Applies the node's epilogue (if any) to the f32 variable v, for output
 * element `idx` (linear). */
void ck_emit_epilogue(ck *k, const char *v, const char *idx);
/* The same with extra input x's value given as the f32 expression pre[x]
 * (already loaded by the caller) where pre and pre[x] are not NULL. */
void ck_emit_epilogue_pre(ck *k, const char *v, const char *idx, const char *const *pre);
void ck_store(ck *k, const char *idx, const char *v);
/* tasks = prod_i ceil(dims[i] / divs[i]) as a bm_task_expr: exact when at
 * most one dim is symbolic, else an upper bound (kernels loop over their own
 * exact count, so extra blocks do nothing). */
bm_task_expr ck_task_grid(const bm_graph *g, int n, const bm_dim *dims, const int64_t *divs);
/* tasks = ceil(prod(dims) / div). */
bm_task_expr ck_task_linear(const bm_graph *g, int n, const bm_dim *dims, int64_t div);
/* for (t over [0, count)) { ... } : the grid-stride loop over tasks */
void ck_loop_open(ck *k, const char *count);
void ck_loop_close(ck *k);
/* Copies element `off` of input buffer `buf` (dtype src) to output element
 * `i` (declared by the caller), converting to the node's dtype. */
void ck_copy_elem(ck *k, int buf, bm_dtype src, str off, const char *indent);

/* ---- emitters in their own files */
bm_status emit_matmul(ck *k);  /* emit_gemm.c */
bm_status emit_qmatmul(ck *k); /* emit_gemm.c */
bm_status emit_conv2d(ck *k);  /* emit_gemm.c */
/* an NHWC conv (layout BM_CONV_NHWC) the CUDA TMA conv takes (emit_gemm.c; bm_clike_supports) */
bool ck_conv_nhwc_ok(const bm_node *n);
/* PERMUTE of 16-bit elements swapping two blocks of dims (NCHW -> NHWC, (B, R, C)
 * -> (B, C, R)) as a tiled transpose (emit_movement.c; BM_CUDA_MOVE=old: NCHW -> NHWC only) */
bool ck_nhwc_transpose_ok(const bm_clike_lang *L, const bm_node *n);
bm_status emit_nhwc_transpose(ck *k);
/* The bandwidth paths of PERMUTE / SLICE / CONCAT / RESHAPE / UPSAMPLE in a language
 * with the CUDA prelude (emit_movement.c): true with *st set where one took node
 * k->n; false: emit.c's element-wise kernel (every op but the transpose under
 * BM_CUDA_MOVE=old, read at compile time). */
bool ck_movement_fast(ck *k, bm_status *st);
bm_status emit_attention(ck *k); /* emit_attention.c */
/* The skinny GEMM (emit_gemv.c): MATMUL with B (N, K) shared by every row
 * and QMATMUL, at most 16 rows (batch dims folded, symbols at their max;
 * the bound in *rows), in a language with the CUDA prelude's 16-byte loads. */
bool ck_gemv_ok(const bm_graph *g, const bm_clike_lang *L, const bm_node *n, int64_t *rows);
bm_status emit_gemv(ck *k);
/* MATMUL_GLU (x, w_gate, w_up) by the skinny GEMM: a warp streams half its
 * rows from each weight and the output thread applies act(gate) * up; and
 * RMS_MATMUL (x, w_norm, W [, W_up]): the rms_norm folded in. */
bm_status emit_matmul_glu(ck *k);
/* The small-M GEMM (emit_gemm_small.c): weight-streaming mma.sync for MATMUL
 * (B (N, K) shared by every row, bf16 x bf16/f32, f16 x f16) and QMATMUL
 * (int8/int4 x f32/bf16/f16) with at most 64 rows (the bound in *rows),
 * K static and a multiple of the chunk round; BM_CUDA_SMALLM=0 turns it off. */
bool ck_gemm_small_ok(const bm_graph *g, const bm_clike_lang *L, const bm_node *n, int64_t *rows);
/* Should this MATMUL/QMATMUL take it? ok and the rows in the measured range
 * (BM_CUDA_SMALLM_ROWS=lo-hi overrides it at compile time, for comparisons). */
bool ck_gemm_small_use(const bm_graph *g, const bm_clike_lang *L, const bm_node *n);
bm_status emit_gemm_small(ck *k);
/* QMATMUL n on the GEMV or the small-M GEMM (ck_gemm_small_use || ck_gemv_ok:
 * the rows at the symbols' maxima), as emit_qmatmul picks them (emit_gemm.c). */
bool ck_qmatmul_fast(const bm_graph *g, const bm_clike_lang *L, const bm_node *n);
/* Should QMATMUL n stay one kernel? Yes where ck_qmatmul_fast, where x is f32,
 * where x @ W^T with W in x's dtype would not get the tensor-core GEMM, and
 * for every QMATMUL with BM_CUDA_QGEMM=old (read by bmc: the scalar tile
 * above 64 rows, for comparisons); else the pipeline leaves it DEQUANT (to
 * x's dtype) + MATMUL on the TMA wgmma GEMM (fuse_dequant). Other ops: yes. */
bool ck_qmatmul_keep(const bm_graph *g, const bm_clike_lang *L, const bm_node *n);
/* MATMUL_GLU / RMS_MATMUL n (the skinny GEMM's fused forms) at the rows where
 * emit_matmul would give the unfused x @ W^T to the GEMV (fuse_horizontal asks
 * through bm_clike_supports_in). Other ops: yes. */
bool ck_skinny_fused_ok(const bm_graph *g, const bm_clike_lang *L, const bm_node *n);
/* Can emit_attention lower this ATTENTION node (head dims, shared memory)? */
bool ck_attention_ok(const bm_node *n);

/* emit_gemv.c: dst[0..SUB) = SUB f32/f16/bf16 elements at the byte pointer
 * `ptr` as f32, by volatile 16-byte (8-byte for SUB 4 of 16-bit) loads
 * (CUDA prelude; SUB 8 for 16-bit, a multiple of 4 for f32). */
void ck_load_floats(ck *k, const char *dst, const char *ptr, bm_dtype t, int SUB);

#endif
