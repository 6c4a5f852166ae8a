/* opcheck.h - compile a graph for the CPU and compare it with the reference
 * interpreter: the harness behind every per-op backend test.
 *
 * bm_opcheck() runs the interpreter on g (unmodified) with the given inputs,
 * then compiles g's module (fused or not) into a package in the test's tmp
 * dir, opens it with the runtime, runs it with `threads` threads, and
 * returns in *err the max relative error over all outputs
 * (max|out-ref| / max|ref|). The module is modified (compiled). */
#ifndef BM_OPCHECK_H
#define BM_OPCHECK_H

#include "../compiler/compile.h"
#include "../ir/interp.h"

typedef struct bm_opcheck_options {
  bool fuse;      /* run the fusion passes */
  int threads;    /* 0 = default */
  const char *package_path; /* NULL = tmp file */
  const char *target;       /* backend: NULL = "cpu"; "cuda" runs on the GPU */
} bm_opcheck_options;

bm_status bm_opcheck(bm_graph *g, const bm_tensor *inputs, const bm_opcheck_options *o,
                     double *err);

/* Convenience: f32 input tensors filled with uniform(-1, 1) from seed, for
 * every input of g (integer inputs get values in [0, 4)); bound symbol values
 * given in syms (NULL = their max). Caller frees each with bm_tensor_free. */
bm_status bm_opcheck_random_inputs(const bm_graph *g, const int64_t *syms, uint64_t seed,
                                   bm_tensor *inputs);

#endif
