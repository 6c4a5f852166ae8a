/* cuda_bundle.h - the layout of a "cuda" package's code section (written by
 * codegen/cuda, read by runtime/device_cuda.c): the compiled images of every
 * kernel (one cubin per GPU architecture, plus PTX for newer GPUs) and each
 * kernel's launch shape. Standalone (stdint only).
 *
 *   offset 0   8 bytes  magic "BMGPU\0\0\1"
 *   offset 8   u32      size of the JSON header that follows (bytes)
 *   offset 12  u32      0
 *   offset 16  JSON     {"kernels": [{"symbol", "threads", "smem"}],
 *                        "images": [{"kind": "cubin"|"ptx", "arch": 80, "offset", "size"}]}
 *   ...        images at their offsets (from the start of the bundle, 16-aligned);
 *              a PTX image ends with a NUL byte.
 *
 * "arch" is the compute capability times ten (sm_86 = 86). A cubin runs on
 * GPUs of the same major version and a minor version at least its own; the
 * PTX (for the lowest arch) is compiled by the driver on any newer GPU. */
#ifndef BM_CUDA_BUNDLE_H
#define BM_CUDA_BUNDLE_H

#define BM_CUDA_BUNDLE_MAGIC "BMGPU\0\0\1"
#define BM_CUDA_BUNDLE_HEADER 16
#define BM_CUDA_CODE_FORMAT "bm-cuda-bundle-1"
#define BM_CUDA_TRIPLE "nvptx64-nvidia-cuda"

#endif
