/* fuse_horizontal.c - horizontal fusion of linear layers that read the same
 * activation (an attention's q/k/v projections): one MATMUL over weights
 * concatenated along N at compile time, its parts read back as SLICEs; and,
 * where those slices are views (decode at batch 1), the q and k ropes of
 * adjacent parts merged into one ROPE.
 *
 *   y_i = x @ W_i^T [+ b_i]   (i < n, same x, W_i (N_i, K) bound WEIGHTs)
 *   ->  y = x @ [W_0; ..; W_n-1]^T [+ [b_0; ..; b_n-1]],  y_i = y[..., off_i : off_i + N_i]
 *
 * A group is fused only when every part's value (after its bias) is read by
 * non-elementwise ops alone (rope, rms_norm, kv_write, reshape...): a part
 * read by an elementwise chain (a gated MLP's silu(gate) * up) would lose
 * its epilogue fusion, and where the slices are copies (prefill) they would
 * cost more than the launch saved. The decision depends on the graph's
 * structure only, so every function of a package (prefill, decode) fuses
 * the same weights: the concatenated weight replaces the parts (shared by
 * name, stored once). Quantized weights (DEQUANT after `quantize`) and
 * weights read elsewhere too (tied) are not fused. The SLICEs are views (no
 * kernel) when the parts are contiguous in y, i.e. every leading dim is at
 * most 1 (bm_slice_view, plan_memory.c).
 * A gated MLP's act(x @ W_g^T) * (x @ W_u^T) (act silu or gelu_tanh) becomes
 * one MATMUL_GLU (x, W_g, W_u) where the backend supports it at x's rows
 * (bm_pass_supports: CUDA says yes where its emitter would run the unfused
 * matmuls on the skinny GEMM, which then streams both weights and writes the
 * product; decode); the weights are not copied, so prefill (more rows: two
 * GEMMs) shares them.
 * Then, with the same backend check, an rms_norm whose only
 * reader is such a linear layer (the fused q/k/v matmul, a MATMUL_GLU) is
 * folded into it: RMS_MATMUL (x, w_norm, W [, W_up]).
 * BM_NO_HFUSE=1 in bmc's environment turns the pass off (A/B); BM_NO_GLU=1
 * only the gated-MLP fusion, BM_NO_RMSMM=1 only the norm folding. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "passes.h"

#define MAX_PARTS 8

static bool env_set(const char *name) {
  const char *e = getenv(name);
  return e && *e && strcmp(e, "0") != 0;
}

static bool env_off(void) { return env_set("BM_NO_HFUSE"); }

static bool static2(const bm_node *w) {
  return w->ndim == 2 && bm_dim_is_static(w->shape[0]) && bm_dim_is_static(w->shape[1]);
}

/* A linear layer x @ W^T with W a bound 2-D float WEIGHT, no epilogue yet. */
static bool is_linear(const bm_node *m) {
  if (m->op != BM_OP_MATMUL || m->nin != 2 || m->a.trans_a || !m->a.trans_b || m->a.prog.n) return false;
  const bm_node *w = m->in[1];
  return w->op == BM_OP_WEIGHT && w->data && w->name && static2(w) && m->in[0] != w &&
         (w->dtype == BM_DTYPE_F32 || w->dtype == BM_DTYPE_F16 || w->dtype == BM_DTYPE_BF16);
}

/* The single user of m if it is add(m, bias) with bias a bound 1-D WEIGHT
 * of length N (the bias of a linear layer); else NULL. */
static bm_node *bias_add(const bm_graph *g, const int *uses, const bm_node *m) {
  if (uses[m->id] != 1) return NULL;
  for (int i = m->id + 1; i < g->nnodes; i++) {
    bm_node *u = g->nodes[i];
    if (u->op != BM_OP_ADD || u->nin != 2 || u->in[0] != m) continue;
    const bm_node *b = u->in[1];
    if (b->op == BM_OP_WEIGHT && b->data && b->name && b->ndim == 1 && bm_dim_is_static(b->shape[0]) &&
        b->shape[0].add == m->in[1]->shape[0].add && u->dtype == m->dtype && u->ndim == m->ndim)
      return u;
  }
  return NULL;
}

/* True if every use of v is a non-elementwise op (through reshapes) or a
 * graph output. */
