/* testutil.c - implementation of the test harness (see testutil.h). */
#include "testutil.h"

#include "../ir/interp.h"
#include "../runtime/safetensors.h"

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

double bm_test_rms_rel(const float *a, const float *b, int64_t n) {
  double num = 0, den = 1e-300;
  for (int64_t i = 0; i < n; i++) {
    double d = (double)a[i] - (double)b[i];
    if (isnan(d)) return NAN;
    num += d * d;
    den += (double)b[i] * b[i];
  }
  return sqrt(num / den);
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

/* ------------------------------------------------------------------ LLM goldens */

static int32_t *golden_ids(const bm_st_tensor *t) {
  int32_t *p = malloc(sizeof(int32_t) * (size_t)(t->numel ? t->numel : 1));
  for (int64_t i = 0; p && i < t->numel; i++) p[i] = (int32_t)bm_load_i64(t->data, t->dtype, i);
  return p;
}

bm_status bm_test_llm_golden_open(const char *dir, bm_test_llm_golden *G) {
  memset(G, 0, sizeof *G);
  char path[1200];
  snprintf(path, sizeof path, "%s/golden.safetensors", dir);
  BM_RETURN_IF_ERROR(bm_st_open(path, &G->st));
  const bm_st_tensor *ids, *lg, *gr, *dl, *bi, *bl;
  BM_RETURN_IF_ERROR(bm_st_get(G->st, "input_ids", &ids));
  BM_RETURN_IF_ERROR(bm_st_get(G->st, "logits", &lg));
  BM_RETURN_IF_ERROR(bm_st_get(G->st, "greedy_ids", &gr));
  BM_RETURN_IF_ERROR(bm_st_get(G->st, "decode_logits", &dl));
  BM_RETURN_IF_ERROR(bm_st_get(G->st, "batch_input_ids", &bi));
  BM_RETURN_IF_ERROR(bm_st_get(G->st, "batch_logits", &bl));
  if (ids->ndim != 2 || gr->ndim != 2 || bi->ndim != 2 || lg->ndim != 3 || lg->dtype != BM_DTYPE_F32 ||
      dl->dtype != BM_DTYPE_F32 || bl->dtype != BM_DTYPE_F32)
    return bm_status_make(BM_ERR_CORRUPT, "%s: unexpected ranks or dtypes (see ../shared/golden/README.md)", path);
  G->P = ids->shape[1];
  G->N = gr->shape[1];
  G->BP = bi->shape[1];
  G->V = lg->shape[2];
  G->ids = golden_ids(ids);
  G->greedy = golden_ids(gr);
  G->bids = golden_ids(bi);
  if (!G->ids || !G->greedy || !G->bids) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "%s: ids", path);
  G->logits = lg->data;
  G->decode_logits = dl->data;
  G->batch_logits = bl->data;
  return NULL;
}

void bm_test_llm_golden_close(bm_test_llm_golden *G) {
  free(G->ids);
  free(G->greedy);
  free(G->bids);
  bm_st_close(G->st);
  memset(G, 0, sizeof *G);
}

int64_t bm_test_argmax(const float *p, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; i++)
    if (p[i] > p[best]) best = i;
  return best;
}
