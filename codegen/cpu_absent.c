/* cpu_absent.c - the "cpu" backend of a bmc built with -DBM_WITH_LLVM=OFF
 * (CMake compiles this file instead of codegen/llvm): it is never available. */
#include "codegen.h"

static bm_status cpu_absent(void) {
  return bm_status_make(BM_ERR_UNSUPPORTED,
                        "this bmc was built without LLVM (BM_WITH_LLVM=OFF): the cpu target is unavailable "
                        "(use --target cuda, or a bmc built with LLVM)");
}

static int cpu_absent_supports(const bm_node *n) {
  (void)n;
  return 0;
}

static bm_status cpu_absent_compile(bm_module *m, const bm_target *t, bm_object *out) {
  (void)m;
  (void)t;
  (void)out;
  return cpu_absent();
}

const bm_backend bm_backend_cpu = {
    .name = "cpu",
    .supports = cpu_absent_supports,
    .compile = cpu_absent_compile,
    .available = cpu_absent,
};
