/* shape.c - the shape pass: re-infers every node's shape and dtype and
 * checks the graph's basic structure before the other passes run. */
#include "passes.h"

static const char *label(const bm_node *n) { return n->name ? n->name : ""; }

bm_status bm_pass_shape(bm_graph *g, const bm_pass_options *o) {
  (void)o;
  if (g->noutputs == 0)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "graph '%s' has no outputs",
                          g->name ? g->name : "?");
  for (int i = 0; i < g->nnodes; i++) {
    bm_node *n = g->nodes[i];
    for (int k = 0; k < n->nin; k++)
      if (!n->in[k])
        return bm_status_make(BM_ERR_INVALID_ARGUMENT, "node %d (%s '%s'): input %d is NULL", i,
                              bm_op_name(n->op), label(n), k);
    bm_status s = bm_node_infer(g, n);
    if (s) return bm_status_wrap(s, "node %d (%s '%s')", i, bm_op_name(n->op), label(n));
  }
  for (int i = 0; i < g->noutputs; i++)
    if (!g->outputs[i].node)
      return bm_status_make(BM_ERR_INVALID_ARGUMENT, "output %d ('%s') has no node", i,
                            g->outputs[i].name ? g->outputs[i].name : "?");
  return NULL;
}
