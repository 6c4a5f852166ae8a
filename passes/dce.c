/* dce.c - dead code elimination: drops nodes no output depends on (the
 * graph's compaction does the work; inputs are kept). */
#include "passes.h"

bm_status bm_pass_dce(bm_graph *g, const bm_pass_options *o) {
  (void)o;
  return bm_graph_compact(g);
}
