/* bm_runtime.h - the public C API of libbmrt, the bm package runtime.
 *
 * A package (.bmpk) is one file holding a JSON manifest, weights and
 * precompiled kernels. The runtime maps it, verifies it, and runs its
 * functions (entry points) on a thread pool. It contains no compiler.
 *
 * Ownership: `_open`/`_create` return objects the caller owns and releases
 * with `_close`/`_destroy`. Accessors borrow. Output parameters are cleared
 * on entry. Every fallible call returns a bm_status: NULL means success; a
 * non-NULL status carries a code and a message and must be freed with
 * bm_status_free().
 *
 * Security: a package contains native code. Opening one is like dlopen()ing
 * a shared library: only open packages you trust, or pin them with
 * bm_open_options.allowed_hashes.
 *
 * Typical use:
 *
 *   bm_package *pkg; bm_session *s; int f;
 *   BM_CHECK(bm_package_open("model.bmpk", NULL, &pkg));
 *   BM_CHECK(bm_package_find_function(pkg, "main", &f));
 *   BM_CHECK(bm_session_create(pkg, NULL, &s));
 *   BM_CHECK(bm_session_set_input(s, f, 0, data, BM_DTYPE_F32, 2, shape));
 *   BM_CHECK(bm_session_run(s, f));
 *   BM_CHECK(bm_session_get_output(s, f, 0, &ptr, &info));
 *   bm_session_destroy(s); bm_package_close(pkg);
 */
#ifndef BM_RUNTIME_H
#define BM_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- status */

typedef enum bm_code {
  BM_OK = 0,
  BM_ERR_INVALID_ARGUMENT, /* a caller passed something wrong (NULL, bad index, bad shape) */
  BM_ERR_IO,               /* open/read/write/mmap failed */
  BM_ERR_CORRUPT,          /* a file is malformed, truncated or fails a checksum */
  BM_ERR_INCOMPATIBLE,     /* format version, target or CPU features do not match */
  BM_ERR_UNSUPPORTED,      /* valid request this build cannot do (e.g. no CUDA) */
  BM_ERR_NOT_FOUND,        /* a named thing (function, tensor, weight) is absent */
  BM_ERR_OUT_OF_MEMORY,    /* allocation failed or a size would overflow */
  BM_ERR_PERMISSION,       /* package not on the allow-list */
  BM_ERR_INTERNAL,         /* a bug in bm */
  BM_CODE_COUNT
} bm_code;

typedef struct bm_status_s *bm_status; /* NULL = OK */

/* Creates a status with a printf-style message. Never returns NULL for a
 * code other than BM_OK (falls back to a static object when out of memory). */
