/* fuzz_common.c - the shared harness of the libFuzzer targets (see
 * fuzz_common.h): memfd files, a scratch folder, the status contract. */
#include "fuzz_common.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

void bm_fuzz_file_init(bm_fuzz_file *f, const char *name) {
  if (f->path[0]) return;
  f->fd = memfd_create(name, MFD_CLOEXEC);
  if (f->fd < 0) {
    perror("fuzz: memfd_create");
    abort();
  }
  snprintf(f->path, sizeof f->path, "/proc/self/fd/%d", f->fd);
}

void bm_fuzz_file_set(bm_fuzz_file *f, const void *data, size_t size) {
  if (ftruncate(f->fd, 0) != 0 || (size && pwrite(f->fd, data, size, 0) != (ssize_t)size)) {
    perror("fuzz: memfd write");
    abort();
  }
}

static char g_tmpdir[256];

static void remove_tmpdir(void) {
  DIR *d = opendir(g_tmpdir);
  if (!d) return;
  struct dirent *e;
  char p[600];
  while ((e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    snprintf(p, sizeof p, "%s/%s", g_tmpdir, e->d_name);
    unlink(p);
  }
  closedir(d);
  rmdir(g_tmpdir);
}

const char *bm_fuzz_tmpdir(void) {
  if (!g_tmpdir[0]) {
    /* tmpfs if there is one: on a disk file system every rewrite of a file
     * that was truncated is flushed on close (ext4 auto_da_alloc), which made
     * fuzz_st_index spend most of its time waiting for the disk */
    const char *base = getenv("TMPDIR");
    if (!base || !*base) base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(g_tmpdir, sizeof g_tmpdir, "%s/bm_fuzz_XXXXXX", base);
    if (!mkdtemp(g_tmpdir)) {
      perror("fuzz: mkdtemp");
      abort();
    }
    atexit(remove_tmpdir);
  }
  return g_tmpdir;
}

void bm_fuzz_write(const char *path, const void *data, size_t size) {
  FILE *f = fopen(path, "wb");
  if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0) {
    perror(path);
    abort();
  }
}

char *bm_fuzz_read(const char *path, size_t *size) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *b = n >= 0 ? malloc((size_t)n + 1) : NULL;
  if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
    free(b);
    b = NULL;
  }
  fclose(f);
  if (b) {
    b[n] = 0;
    if (size) *size = (size_t)n;
  }
  return b;
}

void bm_fuzz_check_status(bm_status s, const char *what) {
  if (!s) return;
  bm_code c = bm_status_code(s);
  const char *m = bm_status_message(s);
  static int verbose = -1;
  if (verbose < 0) verbose = getenv("BM_FUZZ_VERBOSE") != NULL;
  if (verbose) fprintf(stderr, "fuzz: %s: %s: %s\n", what, bm_code_name(c), m ? m : "(null)");
  if (c <= BM_OK || c >= BM_CODE_COUNT || c == BM_ERR_INTERNAL || !m || !m[0]) {
    fprintf(stderr, "fuzz: %s broke the status contract: code %d (%s), message '%s'\n", what, (int)c,
            bm_code_name(c), m ? m : "(null)");
    abort();
  }
  bm_status_free(s);
}

char *bm_fuzz_strndup(const uint8_t *data, size_t size) {
  char *s = malloc(size + 1);
  if (!s) abort();
  if (size) memcpy(s, data, size);
  s[size] = 0;
  return s;
}

/* ------------------------------------------------------------ tokenizers */

#include "../runtime/tokenizer.h"

const char bm_fuzz_sample_text[] =
    "Hello, world! <s>[INST] caf\xc3\xa9 \xe4\xbd\xa0\xe5\xa5\xbd  \t\n123 4567 <|endoftext|> don't "
    "\xf0\x9f\x98\x80 \xff\xfe a\xcc\x81 <|start_header_id|>user<|end_header_id|>";

