/* device_cuda.c - the CUDA device: runs "cuda" packages through the CUDA
 * driver API, loaded with dlopen("libcuda.so.1") so that libbmrt has no
 * link-time CUDA dependency. Code bundles (cuda_bundle.h) are parsed when a
 * package opens; a session loads the cubin for the GPU's architecture (or
 * the PTX), uploads the weights once, allocates the arena and states on the
 * device, and launches kernels on its own stream (bm_abi.h, bm_gpu_args).
 *
 * Environment: BM_CUDA_DEVICE (ordinal, default 0); BM_CUDA_FORCE_PTX=1
 * loads the PTX even when a cubin fits (tests the driver JIT path);
 * BM_CUDA_SYNC=1 synchronizes after every kernel, so an asynchronous fault
 * names the kernel that caused it; BM_CUDA_GRAPHS=0 launches every kernel
 * instead of replaying CUDA graphs (see "CUDA graphs" below); BM_CUDA_PDL=0
 * launches without programmatic dependent launch (see "Decode" below);
 * BM_CUDA_TMA=0 runs the TMA GEMMs' fallback (see "Tensor maps" below). */
#include <cjson/cJSON.h>
#include <dlfcn.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cuda_bundle.h"
#include "internal.h"

#define CORRUPT(...) bm_status_make(BM_ERR_CORRUPT, __VA_ARGS__)

/* ------------------------------------------------------------------ bundle parsing (no driver) */

static const cJSON *jfield(const cJSON *o, const char *k) { return cJSON_GetObjectItemCaseSensitive(o, k); }

static bool jint(const cJSON *o, const char *k, int64_t lo, int64_t hi, int64_t *out) {
  const cJSON *v = jfield(o, k);
  if (!cJSON_IsNumber(v)) return false;
  double d = v->valuedouble;
  if (d < (double)lo || d > (double)hi || d != (double)(int64_t)d) return false;
  *out = (int64_t)d;
  return true;
}

bm_status bm_cuda_bundle_parse(bm_package *pkg, const uint8_t *code, size_t size) {
  if (size < BM_CUDA_BUNDLE_HEADER || memcmp(code, BM_CUDA_BUNDLE_MAGIC, 8) != 0)
    return CORRUPT("code section: not a CUDA code bundle (bad magic)");
  uint32_t hl = bm_rd_u32(code + 8);
  if (hl > size - BM_CUDA_BUNDLE_HEADER) return CORRUPT("code section: bundle header of %u bytes overruns the section", hl);
  cJSON *root = cJSON_ParseWithLength((const char *)code + BM_CUDA_BUNDLE_HEADER, hl);
  bm_status s = NULL;
  const cJSON *ks = jfield(root, "kernels"), *im = jfield(root, "images");
  if (!cJSON_IsObject(root) || !cJSON_IsArray(ks) || !cJSON_IsArray(im)) {
    cJSON_Delete(root);
    return CORRUPT("code section: the CUDA bundle header is not {kernels, images}");
  }
  int nim = cJSON_GetArraySize(im);
  if (nim > 64) s = CORRUPT("code section: %d images in the CUDA bundle (at most 64)", nim);
  pkg->gpu_images = s ? NULL : calloc((size_t)nim + 1, sizeof *pkg->gpu_images);
  if (!s && !pkg->gpu_images) s = bm_status_make(BM_ERR_OUT_OF_MEMORY, "cuda bundle");
  for (int i = 0; !s && i < nim; i++) {
    const cJSON *o = cJSON_GetArrayItem(im, i), *kind = jfield(o, "kind");
    int64_t arch, off, sz;
    if (!cJSON_IsString(kind) || (strcmp(kind->valuestring, "cubin") && strcmp(kind->valuestring, "ptx")) ||
        !jint(o, "arch", 10, 10000, &arch) || !jint(o, "offset", 0, (int64_t)size, &off) ||
        !jint(o, "size", 1, (int64_t)size, &sz) || (uint64_t)off + (uint64_t)sz > size) {
      s = CORRUPT("code section: CUDA image %d: bad kind, arch, offset or size", i);
      break;
    }
    bm_rt_gpu_image *g = &pkg->gpu_images[i];
    g->ptx = kind->valuestring[0] == 'p';
    g->arch = (int)arch;
    g->data = code + off;
    g->size = (size_t)sz;
    if (g->ptx && g->data[g->size - 1] != 0) s = CORRUPT("code section: PTX image %d is not NUL-terminated", i);
  }
  if (!s) pkg->ngpu_images = nim;
  for (int f = 0; !s && f < pkg->nfunctions; f++) {
    bm_rt_function *fn = &pkg->functions[f];
    for (int k = 0; !s && k < fn->nkernels; k++) {
      bm_rt_kernel *kr = &fn->kernels[k];
      const cJSON *hit = NULL, *e;
      cJSON_ArrayForEach(e, ks) {
        const cJSON *sym = jfield(e, "symbol");
        if (cJSON_IsString(sym) && strcmp(sym->valuestring, kr->symbol) == 0) {
          hit = e;
          break;
        }
      }
      int64_t th, smem;
      if (!hit) {
        s = CORRUPT("kernel '%s' (function '%s', kernel %d) is not in the CUDA code bundle", kr->symbol, fn->name, k);
      } else if (!jint(hit, "threads", 32, 1024, &th) || th % 32 || !jint(hit, "smem", 0, 1 << 20, &smem)) {
        s = CORRUPT("kernel '%s': bad threads or smem in the CUDA code bundle", kr->symbol);
      } else {
        kr->gpu_threads = (int)th;
        kr->gpu_smem = (int)smem;
        if (kr->nargs > BM_GPU_MAX_ARGS)
          s = CORRUPT("kernel '%s' has %d arguments; GPU kernels take at most %d", kr->symbol, kr->nargs,
                      BM_GPU_MAX_ARGS);
      }
    }
  }
  if (!s && pkg->ngpu_images == 0) {
    for (int f = 0; f < pkg->nfunctions; f++)
      if (pkg->functions[f].nkernels) s = CORRUPT("code section: the CUDA bundle has no images but kernels to run");
  }
  cJSON_Delete(root);
  if (!s) pkg->gpu = 1;
  return s;
}

/* ------------------------------------------------------------------ the driver API */

typedef int CUresult;
typedef int CUdevice;
typedef struct CUctx_st *CUcontext;
typedef struct CUmod_st *CUmodule;
typedef struct CUfunc_st *CUfunction;
typedef struct CUstream_st *CUstream;
typedef unsigned long long CUdeviceptr;
typedef struct CUgraph_st *CUgraph;
typedef struct CUgraphExec_st *CUgraphExec;

enum { CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76 };
enum { CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8 };
enum { CU_STREAM_CAPTURE_MODE_THREAD_LOCAL = 1 };

/* cuLaunchKernelEx's configuration (cuda.h's CUlaunchConfig, CUlaunchAttribute:
 * an id padded to 8 bytes, then a 64-byte value union) */
enum { CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION = 4, CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION = 6 };
typedef struct cu_launch_attr {
  int id;
  char pad[4];
  union {
    char bytes[64];
    int programmatic_stream_serialization_allowed;
  } value;
} cu_launch_attr;
typedef struct cu_launch_config {
  unsigned grid_x, grid_y, grid_z, block_x, block_y, block_z, smem;
  CUstream stream;
  cu_launch_attr *attrs;
  unsigned nattrs;
} cu_launch_config;

