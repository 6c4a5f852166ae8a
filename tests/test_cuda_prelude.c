/* test_cuda_prelude.c - rules of the CUDA prelude (codegen/cuda/lang.c) that
 * no GPU run would reliably catch. Source text only.
 *
 * Programmatic dependent launch: a kernel starts before its predecessor has
 * finished and only `griddepcontrol.wait` (BM_PDL_WAIT) makes the
 * predecessor's writes visible. A global load written as inline PTX that is
 * not `asm volatile` has no memory operand, so a compiler may move it above
 * the wait and read a half-written activation: every such load must be
 * volatile, except the weight stream (bm_ld16_stream), whose data are the
 * package's constants. */
#include <string.h>

#include "../codegen/clike/clike.h"
#include "testutil.h"

/* the prelude's helper whose body holds position p: its "BM_DEV ... name(" */
static void helper_name(const char *src, const char *p, char *out, size_t cap) {
  const char *d = p;
  while (d > src && strncmp(d, "BM_DEV ", 7) != 0) d--;
  const char *paren = strchr(d, '(');
  const char *sp = paren;
  while (sp > d && sp[-1] != ' ' && sp[-1] != '*') sp--;
  size_t n = paren && paren > sp ? (size_t)(paren - sp) : 0;
  if (n >= cap) n = cap - 1;
  memcpy(out, sp, n);
  out[n] = 0;
}

static void test_global_loads_volatile(void) {
  const char *src = bm_clike_cuda.prelude;
  CHECK(src && strstr(src, "griddepcontrol.wait"));
  int loads = 0;
  for (const char *p = src; (p = strstr(p, "ld.global")) != NULL; p++) {
    /* the asm statement holding this instruction */
    const char *a = p;
    while (a > src && strncmp(a, "asm", 3) != 0) a--;
    bool vol = strncmp(a, "asm volatile", 12) == 0;
    char name[64];
    helper_name(src, a, name, sizeof name);
    loads++;
    CHECK_MSG(vol || strcmp(name, "bm_ld16_stream") == 0,
              "prelude helper %s: a global load in non-volatile inline asm (may move above the PDL wait)", name);
  }
  CHECK_MSG(loads >= 3, "found %d inline global loads in the prelude", loads);
}

int main(void) {
  RUN(test_global_loads_volatile);
  return bm_test_finish();
}
