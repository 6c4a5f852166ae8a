/* fuzz_common.h - the shared harness of the libFuzzer targets in fuzz/:
 * in-memory files (memfd) for the parsers that take a path, a scratch
 * folder, and the contract every target checks after each input.
 *
 * Every target is one fuzz_<name>.c defining LLVMFuzzerTestOneInput (and
 * optionally LLVMFuzzerInitialize). A parser under fuzz must either
 * succeed or return a status with a known code and a non-empty message;
 * bm_fuzz_check_status aborts (a finding) otherwise. Crashes, leaks,
 * sanitizer reports and timeouts are found by libFuzzer itself. */
#ifndef BM_FUZZ_COMMON_H
#define BM_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include "../runtime/bm_runtime.h"

/* An in-memory file: `path` ("/proc/self/fd/N") names a memfd holding the
 * bytes of the last bm_fuzz_file_set. Created once per process. */
typedef struct bm_fuzz_file {
  int fd;
  char path[64];
} bm_fuzz_file;

/* Creates f (once); aborts if memfd is unavailable (a harness bug). */
void bm_fuzz_file_init(bm_fuzz_file *f, const char *name);
/* Replaces the file's content with data[0, size). */
void bm_fuzz_file_set(bm_fuzz_file *f, const void *data, size_t size);

/* A fresh scratch folder for this process (created once, removed at exit),
 * under $TMPDIR, else /dev/shm (tmpfs: no disk flushes), else /tmp. */
const char *bm_fuzz_tmpdir(void);
/* Writes data to path (aborts on I/O errors: a harness bug). */
void bm_fuzz_write(const char *path, const void *data, size_t size);
/* Reads a whole file (malloc'd, NUL-terminated); NULL if it cannot be read. */
char *bm_fuzz_read(const char *path, size_t *size);

/* The contract for a failed call: a known code other than OK and INTERNAL
 * (an INTERNAL error on bad input is a bug too) and a message. Frees s.
 * Aborts (so libFuzzer records the input) if the contract is broken.
 * With BM_FUZZ_VERBOSE set in the environment it prints every error (to
 * check that seeds get past the loaders). */
void bm_fuzz_check_status(bm_status s, const char *what);

/* A copy of data with a NUL appended (for text parsers); free() it. */
char *bm_fuzz_strndup(const uint8_t *data, size_t size);

#endif

/* ------------------------------------------------------------ tokenizers */

typedef struct bm_tokenizer bm_tokenizer;

/* Encodes text with `flags`, checks the ids are in range, decodes them
 * (with and without BM_TOK_SKIP_SPECIAL) and checks that the streaming
 * detokenizer gives exactly the same bytes as bm_tokenizer_decode. */
void bm_fuzz_exercise_tokenizer(const bm_tokenizer *tok, const char *text, size_t len, uint32_t flags);

/* Decodes valid ids with bm_tokenizer_decode_alloc and with the streaming
 * detokenizer (aborts unless both succeed with the same bytes). */
void bm_fuzz_check_decode(const bm_tokenizer *tok, const int32_t *ids, size_t n, uint32_t flags);

/* Loads a tokenizer from memory with the status contract; NULL on error. */
bm_tokenizer *bm_fuzz_load_tokenizer(int format, const uint8_t *data, size_t size, const uint8_t *data2,
                                     size_t size2);

/* Text that the tokenizer targets encode after a successful load. */
extern const char bm_fuzz_sample_text[];