static struct {
  void *lib;
  char error[512];
  CUresult (*init)(unsigned);
  CUresult (*device_get)(CUdevice *, int);
  CUresult (*device_count)(int *);
  CUresult (*device_attr)(int *, int, CUdevice);
  CUresult (*device_name)(char *, int, CUdevice);
  CUresult (*ctx_retain)(CUcontext *, CUdevice);
  CUresult (*ctx_release)(CUdevice);
  CUresult (*ctx_set)(CUcontext);
  CUresult (*mem_alloc)(CUdeviceptr *, size_t);
  CUresult (*mem_free)(CUdeviceptr);
  CUresult (*htod)(CUdeviceptr, const void *, size_t);
  CUresult (*dtoh)(void *, CUdeviceptr, size_t);
  CUresult (*memset8)(CUdeviceptr, unsigned char, size_t);
  CUresult (*module_load)(CUmodule *, const void *);
  CUresult (*module_unload)(CUmodule);
  CUresult (*module_fn)(CUfunction *, CUmodule, const char *);
  CUresult (*func_set_attr)(CUfunction, int, int);
  CUresult (*launch)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, CUstream,
                     void **, void **);
  CUresult (*stream_create)(CUstream *, unsigned);
  CUresult (*stream_destroy)(CUstream);
  CUresult (*stream_sync)(CUstream);
  CUresult (*error_string)(CUresult, const char **);
  CUresult (*error_name)(CUresult, const char **);
  /* CUDA graphs (optional: NULL when the driver lacks them, then no graphs) */
  CUresult (*capture_begin)(CUstream, int);
  CUresult (*capture_end)(CUstream, CUgraph *);
  CUresult (*graph_instantiate)(CUgraphExec *, CUgraph, unsigned long long);
  CUresult (*graph_launch)(CUgraphExec, CUstream);
  CUresult (*graph_exec_destroy)(CUgraphExec);
  CUresult (*graph_destroy)(CUgraph);
  bool graphs; /* all six found */
  /* page-locked host memory for output copies (optional: malloc without it) */
  CUresult (*host_alloc)(void **, size_t);
  CUresult (*host_free)(void *);
  /* decode path (optional: NULL when missing, then synchronous copies, no PDL) */
  CUresult (*htod_async)(CUdeviceptr, const void *, size_t, CUstream);
  CUresult (*dtoh_async)(void *, CUdeviceptr, size_t, CUstream);
  CUresult (*launch_ex)(const cu_launch_config *, CUfunction, void **, void **);
  /* the TMA GEMM's tensor maps (optional: without them those kernels run their fallback; see "Tensor maps") */
  CUresult (*tma_global)(CUdeviceptr *, size_t *, CUmodule, const char *);
  CUresult (*tma_encode)(void *, int, unsigned, void *, const uint64_t *, const uint64_t *, const unsigned *,
                         const unsigned *, int, int, int, int);
  CUresult (*max_clusters)(int *, CUfunction, const cu_launch_config *); /* optional */
} cu;

static pthread_once_t cu_once = PTHREAD_ONCE_INIT;

static void cu_load_once(void) {
  cu.lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!cu.lib) {
    snprintf(cu.error, sizeof cu.error, "cuda: the NVIDIA driver library libcuda.so.1 is not installed (%s)", dlerror());
    return;
  }
  struct { void **p; const char *name; } syms[] = {
      {(void **)&cu.init, "cuInit"},
      {(void **)&cu.device_get, "cuDeviceGet"},
      {(void **)&cu.device_count, "cuDeviceGetCount"},
      {(void **)&cu.device_attr, "cuDeviceGetAttribute"},
      {(void **)&cu.device_name, "cuDeviceGetName"},
      {(void **)&cu.ctx_retain, "cuDevicePrimaryCtxRetain"},
      {(void **)&cu.ctx_release, "cuDevicePrimaryCtxRelease_v2"},
      {(void **)&cu.ctx_set, "cuCtxSetCurrent"},
      {(void **)&cu.mem_alloc, "cuMemAlloc_v2"},
      {(void **)&cu.mem_free, "cuMemFree_v2"},
      {(void **)&cu.htod, "cuMemcpyHtoD_v2"},
      {(void **)&cu.dtoh, "cuMemcpyDtoH_v2"},
      {(void **)&cu.memset8, "cuMemsetD8_v2"},
      {(void **)&cu.module_load, "cuModuleLoadData"},
      {(void **)&cu.module_unload, "cuModuleUnload"},
      {(void **)&cu.module_fn, "cuModuleGetFunction"},
      {(void **)&cu.func_set_attr, "cuFuncSetAttribute"},
      {(void **)&cu.launch, "cuLaunchKernel"},
      {(void **)&cu.stream_create, "cuStreamCreate"},
      {(void **)&cu.stream_destroy, "cuStreamDestroy_v2"},
      {(void **)&cu.stream_sync, "cuStreamSynchronize"},
      {(void **)&cu.error_string, "cuGetErrorString"},
      {(void **)&cu.error_name, "cuGetErrorName"},
  };
  for (size_t i = 0; i < sizeof syms / sizeof *syms; i++) {
    *syms[i].p = dlsym(cu.lib, syms[i].name);
    if (!*syms[i].p) {
      snprintf(cu.error, sizeof cu.error, "cuda: libcuda.so.1 lacks %s (driver too old?)", syms[i].name);
      dlclose(cu.lib);
      cu.lib = NULL;
      return;
    }
  }
  struct { void **p; const char *name; } graph_syms[] = {
      {(void **)&cu.capture_begin, "cuStreamBeginCapture_v2"},
      {(void **)&cu.capture_end, "cuStreamEndCapture"},
      {(void **)&cu.graph_instantiate, "cuGraphInstantiateWithFlags"},
      {(void **)&cu.graph_launch, "cuGraphLaunch"},
      {(void **)&cu.graph_exec_destroy, "cuGraphExecDestroy"},
      {(void **)&cu.graph_destroy, "cuGraphDestroy"},
  };
  cu.host_alloc = (CUresult(*)(void **, size_t))dlsym(cu.lib, "cuMemAllocHost_v2");
  cu.host_free = (CUresult(*)(void *))dlsym(cu.lib, "cuMemFreeHost");
  if (!cu.host_alloc || !cu.host_free) cu.host_alloc = NULL, cu.host_free = NULL;
  cu.htod_async = (CUresult(*)(CUdeviceptr, const void *, size_t, CUstream))dlsym(cu.lib, "cuMemcpyHtoDAsync_v2");
  cu.dtoh_async = (CUresult(*)(void *, CUdeviceptr, size_t, CUstream))dlsym(cu.lib, "cuMemcpyDtoHAsync_v2");
  cu.launch_ex = (CUresult(*)(const cu_launch_config *, CUfunction, void **, void **))dlsym(cu.lib, "cuLaunchKernelEx");
  cu.tma_global = (CUresult(*)(CUdeviceptr *, size_t *, CUmodule, const char *))dlsym(cu.lib, "cuModuleGetGlobal_v2");
  cu.tma_encode = (CUresult(*)(void *, int, unsigned, void *, const uint64_t *, const uint64_t *, const unsigned *,
                               const unsigned *, int, int, int, int))dlsym(cu.lib, "cuTensorMapEncodeTiled");
  cu.max_clusters = (CUresult(*)(int *, CUfunction, const cu_launch_config *))dlsym(cu.lib, "cuOccupancyMaxActiveClusters");
  cu.graphs = true;
  for (size_t i = 0; i < sizeof graph_syms / sizeof *graph_syms; i++) {
    *graph_syms[i].p = dlsym(cu.lib, graph_syms[i].name);
    if (!*graph_syms[i].p) cu.graphs = false;
  }
  CUresult r = cu.init(0);
  if (r) {
    const char *es = "?";
    cu.error_string(r, &es);
    snprintf(cu.error, sizeof cu.error, "cuda: cuInit failed: %s (error %d; no GPU or a driver problem)", es, r);
    cu.lib = NULL; /* keep the handle loaded: the driver may not like dlclose after a failed init */
  }
}

