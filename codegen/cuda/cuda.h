/* cuda.h - internals of the CUDA backend: NVRTC loaded at run time (dlopen),
 * so bmc builds and runs without the CUDA toolkit. */
#ifndef BM_CODEGEN_CUDA_H
#define BM_CODEGEN_CUDA_H

#include <stddef.h>

#include "../codegen.h"

/* Loads NVRTC once (BM_NVRTC=path, else libnvrtc.so.13, .12, unversioned,
 * then /usr/local/cuda/lib64). The status says why it is unavailable. */
bm_status bm_nvrtc_load(void);
/* "13.0" (after a successful load). */
const char *bm_nvrtc_version(void);

/* Compiles CUDA source for one target: "sm_XY" gives a cubin, "compute_XY"
 * PTX (NUL-terminated). *out is malloc'd. The error carries the compiler
 * log. */
bm_status bm_nvrtc_compile(const char *src, const char *arch, void **out, size_t *size);

#endif
