/* clike.h - the C-like kernel emitter shared by the GPU backends (CUDA now,
 * Metal later). It lowers every kernel node of a module to source text in a
 * small C dialect; the languages differ only in a bm_clike_lang table.
 *
 * Generated kernels use these names, which each language's prelude defines:
 *   bm_i64                       64-bit signed integer type
 *   BM_DEV                       qualifier of a device helper function
 *   BM_GLOBAL / BM_SHARED_PTR    address space of buffer / shared pointers
 *   BM_SHARED                    declares a block-shared array (in a kernel)
 *   BM_SYNC()                    block barrier
 *   BM_SHFL_XOR(v, m), BM_SHFL(v, lane), BM_SHFL_UP(v, d)   warp (simdgroup of 32) shuffles
 *   bm_h2f, bm_f2h, bm_f2bf, bm_bits_f32, bm_f32_bits   conversions
 *   BM_INF, BM_NAN
 * and the kernel header (lang->kernel_open) defines the locals
 *   tid (int, thread in block), bid (bm_i64, block), nblk (bm_i64, blocks),
 *   bm_buf(i) (const BM_GLOBAL unsigned char *, argument i) and S<k>
 *   (bm_i64, the value of symbol k).
 * The device library (lib.c) is written once in this dialect.
 */
#ifndef BM_CLIKE_H
#define BM_CLIKE_H

#include "../codegen.h"

/* A growing string (malloc'd). */
typedef struct bm_sb {
  char *s;
  size_t len, cap;
  int oom;
} bm_sb;
void bm_sb_printf(bm_sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void bm_sb_puts(bm_sb *b, const char *s);
void bm_sb_free(bm_sb *b);

/* The language table. */
typedef struct bm_clike_lang {
  const char *name;     /* "cuda", "metal" */
  const char *prelude;  /* defines the names above */
  /* printf format of a kernel's opening, through its first '{' and the
   * locals above: %1$s the symbol, %2$d the threads per block, %3$d the
   * blocks per multiprocessor to plan registers for (CUDA; may be unused). */
  const char *kernel_open;
  const char *kernel_close; /* "}\n" */
  /* 1: the prelude defines the tensor-core helpers (bm_cp_async16,
   * bm_cp_commit, bm_cp_wait, bm_ldsm_x4[_t], bm_mma_f16/bf16: CUDA sm_80+
   * mma.sync m16n8k16 with f32 accumulation), so f16/bf16 MATMUL uses the
   * tensor-core tile (emit.c, emit_gemm_tc); 2: also the Hopper helpers
 * (bm_wgmma_*, defined only under __CUDA_ARCH_FEAT_SM90_ALL), so MATMUL with
 * K-major f16/bf16 operands gets a wgmma body for sm_90a beside the mma.sync
 * one (emit_gemm.c); 0: scalar tiles only. */
  int tensor_cores;
} bm_clike_lang;

extern const bm_clike_lang bm_clike_cuda;  /* codegen/cuda/lang.c */
extern const bm_clike_lang bm_clike_metal; /* codegen/metal/lang.c (not compiled anywhere yet) */
extern const char bm_clike_lib[];          /* codegen/clike/lib.c */

/* A kernel of the emitted source and how to launch it. */
typedef struct bm_clike_kernel {
  char *symbol;     /* malloc'd */
  int threads;      /* threads per block */
  int smem;         /* dynamic shared memory bytes (0: static shared memory only); the
                     * kernel declares it as `extern __shared__` (CUDA) */
} bm_clike_kernel;

typedef struct bm_clike_out {
  bm_sb src;                /* prelude + library + kernels */
  bm_clike_kernel *kernels; /* unique kernels (identical bodies are emitted once) */
  int nkernels, cap;
} bm_clike_out;
void bm_clike_out_free(bm_clike_out *o);

/* Can the emitter lower node n (dtypes, programs, shapes)? */
int bm_clike_supports(const bm_node *n);
/* The same for node n of graph g in language L, where the answer depends on
 * the rows at the symbols' maxima (emit_internal.h: QMATMUL only where its
 * GEMV / small-M kernels take it, ck_qmatmul_keep; MATMUL_GLU and RMS_MATMUL
 * where the unfused matmul would run on the GEMV, ck_skinny_fused_ok).
 * bm_clike_cuda_supports_in: L = bm_clike_cuda (bm_pass_options.supports_in). */
int bm_clike_supports_in(const bm_clike_lang *L, const bm_graph *g, const bm_node *n);
int bm_clike_cuda_supports_in(const bm_graph *g, const bm_node *n);

/* Emits every kernel of every graph of m (after the pass pipeline) into
 * out, and sets node->kernel, tasks and scratch (0). A kernel's task count
 * is its number of thread blocks (see bm_abi.h, "CUDA kernels"). */
bm_status bm_clike_emit_module(const bm_clike_lang *L, bm_module *m, bm_clike_out *out);

#endif