static bm_status cu_load(void) {
  pthread_once(&cu_once, cu_load_once);
  return cu.lib ? NULL : bm_status_make(BM_ERR_UNSUPPORTED, "%s", cu.error);
}

/* "CUDA_ERROR_ILLEGAL_ADDRESS: an illegal memory access was encountered" */
static const char *cu_err(CUresult r, char *buf, size_t cap) {
  const char *name = "?", *str = "?";
  if (cu.error_name) cu.error_name(r, &name);
  if (cu.error_string) cu.error_string(r, &str);
  snprintf(buf, cap, "%s: %s", name ? name : "?", str ? str : "?");
  return buf;
}

#define CU_CHECK(call, ...)                                                                  \
  do {                                                                                       \
    CUresult r_ = (call);                                                                    \
    if (r_) {                                                                                \
      char eb_[256], msg_[512];                                                              \
      snprintf(msg_, sizeof msg_, __VA_ARGS__);                                              \
      return bm_status_make(r_ == 2 ? BM_ERR_OUT_OF_MEMORY : BM_ERR_INTERNAL, "cuda: %s: %s", msg_, \
                            cu_err(r_, eb_, sizeof eb_));                                    \
    }                                                                                        \
  } while (0)

/* ------------------------------------------------------------------ sessions */

/* CUDA graphs. A function's kernels are captured into a graph the second
 * time it runs with a given symbol vector (a shape seen once, e.g. one
 * prefill length, is not worth an instantiation) and the graph is replayed
 * on every later run with the same symbols. Replay is exact: the argument
 * blocks' device pointers are fixed for the session (inputs are copied to
 * fixed arena offsets before a run), and everything that varies between
 * runs (the symbols, hence each kernel's task count and grid and which
 * kernels run at all) is the cache key. Each function keeps the
 * BM_CUDA_GRAPH_CACHE most recently used symbol vectors. Profiling,
 * BM_CUDA_SYNC=1 and BM_CUDA_GRAPHS=0 launch kernels one by one. */
#define BM_CUDA_GRAPH_CACHE 8

typedef struct gpu_graph {
  int64_t syms[BM_GPU_MAX_SYMS]; /* the key (the function's nsyms values) */
  uint64_t last_use;             /* 0 = empty slot */
  int runs;                      /* runs with this key so far */
  CUgraphExec exec;              /* NULL until captured */
} gpu_graph;

typedef struct gpu_fn {
  CUfunction *fns;      /* per kernel */
  bm_gpu_args *args;    /* per kernel */
  void **out_host;      /* per output: host copy (page-locked where out_pinned) */
  bool *out_pinned;
  size_t *out_cap;
  gpu_graph graphs[BM_CUDA_GRAPH_CACHE];
  int *tma_smem;        /* per kernel: dynamic shared memory of its TMA body (0: the bundle's), see "Tensor maps" */
  unsigned *tma_grid;   /* per kernel: grid cap (0: none) */
  unsigned *tma_cluster; /* per kernel: cluster size (0, 1: none) */
} gpu_fn;

/* Decode. A greedy LLM step is one graph launch, then the argmax kernel
 * (bm_session_run synchronizes, so the argmax pays a second synchronization):
 * inputs are staged in page-locked memory and copied asynchronously on the
 * session's stream (a per-run bump area, reset after each run's
 * synchronization; inputs that do not fit are copied synchronously), and
 * bm_cuda_output_argmax reduces the logits on the device (the prelude's
 * bm_rt_argmax_f32) so that only the token ids come back.
 * Programmatic dependent launch (sm_90 images whose kernels start with
 * griddepcontrol.wait, marked by the empty kernel bm_pdl_v1 of codegen/cuda/lang.c):
 * each kernel is launched with programmatic stream serialization, so it is
 * scheduled while the previous one drains and waits for it on the device
 * instead of paying a launch gap between every pair of the step's kernels.
 * BM_CUDA_PDL=0 turns it off. */
#define BM_CUDA_STAGE_BYTES ((size_t)1 << 20)
#define BM_CUDA_ARGMAX_ROWS 256

struct bm_cuda_session {
  bm_package *pkg;
  CUdevice dev;
  CUcontext ctx;
  int ctx_held;
  CUstream stream;
  CUmodule mod;
  int arch;
  CUdeviceptr arena, states, weights;
  size_t arena_size, states_size, weights_size;
  size_t *state_off, *weight_off;
  void *state_host;     /* bm_cuda_state snapshots */
  gpu_fn *fns;
  bool graphs;          /* CUDA graphs on: the driver has them and BM_CUDA_GRAPHS is not 0 */
  bool sync_each;       /* BM_CUDA_SYNC=1 */
  uint64_t tick;        /* LRU clock of the graph caches */
  char device_name[128];
  bool pdl;             /* programmatic dependent launch (see "Decode") */
  uint8_t *stage;       /* page-locked input staging (BM_CUDA_STAGE_BYTES), NULL: synchronous copies */
  size_t stage_used;    /* bytes of stage in flight since the last synchronization */
  CUfunction argmax;    /* bm_rt_argmax_f32, NULL in packages without it */
  CUdeviceptr argmax_out; /* (BM_CUDA_ARGMAX_ROWS) i32 */
  int32_t *argmax_host;   /* page-locked (BM_CUDA_ARGMAX_ROWS) */
  CUdeviceptr tmaps;      /* the TMA kernels' tensor maps, 128 bytes each (see "Tensor maps") */
};

static size_t round256(uint64_t v) { return (size_t)((v + 255) & ~(uint64_t)255); }

void bm_cuda_session_destroy(bm_cuda_session *c) {
  if (!c) return;
  if (c->ctx) cu.ctx_set(c->ctx);
  if (c->stream) cu.stream_sync(c->stream); /* staged input copies may still read c->stage */
  if (c->fns)
    for (int f = 0; f < c->pkg->nfunctions; f++) {
      gpu_fn *g = &c->fns[f];
      for (int i = 0; i < BM_CUDA_GRAPH_CACHE; i++)
        if (g->graphs[i].exec) cu.graph_exec_destroy(g->graphs[i].exec);
      free(g->fns);
      free(g->args);
      if (g->out_host)
        for (int i = 0; i < c->pkg->functions[f].noutputs; i++) {
          if (g->out_pinned && g->out_pinned[i])
            cu.host_free(g->out_host[i]);
          else
            free(g->out_host[i]);
        }
      free(g->out_host);
      free(g->out_pinned);
      free(g->out_cap);
      free(g->tma_smem);
      free(g->tma_grid);
      free(g->tma_cluster);
    }
  free(c->fns);
  if (c->stage) cu.host_free(c->stage);
  if (c->argmax_host) cu.host_free(c->argmax_host);
  if (c->argmax_out) cu.mem_free(c->argmax_out);
  if (c->mod) cu.module_unload(c->mod);
  if (c->tmaps) cu.mem_free(c->tmaps);
  if (c->arena) cu.mem_free(c->arena);
  if (c->states) cu.mem_free(c->states);
  if (c->weights) cu.mem_free(c->weights);
  if (c->stream) cu.stream_destroy(c->stream);
  if (c->ctx_held) cu.ctx_release(c->dev);
  free(c->state_off);
  free(c->weight_off);
  free(c->state_host);
  free(c);
}

