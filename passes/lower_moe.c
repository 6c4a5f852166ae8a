/* lower_moe.c - splits each MOE node into MOE_UP (the gated expert hidden
 * states h (..., E, F)) and MOE_DOWN (the gate-weighted down projections),
 * so that each half can be parallel over its own output on the CPU: MOE_UP
 * over (tokens, experts, F rows), MOE_DOWN over (tokens, D rows). Both skip
 * the experts whose gate is exactly 0. The token dims (x's leading dims,
 * e.g. (batch, seq), symbolic or not) carry over unchanged. */
#include <string.h>

#include "passes.h"

bm_status bm_pass_lower_moe(bm_graph *g, const bm_pass_options *o) {
  (void)o;
  int lowered = 0, n = g->nnodes;
  for (int i = 0; i < n; i++) {
    bm_node *m = g->nodes[i];
    if (m->op != BM_OP_MOE) continue;
    bm_node *x = m->in[0], *gates = m->in[1], *wg = m->in[2], *wu = m->in[3], *wd = m->in[4];
    bm_attrs au;
    memset(&au, 0, sizeof au);
    au.act = m->a.act;
    bm_node *up_in[4] = {x, gates, wg, wu};
    bm_node *h = bm_node_make(g, BM_OP_MOE_UP, 4, up_in, &au); /* appended; compaction reorders */
    if (!h) {
      bm_status s = bm_graph_status(g);
      return bm_status_make(bm_status_code(s), "lower_moe: node %d: %s", m->id, bm_status_message(s));
    }
    if (m->name) h->name = m->name;
    bm_node saved = *m;
    m->op = BM_OP_MOE_DOWN;
    memset(m->in, 0, sizeof m->in);
    memset(&m->a, 0, sizeof m->a);
    m->nin = 3;
    m->in[0] = h;
    m->in[1] = gates;
    m->in[2] = wd;
    bm_status s = bm_node_infer(g, m);
    if (!s && (m->dtype != saved.dtype || m->ndim != saved.ndim))
      s = bm_status_make(BM_ERR_INTERNAL, "lower_moe: node %d changed type", m->id);
    if (s) {
      *m = saved;
      return bm_status_wrap(s, "lower_moe: node %d", m->id);
    }
    lowered++;
  }
  return lowered ? bm_graph_compact(g) : NULL;
}