void bm_fuzz_check_decode(const bm_tokenizer *tok, const int32_t *ids, size_t n, uint32_t flags) {
  char *text = NULL;
  size_t len = 0;
  bm_status s = bm_tokenizer_decode_alloc(tok, ids, n, flags, &text, &len);
  if (s) {
    fprintf(stderr, "fuzz: decoding ids the tokenizer produced failed: %s\n", bm_status_message(s));
    abort();
  }
  /* streaming: one id at a time into a growing buffer */
  char *stream = malloc(len + 64), buf[256];
  size_t at = 0, k;
  bm_detok d;
  bm_detok_init(&d, tok, flags);
  for (size_t i = 0; i < n; i++) {
    s = bm_detok_push(&d, ids[i], buf, sizeof buf, &k);
    if (s) { /* a very long token: retry with the size it asked for */
      bm_status_free(s);
      char *big = malloc(k);
      s = bm_detok_push(&d, ids[i], big, k, &k);
      if (s || at + k > len) abort();
      memcpy(stream + at, big, k);
      free(big);
    } else {
      if (at + k > len) {
        fprintf(stderr, "fuzz: the streaming detokenizer gives more bytes than decode\n");
        abort();
      }
      memcpy(stream + at, buf, k);
    }
    at += k;
  }
  s = bm_detok_flush(&d, buf, sizeof buf, &k);
  if (s || at + k != len || memcmp(stream, text, at) != 0 || memcmp(buf, text + at, k) != 0) {
    fprintf(stderr, "fuzz: streaming detokenization differs from decode (%zu+%zu vs %zu bytes)\n", at, k, len);
    abort();
  }
  free(stream);
  free(text);
}

void bm_fuzz_exercise_tokenizer(const bm_tokenizer *tok, const char *text, size_t len, uint32_t flags) {
  int32_t *ids = NULL;
  size_t n = 0;
  bm_status s = bm_tokenizer_encode_alloc(tok, text, len, flags, &ids, &n);
  if (s) {
    bm_fuzz_check_status(s, "bm_tokenizer_encode_alloc");
    return;
  }
  int32_t vocab = bm_tokenizer_vocab_size(tok);
  for (size_t i = 0; i < n; i++)
    if (ids[i] < 0 || ids[i] >= vocab) {
      fprintf(stderr, "fuzz: encode produced id %d outside the vocabulary (%d)\n", ids[i], vocab);
      abort();
    }
  /* the sizing call agrees with the allocating one */
  size_t n2 = 0;
  bm_status_free(bm_tokenizer_encode(tok, text, len, flags, NULL, 0, &n2));
  if (n2 != n) {
    fprintf(stderr, "fuzz: encode with cap 0 counts %zu ids, encode_alloc gave %zu\n", n2, n);
    abort();
  }
  bm_fuzz_check_decode(tok, ids, n, 0);
  bm_fuzz_check_decode(tok, ids, n, BM_TOK_SKIP_SPECIAL);
  int32_t padded[77];
  size_t real = 0;
  bm_fuzz_check_status(bm_tokenizer_encode_padded(tok, text, len, flags, padded, 77, 0, &real), "encode_padded");
  free(ids);
}

bm_tokenizer *bm_fuzz_load_tokenizer(int format, const uint8_t *data, size_t size, const uint8_t *data2,
                                     size_t size2) {
  bm_tokenizer *tok = NULL;
  bm_status s = bm_tokenizer_load_memory((bm_tok_format)format, data, size, data2, size2, "fuzz", &tok);
  if (s) {
    if (tok) abort();
    bm_fuzz_check_status(s, "bm_tokenizer_load_memory");
    return NULL;
  }
  /* queries on every id must be safe */
  int32_t vocab = bm_tokenizer_vocab_size(tok);
  for (int32_t id = 0; id < vocab && id < 4096; id++) {
    size_t len = 0;
    const char *p = bm_tokenizer_token_text(tok, id, &len);
    if (p && len) {
      volatile char c = p[0] ^ p[len - 1];
      (void)c;
    }
    (void)bm_tokenizer_is_special(tok, id);
  }
  (void)bm_tokenizer_token_text(tok, vocab, NULL);
  return tok;
}