/* The image for this GPU: the cubin of the highest arch <= ours with our
 * major version, else the PTX of the highest arch <= ours. */
static const bm_rt_gpu_image *pick_image(const bm_package *pkg, int arch) {
  const bm_rt_gpu_image *best = NULL;
  bool force_ptx = getenv("BM_CUDA_FORCE_PTX") && atoi(getenv("BM_CUDA_FORCE_PTX")) > 0;
  for (int pass = 0; pass < 2 && !best; pass++)
    for (int i = 0; i < pkg->ngpu_images; i++) {
      const bm_rt_gpu_image *g = &pkg->gpu_images[i];
      if (g->ptx != pass || g->arch > arch) continue;
      if (!g->ptx && (force_ptx || g->arch / 10 != arch / 10)) continue;
      if (!best || g->arch > best->arch) best = g;
    }
  return best;
}

/* launch attributes: blocks in clusters of n along x; programmatic stream serialization */
static void cluster_attr(cu_launch_attr *a, unsigned n) {
  memset(a, 0, sizeof *a);
  const unsigned dims[3] = {n, 1, 1};
  a->id = CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION;
  memcpy(a->value.bytes, dims, sizeof dims);
}
static void pdl_attr(cu_launch_attr *a) {
  memset(a, 0, sizeof *a);
  a->id = CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
  a->value.programmatic_stream_serialization_allowed = 1;
}

/* Launches fn on the session's stream: with programmatic dependent launch
 * when the session uses it (see "Decode"), in clusters of `cluster` blocks
 * when above 1 (the grid a multiple of it). */
static CUresult launch_kernel(bm_cuda_session *c, CUfunction fn, unsigned grid, unsigned threads, unsigned smem,
                              unsigned cluster, void **params) {
  if (!c->pdl && cluster <= 1) return cu.launch(fn, grid, 1, 1, threads, 1, 1, smem, c->stream, params, NULL);
  cu_launch_attr at[2];
  unsigned nat = 0;
  if (c->pdl) pdl_attr(&at[nat++]);
  if (cluster > 1) cluster_attr(&at[nat++], cluster);
  cu_launch_config lc = {grid, 1, 1, threads, 1, 1, smem, c->stream, at, nat};
  return cu.launch_ex(&lc, fn, params, NULL);
}

/* Tensor maps. A TMA GEMM kernel (codegen/clike/emit_gemm.c, emit_gemm_tma;
 * sm_90a images only) carries a constant array `<symbol>_tmd` (long long):
 * magic, dynamic shared memory, blocks per multiprocessor, the argument slot
 * of its maps, the number of maps, the cluster size (blocks along x: such
 * kernels are launched with cuLaunchKernelEx and a cluster attribute, the
 * grid rounded up to a multiple), then per map: buffer (argument index),
 * element bytes, columns (inner dim), rows, box columns, box rows, swizzle
 * (CUtensorMapSwizzle); magic "tmd2" (the NHWC conv) has maps of rank 1..5
 * instead (tmd_read). For every launch of such a kernel the session
 * encodes the maps over that launch's buffers (cuTensorMapEncodeTiled,
 * zero fill out of bounds) into one device allocation, puts the address of
 * the launch's maps into the slot, raises the kernel's dynamic shared memory
 * and caps its grid at blocks x multiprocessors, or at the clusters that fit
 * at once (cuOccupancyMaxActiveClusters; the kernel loops over its tiles).
 * Without the driver entry points, with BM_CUDA_TMA=0 or when the encoder
 * refuses an operand (an unaligned address), the slot stays 0 and the
 * kernel runs its cp.async fallback with the bundle's shared memory.
 * Experiments: BM_CUDA_TMA_GRID=N sets the grid cap (0: none),
 * BM_CUDA_TMA_DEBUG=1 prints each TMA kernel's setup to stderr. */
#define BM_TMD_MAGIC 0x31646d74ll  /* "tmd1" */
#define BM_TMD2_MAGIC 0x32646d74ll /* "tmd2": maps of rank 1..5 (the NHWC conv's 4-d x) */
#define BM_TMD2_VALS 23
#define BM_TMD_MAX 96

/* One tensor map of a kernel's _tmd record, checked: the arguments of
 * cuTensorMapEncodeTiled. tmd1 maps are 7 values (buffer, element bytes,
 * columns, rows, box columns, box rows, swizzle: 2-d, rows of columns *
 * element bytes); tmd2 maps BM_TMD2_VALS (buffer, element bytes, rank,
 * dims[5], strides[4] in bytes, box[5], element strides[5], swizzle). */
typedef struct tmd_map {
  int buf, es, rank, swizzle;
  uint64_t dims[5], strides[4];
  unsigned box[5], estr[5];
} tmd_map;

/* The number of maps of record d (n values), or -1 if it is malformed. */
static int tmd_count(const long long *d, size_t n) {
  if (n < 6 || (d[0] != BM_TMD_MAGIC && d[0] != BM_TMD2_MAGIC) || d[4] < 1 || d[4] > 4) return -1;
  size_t per = d[0] == BM_TMD_MAGIC ? 7 : BM_TMD2_VALS;
  return n >= 6 + per * (size_t)d[4] ? (int)d[4] : -1;
}

/* Map i of record d (tmd_count maps) into *m; false if a field is out of range. */
static bool tmd_read(const long long *d, int i, int nargs, tmd_map *m) {
  memset(m, 0, sizeof *m);
  if (d[0] == BM_TMD_MAGIC) {
    const long long *v = d + 6 + 7 * i;
    if (v[0] < 0 || v[0] >= nargs || (v[1] != 1 && v[1] != 2 && v[1] != 4) || v[2] < 1 || v[2] > (1ll << 32) ||
        v[3] < 1 || v[3] > (1ll << 32) || v[4] < 1 || v[4] > 256 || v[5] < 1 || v[5] > 256 || v[6] < 0 || v[6] > 3)
      return false;
    *m = (tmd_map){(int)v[0], (int)v[1], 2, (int)v[6], {(uint64_t)v[2], (uint64_t)v[3]}, {(uint64_t)(v[2] * v[1])},
                   {(unsigned)v[4], (unsigned)v[5]}, {1, 1}};
    return true;
  }
  const long long *v = d + 6 + BM_TMD2_VALS * i;
  if (v[0] < 0 || v[0] >= nargs || (v[1] != 1 && v[1] != 2 && v[1] != 4) || v[2] < 1 || v[2] > 5 || v[22] < 0 ||
      v[22] > 3)
    return false;
  m->buf = (int)v[0], m->es = (int)v[1], m->rank = (int)v[2], m->swizzle = (int)v[22];
  for (int k = 0; k < m->rank; k++) {
    const long long dim = v[3 + k], box = v[12 + k], es = v[17 + k];
    if (dim < 1 || dim > (1ll << 32) || box < 1 || box > 256 || es < 1 || es > 8) return false;
    m->dims[k] = (uint64_t)dim, m->box[k] = (unsigned)box, m->estr[k] = (unsigned)es;
    if (k > 0) {
      const long long st = v[8 + k - 1];
      if (st < 16 || st % 16 || st >= (1ll << 40)) return false;
      m->strides[k - 1] = (uint64_t)st;
    }
  }
  return true;
}

