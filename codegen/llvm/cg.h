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

/* ---- emitters (one file each) */
bm_status bm_cg_emit_elementwise(bm_cg *cg, bm_node *n, const char *symbol); /* elementwise.c: unary, binary, cast, FUSED */
bm_status bm_cg_emit_movement(bm_cg *cg, bm_node *n, const char *symbol);    /* movement.c: reshape(copy), permute, slice, concat, gather, pad, upsample, dequant */
bm_status bm_cg_emit_reduce(bm_cg *cg, bm_node *n, const char *symbol);      /* reduce.c: sum, mean, reduce_max, softmax */
bm_status bm_cg_emit_norm(bm_cg *cg, bm_node *n, const char *symbol);        /* norm.c: layer/group/rms norm */
bm_status bm_cg_emit_rope(bm_cg *cg, bm_node *n, const char *symbol);        /* rope.c */
bm_status bm_cg_emit_matmul(bm_cg *cg, bm_node *n, const char *symbol);      /* matmul.c: matmul, qmatmul */
bm_status bm_cg_emit_conv2d(bm_cg *cg, bm_node *n, const char *symbol);      /* conv.c */
bm_status bm_cg_emit_attention(bm_cg *cg, bm_node *n, const char *symbol);   /* attention.c: flash attention */

#endif
