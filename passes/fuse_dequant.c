/* fuse_dequant.c - matmul(x, dequant(q, s), trans_b) -> qmatmul(x, q, s):
 * quantized weights are then dequantized inside the matmul kernel instead
 * of being expanded to a full f32 matrix first.
 *
 * Where the backend declines the QMATMUL (bm_pass_supports: the CUDA backend
 * with more rows than its GEMV / small-M kernels take, ck_qmatmul_keep) and
 * x is f16/bf16, the pair stays unfused with the DEQUANT retyped to x's
 * dtype: one bandwidth-bound kernel writes q * s rounded to f16/bf16 into
 * the activation arena (the planner reuses the buffer from layer to layer)
 * and the MATMUL is an f16/bf16 GEMM (CUDA: the TMA wgmma kernel), as
 * llama.cpp does for large batches. The rows at the symbols' maxima decide:
 * a prefill function that serves 5-token and 2048-token prompts gets the
 * DEQUANT at every call. A DEQUANT that is already f16/bf16 (made typed) is
 * left alone. */
#include <stdlib.h>
#include <string.h>

#include "passes.h"

static bool shape_eq(const bm_node *a, const bm_node *b) {
  if (a->ndim != b->ndim) return false;
  for (int d = 0; d < a->ndim; d++)
    if (!bm_dim_eq(a->shape[d], b->shape[d])) return false;
  return true;
}

/* The declined pair: dq (f32, read by mm alone) becomes x's f16/bf16 where
 * the backend supports both nodes so; else both are restored. */
static void retype_dequant(bm_graph *g, const bm_pass_options *o, bm_node *mm, bm_node *dq) {
  bm_dtype t = mm->in[0]->dtype;
  if (t != BM_DTYPE_F16 && t != BM_DTYPE_BF16) return;
  bm_node sd = *dq, sm = *mm;
  dq->dtype = t;
  bm_status s = bm_node_infer(g, dq);
  if (!s) s = bm_node_infer(g, mm);
  bool ok = !s && dq->dtype == t && mm->dtype == sm.dtype && shape_eq(mm, &sm) && bm_pass_supports(o, g, dq) &&
            bm_pass_supports(o, g, mm);
  bm_status_free(s);
  if (!ok) *dq = sd, *mm = sm;
}

bm_status bm_pass_fuse_dequant(bm_graph *g, const bm_pass_options *o) {
  for (int i = 0; i < g->nnodes; i++) g->nodes[i]->id = i;
  int *uses = bm_graph_use_counts(g);
  if (!uses) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "fuse_dequant: use counts");
  int fused = 0;
  for (int i = 0; i < g->nnodes; i++) {
    bm_node *mm = g->nodes[i];
    if (mm->op != BM_OP_MATMUL || mm->a.prog.n > 0 || mm->a.trans_a || !mm->a.trans_b) continue;
    bm_node *x = mm->in[0], *dq = mm->in[1];
    if (dq->op != BM_OP_DEQUANT || dq->dtype != BM_DTYPE_F32 || uses[dq->id] != 1) continue;
    /* rewrite the matmul in place; q and s come before the dequant */
    bm_node saved = *mm;
    memset(mm->in, 0, sizeof mm->in);
    memset(&mm->a, 0, sizeof mm->a);
    mm->op = BM_OP_QMATMUL;
    mm->in[0] = x;
    mm->in[1] = dq->in[0];
    mm->in[2] = dq->in[1];
    mm->nin = 3;
    bm_status s = bm_node_infer(g, mm);
    bool ok = !s && shape_eq(mm, &saved) && mm->dtype == saved.dtype;
    bm_status_free(s);
    bool declined = ok && !bm_pass_supports(o, g, mm);
    if (!ok || declined) {
      *mm = saved; /* e.g. x is 1-D: keep the unfused form */
      if (declined) retype_dequant(g, o, mm, dq);
      continue;
    }
    fused++;
  }
  free(uses);
  return fused ? bm_graph_compact(g) : NULL;
}