static bm_status tma_setup(bm_cuda_session *c) {
  bm_package *pkg = c->pkg;
  const char *te = getenv("BM_CUDA_TMA");
  if (!c->mod || !cu.tma_global || !cu.tma_encode || (te && *te && atoi(te) <= 0)) return NULL;
  int nsm = 0;
  CU_CHECK(cu.device_attr(&nsm, 16 /* CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT */, c->dev), "multiprocessor count");
  size_t nmaps = 0, at = 0;
  unsigned char *host = NULL;
  bm_status s = NULL;
  for (int pass = 0; pass < 2 && !s; pass++) { /* 0: count the maps, 1: encode them */
    for (int f = 0; f < pkg->nfunctions && !s; f++) {
      const bm_rt_function *fn = &pkg->functions[f];
      gpu_fn *g = &c->fns[f];
      for (int k = 0; k < fn->nkernels && !s; k++) {
        const bm_rt_kernel *kr = &fn->kernels[k];
        char name[300];
        snprintf(name, sizeof name, "%s_tmd", kr->symbol);
        CUdeviceptr dp = 0;
        size_t bytes = 0;
        if (cu.tma_global(&dp, &bytes, c->mod, name) != 0) continue; /* not a TMA kernel */
        long long d[BM_TMD_MAX];
        CUresult r = bytes >= 6 * sizeof *d && bytes <= sizeof d ? cu.dtoh(d, dp, bytes) : 0;
        int nm = bytes >= 6 * sizeof *d && bytes <= sizeof d && !r ? tmd_count(d, bytes / sizeof *d) : -1;
        if (r || nm < 1 || d[3] < kr->nargs || d[3] >= BM_GPU_MAX_ARGS || d[1] < 0 || d[1] > (1 << 20) || d[2] < 0 ||
            d[5] < 1 || d[5] > 8) {
          s = CORRUPT("kernel '%s' (function '%s'): bad tensor-map data (%zu bytes)", kr->symbol, fn->name, bytes);
          break;
        }
        if (pass == 0) {
          nmaps += (size_t)nm;
          continue;
        }
        unsigned char *blk = host + at;
        bool ok = (d[5] == 1 || cu.launch_ex) &&
                  cu.func_set_attr(g->fns[k], CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, (int)d[1]) == 0;
        for (int i = 0; i < nm && ok; i++) {
          tmd_map m;
          if (!tmd_read(d, i, kr->nargs, &m)) {
            s = CORRUPT("kernel '%s' (function '%s'): bad tensor map %d", kr->symbol, fn->name, i);
            break;
          }
          int dtype = m.es == 1 ? 0 : m.es == 2 ? 1 : 2; /* CU_TENSOR_MAP_DATA_TYPE_UINT8/16/32 */
          ok = cu.tma_encode(blk + 128 * i, dtype, (unsigned)m.rank, (void *)(uintptr_t)g->args[k].bufs[m.buf], m.dims,
                             m.strides, m.box, m.estr, 0, m.swizzle, 2 /* L2 promotion 128B */, 0) == 0;
          if (!ok && getenv("BM_CUDA_TMA_DEBUG"))
            fprintf(stderr, "bm tma: %s: map %d (rank %d) refused by cuTensorMapEncodeTiled\n", kr->symbol, i, m.rank);
        }
        if (!s && !ok && getenv("BM_CUDA_TMA_DEBUG"))
          fprintf(stderr, "bm tma: %s (function '%s'): no tensor maps, the fallback body\n", kr->symbol, fn->name);
        if (s || !ok) continue; /* the fallback body */
        at += 128 * (size_t)nm;
        g->args[k].bufs[d[3]] = c->tmaps + (CUdeviceptr)(blk - host);
        g->tma_smem[k] = (int)d[1];
        g->tma_grid[k] = d[2] > 0 ? (unsigned)(d[2] * nsm) : 0;
        g->tma_cluster[k] = (unsigned)d[5];
        int ncl = 0;
        if (d[5] > 1 && cu.max_clusters) { /* persistent: as many clusters as fit at once */
          cu_launch_attr ca;
          cluster_attr(&ca, (unsigned)d[5]);
          cu_launch_config lc = {g->tma_grid[k] ? g->tma_grid[k] : (unsigned)(d[5] * nsm), 1, 1,
                                 (unsigned)kr->gpu_threads, 1, 1, (unsigned)d[1], c->stream, &ca, 1};
          if (cu.max_clusters(&ncl, g->fns[k], &lc) == 0 && ncl > 0 && (!g->tma_grid[k] || (unsigned)(ncl * d[5]) < g->tma_grid[k]))
            g->tma_grid[k] = (unsigned)(ncl * d[5]);
        }
        /* experiments: BM_CUDA_TMA_GRID=blocks (0: no cap); BM_CUDA_TMA_DEBUG=1 prints each kernel's setup */
        const char *tg = getenv("BM_CUDA_TMA_GRID");
        if (tg && *tg) g->tma_grid[k] = (unsigned)atoi(tg);
        if (getenv("BM_CUDA_TMA_DEBUG"))
          fprintf(stderr, "bm tma: %s (function '%s'): %d maps, smem %d, grid cap %u, cluster %u (max clusters %d)\n",
                  kr->symbol, fn->name, nm, (int)d[1], g->tma_grid[k], g->tma_cluster[k], ncl);
      }
    }
    if (pass == 0 && !s) {
      if (!nmaps) return NULL;
      host = aligned_alloc(64, nmaps * 128);
      if (!host) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "cuda: %zu tensor maps", nmaps);
      memset(host, 0, nmaps * 128);
      for (int f = 0; f < pkg->nfunctions && !s; f++) {
        gpu_fn *g = &c->fns[f];
        g->tma_smem = calloc((size_t)pkg->functions[f].nkernels + 1, sizeof *g->tma_smem);
        g->tma_grid = calloc((size_t)pkg->functions[f].nkernels + 1, sizeof *g->tma_grid);
        g->tma_cluster = calloc((size_t)pkg->functions[f].nkernels + 1, sizeof *g->tma_cluster);
        if (!g->tma_smem || !g->tma_grid || !g->tma_cluster) s = bm_status_make(BM_ERR_OUT_OF_MEMORY, "cuda session");
      }
      CUresult r = s ? 0 : cu.mem_alloc(&c->tmaps, nmaps * 128);
      if (r) s = bm_status_make(BM_ERR_OUT_OF_MEMORY, "cuda: allocating %zu tensor maps (error %d)", nmaps, r);
    }
  }
  if (!s && at) {
    CUresult r = cu.htod(c->tmaps, host, at);
    if (r) s = bm_status_make(BM_ERR_INTERNAL, "cuda: uploading %zu tensor maps (error %d)", at / 128, r);
  }
  free(host);
  return s;
}

