/* internal.h - libbmrt's private structures: the parsed package, the ELF
 * loader handle, the thread pool, CPU feature checks and the device table.
 * Not installed; nothing outside runtime/ (and its tests) includes it. */
#ifndef BM_RT_INTERNAL_H
#define BM_RT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bm_abi.h"
#include "bm_runtime.h"
#include "elf_loader.h"

/* ------------------------------------------------------------------ format constants */

#define BM_PKG_MAGIC "BMPK\r\n\x1a\n"
#define BM_PKG_VERSION 1u
#define BM_PKG_HEADER_SIZE 64
/* Byte offsets of the header fields (all little-endian). */
#define BM_PKG_OFF_VERSION 8
#define BM_PKG_OFF_FLAGS 12
#define BM_PKG_OFF_MANIFEST_OFFSET 16
#define BM_PKG_OFF_MANIFEST_SIZE 24
#define BM_PKG_OFF_FILE_SIZE 32
#define BM_PKG_OFF_MANIFEST_HASH 40
#define BM_PKG_OFF_HEADER_HASH 48 /* XXH3-64 of bytes [0, 48) */
#define BM_PKG_WEIGHT_ALIGN 64
#define BM_PKG_SECTION_ALIGN 4096

/* Limits the reader enforces before allocating anything. */
#define BM_PKG_MAX_ARENA (1ull << 40)
#define BM_PKG_MAX_SCRATCH (1ull << 32)
#define BM_PKG_MAX_MANIFEST (1ull << 30)
#define BM_PKG_MAX_ELEMS (1ll << 50)
#define BM_PKG_MAX_TASKS (1ll << 40)
#define BM_PKG_MAX_STATES 65536

static inline uint64_t bm_rd_u64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}
static inline uint32_t bm_rd_u32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline void bm_wr_u64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static inline void bm_wr_u32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* ------------------------------------------------------------------ parsed package */

/* A dimension as stored in the manifest: sym < 0 means static (= add). */
typedef struct bm_rt_dim {
  int32_t sym;
  int64_t mul, add;
} bm_rt_dim;

static inline int64_t bm_rt_dim_eval(bm_rt_dim d, const int64_t *syms) {
  return (d.sym >= 0 ? d.mul * syms[d.sym] : 0) + d.add;
}

#define BM_RT_MAX_SYMS 8 /* == BM_MAX_SYMS of ir.h */

typedef struct bm_rt_sym {
  const char *name;
  int64_t max;
} bm_rt_sym;

/* An input or output tensor of a function. */
typedef struct bm_rt_tensor {
  const char *name;
  bm_dtype dtype;
  int ndim;
  bm_rt_dim shape[BM_MAX_DIMS];
  int weight;        /* >= 0: lives in that package weight; -1: in the arena (or a state) */
  uint64_t offset;   /* arena offset (weight < 0 and state < 0) */
  uint64_t nbytes;   /* slot size (bytes at the symbols' upper bounds) */
  int state;         /* >= 0: lives in that state (outputs only); -1 otherwise */
} bm_rt_tensor;

/* One kernel argument: an arena slot, a package weight or a state. */
typedef struct bm_rt_arg {
  int weight;        /* >= 0: weight index; -1: not a weight */
  uint64_t offset, nbytes;
  int state;         /* >= 0: state index; -1: not a state (arena if weight < 0 too) */
} bm_rt_arg;

/* A persistent tensor of the package (manifest "states"): allocated and
 * zeroed by each session, kept across runs, shared by all functions. */
typedef struct bm_rt_state {
  const char *name;
  bm_dtype dtype;
  int ndim;
  int64_t shape[BM_MAX_DIMS];
  uint64_t nbytes;
} bm_rt_state;

typedef struct bm_rt_kernel {
  const char *symbol;
  const char *op;
  bm_task_expr tasks;
  uint64_t scratch;
  int nargs;
  bm_rt_arg *args;
  bm_kernel_fn fn;   /* resolved from the code object */
  int gpu_threads;   /* "cuda" packages: threads per block (from the code bundle) */
  int gpu_smem;      /* "cuda" packages: dynamic shared memory bytes */
} bm_rt_kernel;

