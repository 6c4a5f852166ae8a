/* bm_abi.h - the ABI between generated kernels and the runtime.
 *
 * Standalone (stdint only): the code generators emit functions with exactly
 * this signature, and the runtime calls them. Changing anything here is a
 * package format change: bump BM_ABI_VERSION.
 *
 * A kernel implements one node of the final (fused) graph. Its work is split
 * into `ntasks` independent tasks; the runtime calls it with sub-ranges
 * [begin, end) of [0, ntasks) from its worker threads. ntasks is computed by
 * the runtime from the manifest's task expression (see bm_task_expr):
 *
 *   ntasks = ceil((mul * syms[sym] + add) / div) * factor     (sym >= 0)
 *   ntasks = ceil(add / div) * factor                          (sym <  0)
 *
 * bufs:    one pointer per kernel argument, in the order the manifest lists
 *          them: the node's inputs (including epilogue operands), then its
 *          output. Weights point into the mapped package, everything else
 *          into the session arena.
 * syms:    the bound values of the function's symbolic dimensions.
 * scratch: per-thread scratch of at least the kernel's declared scratch
 *          bytes, 64-byte aligned; not preserved between calls.
 */
#ifndef BM_ABI_H
#define BM_ABI_H

#include <stdint.h>

#define BM_ABI_VERSION 1

typedef void (*bm_kernel_fn)(void *const *bufs, const int64_t *syms,
                             int64_t begin, int64_t end, void *scratch);

typedef struct bm_task_expr {
  int32_t sym;    /* symbol index, or -1 */
  int64_t mul;    /* coefficient of the symbol */
  int64_t add;
  int64_t div;    /* >= 1 */
  int64_t factor; /* >= 1 */
} bm_task_expr;

static inline int64_t bm_task_count(const bm_task_expr *e, const int64_t *syms) {
  int64_t v = (e->sym >= 0 ? e->mul * syms[e->sym] : 0) + e->add;
  if (v <= 0) return 0;
  return ((v + e->div - 1) / e->div) * e->factor;
}

/* ---- GPU kernels (target "cuda"; docs/cuda.md)
 *
 * A GPU kernel is `extern "C" __global__ void SYMBOL(const bm_gpu_args a)`,
 * launched on the session's stream with min(ntasks, 2^31 - 1) blocks of the
 * kernel's thread count (given per kernel in the code bundle, see
 * cuda_bundle.h). ntasks is the same task expression as for CPU kernels,
 * read as a number of thread blocks; each block loops over tasks
 * blockIdx.x, blockIdx.x + gridDim.x, ... below the count it computes
 * itself from syms, so any grid size is correct. bufs are device pointers
 * in the manifest's argument order (inputs, then the output); no scratch. */
#define BM_GPU_MAX_ARGS 16
#define BM_GPU_MAX_SYMS 8

typedef struct bm_gpu_args {
  uint64_t bufs[BM_GPU_MAX_ARGS]; /* device addresses; unused entries 0 */
  int64_t syms[BM_GPU_MAX_SYMS];  /* bound symbol values; unused entries 0 */
  int64_t ntasks;                 /* the task count (informational) */
} bm_gpu_args;

#endif /* BM_ABI_H */