static bm_status setup(bm_cuda_session *c) {
  bm_package *pkg = c->pkg;
  int ordinal = getenv("BM_CUDA_DEVICE") ? atoi(getenv("BM_CUDA_DEVICE")) : 0, count = 0;
  CU_CHECK(cu.device_count(&count), "cuDeviceGetCount");
  if (count == 0) return bm_status_make(BM_ERR_UNSUPPORTED, "cuda: no CUDA device found");
  if (ordinal < 0 || ordinal >= count)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "cuda: BM_CUDA_DEVICE=%d but there are %d devices", ordinal, count);
  CU_CHECK(cu.device_get(&c->dev, ordinal), "cuDeviceGet(%d)", ordinal);
  int major = 0, minor = 0;
  CU_CHECK(cu.device_attr(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, c->dev), "compute capability");
  CU_CHECK(cu.device_attr(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, c->dev), "compute capability");
  cu.device_name(c->device_name, (int)sizeof c->device_name, c->dev);
  c->arch = major * 10 + minor;
  CU_CHECK(cu.ctx_retain(&c->ctx, c->dev), "retaining the primary context of device %d", ordinal);
  c->ctx_held = 1;
  CU_CHECK(cu.ctx_set(c->ctx), "cuCtxSetCurrent");
  CU_CHECK(cu.stream_create(&c->stream, 0), "cuStreamCreate");
  const char *ge = getenv("BM_CUDA_GRAPHS");
  c->graphs = cu.graphs && !(ge && *ge && atoi(ge) <= 0); /* BM_CUDA_GRAPHS=0: off */
  c->sync_each = getenv("BM_CUDA_SYNC") && atoi(getenv("BM_CUDA_SYNC")) > 0;

  bool any_kernel = false;
  for (int f = 0; f < pkg->nfunctions; f++) any_kernel |= pkg->functions[f].nkernels > 0;
  if (any_kernel) {
    const bm_rt_gpu_image *img = pick_image(pkg, c->arch);
    if (!img) {
      char have[256] = "";
      for (int i = 0; i < pkg->ngpu_images; i++)
        snprintf(have + strlen(have), sizeof have - strlen(have), "%s%s_%d", i ? ", " : "",
                 pkg->gpu_images[i].ptx ? "compute" : "sm", pkg->gpu_images[i].arch);
      return bm_status_make(BM_ERR_INCOMPATIBLE,
                            "cuda: package '%s' has no code for %s (compute capability %d.%d); it has %s",
                            pkg->model, c->device_name, major, minor, have);
    }
    CUresult r = cu.module_load(&c->mod, img->data);
    if (r) {
      char eb[256];
      return bm_status_make(BM_ERR_INCOMPATIBLE, "cuda: loading the %s_%d image on %s (sm_%d): %s",
                            img->ptx ? "compute" : "sm", img->arch, c->device_name, c->arch,
                            cu_err(r, eb, sizeof eb));
    }
    /* decode helpers (see "Decode"): PDL where the image's kernels wait for
     * their predecessor, the device argmax where the prelude has it */
    CUfunction marker = NULL;
    const char *pe = getenv("BM_CUDA_PDL");
    c->pdl = cu.launch_ex && c->arch >= 90 && !(pe && *pe && atoi(pe) <= 0) &&
             cu.module_fn(&marker, c->mod, "bm_pdl_v1") == 0;
    if (cu.module_fn(&c->argmax, c->mod, "bm_rt_argmax_f32") != 0) c->argmax = NULL;
  }
  if (c->argmax) {
    CU_CHECK(cu.mem_alloc(&c->argmax_out, sizeof(int32_t) * BM_CUDA_ARGMAX_ROWS), "allocating the argmax ids");
    if (!cu.dtoh_async || !cu.host_alloc ||
        cu.host_alloc((void **)&c->argmax_host, sizeof(int32_t) * BM_CUDA_ARGMAX_ROWS) != 0) {
      c->argmax_host = NULL;
      c->argmax = NULL;
    }
  }
  if (cu.htod_async && cu.host_alloc && cu.host_alloc((void **)&c->stage, BM_CUDA_STAGE_BYTES) != 0) c->stage = NULL;

  /* device memory: arena, states, weights (uploaded once) */
  c->arena_size = round256(pkg->arena_bytes ? pkg->arena_bytes : 256);
  CU_CHECK(cu.mem_alloc(&c->arena, c->arena_size), "allocating the %zu-byte arena on %s", c->arena_size, c->device_name);
  CU_CHECK(cu.memset8(c->arena, 0, c->arena_size), "clearing the arena");
  c->state_off = calloc((size_t)pkg->nstates + 1, sizeof *c->state_off);
  c->weight_off = calloc((size_t)pkg->nweights + 1, sizeof *c->weight_off);
  if (!c->state_off || !c->weight_off) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "cuda session");
  size_t at = 0;
  for (int i = 0; i < pkg->nstates; i++) {
    c->state_off[i] = at;
    at += round256(pkg->states[i].nbytes);
  }
  c->states_size = at ? at : 256;
  CU_CHECK(cu.mem_alloc(&c->states, c->states_size), "allocating %zu bytes of states", c->states_size);
  CU_CHECK(cu.memset8(c->states, 0, c->states_size), "clearing the states");
  at = 0;
  for (int i = 0; i < pkg->nweights; i++) {
    c->weight_off[i] = at;
    at += round256(pkg->weights[i].size);
  }
  c->weights_size = at ? at : 256;
  CU_CHECK(cu.mem_alloc(&c->weights, c->weights_size), "allocating %zu bytes of weights", c->weights_size);
  for (int i = 0; i < pkg->nweights; i++)
    if (pkg->weights[i].size)
      CU_CHECK(cu.htod(c->weights + c->weight_off[i], pkg->weights[i].data, pkg->weights[i].size),
               "uploading weight '%s'", pkg->weights[i].name);

  /* per function: kernel handles, argument blocks, host output buffers */
  c->fns = calloc((size_t)pkg->nfunctions + 1, sizeof *c->fns);
  if (!c->fns) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "cuda session");
  for (int f = 0; f < pkg->nfunctions; f++) {
    const bm_rt_function *fn = &pkg->functions[f];
    gpu_fn *g = &c->fns[f];
    g->fns = calloc((size_t)fn->nkernels + 1, sizeof *g->fns);
    g->args = calloc((size_t)fn->nkernels + 1, sizeof *g->args);
    g->out_host = calloc((size_t)fn->noutputs + 1, sizeof *g->out_host);
    g->out_pinned = calloc((size_t)fn->noutputs + 1, sizeof *g->out_pinned);
    g->out_cap = calloc((size_t)fn->noutputs + 1, sizeof *g->out_cap);
    if (!g->fns || !g->args || !g->out_host || !g->out_pinned || !g->out_cap) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "cuda session");
    for (int k = 0; k < fn->nkernels; k++) {
      const bm_rt_kernel *kr = &fn->kernels[k];
      CU_CHECK(cu.module_fn(&g->fns[k], c->mod, kr->symbol), "kernel '%s' (function '%s') is not in the module",
               kr->symbol, fn->name);
      if (kr->gpu_smem > 48 * 1024)
        CU_CHECK(cu.func_set_attr(g->fns[k], CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, kr->gpu_smem),
                 "kernel '%s': %d bytes of shared memory", kr->symbol, kr->gpu_smem);
      for (int j = 0; j < kr->nargs; j++) {
        const bm_rt_arg *a = &kr->args[j];
        g->args[k].bufs[j] = a->weight >= 0 ? c->weights + c->weight_off[a->weight]
                             : a->state >= 0 ? c->states + c->state_off[a->state]
                                             : c->arena + a->offset;
      }
    }
    for (int i = 0; i < fn->noutputs; i++) {
      const bm_rt_tensor *t = &fn->outputs[i];
      size_t cap = t->weight >= 0 ? pkg->weights[t->weight].size
                   : t->state >= 0 ? pkg->states[t->state].nbytes
                                   : t->nbytes;
      g->out_cap[i] = cap;
      /* page-locked (up to 64 MiB): the copy after every run (an LLM's
       * logits each token) goes straight to it by DMA instead of through a
       * staging buffer */
      if (cu.host_alloc && cap <= ((size_t)64 << 20) && cu.host_alloc(&g->out_host[i], cap ? cap : 1) == 0)
        g->out_pinned[i] = true;
      else
        g->out_host[i] = malloc(cap ? cap : 1);
      if (!g->out_host[i]) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "cuda session: %zu bytes for output '%s'", cap, t->name);
    }
  }
  return tma_setup(c);
}

