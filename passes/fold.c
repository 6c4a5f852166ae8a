/* fold.c - constant folding: nodes whose inputs are all CONST are evaluated
 * with the reference interpreter and become CONSTs; plus trivial algebra
 * (x*1, x+0, reshape of reshape, identity and composed permutes).
 * WEIGHT nodes are not constants: their data is bound later. */
#include <string.h>

#include "../ir/interp.h"
#include "passes.h"

#define FOLD_MAX_ELEMS (1 << 20) /* larger results stay computed at run time */

static bool shape_eq(int na, const bm_dim *a, int nb, const bm_dim *b) {
  if (na != nb) return false;
  for (int d = 0; d < na; d++)
    if (!bm_dim_eq(a[d], b[d])) return false;
  return true;
}

static bool shape_static(const bm_node *n, int64_t *numel) {
  int64_t c = 1;
  for (int d = 0; d < n->ndim; d++) {
    if (!bm_dim_is_static(n->shape[d]) || n->shape[d].add < 0) return false;
    if (n->shape[d].add > 0 && c > INT64_MAX / n->shape[d].add) return false;
    c *= n->shape[d].add;
  }
  *numel = c;
  return true;
}

/* ---- evaluating a node on constant inputs */

/* Evaluates n (all inputs CONST) in a scratch module and turns n into a
 * CONST holding the result. *folded = false when n is not foldable. */
static bm_status fold_node(bm_graph *g, bm_node *n, bool *folded) {
  *folded = false;
  int64_t numel;
  /* DEQUANT is never folded: its q and scale are the quantized storage (a
   * folded one would store the weight in f32 / f16 instead) */
  if (n->op == BM_OP_DEQUANT || !shape_static(n, &numel) || numel > FOLD_MAX_ELEMS) return NULL;
  for (int k = 0; k < n->nin; k++)
    if (n->in[k]->op != BM_OP_CONST || !n->in[k]->data) return NULL;

  bm_module *m = bm_module_create("fold");
  if (!m) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "fold: cannot create a scratch module");
  bm_status s = NULL;
  bm_tensor out = {0};
  bm_graph *sg = bm_graph_create(m, "fold");
  bm_node *ins[BM_MAX_IN] = {0};
  for (int k = 0; sg && k < n->nin; k++) {
    const bm_node *c = n->in[k];
    int64_t shape[BM_MAX_DIMS];
    for (int d = 0; d < c->ndim; d++) shape[d] = c->shape[d].add;
    ins[k] = bm_const(sg, c->dtype, c->ndim, shape, c->data);
  }
  bm_node *r = NULL;
  if (sg) {
    if (n->op == BM_OP_RESHAPE || n->op == BM_OP_CAST)
      r = bm_node_make_typed(sg, n->op, n->nin, ins, &n->a, n->dtype, n->ndim, n->shape);
    else
      r = bm_node_make(sg, n->op, n->nin, ins, &n->a);
  }
  /* The scratch node must agree with the original; otherwise leave n alone. */
  if (!sg || !r || bm_graph_status(sg) || r->dtype != n->dtype ||
      !shape_eq(r->ndim, r->shape, n->ndim, n->shape))
    goto done;
  bm_output_add(sg, "y", r);
  if (bm_graph_status(sg)) goto done;
  s = bm_interp_run(sg, NULL, &out);
  if (s) {
    /* leave it to run time (which reports it in context), unless memory ran out */
    if (bm_status_code(s) == BM_ERR_OUT_OF_MEMORY)
      s = bm_status_wrap(s, "evaluating %s node %d", bm_op_name(n->op), n->id);
    else {
      bm_status_free(s);
      s = NULL;
    }
    goto done;
  }
  size_t nbytes = bm_dtype_nbytes(n->dtype, numel);
  if (bm_tensor_nbytes(&out) != nbytes || out.dtype != n->dtype) {
    s = bm_status_make(BM_ERR_INTERNAL, "fold: %s node %d evaluated to %zu bytes of %s, expected %zu of %s",
                       bm_op_name(n->op), n->id, bm_tensor_nbytes(&out), bm_dtype_name(out.dtype),
                       nbytes, bm_dtype_name(n->dtype));
    goto done;
  }
  void *data = bm_arena_alloc(g->module->arena, nbytes ? nbytes : 1);
  if (!data) {
    s = bm_status_make(BM_ERR_OUT_OF_MEMORY, "fold: %zu bytes for %s node %d", nbytes,
                       bm_op_name(n->op), n->id);
    goto done;
  }
  if (nbytes) memcpy(data, out.data, nbytes);
  n->op = BM_OP_CONST;
  n->nin = 0;
  memset(n->in, 0, sizeof n->in);
  memset(&n->a, 0, sizeof n->a);
  n->data = data;
  n->data_size = nbytes;
  *folded = true;
