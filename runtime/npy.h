/* npy.h - reading and writing NumPy .npy arrays (format versions 1, 2, 3),
 * used by bmrun for inputs and outputs.
 *
 * Supported element types (little-endian, C order):
 *   '<f4' f32   '<f2' f16   '<i4' i32   '<i8' i64   '|i1' (or '<i1') i8
 *   '<f8' is read and converted to f32 (numpy's default float type), and
 *   the array records it in from_f64.
 * Other types (bool, unsigned, complex, big-endian, structured) and
 * fortran_order True are BM_ERR_UNSUPPORTED naming the file and the type.
 * A malformed file (bad magic, header beyond the file, an unparsable header
 * dict, data size not numel * element size) is BM_ERR_CORRUPT naming the
 * file and the problem. bfloat16 has no npy type: write it as f32.
 */
#ifndef BM_NPY_H
#define BM_NPY_H

#include <stddef.h>
#include <stdint.h>

#include "bm_runtime.h"

#define BM_NPY_MAX_DIMS 8

/* An array read from a .npy file; owns `data`. */
typedef struct bm_npy_array {
  bm_dtype dtype;
  int ndim;                        /* 0 for a scalar */
  int64_t shape[BM_NPY_MAX_DIMS];
  int64_t numel;
  void *data;                      /* malloc'd, 64-byte aligned; NULL if numel is 0 */
  size_t nbytes;
  int from_f64;                    /* the file held '<f8', converted to f32 */
} bm_npy_array;

/* Reads `path` into *out (cleared on entry; free with bm_npy_free). */
bm_status bm_npy_read(const char *path, bm_npy_array *out);
/* Parses an in-memory .npy image; `name` is used in messages. */
bm_status bm_npy_parse(const void *buf, size_t len, const char *name, bm_npy_array *out);
void bm_npy_free(bm_npy_array *a); /* frees data and clears *a; NULL is fine */

/* Writes an array (version 1.0 header, 64-byte aligned data). dtype is one
 * of f32, f16, i32, i64, i8; other dtypes are BM_ERR_UNSUPPORTED. */
bm_status bm_npy_write(const char *path, bm_dtype dtype, int ndim, const int64_t *shape,
                       const void *data);

#endif /* BM_NPY_H */