bm_status bm_cuda_session_create(bm_package *pkg, bm_cuda_session **out) {
  *out = NULL;
  BM_RETURN_IF_ERROR(cu_load());
  bm_cuda_session *c = calloc(1, sizeof *c);
  if (!c) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "cuda session");
  c->pkg = pkg;
  bm_status s = setup(c);
  if (s) {
    bm_cuda_session_destroy(c);
    return s;
  }
  *out = c;
  return NULL;
}

bm_status bm_cuda_set_input(bm_cuda_session *c, uint64_t offset, const void *data, size_t bytes) {
  if (!bytes) return NULL;
  CU_CHECK(cu.ctx_set(c->ctx), "cuCtxSetCurrent");
  size_t at = (c->stage_used + 255) & ~(size_t)255;
  if (c->stage && bytes <= BM_CUDA_STAGE_BYTES && at <= BM_CUDA_STAGE_BYTES - bytes) {
    /* staged: the copy runs on the stream, ahead of the next run's kernels */
    memcpy(c->stage + at, data, bytes);
    c->stage_used = at + bytes;
    CU_CHECK(cu.htod_async(c->arena + offset, c->stage + at, bytes, c->stream),
             "copying %zu input bytes to the device", bytes);
    return NULL;
  }
  CU_CHECK(cu.htod(c->arena + offset, data, bytes), "copying %zu input bytes to the device", bytes);
  return NULL;
}

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Launches function f's kernels on the stream (or records them, while the
 * stream captures); sync_each synchronizes after each one (and times it
 * into prof). */
static bm_status launch_all(bm_cuda_session *c, int f, const int64_t *syms, bm_kernel_profile *prof, bool sync_each) {
  const bm_rt_function *fn = &c->pkg->functions[f];
  gpu_fn *g = &c->fns[f];
  char eb[256];
  for (int k = 0; k < fn->nkernels; k++) {
    const bm_rt_kernel *kr = &fn->kernels[k];
    int64_t ntasks = bm_task_count(&kr->tasks, syms);
    if (prof) prof[k].seconds = 0;
    if (ntasks <= 0) continue;
    bm_gpu_args *a = &g->args[k];
    for (int i = 0; i < BM_GPU_MAX_SYMS; i++) a->syms[i] = i < fn->nsyms ? syms[i] : 0;
    a->ntasks = ntasks;
    unsigned grid = ntasks > 0x7fffffff ? 0x7fffffffu : (unsigned)ntasks, smem = (unsigned)kr->gpu_smem;
    unsigned cluster = 1;
    if (g->tma_smem && g->tma_smem[k]) { /* a TMA kernel with its maps (see "Tensor maps") */
      smem = (unsigned)g->tma_smem[k];
      if (g->tma_grid[k] && grid > g->tma_grid[k]) grid = g->tma_grid[k];
      cluster = g->tma_cluster[k] > 1 ? g->tma_cluster[k] : 1;
      grid = (grid + cluster - 1) / cluster * cluster;
    }
    void *params[] = {a};
    double t0 = prof ? now_seconds() : 0;
    CUresult r = launch_kernel(c, g->fns[k], grid, (unsigned)kr->gpu_threads, smem, cluster, params);
    if (r)
      return bm_status_make(BM_ERR_INTERNAL, "cuda: launching kernel '%s' (%s, function '%s', %u blocks of %d): %s",
                            kr->symbol, kr->op, fn->name, grid, kr->gpu_threads, cu_err(r, eb, sizeof eb));
    if (sync_each) {
      r = cu.stream_sync(c->stream);
      if (r)
        return bm_status_make(BM_ERR_INTERNAL, "cuda: kernel '%s' (%s, function '%s') failed: %s", kr->symbol, kr->op,
                              fn->name, cu_err(r, eb, sizeof eb));
      if (prof) prof[k].seconds = now_seconds() - t0;
    }
  }
  return NULL;
}

/* The graph cache entry of syms in g: the matching one, else the least
 * recently used slot, emptied (its graph destroyed). */
static gpu_graph *graph_slot(bm_cuda_session *c, gpu_fn *g, int nsyms, const int64_t *syms) {
  gpu_graph *lru = &g->graphs[0];
  size_t key = sizeof(int64_t) * (size_t)(nsyms < BM_GPU_MAX_SYMS ? nsyms : BM_GPU_MAX_SYMS);
  for (int i = 0; i < BM_CUDA_GRAPH_CACHE; i++) {
    gpu_graph *e = &g->graphs[i];
    if (e->last_use && memcmp(e->syms, syms, key) == 0) {
      e->last_use = ++c->tick;
      return e;
    }
    if (e->last_use < lru->last_use) lru = e;
  }
  if (lru->exec) cu.graph_exec_destroy(lru->exec);
  memset(lru, 0, sizeof *lru);
  memcpy(lru->syms, syms, key);
  lru->last_use = ++c->tick;
  return lru;
}

/* Records function f's kernels into a graph and instantiates it in *exec. */
static bm_status graph_capture(bm_cuda_session *c, int f, const int64_t *syms, CUgraphExec *exec) {
  const bm_rt_function *fn = &c->pkg->functions[f];
  char eb[256];
  CUgraph graph = NULL;
  CUresult r = cu.capture_begin(c->stream, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL);
  if (r)
    return bm_status_make(BM_ERR_INTERNAL, "cuda: starting the CUDA graph capture of function '%s': %s "
                          "(BM_CUDA_GRAPHS=0 turns graphs off)", fn->name, cu_err(r, eb, sizeof eb));
  bm_status s = launch_all(c, f, syms, NULL, false);
  r = cu.capture_end(c->stream, &graph); /* always: it takes the stream out of capture mode */
  if (s) {
    if (graph) cu.graph_destroy(graph);
    return s;
  }
  if (r)
    return bm_status_make(BM_ERR_INTERNAL, "cuda: capturing function '%s' (%d kernels) into a CUDA graph: %s "
                          "(BM_CUDA_GRAPHS=0 turns graphs off)", fn->name, fn->nkernels, cu_err(r, eb, sizeof eb));
  r = cu.graph_instantiate(exec, graph, 0);
  cu.graph_destroy(graph); /* the executable graph is independent of it */
  if (r) {
    *exec = NULL;
    return bm_status_make(BM_ERR_INTERNAL, "cuda: instantiating the CUDA graph of function '%s' (%d kernels): %s "
                          "(BM_CUDA_GRAPHS=0 turns graphs off)", fn->name, fn->nkernels, cu_err(r, eb, sizeof eb));
  }
  return NULL;
}