bm_status bm_status_make(bm_code code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Returns a new status whose message is "prefix: <old message>"; frees `s`. */
bm_status bm_status_wrap(bm_status s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
bm_code bm_status_code(bm_status s);            /* BM_OK for NULL */
const char *bm_status_message(bm_status s);     /* "ok" for NULL */
const char *bm_code_name(bm_code c);            /* "corrupt", ... */
void bm_status_free(bm_status s);               /* NULL is fine */

#define BM_RETURN_IF_ERROR(expr)                                              \
  do {                                                                        \
    bm_status bm__s = (expr);                                                 \
    if (bm__s) return bm__s;                                                  \
  } while (0)

/* ---------------------------------------------------------------- dtypes */

/* Element types. Packed i4 stores two values per byte, the element with the
 * even index in the low nibble; its byte size is ceil(n/2). */
typedef enum bm_dtype {
  BM_DTYPE_F32 = 0,
  BM_DTYPE_F16,
  BM_DTYPE_BF16,
  BM_DTYPE_I8,
  BM_DTYPE_I4,
  BM_DTYPE_FP8_E4M3,
  BM_DTYPE_FP8_E5M2,
  BM_DTYPE_I32,
  BM_DTYPE_I64,
  BM_DTYPE_COUNT
} bm_dtype;

const char *bm_dtype_name(bm_dtype t);          /* "f32", "i4", "fp8_e4m3", ... */
int bm_dtype_from_name(const char *s, bm_dtype *out); /* 0 on success */
/* Bytes needed for n elements (handles packed i4). */
size_t bm_dtype_nbytes(bm_dtype t, int64_t n);

#define BM_MAX_DIMS 6

/* A tensor's description. For a symbolic dimension, shape[i] holds its
 * upper bound (before binding) or its bound value (after), and dim_names[i]
 * names the symbol; dim_names[i] is NULL for static dimensions. */
typedef struct bm_tensor_info {
  const char *name;
  bm_dtype dtype;
  int ndim;
  int64_t shape[BM_MAX_DIMS];
  const char *dim_names[BM_MAX_DIMS];
} bm_tensor_info;

/* ---------------------------------------------------------------- package */

typedef struct bm_package bm_package;

enum {
  BM_OPEN_SKIP_CHECKSUMS = 1u << 0, /* do not hash weights and code (faster open) */
};

typedef struct bm_open_options {
  uint32_t flags;                  /* BM_OPEN_* */
  /* If n_allowed_hashes > 0, the package's whole-file XXH3-64 must be one of
   * these, or bm_package_open fails with BM_ERR_PERMISSION. */
  const uint64_t *allowed_hashes;
  size_t n_allowed_hashes;
} bm_open_options;

/* Maps and verifies a package: magic, format version, header and manifest
 * checksums, every offset and size, target and CPU features, and (unless
 * BM_OPEN_SKIP_CHECKSUMS) the XXH3 of every weight and of the code. */
bm_status bm_package_open(const char *path, const bm_open_options *opts,
                          bm_package **out);
/* Releases the caller's reference (NULL is fine). Closing the same package
 * twice is the caller's bug (undefined, like a double free). */
void bm_package_close(bm_package *pkg);

const char *bm_package_manifest_json(const bm_package *pkg); /* borrowed, NUL-terminated */
const char *bm_package_model_name(const bm_package *pkg);
uint64_t bm_package_file_hash(const bm_package *pkg); /* XXH3-64 of the whole file */
uint64_t bm_package_arena_bytes(const bm_package *pkg); /* planned activation arena */
uint64_t bm_package_weight_bytes(const bm_package *pkg);

int bm_package_function_count(const bm_package *pkg);
const char *bm_package_function_name(const bm_package *pkg, int f);
bm_status bm_package_find_function(const bm_package *pkg, const char *name, int *f);
int bm_function_input_count(const bm_package *pkg, int f);
int bm_function_output_count(const bm_package *pkg, int f);
/* Declared info: symbolic dims report their upper bound. */
bm_status bm_function_input_info(const bm_package *pkg, int f, int i, bm_tensor_info *out);
bm_status bm_function_output_info(const bm_package *pkg, int f, int i, bm_tensor_info *out);
bm_status bm_function_find_input(const bm_package *pkg, int f, const char *name, int *i);

/* Embedded files (manifest "blobs"; e.g. "tokenizer/tokenizer.json", see
 * docs/package.md): the bytes are borrowed and valid while the package is
 * open (checked against their XXH3 at open unless BM_OPEN_SKIP_CHECKSUMS).
 * BM_ERR_NOT_FOUND if the package has no blob of that name. */
bm_status bm_package_blob(const bm_package *pkg, const char *name, const void **data, size_t *size);
int bm_package_blob_count(const bm_package *pkg);
const char *bm_package_blob_name(const bm_package *pkg, int i); /* NULL if out of range */

/* ---------------------------------------------------------------- session */

typedef struct bm_session bm_session;

typedef struct bm_session_options {
  int threads;        /* 0 = number of online CPUs */
  int profile;        /* nonzero: time every kernel (see bm_session_profile) */
} bm_session_options;

/* Allocates the planned arena, per-thread scratch and the thread pool once.
 * Nothing is allocated per run. The session holds a reference to the
 * package: bm_package_close may come first, and the package is freed with
 * its last session (the caller must not use the pkg pointer after closing
 * it). A session needing more than the machine's RAM + swap fails with
 * BM_ERR_OUT_OF_MEMORY before allocating. */
bm_status bm_session_create(bm_package *pkg, const bm_session_options *opts,
                            bm_session **out);
void bm_session_destroy(bm_session *s); /* NULL is fine */

/* Copies an input into the session. dtype and rank must match the declared
 * input; static dims must match exactly and symbolic dims are bound from
 * the shape (and must agree across inputs and stay within their bound). */
bm_status bm_session_set_input(bm_session *s, int f, int i, const void *data,
                               bm_dtype dtype, int ndim, const int64_t *shape);
/* Runs function f on the inputs last set for it. */
bm_status bm_session_run(bm_session *s, int f);
/* Borrows output i of the last run of f: valid until the next run or
 * set_input on this session. info->shape holds the bound shape. */
bm_status bm_session_get_output(bm_session *s, int f, int i, const void **data,
                                bm_tensor_info *info);
/* ids[r] = the index of the largest value of row r of output i (f32) of the
 * last run of f, rows being all dims but the last (NaN counts as -inf, the
 * lowest index wins ties: greedy decoding); ids has room for `cap` rows. On a
 * GPU session the reduction runs on the device and only the ids are copied
 * back (an LLM's greedy token per row instead of its logits); the output
 * stays readable with bm_session_get_output. */
bm_status bm_session_output_argmax(bm_session *s, int f, int i, int32_t *ids, int64_t cap);

/* States (e.g. KV caches, manifest "states") are allocated and zeroed by
 * bm_session_create, kept across runs and shared by name by every function
 * of the package (prefill writes the cache that decode reads). */
/* Zeroes every state (start a new conversation). */
void bm_session_reset_state(bm_session *s);
/* Borrows state `name`'s memory (for tests and debugging): valid for the
 * session's lifetime; a run may change it. info (may be NULL) gets its
 * dtype and static shape. BM_ERR_NOT_FOUND if the package has no such state. */
bm_status bm_session_state(bm_session *s, const char *name, void **data, bm_tensor_info *info);

/* Per-kernel timing of the last run (when opts.profile was set). */
typedef struct bm_kernel_profile {
  const char *kernel;  /* symbol */
  const char *op;      /* op name of the node it implements */
  double seconds;
} bm_kernel_profile;
bm_status bm_session_profile(bm_session *s, int f, const bm_kernel_profile **out, int *n);

/* ---------------------------------------------------------------- devices */

/* Device interfaces. The CPU device is always present; CUDA and Metal are
 * loaded at run time (dlopen) by their backends. */
typedef enum bm_device_kind { BM_DEVICE_CPU = 0, BM_DEVICE_CUDA, BM_DEVICE_METAL } bm_device_kind;
const char *bm_device_kind_name(bm_device_kind k);
/* BM_OK if a device of this kind can be used here, else a status saying why. */
bm_status bm_device_probe(bm_device_kind k);

const char *bm_runtime_version(void);

#ifdef __cplusplus
}
#endif
#endif /* BM_RUNTIME_H */
