/* nvrtc.c - NVRTC through dlopen: the CUDA backend compiles its kernels when
 * bmc runs, never at run time, and needs no link-time CUDA dependency. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda.h"

typedef struct nvrtc_prog *nvrtc_program; /* nvrtcProgram */
typedef int nvrtc_result;                  /* nvrtcResult, 0 = NVRTC_SUCCESS */

static struct {
  void *lib;
  char version[32];
  char error[1024];
  nvrtc_result (*create)(nvrtc_program *, const char *, const char *, int, const char *const *,
                         const char *const *);
  nvrtc_result (*compile)(nvrtc_program, int, const char *const *);
  nvrtc_result (*log_size)(nvrtc_program, size_t *);
  nvrtc_result (*log)(nvrtc_program, char *);
  nvrtc_result (*ptx_size)(nvrtc_program, size_t *);
  nvrtc_result (*ptx)(nvrtc_program, char *);
  nvrtc_result (*cubin_size)(nvrtc_program, size_t *);
  nvrtc_result (*cubin)(nvrtc_program, char *);
  nvrtc_result (*destroy)(nvrtc_program *);
  const char *(*error_string)(nvrtc_result);
  nvrtc_result (*get_version)(int *, int *);
} nv;

static pthread_once_t nv_once = PTHREAD_ONCE_INIT;

static void nv_load_once(void) {
  const char *env = getenv("BM_NVRTC");
  const char *names[] = {env && *env ? env : NULL, "libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so",
                         "/usr/local/cuda/lib64/libnvrtc.so", "/usr/local/cuda/lib/libnvrtc.so"};
  char last[512] = "";
  for (size_t i = 0; i < sizeof names / sizeof *names && !nv.lib; i++) {
    if (!names[i]) continue;
    nv.lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!nv.lib) snprintf(last, sizeof last, "%s", dlerror());
  }
  if (!nv.lib) {
    snprintf(nv.error, sizeof nv.error,
             "backend 'cuda' is unavailable: NVRTC (libnvrtc.so.13 or .12, from the CUDA toolkit) could not be "
             "loaded (%s); install the CUDA toolkit or set BM_NVRTC=/path/to/libnvrtc.so",
             last);
    return;
  }
#define SYM(field, name)                                                                                   \
  do {                                                                                                     \
    *(void **)&nv.field = dlsym(nv.lib, name);                                                             \
    if (!nv.field) {                                                                                       \
      snprintf(nv.error, sizeof nv.error, "backend 'cuda' is unavailable: the NVRTC library lacks %s", name); \
      dlclose(nv.lib);                                                                                     \
      nv.lib = NULL;                                                                                       \
      return;                                                                                              \
    }                                                                                                      \
  } while (0)
  SYM(create, "nvrtcCreateProgram");
  SYM(compile, "nvrtcCompileProgram");
  SYM(log_size, "nvrtcGetProgramLogSize");
  SYM(log, "nvrtcGetProgramLog");
  SYM(ptx_size, "nvrtcGetPTXSize");
  SYM(ptx, "nvrtcGetPTX");
  SYM(cubin_size, "nvrtcGetCUBINSize");
  SYM(cubin, "nvrtcGetCUBIN");
  SYM(destroy, "nvrtcDestroyProgram");
  SYM(error_string, "nvrtcGetErrorString");
  SYM(get_version, "nvrtcVersion");
#undef SYM
  int major = 0, minor = 0;
  nv.get_version(&major, &minor);
  snprintf(nv.version, sizeof nv.version, "%d.%d", major, minor);
}

bm_status bm_nvrtc_load(void) {
  pthread_once(&nv_once, nv_load_once);
  if (!nv.lib) return bm_status_make(BM_ERR_UNSUPPORTED, "%s", nv.error);
  return NULL;
}

const char *bm_nvrtc_version(void) { return nv.version; }

bm_status bm_nvrtc_compile(const char *src, const char *arch, void **out, size_t *size) {
  *out = NULL;
  *size = 0;
  BM_RETURN_IF_ERROR(bm_nvrtc_load());
  bool ptx = strncmp(arch, "compute_", 8) == 0;
  if (!ptx && strncmp(arch, "sm_", 3) != 0)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "cuda: unknown GPU architecture '%s' (expected sm_XY or compute_XY)",
                          arch);
  /* the sm_90 cubin is built as sm_90a (runs on sm_90 parts only, as any
   * sm_90 cubin does): the kernels then get wgmma (__CUDA_ARCH_FEAT_SM90_ALL);
   * the bundle still records it as arch 90 (backend.c) */
  char opt_arch[64];
  snprintf(opt_arch, sizeof opt_arch, "--gpu-architecture=%s", strcmp(arch, "sm_90") == 0 ? "sm_90a" : arch);
  const char *opts[] = {opt_arch, "--std=c++17", "-w"};
  nvrtc_program prog = NULL;
  nvrtc_result r = nv.create(&prog, src, "bm_kernels.cu", 0, NULL, NULL);
  if (r) return bm_status_make(BM_ERR_INTERNAL, "cuda: nvrtcCreateProgram: %s", nv.error_string(r));
  r = nv.compile(prog, (int)(sizeof opts / sizeof *opts), opts);
  bm_status s = NULL;
  if (r) {
    size_t ls = 0;
    nv.log_size(prog, &ls);
    char *log = malloc(ls + 1);
    if (log) {
      nv.log(prog, log);
      log[ls] = 0;
    }
    s = bm_status_make(BM_ERR_INTERNAL, "cuda: NVRTC %s failed to compile the generated kernels for %s: %s\n%.4000s",
                       nv.version, arch, nv.error_string(r), log ? log : "(no log)");
    free(log);
  } else {
    size_t n = 0;
    r = ptx ? nv.ptx_size(prog, &n) : nv.cubin_size(prog, &n);
    char *buf = r ? NULL : malloc(n ? n : 1);
    if (!r && buf) r = ptx ? nv.ptx(prog, buf) : nv.cubin(prog, buf);
    if (r || !buf) {
      free(buf);
      s = r ? bm_status_make(BM_ERR_INTERNAL, "cuda: reading the %s image: %s", arch, nv.error_string(r))
            : bm_status_make(BM_ERR_OUT_OF_MEMORY, "cuda: %zu bytes of %s code", n, arch);
    } else {
      *out = buf;
      *size = n;
    }
  }
  nv.destroy(&prog);
  return s;
}