bm_status bm_cuda_run(bm_cuda_session *c, int f, const int64_t *syms, bm_kernel_profile *prof) {
  const bm_rt_function *fn = &c->pkg->functions[f];
  gpu_fn *g = &c->fns[f];
  bool sync_each = prof || c->sync_each;
  CU_CHECK(cu.ctx_set(c->ctx), "cuCtxSetCurrent");
  char eb[256];
  gpu_graph *e = NULL;
  if (c->graphs && !sync_each && fn->nkernels > 0) {
    e = graph_slot(c, g, fn->nsyms, syms);
    if (!e->exec && ++e->runs >= 2) BM_RETURN_IF_ERROR(graph_capture(c, f, syms, &e->exec));
  }
  if (e && e->exec) {
    CUresult r = cu.graph_launch(e->exec, c->stream);
    if (r)
      return bm_status_make(BM_ERR_INTERNAL, "cuda: launching the CUDA graph of function '%s' (%d kernels): %s",
                            fn->name, fn->nkernels, cu_err(r, eb, sizeof eb));
  } else {
    BM_RETURN_IF_ERROR(launch_all(c, f, syms, prof, sync_each));
  }
  CUresult r = cu.stream_sync(c->stream);
  c->stage_used = 0; /* the staged inputs have been copied */
  if (r)
    return bm_status_make(BM_ERR_INTERNAL,
                          "cuda: running function '%s' (%d kernels%s) failed: %s (set BM_CUDA_SYNC=1 to find the kernel)",
                          fn->name, fn->nkernels, e && e->exec ? ", CUDA graph" : "", cu_err(r, eb, sizeof eb));
  return NULL;
}

bm_status bm_cuda_output_argmax(bm_cuda_session *c, int f, int i, int64_t rows, int64_t n, int32_t *ids) {
  const bm_rt_function *fn = &c->pkg->functions[f];
  const bm_rt_tensor *t = &fn->outputs[i];
  if (!c->argmax || rows < 1 || rows > BM_CUDA_ARGMAX_ROWS || n < 1 || n > 0x7fffffff)
    return bm_status_make(BM_ERR_UNSUPPORTED, "cuda: no device argmax for output '%s' (%lld rows of %lld)", t->name,
                          (long long)rows, (long long)n);
  CUdeviceptr src = t->weight >= 0 ? c->weights + c->weight_off[t->weight]
                    : t->state >= 0 ? c->states + c->state_off[t->state]
                                    : c->arena + t->offset;
  CU_CHECK(cu.ctx_set(c->ctx), "cuCtxSetCurrent");
  long long nn = (long long)n;
  void *params[] = {&src, &nn, &c->argmax_out};
  char eb[256];
  /* with PDL it waits for its predecessor like every kernel of the image */
  CUresult r = launch_kernel(c, c->argmax, (unsigned)rows, 1024, 0, 1, params);
  if (r)
    return bm_status_make(BM_ERR_INTERNAL, "cuda: launching the argmax of output '%s' (function '%s'): %s", t->name,
                          fn->name, cu_err(r, eb, sizeof eb));
  CU_CHECK(cu.dtoh_async(c->argmax_host, c->argmax_out, sizeof(int32_t) * (size_t)rows, c->stream),
           "copying the argmax of output '%s' to the host", t->name);
  r = cu.stream_sync(c->stream);
  if (r)
    return bm_status_make(BM_ERR_INTERNAL, "cuda: the argmax of output '%s' (function '%s') failed: %s", t->name,
                          fn->name, cu_err(r, eb, sizeof eb));
  memcpy(ids, c->argmax_host, sizeof(int32_t) * (size_t)rows);
  return NULL;
}

bm_status bm_cuda_get_output(bm_cuda_session *c, int f, int i, const int64_t *syms, const void **data) {
  const bm_rt_function *fn = &c->pkg->functions[f];
  const bm_rt_tensor *t = &fn->outputs[i];
  gpu_fn *g = &c->fns[f];
  bm_tensor_info info;
  bm_rt_tensor_info(fn, t, syms, &info);
  int64_t n = 1;
  for (int d = 0; d < info.ndim; d++) n *= info.shape[d];
  size_t bytes = bm_dtype_nbytes(info.dtype, n);
  if (bytes > g->out_cap[i])
    return bm_status_make(BM_ERR_INTERNAL, "cuda: output '%s' (%zu bytes) overflows its buffer", t->name, bytes);
  CUdeviceptr src = t->weight >= 0 ? c->weights + c->weight_off[t->weight]
                    : t->state >= 0 ? c->states + c->state_off[t->state]
                                    : c->arena + t->offset;
  CU_CHECK(cu.ctx_set(c->ctx), "cuCtxSetCurrent");
  if (bytes) CU_CHECK(cu.dtoh(g->out_host[i], src, bytes), "copying output '%s' (%zu bytes) to the host", t->name, bytes);
  *data = g->out_host[i];
  return NULL;
}

void bm_cuda_reset_state(bm_cuda_session *c) {
  if (cu.ctx_set(c->ctx) == 0) cu.memset8(c->states, 0, c->states_size);
}

bm_status bm_cuda_state(bm_cuda_session *c, int i, void **data) {
  if (!c->state_host) {
    c->state_host = malloc(c->states_size);
    if (!c->state_host) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "cuda: %zu bytes of state copies", c->states_size);
  }
  CU_CHECK(cu.ctx_set(c->ctx), "cuCtxSetCurrent");
  size_t n = c->pkg->states[i].nbytes;
  uint8_t *dst = (uint8_t *)c->state_host + c->state_off[i];
  if (n) CU_CHECK(cu.dtoh(dst, c->states + c->state_off[i], n), "copying state '%s' to the host", c->pkg->states[i].name);
  *data = dst;
  return NULL;
}

bm_status bm_cuda_device_arch(int *arch, char *name, size_t name_cap) {
  *arch = 0;
  BM_RETURN_IF_ERROR(cu_load());
  int ordinal = getenv("BM_CUDA_DEVICE") ? atoi(getenv("BM_CUDA_DEVICE")) : 0, count = 0, major = 0, minor = 0;
  CUdevice dev;
  CU_CHECK(cu.device_count(&count), "cuDeviceGetCount");
  if (ordinal < 0 || ordinal >= count) return bm_status_make(BM_ERR_UNSUPPORTED, "cuda: no CUDA device %d", ordinal);
  CU_CHECK(cu.device_get(&dev, ordinal), "cuDeviceGet");
  CU_CHECK(cu.device_attr(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev), "compute capability");
  CU_CHECK(cu.device_attr(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev), "compute capability");
  if (name && name_cap) cu.device_name(name, (int)name_cap, dev);
  *arch = major * 10 + minor;
  return NULL;
}
