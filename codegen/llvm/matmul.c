/* matmul.c - LLVM lowering of matmul (placeholder until the real emitter lands). */
#include "cg.h"

bm_status bm_cg_emit_matmul(bm_cg *cg, bm_node *n, const char *symbol) {
  return bm_status_make(BM_ERR_UNSUPPORTED, "cpu backend: %s is not implemented yet", bm_op_name(n->op));
}
