/* device.c - device kinds and probing, the runtime version, and the CPU
 * device table (the template CUDA and Metal backends follow). */
#include <dlfcn.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#ifndef BM_VERSION
#define BM_VERSION "0.0.0"
#endif

const char *bm_runtime_version(void) { return BM_VERSION; }

const char *bm_device_kind_name(bm_device_kind k) {
  switch (k) {
    case BM_DEVICE_CPU: return "cpu";
    case BM_DEVICE_CUDA: return "cuda";
    case BM_DEVICE_METAL: return "metal";
  }
  return "unknown";
}

static bm_status probe_cuda(void) {
  void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!lib)
    return bm_status_make(BM_ERR_UNSUPPORTED,
                          "cuda: the NVIDIA driver library libcuda.so.1 is not installed (%s)",
                          dlerror());
  typedef int (*cu_init_fn)(unsigned);
  typedef int (*cu_count_fn)(int *);
  cu_init_fn cu_init = (cu_init_fn)dlsym(lib, "cuInit");
  cu_count_fn cu_count = (cu_count_fn)dlsym(lib, "cuDeviceGetCount");
  bm_status s = NULL;
  int rc, n = 0;
  if (!cu_init || !cu_count)
    s = bm_status_make(BM_ERR_UNSUPPORTED, "cuda: libcuda.so.1 lacks cuInit/cuDeviceGetCount");
  else if ((rc = cu_init(0)) != 0)
    s = bm_status_make(BM_ERR_UNSUPPORTED, "cuda: cuInit failed with error %d (no GPU or driver problem)", rc);
  else if ((rc = cu_count(&n)) != 0 || n == 0)
    s = bm_status_make(BM_ERR_UNSUPPORTED, "cuda: no CUDA device found");
  dlclose(lib);
  return s;
}

bm_status bm_device_probe(bm_device_kind k) {
  switch (k) {
    case BM_DEVICE_CPU: return NULL;
    case BM_DEVICE_CUDA: return probe_cuda();
    case BM_DEVICE_METAL:
#if defined(__APPLE__)
      return bm_status_make(BM_ERR_UNSUPPORTED, "metal: this build has no Metal backend yet");
#else
      return bm_status_make(BM_ERR_UNSUPPORTED, "metal: only available on Apple platforms");
#endif
  }
  return bm_status_make(BM_ERR_INVALID_ARGUMENT, "unknown device kind %d", (int)k);
}

/* ------------------------------------------------------------------ the CPU device */

/* Page-granular anonymous mappings: zeroed, page (so 64-byte) aligned, and
 * committed lazily, so a large arena costs nothing until it is touched. */
static bm_status cpu_alloc(size_t bytes, size_t align, void **out) {
  *out = NULL;
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  if (align > page) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "cpu: alignment %zu above the page size", align);
  size_t n = bytes ? bytes : 1;
  if (n > SIZE_MAX - page) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "cpu: %zu bytes overflow", bytes);
  n = (n + page - 1) / page * page;
  void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "cpu: cannot allocate %zu bytes", bytes);
  *out = p;
  return NULL;
}

static void cpu_free(void *p, size_t bytes) {
  if (!p) return;
  size_t page = (size_t)sysconf(_SC_PAGESIZE), n = bytes ? bytes : 1;
  munmap(p, (n + page - 1) / page * page);
}

static bm_status cpu_copy(void *dst, const void *src, size_t bytes) {
  if (bytes) memcpy(dst, src, bytes);
  return NULL;
}

static bm_status cpu_launch(void *ctx, bm_kernel_fn fn, void *const *bufs, const int64_t *syms,
                            int64_t ntasks, uint8_t *scratch, size_t scratch_stride) {
  bm_threadpool_run((bm_threadpool *)ctx, fn, bufs, syms, ntasks, scratch, scratch_stride);
  return NULL;
}

const bm_device_iface bm_device_cpu = {
    .name = "cpu",
    .kind = BM_DEVICE_CPU,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .copy = cpu_copy,
    .launch = cpu_launch,
};