done:
  bm_tensor_free(&out);
  bm_module_destroy(m);
  return s;
}

/* ---- trivial algebra */

/* True if c is a CONST whose elements all equal v. */
static bool const_all(const bm_node *c, float v) {
  int64_t numel;
  if (c->op != BM_OP_CONST || !c->data || !shape_static(c, &numel) || numel > FOLD_MAX_ELEMS)
    return false;
  if (bm_dtype_nbytes(c->dtype, numel) > c->data_size) return false;
  for (int64_t i = 0; i < numel; i++)
    if (bm_load_f32(c->data, c->dtype, i) != v) return false;
  return true;
}

/* A node that computes exactly its operand x (same dtype and shape). */
static bool same_as(const bm_node *n, const bm_node *x) {
  return n->dtype == x->dtype && shape_eq(n->ndim, n->shape, x->ndim, x->shape);
}

/* Returns the node n can be replaced by, or NULL. May rewrite n's input
 * (then sets *changed). */
static bm_node *simplify(bm_node *n, bool *changed) {
  if ((bm_op_table[n->op].flags & BM_OPF_EPILOGUE) && n->a.prog.n > 0) return NULL;
  bm_node *a = n->nin > 0 ? n->in[0] : NULL, *b = n->nin > 1 ? n->in[1] : NULL;
  switch (n->op) {
  case BM_OP_MUL:
    if (const_all(b, 1.0f) && same_as(n, a)) return a;
    if (const_all(a, 1.0f) && same_as(n, b)) return b;
    return NULL;
  case BM_OP_DIV:
    return const_all(b, 1.0f) && same_as(n, a) ? a : NULL;
  case BM_OP_ADD:
    if (const_all(b, 0.0f) && same_as(n, a)) return a;
    if (const_all(a, 0.0f) && same_as(n, b)) return b;
    return NULL;
  case BM_OP_SUB:
    return const_all(b, 0.0f) && same_as(n, a) ? a : NULL;
  case BM_OP_RESHAPE:
    if (a->op == BM_OP_RESHAPE) { /* reshape(reshape(x)) = reshape(x) */
      n->in[0] = a = a->in[0];
      *changed = true;
    }
    return same_as(n, a) ? a : NULL;
  case BM_OP_PERMUTE: {
    if (a->op == BM_OP_PERMUTE) { /* permute(permute(x, p1), p2) = permute(x, p1[p2[i]]) */
      int32_t p[BM_MAX_DIMS];
      for (int i = 0; i < n->ndim; i++) p[i] = a->a.perm[n->a.perm[i]];
      memcpy(n->a.perm, p, sizeof(int32_t) * (size_t)n->ndim);
      n->in[0] = a = a->in[0];
      *changed = true;
    }
    for (int i = 0; i < n->ndim; i++)
      if (n->a.perm[i] != i) return NULL;
    return same_as(n, a) ? a : NULL;
  }
  default:
    return NULL;
  }
}

bm_status bm_pass_fold(bm_graph *g, const bm_pass_options *o) {
  (void)o;
  bool changed = false;
  for (int i = 0; i < g->nnodes; i++) g->nodes[i]->id = i;
  for (int i = 0; i < g->nnodes; i++) {
    bm_node *n = g->nodes[i];
    if (bm_op_table[n->op].flags & BM_OPF_SOURCE) continue;
    bool folded;
    BM_RETURN_IF_ERROR(fold_node(g, n, &folded));
    if (folded) {
      changed = true;
      continue;
    }
    bm_node *r = simplify(n, &changed);
    if (r) {
      bm_graph_replace_uses(g, n, r);
      changed = true;
    }
  }
  return changed ? bm_graph_compact(g) : NULL;
}