static bool read_by_non_ew(const bm_graph *g, const bm_node *v, int depth) {
  if (depth > 8) return false;
  for (int i = v->id + 1; i < g->nnodes; i++) {
    const bm_node *u = g->nodes[i];
    for (int k = 0; k < u->nin; k++) {
      if (u->in[k] != v) continue;
      if (u->op == BM_OP_RESHAPE) {
        if (!read_by_non_ew(g, u, depth + 1)) return false;
      } else if (bm_op_table[u->op].flags & BM_OPF_EW) {
        return false;
      }
    }
  }
  return true;
}

/* The weight named `name` already made by this pass in another function of
 * the module (so the concatenation is stored once), or NULL. */
static const bm_node *find_made(const bm_graph *g, const char *name, bm_dtype t, size_t bytes) {
  const bm_module *m = g->module;
  for (int k = 0; m && k < m->ngraphs; k++) {
    const bm_graph *o = m->graphs[k];
    if (o == g) continue;
    for (int i = 0; i < o->nnodes; i++) {
      const bm_node *w = o->nodes[i];
      if (w->op == BM_OP_WEIGHT && w->name && w->data && w->dtype == t && w->data_size == bytes &&
          !strcmp(w->name, name))
        return w;
    }
  }
  return NULL;
}

/* One WEIGHT holding the parts' data one after the other (rows for 2-D
 * matrices, entries for 1-D biases), named "<p0>+<p1>+...". */
static bm_status concat_weights(bm_graph *g, int n, bm_node *const *parts, bm_node **out) {
  *out = NULL;
  size_t bytes = 0, nlen = 1;
  int64_t rows = 0;
  for (int i = 0; i < n; i++) {
    bytes += parts[i]->data_size;
    rows += parts[i]->shape[0].add;
    nlen += strlen(parts[i]->name) + 1;
  }
  char *name = bm_arena_alloc(g->module->arena, nlen);
  if (!name) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "fuse_horizontal: name of %d weights", n);
  for (int i = 0; i < n; i++) {
    if (i) strcat(name, "+");
    strcat(name, parts[i]->name);
  }
  const bm_node *made = find_made(g, name, parts[0]->dtype, bytes);
  const void *data = made ? made->data : NULL;
  if (!data) {
    char *d = bm_arena_alloc(g->module->arena, bytes);
    if (!d) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "fuse_horizontal: %zu bytes for '%s'", bytes, name);
    size_t at = 0;
    for (int i = 0; i < n; i++) {
      memcpy(d + at, parts[i]->data, parts[i]->data_size);
      at += parts[i]->data_size;
    }
    data = d;
  }
  int64_t shape[2] = {rows, parts[0]->ndim == 2 ? parts[0]->shape[1].add : 0};
  *out = bm_weight(g, name, parts[0]->dtype, parts[0]->ndim, shape, data, bytes);
  if (!*out) {
    bm_status e = bm_graph_status(g);
    return bm_status_make(BM_ERR_INTERNAL, "fuse_horizontal: weight '%s': %s", name, e ? bm_status_message(e) : "?");
  }
  return NULL;
}

static bm_node *slice_last(bm_graph *g, bm_node *y, int64_t b, int64_t e) {
  return bm_slice(g, y, y->ndim - 1, b, e, 1);
}

/* Fuses the group ms[0..n) (linear layers of one x; bias adds in adds[] or
 * all NULL). */
static bm_status fuse_group(bm_graph *g, int n, bm_node **ms, bm_node **adds) {
  bm_node *ws[MAX_PARTS], *bs[MAX_PARTS];
  for (int i = 0; i < n; i++) {
    ws[i] = ms[i]->in[1];
    bs[i] = adds[0] ? adds[i]->in[1] : NULL;
  }
  bm_node *wcat, *bcat = NULL;
  BM_RETURN_IF_ERROR(concat_weights(g, n, ws, &wcat));
  if (adds[0]) BM_RETURN_IF_ERROR(concat_weights(g, n, bs, &bcat));
  bm_node *y = bm_matmul(g, ms[0]->in[0], wcat, false, true); /* (..., sum N_i) */
  if (y && bcat) y = bm_add(g, y, bcat);
  if (!y) {
    bm_status e = bm_graph_status(g);
    return bm_status_make(BM_ERR_INTERNAL, "fuse_horizontal: fused matmul: %s", e ? bm_status_message(e) : "?");
  }
  int64_t off = 0;
  for (int i = 0; i < n; i++) {
    int64_t ni = ws[i]->shape[0].add;
    bm_node *old = adds[0] ? adds[i] : ms[i];
    bm_node *part = slice_last(g, y, off, off + ni);
    if (!part || part->dtype != old->dtype || part->ndim != old->ndim) {
      bm_status e = bm_graph_status(g);
      return bm_status_make(BM_ERR_INTERNAL, "fuse_horizontal: part %d of '%s': %s", i, wcat->name,
                            e ? bm_status_message(e) : "type changed");
    }
    bm_graph_replace_uses(g, old, part);
    off += ni;
  }
  return NULL;
}

