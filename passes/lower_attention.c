/* lower_attention.c - ATTENTION -> softmax(Q K^T * scale) V as plain ops,
 * where the backend prefers that (its sized `supports_in` says no to the
 * fused node: CUDA for head dims above 256, which have no tensor-core
 * kernel). The scores are widened to f32 before the scale and the softmax
 * (the GEMM writes them as f32 when fuse_epilogue folds the cast into it),
 * P is rounded to the input dtype as the flash kernels round it, and the
 * two products run on the backend's GEMM. Only the plain form is lowered:
 * no mask, kv_len, causal mask, window or soft-cap, as many K/V heads as
 * query heads; anything else stays fused. */
#include <math.h>
#include <string.h>

#include "passes.h"

static bool plain_attention(const bm_node *n) {
  if (n->op != BM_OP_ATTENTION || n->nin != 3 || n->a.attn_flags || n->a.causal || n->a.window > 0 ||
      n->a.softcap != 0.0f || n->a.prog.n > 0)
    return false;
  const bm_node *q = n->in[0], *k = n->in[1], *v = n->in[2];
  if (q->ndim != 4 || k->ndim != 4 || v->ndim != 4) return false;
  if (q->dtype != k->dtype || q->dtype != v->dtype || n->dtype != q->dtype) return false;
  if (q->dtype != BM_DTYPE_F16 && q->dtype != BM_DTYPE_BF16) return false;
  return bm_dim_eq(q->shape[1], k->shape[1]) && bm_dim_eq(k->shape[1], v->shape[1]) && bm_dim_is_static(q->shape[3]);
}

bm_status bm_pass_lower_attention(bm_graph *g, const bm_pass_options *o) {
  if (!o || !o->supports_in) return NULL; /* only a backend that sizes its answer asks for this */
  int lowered = 0, n0 = g->nnodes;
  for (int i = 0; i < n0; i++) {
    bm_node *n = g->nodes[i];
    if (!plain_attention(n) || bm_pass_supports(o, g, n)) continue;
    bm_node *q = n->in[0], *k = n->in[1], *v = n->in[2];
    const float scale = n->a.attn_scale != 0.0f ? n->a.attn_scale : 1.0f / sqrtf((float)q->shape[3].add);
    bm_node *s = bm_cast(g, bm_matmul(g, q, k, false, true), BM_DTYPE_F32); /* (B, H, Sq, Sk) */
    bm_node *p = bm_cast(g, bm_softmax(g, bm_mul(g, s, bm_scalar(g, scale)), 3), q->dtype);
    bm_node *y = bm_matmul(g, p, v, false, false); /* (B, H, Sq, Dv) */
    bm_status st = bm_graph_status(g);
    if (st || !y || y->dtype != n->dtype || y->ndim != n->ndim)
      return bm_status_make(BM_ERR_INTERNAL, "lower_attention: node %d: %s", n->id,
                            st ? bm_status_message(st) : "the lowered form changed the type");
    if (n->name) y->name = n->name;
    bm_graph_replace_uses(g, n, y);
    lowered++;
  }
  return lowered ? bm_graph_compact(g) : NULL;
}
