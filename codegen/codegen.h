/* codegen.h - backends: tables of function pointers that lower a planned
 * graph to native kernels.
 *
 * A backend receives every function (graph) of a module after the pass
 * pipeline and memory planning. For each node that needs a kernel (not a
 * source, not an ALIAS view) it emits one kernel with the bm_abi.h
 * signature and fills node->kernel, node->tasks and node->scratch. All
 * kernels of a module go into one code object (bm_object).
 *
 * Backends: "cpu" (codegen/llvm, LLVM C API), "cuda" (codegen/cuda, NVRTC,
 * later), "metal" (codegen/metal, later), and "null" (the template: it
 * supports nothing and fails with "unimplemented").
 */
#ifndef BM_CODEGEN_H
#define BM_CODEGEN_H

#include "../ir/ir.h"

typedef struct bm_target {
  const char *backend;  /* "cpu", "cuda", "metal", "null" */
  const char *triple;   /* NULL = host (e.g. "x86_64-unknown-linux-gnu") */
  const char *cpu;      /* NULL/"native" = host CPU; or "x86-64-v3", "znver3", ... */
  const char *features; /* NULL = the CPU's own; else LLVM feature string "+avx2,+fma" */
  int opt_level;        /* 0..3, default 3 */
} bm_target;

/* The compiled code of a module. */
typedef struct bm_object {
  char format[32];      /* "elf64-x86_64-rel" (relocatable object) */
  char triple[64];
  char cpu[64];         /* resolved CPU name */
  char features[1024];  /* resolved "+a,+b,..." feature string */
  char required[256];   /* runtime-checkable ISA requirements: "avx2,fma,avx512f" */
  void *data;           /* malloc'd object bytes */
  size_t size;
} bm_object;

void bm_object_free(bm_object *c);

typedef struct bm_backend {
  const char *name;
  /* Nonzero if this backend can compile node n (fused or not). */
  int (*supports)(const bm_node *n);
  /* Optional: the same with the graph, for answers that depend on sizes at
   * the symbols' maxima (CUDA: QMATMUL only at the rows its GEMV / small-M
   * kernels take); NULL = `supports` alone. */
  int (*supports_in)(const bm_graph *g, const bm_node *n);
  /* Emits all kernels of all graphs into one code object. */
  bm_status (*compile)(bm_module *m, const bm_target *t, bm_object *out);
  /* Optional: NULL if the backend can be used on this machine, else why not
   * (e.g. "cuda": NVRTC is not installed). NULL = always available. */
  bm_status (*available)(void);
} bm_backend;

extern const bm_backend bm_backend_cpu;  /* codegen/llvm */
extern const bm_backend bm_backend_null; /* codegen/null.c */
extern const bm_backend bm_backend_cuda; /* codegen/cuda (NVRTC via dlopen) */

/* Finds a backend by name; a status explains why one is unavailable. */
bm_status bm_backend_find(const char *name, const bm_backend **out);

/* Does node n need a kernel? (false for sources and ALIAS views; true for
 * in-place ops such as KV_WRITE, whose storage is an alias of a state) */
bool bm_node_needs_kernel(const bm_node *n);

#endif