/* ---- the q and k ropes of one fused projection -> one rope */

/* If x is reshape(slice(t, last axis, [b, e))) with t's leading dims at
 * most 1 (the slice a view), returns t and the range. */
static bm_node *part_of(const bm_graph *g, bm_node *x, int64_t *b, int64_t *e) {
  if (x->op != BM_OP_RESHAPE) return NULL;
  bm_node *s = x->in[0];
  if (s->op != BM_OP_SLICE || s->a.step != 1) return NULL;
  bm_node *t = s->in[0];
  if (s->a.axis != t->ndim - 1) return NULL;
  int64_t off;
  if (!bm_slice_view(g, s, &off)) return NULL;
  *b = s->a.begin;
  *e = s->a.end;
  return t;
}

static bool same_lead(const bm_node *a, const bm_node *b) {
  if (a->ndim != b->ndim) return false;
  for (int d = 0; d < a->ndim - 2; d++)
    if (!bm_dim_eq(a->shape[d], b->shape[d])) return false;
  return bm_dim_eq(a->shape[a->ndim - 1], b->shape[b->ndim - 1]);
}

static int merge_ropes(bm_graph *g, bm_status *st) {
  int merged = 0, n = g->nnodes;
  for (int i = 0; i < n; i++) {
    bm_node *r1 = g->nodes[i];
    if (r1->op != BM_OP_ROPE || r1->ndim != 4) continue;
    int64_t b1, e1;
    bm_node *t = part_of(g, r1->in[0], &b1, &e1);
    if (!t) continue;
    for (int j = 0; j < n; j++) {
      bm_node *r2 = g->nodes[j];
      int64_t b2, e2;
      if (r2 == r1 || r2->op != BM_OP_ROPE || r2->ndim != 4 || part_of(g, r2->in[0], &b2, &e2) != t ||
          b2 != e1 || r2->in[1] != r1->in[1] || r2->in[2] != r1->in[2] || r2->a.rope_mode != r1->a.rope_mode ||
          r2->dtype != r1->dtype || !same_lead(r1, r2) || !bm_dim_is_static(r1->shape[2]) ||
          !bm_dim_is_static(r2->shape[2]))
        continue;
      /* rope over heads [h1 | h2] of t[..., b1:e2] */
      int64_t h1 = r1->shape[2].add, h2 = r2->shape[2].add;
      bm_dim shp[4] = {r1->shape[0], r1->shape[1], bm_dim_c(h1 + h2), r1->shape[3]};
      bm_node *s = slice_last(g, t, b1, e2);
      bm_node *x = s ? bm_reshape_d(g, s, 4, shp) : NULL;
      bm_attrs ra = r1->a;
      bm_node *in[3] = {x, r1->in[1], r1->in[2]};
      bm_node *r = x ? bm_node_make(g, BM_OP_ROPE, 3, in, &ra) : NULL;
      bm_node *p1 = r ? bm_slice(g, r, 2, 0, h1, 1) : NULL;
      bm_node *p2 = r ? bm_slice(g, r, 2, h1, h1 + h2, 1) : NULL;
      int64_t o1, o2;
      if (!p1 || !p2 || r->dtype != r1->dtype || !bm_slice_view(g, p1, &o1) || !bm_slice_view(g, p2, &o2)) {
        bm_status e = bm_graph_status(g);
        if (e) *st = bm_status_make(BM_ERR_INTERNAL, "fuse_horizontal: merged rope: %s", bm_status_message(e));
        return merged; /* unused new nodes go at the compaction */
      }
      if (r1->name) r->name = r1->name;
      bm_graph_replace_uses(g, r1, p1);
      bm_graph_replace_uses(g, r2, p2);
      merged++;
      break;
    }
  }
  return merged;
}

/* ---- gated MLP: act(x @ W_g^T) * (x @ W_u^T) -> matmul_glu(x, W_g, W_u) */

/* The rows of the fused skinny forms are the backend's call: its sized
 * answer (supports_in; CUDA: where emit_matmul would give the unfused x @ W^T
 * to the GEMV, ck_skinny_fused_ok) decides alone. A backend with `supports`
 * alone cannot tell rows apart and gets them at decode sizes only: at most
 * DECODE_ROWS rows. */
#define DECODE_ROWS 4