typedef struct bm_rt_function {
  const char *name;
  int nsyms;
  bm_rt_sym syms[BM_RT_MAX_SYMS];
  uint64_t arena_bytes;
  int ninputs, noutputs, nkernels;
  bm_rt_tensor *inputs, *outputs;
  bm_rt_kernel *kernels;
} bm_rt_function;

typedef struct bm_rt_weight {
  const char *name;
  bm_dtype dtype;
  int ndim;
  int64_t shape[BM_MAX_DIMS];
  uint64_t offset, size, stored_size; /* file offset; bytes; bytes in the file */
  int zstd;
  uint64_t xxh3;                      /* of the uncompressed bytes */
  const void *data;                   /* into the map, or `owned` */
  void *owned;                        /* decompressed copy (malloc'd) */
} bm_rt_weight;

/* An embedded file (manifest "blobs": the tokenizer files, ...). */
typedef struct bm_rt_blob {
  const char *name;
  uint64_t offset, size, stored_size; /* file offset; bytes; bytes in the file */
  int zstd;
  uint64_t xxh3;                      /* of the uncompressed bytes */
  const void *data;                   /* into the map, or `owned` */
  void *owned;                        /* decompressed copy (malloc'd) */
} bm_rt_blob;

#define BM_PKG_MAX_BLOBS 4096

struct bm_package {
  const uint8_t *map;
  size_t map_size;
  char *manifest;         /* NUL-terminated copy of the manifest text */
  void *json;             /* cJSON tree (strings below borrow from it) */
  const char *model;
  uint64_t file_hash;       /* XXH3-64 of the whole file, once file_hash_done */
  int file_hash_done;
  uint64_t arena_bytes, weight_bytes, max_scratch;
  int nweights, nfunctions, nstates;
  bm_rt_weight *weights;
  bm_rt_state *states;
  uint64_t state_bytes;   /* sum of the states' 64-byte-rounded sizes */
  bm_rt_function *functions;
  bm_elf_image *code;
  int nblobs;
  bm_rt_blob *blobs;
  int gpu;                /* a "cuda" package: code is a GPU bundle, run by device_cuda.c */
  int ngpu_images;
  struct bm_rt_gpu_image *gpu_images;
  int refs;               /* 1 for the caller until bm_package_close, + 1 per live session */
};

/* Fills info for tensor t of fn with dims evaluated at syms (package.c). */
void bm_rt_tensor_info(const bm_rt_function *fn, const bm_rt_tensor *t, const int64_t *syms,
                       bm_tensor_info *out);

/* ------------------------------------------------------------------ CPU features */

/* Is the host arch the one a triple names? ("x86_64-...", "aarch64-...") */
bool bm_cpu_arch_matches(const char *triple);
const char *bm_cpu_host_arch(void);
/* 1: supported, 0: missing, -1: a feature name this runtime does not know. */
int bm_cpu_has_feature(const char *name);
/* Test hook: report the comma-separated features `names` as missing (as on
 * an older CPU); NULL or "" clears it. x86-64 only; not thread-safe. */
void bm_cpu_test_mask(const char *names);

/* ------------------------------------------------------------------ thread pool */

typedef struct bm_threadpool bm_threadpool;

/* Starts nthreads-1 persistent workers (the caller is thread 0). */
bm_status bm_threadpool_create(int nthreads, bm_threadpool **out);
void bm_threadpool_destroy(bm_threadpool *p); /* NULL is fine */
int bm_threadpool_threads(const bm_threadpool *p);
/* Runs fn over tasks [0, ntasks) split dynamically over the threads and
 * waits. Thread t gets scratch + t * scratch_stride. */
void bm_threadpool_run(bm_threadpool *p, bm_kernel_fn fn, void *const *bufs, const int64_t *syms,
                       int64_t ntasks, uint8_t *scratch, size_t scratch_stride);
