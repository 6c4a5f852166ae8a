/* ops.c - the op table, generated from ops.def, and name lookup. */
#include <string.h>

#include "ir.h"

const bm_op_info bm_op_table[BM_OP_COUNT] = {
#define X(e, nm, mn, mx, fl, at, sh, rf) \
  [BM_OP_##e] = {.name = nm, .min_in = mn, .max_in = mx, .flags = fl, .attrs = at},
#include "ops.def"
#undef X
};

int bm_op_from_name(const char *s, bm_op *out) {
  if (!s) return -1;
  for (int i = 0; i < BM_OP_COUNT; i++)
    if (strcmp(s, bm_op_table[i].name) == 0) {
      if (out) *out = (bm_op)i;
      return 0;
    }
  return -1;
}
