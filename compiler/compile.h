/* compile.h - the compiler driver: module -> passes -> codegen -> package.
 * Used by bmc, the tests and the benchmarks. */
#ifndef BM_COMPILE_H
#define BM_COMPILE_H

#include "../codegen/codegen.h"
#include "../passes/passes.h"
#include "package_writer.h"

typedef struct bm_compile_options {
  bm_target target;          /* backend "cpu" by default */
  bm_pass_options passes;
  int compress;              /* zstd weights */
  const char *options_json;  /* recorded in the manifest */
  const char *extra_json;    /* manifest["extra"] */
  const bm_embedded_file *blobs; /* embedded files (tokenizer), may be NULL */
  int nblobs;
} bm_compile_options;

void bm_compile_options_init(bm_compile_options *o);

/* Tokenizer files to embed in a package (docs/llm.md): read from a file or
 * a model folder, checked by loading them with the runtime's tokenizer. */
typedef struct bm_tokenizer_files {
  bm_embedded_file blobs[3];  /* "tokenizer/<file>" [, "tokenizer/merges.txt"] [, "tokenizer/tokenizer_config.json"] */
  int nblobs;
  void *owned[3];
  int32_t vocab;             /* tokens of the loaded tokenizer */
  char *json;                /* the extra.tokenizer object (malloc'd) */
  const char *chat;          /* chat format name found ("llama3", ...) or NULL */
} bm_tokenizer_files;

/* Nonzero if folder `dir` holds tokenizer files bm can load. */
int bm_tokenizer_files_present(const char *dir);
/* Reads the tokenizer at `path` (a file, or a folder: the first of
 * tokenizer.json, tokenizer.model, tokenizer.model.v3, spiece.model,
 * vocab.json + merges.txt, bpe_simple_vocab_16e6.txt.gz, plus its
 * tokenizer_config.json) and checks that it loads. */
bm_status bm_tokenizer_files_read(const char *path, bm_tokenizer_files *out);
void bm_tokenizer_files_free(bm_tokenizer_files *f);
/* Adds "tokenizer" (tf, may be NULL) and "chat_template" (chat_override,
 * else tf's, else null) to the extra JSON object text `extra` (may be NULL:
 * a new object). Checks the tokenizer's vocabulary against extra's
 * vocab_size. *out is malloc'd. */
bm_status bm_extra_add_tokenizer(const char *extra, const bm_tokenizer_files *tf, const char *chat_override,
                                 char **out);

/* Runs the pass pipeline on every graph of m, compiles the kernels with the
 * target's backend and writes the package to out_path. m is modified. */
bm_status bm_compile_module(bm_module *m, const bm_compile_options *o, const char *out_path);

#endif
