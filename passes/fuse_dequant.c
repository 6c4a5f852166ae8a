/* fuse_dequant.c - matmul(x, dequant(q, s), trans_b) -> qmatmul(x, q, s):
 * quantized weights are then dequantized inside the matmul kernel instead
 * of being expanded to a full f32 matrix first. */
#include <stdlib.h>
#include <string.h>

#include "passes.h"

static bool shape_eq(const bm_node *a, const bm_node *b) {
  if (a->ndim != b->ndim) return false;
  for (int d = 0; d < a->ndim; d++)
    if (!bm_dim_eq(a->shape[d], b->shape[d])) return false;
  return true;
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
    if (dq->op != BM_OP_DEQUANT || uses[dq->id] != 1) continue;
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
    bool ok = !s && shape_eq(mm, &saved) && mm->dtype == saved.dtype &&
              (!o || !o->supports || o->supports(mm));
    bm_status_free(s);
    if (!ok) {
      *mm = saved; /* e.g. x is 1-D: keep the unfused form */
      continue;
    }
    fused++;
  }
  free(uses);
  return fused ? bm_graph_compact(g) : NULL;
}
