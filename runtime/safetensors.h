/* safetensors.h - read-only safetensors checkpoints (single files and
 * sharded folders) mapped with mmap, plus a small deterministic writer.
 *
 * File layout: an 8-byte little-endian header length N, N bytes of UTF-8
 * JSON, then the data section. The JSON maps each tensor name to
 *   {"dtype": "F32", "shape": [4, 8], "data_offsets": [begin, end]}
 * (offsets relative to the data section) and may hold "__metadata__", a
 * map of strings to strings.
 *
 * bm_st_open validates the whole header before returning: the length is
 * sane, the JSON is valid UTF-8 and an object, every tensor has a known
 * dtype, a shape of at most BM_ST_MAX_DIMS non-negative integers whose
 * element count does not overflow, and data_offsets inside the data section
 * whose size equals numel * element size. Any violation is BM_ERR_CORRUPT
 * with the file name and the tensor name, e.g.
 *   "model.safetensors: tensor 'lm_head.weight': data_offsets [0, 96] is
 *    96 bytes but shape (4, 8) of f32 needs 128"
 * Overlapping tensors and holes between them are not rejected.
 *
 * Dtypes that bm has no bm_dtype for (U8, BOOL, F64, I16, ...) are still
 * listed, with supported = 0, so that a loader can report the tensor and
 * its dtype only when that tensor is actually needed (bm_st_check_dtype).
 *
 * Data pointers point into the read-only mapping and may be unaligned if
 * the writer did not align them (the reference writer and ours do); copy
 * with memcpy when in doubt. They stay valid until the file is closed.
 *
 *   bm_st_file *st;
 *   BM_RETURN_IF_ERROR(bm_st_open("model.safetensors", &st));
 *   const bm_st_tensor *t;
 *   BM_RETURN_IF_ERROR(bm_st_get(st, "lm_head.weight", &t));
 *   ... t->data, t->nbytes, t->shape ...
 *   bm_st_close(st);
 */
#ifndef BM_SAFETENSORS_H
#define BM_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "bm_runtime.h"

#define BM_ST_MAX_DIMS 8
#define BM_ST_MAX_HEADER (100u << 20) /* 100 MB */

/* One tensor of a safetensors file (borrowed from its bm_st_file). */
typedef struct bm_st_tensor {
  const char *name;
  const char *dtype_name;          /* as written in the file: "F32", "BOOL", ... */
  int supported;                   /* nonzero if dtype_name maps to a bm_dtype */
  bm_dtype dtype;                  /* valid only when supported */
  int elem_bytes;                  /* bytes per element */
  int ndim;                        /* 0 for a scalar */
  int64_t shape[BM_ST_MAX_DIMS];
  int64_t numel;
  const void *data;                /* into the mapping; may be unaligned */
  size_t nbytes;
  uint64_t offset;                 /* of the data within the whole file */
} bm_st_tensor;

typedef struct bm_st_file bm_st_file;

/* Maps and validates `path` (see above). The caller closes *out. */
bm_status bm_st_open(const char *path, bm_st_file **out);
void bm_st_close(bm_st_file *st); /* NULL is fine */

const char *bm_st_path(const bm_st_file *st);
/* Number of tensors; bm_st_tensor_at(st, i) for 0 <= i < count iterates
 * them sorted by name (strcmp order). */
int bm_st_count(const bm_st_file *st);
const bm_st_tensor *bm_st_tensor_at(const bm_st_file *st, int i);
/* NULL if absent. */
const bm_st_tensor *bm_st_find(const bm_st_file *st, const char *name);
/* As bm_st_find, but a missing tensor is BM_ERR_NOT_FOUND naming the file. */
bm_status bm_st_get(const bm_st_file *st, const char *name, const bm_st_tensor **out);
/* The "__metadata__" value for key, or NULL. */
const char *bm_st_metadata(const bm_st_file *st, const char *key);
int bm_st_metadata_count(const bm_st_file *st);
/* The i-th metadata pair in file order (key and value borrowed). */
void bm_st_metadata_at(const bm_st_file *st, int i, const char **key, const char **value);

/* BM_ERR_UNSUPPORTED naming the tensor and its dtype if t->supported is 0. */
bm_status bm_st_check_dtype(const bm_st_tensor *t);

/* Formats "(4, 8)" into buf (always NUL-terminated); returns buf. */
char *bm_st_shape_str(int ndim, const int64_t *shape, char *buf, size_t size);

/* ------------------------------------------------------------ sharded sets */

/* A checkpoint split into several files, resolved through an index. */
typedef struct bm_st_set bm_st_set;

/* Opens a checkpoint given as
 *  - a folder holding model.safetensors.index.json or
 *    diffusion_pytorch_model.safetensors.index.json (sharded), or else
 *    model.safetensors or diffusion_pytorch_model.safetensors (one file);
 *  - the path of such an *.index.json;
 *  - the path of a single .safetensors file.
 * With an index, every shard named in "weight_map" is opened once (shard
 * names must be plain file names: no '/', '\\' or ".."), and every mapped
 * tensor must exist in its shard. Tensors are those of the weight_map (or
 * of the single file). */
bm_status bm_st_open_dir(const char *path, bm_st_set **out);
void bm_st_set_close(bm_st_set *set); /* NULL is fine */

int bm_st_set_count(const bm_st_set *set);          /* tensors, sorted by name */
const bm_st_tensor *bm_st_set_tensor_at(const bm_st_set *set, int i);
const bm_st_tensor *bm_st_set_find(const bm_st_set *set, const char *name);
/* A missing tensor is BM_ERR_NOT_FOUND naming the checkpoint. *file (may be
 * NULL) receives the shard that holds it. */
bm_status bm_st_set_get(const bm_st_set *set, const char *name, const bm_st_tensor **out,
                        const bm_st_file **file);
int bm_st_set_file_count(const bm_st_set *set);
const bm_st_file *bm_st_set_file(const bm_st_set *set, int i);

/* ------------------------------------------------------------------ writer */

/* Writes n tensors to `path`: infos[i] gives name, dtype (any but I4), ndim
 * and shape; datas[i] holds bm_dtype_nbytes(dtype, numel) bytes. The output
 * is deterministic: tensors are laid out by decreasing element size, then
 * by name (so every tensor is aligned to its element size), the header
 * keys are sorted by name, and the header is padded with spaces to a
 * multiple of 8 bytes. metadata is NULL or a NULL-terminated list of
 * key, value, key, value, ... strings written as "__metadata__". */
bm_status bm_st_write(const char *path, int n, const bm_tensor_info *infos,
                      const void *const *datas, const char *const *metadata);

#endif /* BM_SAFETENSORS_H */
