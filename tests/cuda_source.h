/* cuda_source.h - the CUDA C source a graph lowers to (the pass pipeline
 * with the C-like backend's capabilities, then the emitter), for the tests
 * that check which kernel a node gets by its source text (no NVRTC, no GPU). */
#ifndef BM_TESTS_CUDA_SOURCE_H
#define BM_TESTS_CUDA_SOURCE_H

#include <stdlib.h>
#include <string.h>

#include "../codegen/clike/clike.h"
#include "../passes/passes.h"
#include "testutil.h"

/* Runs the pipeline on g (a graph of m) and emits m for CUDA; returns a
 * copy of the source (caller frees) or NULL after a failed check. */
static inline char *bm_test_cuda_source(bm_module *m, bm_graph *g) {
  bm_pass_options po = {0};
  po.supports = bm_clike_supports;
  CHECK_OK(bm_pipeline_run(g, &po));
  bm_clike_out out;
  CHECK_OK(bm_clike_emit_module(&bm_clike_cuda, m, &out));
  char *src = out.src.s ? strdup(out.src.s) : NULL;
  bm_clike_out_free(&out);
  return src;
}

#endif
