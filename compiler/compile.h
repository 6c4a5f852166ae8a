/* compile.h - the compiler driver: module -> passes -> codegen -> package.
 * Used by bmc, the tests and the benchmarks. */
#ifndef BM_COMPILE_H
#define BM_COMPILE_H

#include "../codegen/codegen.h"
#include "../passes/passes.h"
#include "package_writer.h"

typedef struct bm_compile_options {
  bm_target target;          /* backend "cpu" by default */
  bm_pass_options passes;
  int compress;              /* zstd weights */
  const char *options_json;  /* recorded in the manifest */
  const char *extra_json;    /* manifest["extra"] */
} bm_compile_options;

void bm_compile_options_init(bm_compile_options *o);

/* Runs the pass pipeline on every graph of m, compiles the kernels with the
 * target's backend and writes the package to out_path. m is modified. */
bm_status bm_compile_module(bm_module *m, const bm_compile_options *o, const char *out_path);

#endif
