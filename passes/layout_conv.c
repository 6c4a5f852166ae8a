/* layout_conv.c - CONV2D(x NCHW, w (O, Cg, KH, KW)) -> CONV2D(permute(x) NHWC,
 * w reordered to (O, KH, KW, Cg) at compile time) with layout BM_CONV_NHWC,
 * where the backend supports that form (the CUDA TMA conv; the CPU says no). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "passes.h"

/* The weight "<name>.ohwi": w's data reordered (O, Cg, KH, KW) -> (O, KH, KW,
 * Cg), made once per module (another function's copy is reused). */
static bm_status ohwi_weight(bm_graph *g, const bm_node *w, bm_node **out) {
  *out = NULL;
  const int64_t O = w->shape[0].add, Cg = w->shape[1].add, KH = w->shape[2].add, KW = w->shape[3].add;
  const size_t es = bm_dtype_nbytes(w->dtype, 1), bytes = w->data_size;
  size_t nlen = strlen(w->name) + sizeof ".ohwi";
  char *name = bm_arena_alloc(g->module->arena, nlen);
  if (!name) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "layout_conv: name of weight '%s'", w->name);
  snprintf(name, nlen, "%s.ohwi", w->name);
  const void *data = NULL;
  const bm_module *m = g->module;
  for (int k = 0; k < m->ngraphs && !data; k++) /* made by this pass already (for another conv or function) */
    for (int i = 0; i < m->graphs[k]->nnodes && !data; i++) {
      bm_node *o = m->graphs[k]->nodes[i];
      if (o->op == BM_OP_WEIGHT && o->name && o->data && o->dtype == w->dtype && o->data_size == bytes &&
          !strcmp(o->name, name)) {
        if (m->graphs[k] == g) { /* this function's: the same node */
          *out = o;
          return NULL;
        }
        data = o->data;
      }
    }
  if (!data) {
    unsigned char *d = bm_arena_alloc(g->module->arena, bytes);
    if (!d) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "layout_conv: %zu bytes for '%s'", bytes, name);
    const unsigned char *s = w->data;
    for (int64_t o = 0; o < O; o++)
      for (int64_t c = 0; c < Cg; c++)
        for (int64_t kh = 0; kh < KH; kh++)
          for (int64_t kw = 0; kw < KW; kw++)
            memcpy(d + (size_t)(((o * KH + kh) * KW + kw) * Cg + c) * es,
                   s + (size_t)(((o * Cg + c) * KH + kh) * KW + kw) * es, es);
    data = d;
  }
  int64_t shape[4] = {O, KH, KW, Cg};
  *out = bm_weight(g, name, w->dtype, 4, shape, data, bytes);
  if (!*out) {
    bm_status e = bm_graph_status(g);
    return bm_status_make(BM_ERR_INTERNAL, "layout_conv: weight '%s': %s", name, e ? bm_status_message(e) : "?");
  }
  return NULL;
}

/* A conv the pass may rewrite: NCHW, no epilogue yet, rank 4, static w */
static bool candidate(const bm_node *n) {
  if (n->op != BM_OP_CONV2D || n->a.layout != BM_CONV_NCHW || n->a.prog.n > 0) return false;
  const bm_node *w = n->in[1];
  if (w->ndim != 4 || n->in[0]->ndim != 4) return false;
  for (int d = 0; d < 4; d++)
    if (!bm_dim_is_static(w->shape[d])) return false;
  return true;
}

/* w reordered at compile time: a bound weight of whole-byte elements */
static bool reorder_now(const bm_node *w) {
  size_t es = bm_dtype_nbytes(w->dtype, 1);
  return w->op == BM_OP_WEIGHT && w->data && w->name && es >= 1 && bm_dtype_nbytes(w->dtype, 4) == 4 * es &&
         w->data_size == es * (size_t)(w->shape[0].add * w->shape[1].add * w->shape[2].add * w->shape[3].add);
}

static bm_status permuted(bm_graph *g, bm_node *x, const int *perm, bm_node **out) {
  *out = bm_permute(g, x, perm);
  if (*out) return NULL;
  bm_status e = bm_graph_status(g);
  return bm_status_make(BM_ERR_INTERNAL, "layout_conv: permute of node %d: %s", x->id, e ? bm_status_message(e) : "?");
}

bm_status bm_pass_layout_conv(bm_graph *g, const bm_pass_options *o) {
  if (!o || !o->supports) return NULL; /* only a backend that says yes gets the NHWC form */
  int n0 = g->nnodes, done = 0;
  /* x's permute, one per x (by id; appended nodes have ids past n0) */
  bm_node **px = calloc((size_t)n0 + 1, sizeof *px);
  if (!px) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "layout_conv: %d nodes", n0);
  for (int i = 0; i < n0; i++) g->nodes[i]->id = i;
  bm_status s = NULL;
  for (int i = 0; i < n0 && !s; i++) {
    bm_node *n = g->nodes[i];
    if (!candidate(n)) continue;
    bm_node *x = n->in[0];
    /* probe: the rewritten node over stand-in inputs of the NHWC shapes */
    bm_node xp = *x, wp = *n->in[1], probe = *n;
    const int nhwc[4] = {0, 2, 3, 1};
    for (int d = 0; d < 4; d++) xp.shape[d] = x->shape[nhwc[d]], wp.shape[d] = n->in[1]->shape[nhwc[d]];
    probe.in[0] = &xp;
    probe.in[1] = &wp;
    probe.a.layout = BM_CONV_NHWC;
    if (!o->supports(&probe)) continue;
    bm_node *w2 = NULL; /* the weights reordered once, else a permute (w computed or bound later) */
    s = reorder_now(n->in[1]) ? ohwi_weight(g, n->in[1], &w2) : permuted(g, n->in[1], nhwc, &w2);
    if (s) break;
    const bool known = x->id >= 0 && x->id < n0 && g->nodes[x->id] == x;
    bm_node *x2 = known ? px[x->id] : NULL;
    if (!x2) {
      s = permuted(g, x, nhwc, &x2);
      if (s) break;
      if (known) px[x->id] = x2;
    }
    bm_node saved = *n;
    n->in[0] = x2;
    n->in[1] = w2;
    n->a.layout = BM_CONV_NHWC;
    bm_status e = bm_node_infer(g, n);
    bool same = !e && n->dtype == saved.dtype && n->ndim == saved.ndim;
    for (int d = 0; same && d < n->ndim; d++) same = bm_dim_eq(n->shape[d], saved.shape[d]);
    if (!same) { /* our bug: the NHWC form must have the same output */
      *n = saved;
      s = bm_status_make(BM_ERR_INTERNAL, "layout_conv: node %d: the NHWC form changes the output%s%s", i,
                         e ? ": " : "", e ? bm_status_message(e) : "");
      bm_status_free(e);
      break;
    }
    done++;
  }
  free(px);
  if (s) return s;
  return done ? bm_graph_compact(g) : NULL; /* the new nodes go before their uses */
}
