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
    const char *base = getenv("TMPDIR");
    snprintf(g_tmpdir, sizeof g_tmpdir, "%s/bm_fuzz_XXXXXX", base && *base ? base : "/tmp");
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