static bool few_rows(const bm_graph *g, const bm_node *x, int64_t K) {
  int64_t nx = bm_node_numel_max(g, x);
  return K > 0 && nx >= 0 && nx / K <= DECODE_ROWS;
}

/* Make the fused node tmp (MATMUL_GLU, RMS_MATMUL) whose rows are x's (K wide)? */
static bool skinny_ok(const bm_graph *g, const bm_pass_options *o, const bm_node *tmp, const bm_node *x, int64_t K) {
  if (o->supports_in) return o->supports_in(g, tmp);
  return few_rows(g, x, K) && o->supports(tmp);
}

/* If a is act(linear g) with g used only there, returns g and sets *act. */
static bm_node *glu_gate(const int *uses, bm_node *a, int32_t *act) {
  if ((a->op != BM_OP_SILU && a->op != BM_OP_GELU_TANH) || uses[a->id] != 1) return NULL;
  bm_node *m = a->in[0];
  if (!is_linear(m) || uses[m->id] != 1 || a->dtype != m->dtype) return NULL;
  *act = (int32_t)a->op;
  return m;
}

static int fuse_glu(bm_graph *g, const bm_pass_options *o, const int *uses, int n0, bm_status *st) {
  if (!o || (!o->supports && !o->supports_in) || env_set("BM_NO_GLU")) return 0;
  int made = 0;
  for (int i = 0; i < n0; i++) {
    bm_node *h = g->nodes[i];
    if (h->op != BM_OP_MUL || h->nin != 2) continue;
    for (int s = 0; s < 2; s++) {
      int32_t act = 0;
      bm_node *gm = glu_gate(uses, h->in[s], &act), *um = h->in[1 - s];
      if (!gm || !is_linear(um) || uses[um->id] != 1 || um->in[0] != gm->in[0] || um->dtype != gm->dtype ||
          h->dtype != gm->dtype || !bm_dim_eq(um->in[1]->shape[0], gm->in[1]->shape[0]) ||
          um->in[1]->shape[1].add != gm->in[1]->shape[1].add || um->in[1]->dtype != gm->in[1]->dtype ||
          h->ndim != gm->ndim || !bm_dim_eq(h->shape[h->ndim - 1], gm->shape[gm->ndim - 1]))
        continue;
      bm_node *x = gm->in[0];
      bm_node tmp;
      memset(&tmp, 0, sizeof tmp);
      tmp.op = BM_OP_MATMUL_GLU, tmp.nin = 3, tmp.dtype = h->dtype, tmp.ndim = h->ndim;
      tmp.in[0] = x, tmp.in[1] = gm->in[1], tmp.in[2] = um->in[1], tmp.a.act = act;
      memcpy(tmp.shape, h->shape, sizeof tmp.shape);
      if (!skinny_ok(g, o, &tmp, x, gm->in[1]->shape[1].add)) continue; /* prefill: two GEMMs */
      bm_attrs a;
      memset(&a, 0, sizeof a);
      a.act = act;
      bm_node *y = bm_node_make(g, BM_OP_MATMUL_GLU, 3, tmp.in, &a);
      if (!y || y->dtype != h->dtype || y->ndim != h->ndim) {
        bm_status e = bm_graph_status(g);
        *st = bm_status_make(BM_ERR_INTERNAL, "fuse_horizontal: matmul_glu of '%s' and '%s': %s", gm->in[1]->name,
                             um->in[1]->name, e ? bm_status_message(e) : "type changed");
        return made;
      }
      if (h->name) y->name = h->name;
      bm_graph_replace_uses(g, h, y);
      made++;
      break;
    }
  }
  return made;
}

/* ---- rms_norm(x) -> linear (or MATMUL_GLU) -> RMS_MATMUL */