/* Brackets a sequence of runs (a session run's kernels): in between, idle
 * workers spin for up to about 2 ms instead of about 0.3 ms before they
 * sleep, so the next kernel finds them awake. Nests; NULL is fine. */
void bm_threadpool_begin(bm_threadpool *p);
void bm_threadpool_end(bm_threadpool *p);
/* Kernels whose arguments (inputs, weights, output: the bytes they can
 * touch) total less than this run on the calling thread alone: waking or
 * even signalling workers costs more than such a kernel. */
#define BM_THREADPOOL_INLINE_BYTES 32768

/* ------------------------------------------------------------------ devices */

/* A device: memory and kernel launches. The CPU device is the only one now;
 * CUDA and Metal backends fill the same table. */
typedef struct bm_device_iface {
  const char *name;
  bm_device_kind kind;
  bm_status (*alloc)(size_t bytes, size_t align, void **out); /* zeroed */
  void (*free)(void *p, size_t bytes);
  /* host<->device or device<->device copy */
  bm_status (*copy)(void *dst, const void *src, size_t bytes);
  /* Runs one kernel over [0, ntasks). `ctx` is the device's queue/pool. */
  bm_status (*launch)(void *ctx, bm_kernel_fn fn, void *const *bufs, const int64_t *syms,
                      int64_t ntasks, uint8_t *scratch, size_t scratch_stride);
} bm_device_iface;

extern const bm_device_iface bm_device_cpu;

/* ------------------------------------------------------------------ the CUDA device (device_cuda.c)
 * The CUDA driver API through dlopen("libcuda.so.1"): no link-time
 * dependency, so libbmrt builds and runs without CUDA. A session of a
 * "cuda" package owns a bm_cuda_session: the device arena, states and
 * weights (uploaded once), the loaded module, one stream, and a host copy
 * of each output. session.c calls these where it would touch memory. */

/* One compiled image of a GPU code bundle (runtime/cuda_bundle.h). */
typedef struct bm_rt_gpu_image {
  int ptx;              /* 1: PTX text (NUL-terminated), 0: cubin */
  int arch;             /* compute capability x 10 */
  const uint8_t *data;  /* into the map */
  size_t size;
} bm_rt_gpu_image;

/* Package open: validates the bundle, fills pkg->gpu_images and every
 * kernel's gpu_threads / gpu_smem (a kernel missing from it is corrupt). */
bm_status bm_cuda_bundle_parse(bm_package *pkg, const uint8_t *code, size_t size);

typedef struct bm_cuda_session bm_cuda_session;
bm_status bm_cuda_session_create(bm_package *pkg, bm_cuda_session **out);
void bm_cuda_session_destroy(bm_cuda_session *c);
/* host -> device arena[offset, offset + bytes) */
bm_status bm_cuda_set_input(bm_cuda_session *c, uint64_t offset, const void *data, size_t bytes);
/* Runs function f's kernels with the bound syms; fills prof (may be NULL). */
bm_status bm_cuda_run(bm_cuda_session *c, int f, const int64_t *syms, bm_kernel_profile *prof);
/* Copies output i of f (its bound size) into the session's host buffer. */
bm_status bm_cuda_get_output(bm_cuda_session *c, int f, int i, const int64_t *syms, const void **data);
/* ids[r] = argmax of row r (rows of n f32) of output i of f's last run, on the
 * device; BM_ERR_UNSUPPORTED when the package has no argmax kernel. */
bm_status bm_cuda_output_argmax(bm_cuda_session *c, int f, int i, int64_t rows, int64_t n, int32_t *ids);
void bm_cuda_reset_state(bm_cuda_session *c);
/* Copies state i to a host buffer of the session (a snapshot) and returns it. */
bm_status bm_cuda_state(bm_cuda_session *c, int i, void **data);
/* The compute capability x 10 (and name) of the GPU sessions use (tests). */
bm_status bm_cuda_device_arch(int *arch, char *name, size_t name_cap);

#endif
