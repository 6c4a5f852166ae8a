/* hoist_take_row.c - moves TAKE_ROW (a prefill keeps the logits of one row
 * per batch) above the row-wise ops that feed only it, so they run on that
 * row alone: in an LLM's prefill the last layer's o projection, its MLP and
 * the norms (take_row(x (B, S, D), last (B)) -> (B, 1, D)).
 *
 *   take_row(op(a, ..), i)  ->  op(take_row(a, i), ..)
 *
 * where op's value is read by take_rows of the same rows alone and op is row-wise: an
 * elementwise op whose inputs have its shape (each gets a take_row) or
 * cover its trailing dims only (a bias, a scale: kept), a CAST, an
 * RMS_NORM / LAYER_NORM over the last dim, a MATMUL x @ W (x (B, S, K), W 2-D).
 * It stops at anything else (the attention's head merge). The values of the
 * row are the same computation on fewer rows (a GEMM at 1 row may sum in
 * another order). Off unless BM_HOIST_TAKE_ROW=1 in bmc's environment (not
 * yet measured on the GPU: docs/cuda.md "Prefill"). */
#include <stdlib.h>
#include <string.h>

#include "passes.h"

static bool enabled(void) {
  const char *e = getenv("BM_HOIST_TAKE_ROW");
  return e && strcmp(e, "1") == 0;
}

static bool same_dims(const bm_node *a, const bm_node *b) {
  if (a->ndim != b->ndim) return false;
  for (int d = 0; d < a->ndim; d++)
    if (!bm_dim_eq(a->shape[d], b->shape[d])) return false;
  return true;
}

/* How input j of y (a row-wise op) goes below the take_row: 1 takes the row,
 * 0 stays as it is, -1 blocks the hoist. */
static int input_rule(const bm_node *y, int j) {
  const bm_node *in = y->in[j];
  switch (y->op) {
    case BM_OP_MATMUL:
      if (y->nin != 2 || y->a.trans_a || y->a.prog.n || y->ndim != 3) return -1;
      if (j == 0) return in->ndim == 3 && bm_dim_eq(in->shape[1], y->shape[1]) ? 1 : -1;
      return in->ndim == 2 ? 0 : -1;
    case BM_OP_RMS_NORM:
    case BM_OP_LAYER_NORM:
      if (y->a.prog.n) return -1;
      if (j == 0) return same_dims(in, y) ? 1 : -1;
      return in->ndim == 1 ? 0 : -1; /* weight, bias over the last dim */
    case BM_OP_CAST: return same_dims(in, y) ? 1 : -1;
    default:
      if (!(bm_op_table[y->op].flags & BM_OPF_EW) || y->op == BM_OP_FUSED) return -1;
      if (same_dims(in, y)) return 1;
      return in->ndim <= y->ndim - 2 ? 0 : -1; /* broadcast over the trailing dims only */
  }
}

/* One round over the take_rows present; *changed when one moved. A node
 * read only by take_rows of the same rows (the MLP's gate and up read one
 * norm) moves once: every such take_row becomes the one new node. */
static bm_status hoist_round(bm_graph *g, bool *changed) {
  const int n0 = g->nnodes;
  int *uses = bm_graph_use_counts(g), *tr = calloc((size_t)n0 + 1, sizeof *tr);
  bm_node **idx_of = calloc((size_t)n0 + 1, sizeof *idx_of), **moved = calloc((size_t)n0 + 1, sizeof *moved);
  bm_status s = NULL;
  if (!uses || !tr || !idx_of || !moved) {
    s = bm_status_make(BM_ERR_OUT_OF_MEMORY, "hoist_take_row: use counts of %d nodes", n0);
    goto done;
  }
  for (int i = 0; i < n0; i++) { /* take_row readers of each node, -1 where their rows differ */
    const bm_node *t = g->nodes[i];
    if (t->op != BM_OP_TAKE_ROW || t->in[0]->id < 0 || t->in[0]->id >= n0) continue;
    const int y = t->in[0]->id;
    if (tr[y] >= 0 && (!idx_of[y] || idx_of[y] == t->in[1])) {
      idx_of[y] = t->in[1];
      tr[y]++;
    } else {
      tr[y] = -1;
    }
  }
  for (int i = 0; i < n0; i++) {
    bm_node *t = g->nodes[i];
    if (t->op != BM_OP_TAKE_ROW) continue;
    bm_node *y = t->in[0], *idx = t->in[1];
    if (y->id < 0 || y->id >= n0 || tr[y->id] <= 0 || uses[y->id] != tr[y->id]) continue;
    bm_node *nn = moved[y->id];
    if (!nn) {
      bool ok = true;
      for (int j = 0; j < y->nin && ok; j++) ok = input_rule(y, j) >= 0;
      if (!ok) continue;
      bm_node *in[BM_MAX_IN];
      for (int j = 0; j < y->nin; j++) in[j] = input_rule(y, j) ? bm_take_row(g, y->in[j], idx) : y->in[j];
      nn = bm_node_make_typed(g, y->op, y->nin, in, &y->a, y->dtype, t->ndim, t->shape);
      if (!nn || bm_graph_status(g)) {
        s = bm_status_make(BM_ERR_INTERNAL, "hoist_take_row: rebuilding %s node %d on one row: %s",
                           bm_op_name(y->op), y->id, bm_status_message(bm_graph_status(g)));
        goto done;
      }
      moved[y->id] = nn;
    }
    bm_graph_replace_uses(g, t, nn);
    *changed = true;
  }
  if (*changed) s = bm_graph_compact(g);
done:
  free(uses);
  free(tr);
  free(idx_of);
  free(moved);
  return s;
}

bm_status bm_pass_hoist_take_row(bm_graph *g, const bm_pass_options *o) {
  (void)o;
  if (!enabled()) return NULL;
  for (int round = 0; round < 4096; round++) {
    bool changed = false;
    BM_RETURN_IF_ERROR(hoist_round(g, &changed));
    if (!changed) return NULL;
  }
  return NULL;
}
