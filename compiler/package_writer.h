/* package_writer.h - writes a compiled module as one .bmpk package file.
 *
 * Input: a module whose graphs went through the pass pipeline (memory
 * planned: every node has storage/offset/nbytes) and codegen (every node
 * that needs a kernel has kernel/tasks/scratch), plus the code object.
 * The format is described in docs/package.md and read by runtime/package.c.
 *
 * The file is written to PATH.tmp and renamed, so a failure never leaves a
 * half-written package. Output is byte-for-byte reproducible: no
 * timestamps, fixed ordering, deterministic JSON.
 */
#ifndef BM_PACKAGE_WRITER_H
#define BM_PACKAGE_WRITER_H

#include "../codegen/codegen.h"

/* A file embedded in the package (manifest "blobs"), e.g. a tokenizer file
 * named "tokenizer/tokenizer.json". Read back with bm_package_blob(). */
typedef struct bm_embedded_file {
  const char *name;             /* unique, non-empty */
  const void *data;
  size_t size;
} bm_embedded_file;

typedef struct bm_package_meta {
  const char *model;            /* model name */
  const char *compiler_version;
  const char *options_json;     /* the compile options, as a JSON object text (may be NULL) */
  const char *target_backend;   /* "cpu" */
  int compress;                 /* per-tensor zstd for weights where it helps */
  int zstd_level;               /* default 3 */
  /* Extra JSON object text stored verbatim as manifest["extra"] (tokenizer,
   * sampler config, ... for later model families); may be NULL. */
  const char *extra_json;
  /* Embedded files, written after the weights (zstd-compressed with
   * `compress` where it helps); may be NULL / 0. */
  const bm_embedded_file *blobs;
  int nblobs;
} bm_package_meta;

bm_status bm_package_write(const char *path, const bm_module *m, const bm_object *code,
                           const bm_package_meta *meta);

#endif
