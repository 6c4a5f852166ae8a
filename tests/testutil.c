/* testutil.c - implementation of the test harness (see testutil.h). */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int bm_test_failed_checks;
static int passed, failed;

void bm_test_check_err(bm_status s, bm_code code, const char *substr, const char *expr,
                       const char *file, int line) {
  if (!s) {
    fprintf(stderr, "%s:%d: %s succeeded, expected error '%s'\n", file, line, expr,
            bm_code_name(code));
    bm_test_failed_checks++;
    return;
  }
  if (bm_status_code(s) != code || (substr && !strstr(bm_status_message(s), substr))) {
    fprintf(stderr, "%s:%d: %s: expected %s containing '%s', got %s: %s\n", file, line, expr,
            bm_code_name(code), substr ? substr : "", bm_code_name(bm_status_code(s)),
            bm_status_message(s));
    bm_test_failed_checks++;
  }
  bm_status_free(s);
}

void bm_test_run(const char *name, void (*fn)(void)) {
  int before = bm_test_failed_checks;
  fn();
  if (bm_test_failed_checks == before) {
    passed++;
    fprintf(stderr, "ok   %s\n", name);
  } else {
    failed++;
    fprintf(stderr, "FAIL %s\n", name);
  }
}

int bm_test_finish(void) {
  printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}

uint64_t bm_test_rand_u64(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

float bm_test_rand_uniform(uint64_t *s, float lo, float hi) {
  return lo + (hi - lo) * (float)((bm_test_rand_u64(s) >> 40) * (1.0 / 16777216.0));
}

void bm_test_fill_uniform(float *p, int64_t n, uint64_t seed, float lo, float hi) {
  uint64_t s = seed;
  for (int64_t i = 0; i < n; i++) p[i] = bm_test_rand_uniform(&s, lo, hi);
}

double bm_test_rel_err(const float *a, const float *b, int64_t n) {
  double maxdiff = 0, maxref = 1e-30;
  for (int64_t i = 0; i < n; i++) {
    double d = fabs((double)a[i] - (double)b[i]);
    if (isnan(d)) return NAN; /* any NaN fails every tolerance */
    if (d > maxdiff) maxdiff = d;
    if (fabs(b[i]) > maxref) maxref = fabs(b[i]);
  }
  return maxdiff / maxref;
}

int64_t bm_test_count_mismatch(const float *a, const float *b, int64_t n, double atol, double rtol) {
  int64_t bad = 0;
  for (int64_t i = 0; i < n; i++) {
    double d = fabs((double)a[i] - (double)b[i]);
    if (!(d <= atol + rtol * fabs(b[i]))) bad++;
  }
  return bad;
}

const char *bm_test_shared(const char *rel) {
  static char buf[4096];
  snprintf(buf, sizeof buf, "%s/%s", BM_SHARED_DIR, rel);
  return buf;
}

const char *bm_test_tmpdir(void) {
  static char dir[256];
  if (!dir[0]) {
    const char *base = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/bmtest.XXXXXX", base ? base : "/tmp");
    if (!mkdtemp(dir)) {
      perror("mkdtemp");
      exit(2);
    }
  }
  return dir;
}