static int fuse_rms(bm_graph *g, const bm_pass_options *o, bm_status *st) {
  if (!o || (!o->supports && !o->supports_in) || env_set("BM_NO_RMSMM")) return 0;
  for (int i = 0; i < g->nnodes; i++) g->nodes[i]->id = i;
  int *uses = bm_graph_use_counts(g);
  if (!uses) {
    *st = bm_status_make(BM_ERR_OUT_OF_MEMORY, "fuse_horizontal: %d nodes", g->nnodes);
    return 0;
  }
  int made = 0, n0 = g->nnodes;
  for (int i = 0; i < n0 && !*st; i++) {
    bm_node *m = g->nodes[i];
    bool glu = m->op == BM_OP_MATMUL_GLU;
    if (!glu && !is_linear(m)) continue;
    bm_node *r = m->in[0];
    if (r->op != BM_OP_RMS_NORM || r->nin != 2 || r->a.prog.n || uses[r->id] != 1 || r->in[1]->op != BM_OP_WEIGHT ||
        r->in[1]->ndim != 1 || r->dtype != r->in[0]->dtype || r->dtype != m->dtype || r->ndim < 1)
      continue;
    bm_node tmp;
    memset(&tmp, 0, sizeof tmp);
    tmp.op = BM_OP_RMS_MATMUL, tmp.dtype = m->dtype, tmp.ndim = m->ndim;
    tmp.in[0] = r->in[0], tmp.in[1] = r->in[1], tmp.in[2] = m->in[1];
    tmp.nin = glu ? 4 : 3;
    if (glu) tmp.in[3] = m->in[2];
    tmp.a.eps = r->a.eps, tmp.a.act = glu ? m->a.act : 0;
    memcpy(tmp.shape, m->shape, sizeof tmp.shape);
    if (!skinny_ok(g, o, &tmp, r, m->in[1]->shape[1].add)) continue;
    bm_attrs a;
    memset(&a, 0, sizeof a);
    a.eps = tmp.a.eps, a.act = tmp.a.act;
    bm_node *y = bm_node_make(g, BM_OP_RMS_MATMUL, tmp.nin, tmp.in, &a);
    if (!y || y->dtype != m->dtype || y->ndim != m->ndim) {
      bm_status e = bm_graph_status(g);
      *st = bm_status_make(BM_ERR_INTERNAL, "fuse_horizontal: rms_matmul of '%s': %s", m->in[1]->name ? m->in[1]->name : "?",
                           e ? bm_status_message(e) : "type changed");
      break;
    }
    if (m->name) y->name = m->name;
    bm_graph_replace_uses(g, m, y);
    made++;
  }
  free(uses);
  return made;
}

bm_status bm_pass_fuse_horizontal(bm_graph *g, const bm_pass_options *o) {
  if (env_off()) return NULL;
  int n0 = g->nnodes, changed = 0;
  for (int i = 0; i < n0; i++) g->nodes[i]->id = i;
  int *uses = bm_graph_use_counts(g);
  bool *done = calloc((size_t)n0 + 1, sizeof *done);
  if (!uses || !done) {
    free(uses), free(done);
    return bm_status_make(BM_ERR_OUT_OF_MEMORY, "fuse_horizontal: %d nodes", n0);
  }
  bm_status st = NULL;
  for (int i = 0; i < n0 && !st; i++) {
    bm_node *m = g->nodes[i];
    if (done[i] || !is_linear(m)) continue;
    bm_node *ms[MAX_PARTS], *adds[MAX_PARTS];
    int n = 0;
    for (int j = i; j < n0 && n < MAX_PARTS; j++) {
      bm_node *c = g->nodes[j];
      if (done[j] || !is_linear(c) || c->in[0] != m->in[0] || c->in[1]->dtype != m->in[1]->dtype ||
          c->in[1]->shape[1].add != m->in[1]->shape[1].add || c->dtype != m->dtype || (c->in[1] == m->in[1] && j != i))
        continue;
      ms[n] = c;
      adds[n] = bias_add(g, uses, c);
      n++;
    }
    for (int k = 0; k < n; k++) done[ms[k]->id] = true;
    if (n < 2) continue;
    bool ok = true;
    for (int k = 0; k < n && ok; k++) {
      if ((adds[k] != NULL) != (adds[0] != NULL)) ok = false;
      else if (!read_by_non_ew(g, adds[k] ? adds[k] : ms[k], 0)) ok = false;
      else if (adds[k] && adds[k]->in[1]->dtype != adds[0]->in[1]->dtype) ok = false;
      /* a weight read elsewhere too (tied) would be stored twice */
      else if (uses[ms[k]->in[1]->id] != 1 || (adds[k] && uses[adds[k]->in[1]->id] != 1)) ok = false;
    }
    if (!ok) continue;
    st = fuse_group(g, n, ms, adds);
    changed++;
  }
  if (!st) changed += fuse_glu(g, o, uses, n0, &st);
  free(uses);
  free(done);
  if (st) return st;
  if (changed) {
    BM_RETURN_IF_ERROR(bm_graph_compact(g));
    int merged = merge_ropes(g, &st);
    if (st) return st;
    if (merged) BM_RETURN_IF_ERROR(bm_graph_compact(g));
  }
  int folded = fuse_rms(g, o, &st);
  if (st) return st;
  return folded ? bm_graph_compact(g) : NULL;
}
