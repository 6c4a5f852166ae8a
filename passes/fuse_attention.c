/* fuse_attention.c - rewrites the unfused attention pattern
 *   matmul(q, k, trans_b) -> [mul/div by a scalar CONST] -> [add mask]
 *     -> softmax(last axis) -> matmul(., v)
 * into one ATTENTION node, so the (Sq, Sk) score matrix is never stored.
 * k may also come as permute(k, (0, 1, 3, 2)) with trans_b = 0. */
#include <stdlib.h>
#include <string.h>

#include "../ir/interp.h"
#include "passes.h"

static bool single_use(const int *uses, const bm_node *n) { return uses[n->id] == 1; }

static bool has_epilogue(const bm_node *n) {
  return (bm_op_table[n->op].flags & BM_OPF_EPILOGUE) && n->a.prog.n > 0;
}

/* A CONST holding one element: its value as f32. */
static bool scalar_const(const bm_node *c, float *v) {
  if (c->op != BM_OP_CONST || !c->data) return false;
  for (int d = 0; d < c->ndim; d++)
    if (!bm_dim_is_one(c->shape[d])) return false;
  if (c->data_size < bm_dtype_nbytes(c->dtype, 1)) return false;
  *v = bm_load_f32(c->data, c->dtype, 0);
  return true;
}

static bool shape_eq(const bm_node *a, const bm_node *b) {
  if (a->ndim != b->ndim) return false;
  for (int d = 0; d < a->ndim; d++)
    if (!bm_dim_eq(a->shape[d], b->shape[d])) return false;
  return true;
}

/* The matched pattern ending at `out` (the second matmul). */
typedef struct attn_match {
  bm_node *q, *k, *v, *mask;
  float scale;
} attn_match;

static bool match(const int *uses, bm_node *out, attn_match *m) {
  memset(m, 0, sizeof *m);
  m->scale = 1.0f;
  if (out->op != BM_OP_MATMUL || has_epilogue(out) || out->a.trans_a || out->a.trans_b)
    return false;
  bm_node *sm = out->in[0];
  m->v = out->in[1];
  if (sm->op != BM_OP_SOFTMAX || !single_use(uses, sm) || sm->ndim != 4 || sm->a.axis != 3)
    return false;
  bm_node *x = sm->in[0];
  /* optional additive mask */
  if (x->op == BM_OP_ADD && single_use(uses, x)) {
    bm_node *a = x->in[0], *b = x->in[1];
    /* the scores side is the one that comes from a scale or the q.k matmul */
    bool a_scores = a->op == BM_OP_MATMUL || a->op == BM_OP_MUL || a->op == BM_OP_DIV;
    bm_node *scores = a_scores ? a : b, *mask = a_scores ? b : a;
    if (!shape_eq(scores, x)) return false; /* the mask must not grow the scores */
    m->mask = mask;
    x = scores;
  }
  /* optional scale by a scalar constant */
  float c;
  if ((x->op == BM_OP_MUL || x->op == BM_OP_DIV) && single_use(uses, x)) {
    bm_node *a = x->in[0], *b = x->in[1];
    if (x->op == BM_OP_MUL && scalar_const(a, &c) && shape_eq(b, x)) {
      m->scale = c;
      x = b;
    } else if (scalar_const(b, &c) && shape_eq(a, x)) {
      if (x->op == BM_OP_DIV) {
        if (c == 0.0f) return false;
        m->scale = 1.0f / c;
      } else {
        m->scale = c;
      }
      x = a;
    } else {
      return false;
    }
  }
  if (x->op != BM_OP_MATMUL || has_epilogue(x) || !single_use(uses, x) || x->a.trans_a)
    return false;
  if (m->scale == 0.0f) return false; /* ATTENTION reads scale 0 as 1/sqrt(D) */
  m->q = x->in[0];
  m->k = x->in[1];
  if (!x->a.trans_b) {
    /* k given as an explicit transpose (B, H, D, Sk): attend to its input */
    const bm_node *t = m->k;
    if (t->op != BM_OP_PERMUTE || t->ndim != 4 || t->a.perm[0] != 0 || t->a.perm[1] != 1 ||
        t->a.perm[2] != 3 || t->a.perm[3] != 2)
      return false;
    m->k = t->in[0];
  }
  if (m->q->ndim != 4 || m->k->ndim != 4 || m->v->ndim != 4 || out->ndim != 4) return false;
  /* q (B, H, Sq, D), k (B, H, Sk, D), v (B, H, Sk, Dv): batch and heads must
   * match exactly (matmul broadcasting is not attention's GQA) */
  for (int d = 0; d < 2; d++)
    if (!bm_dim_eq(m->q->shape[d], m->k->shape[d]) || !bm_dim_eq(m->q->shape[d], m->v->shape[d]))
      return false;
  if (!bm_dim_eq(m->k->shape[2], m->v->shape[2]) || !bm_dim_eq(m->q->shape[3], m->k->shape[3]))
    return false;
  if (m->mask && m->mask->ndim > 4) return false;
  return true;
}

bm_status bm_pass_fuse_attention(bm_graph *g, const bm_pass_options *o) {
  for (int i = 0; i < g->nnodes; i++) g->nodes[i]->id = i;
  int *uses = bm_graph_use_counts(g);
  if (!uses) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "fuse_attention: use counts");
  int fused = 0;
  for (int i = 0; i < g->nnodes; i++) {
    bm_node *out = g->nodes[i];
    attn_match m;
    if (!match(uses, out, &m)) continue;
    /* rewrite the final matmul in place: its inputs all come before it */
    bm_node saved = *out;
    memset(out->in, 0, sizeof out->in);
    memset(&out->a, 0, sizeof out->a);
    out->op = BM_OP_ATTENTION;
    out->in[0] = m.q;
    out->in[1] = m.k;
    out->in[2] = m.v;
    out->nin = 3;
    if (m.mask) {
      out->in[out->nin++] = m.mask;
      out->a.attn_flags = BM_ATTN_HAS_MASK;
    }
    out->a.attn_scale = m.scale;
    bm_status s = bm_node_infer(g, out);
    bool ok = !s && shape_eq(out, &saved) && out->dtype == saved.dtype && (!o || !o->supports || o->supports(out));
    bm_status_free(s);
    if (!ok) {
      *out = saved; /* not expressible as ATTENTION here: keep the unfused form */
      continue;
    }
    fused++;
  }
  free(uses);
  return fused ? bm_graph_compact(g) : NULL;
}
