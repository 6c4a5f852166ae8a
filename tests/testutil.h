/* testutil.h - a tiny self-checking test harness shared by tests/test_*.c.
 *
 *   static void test_foo(void) { CHECK(x == 1); CHECK_OK(bm_call(...)); }
 *   int main(void) { RUN(test_foo); return bm_test_finish(); }
 *
 * bm_test_finish() prints "N passed, N failed" and returns nonzero on failure.
 */
#ifndef BM_TESTUTIL_H
#define BM_TESTUTIL_H

#include <stdint.h>
#include <stdio.h>

#include "../runtime/bm_runtime.h"

extern int bm_test_failed_checks;

#define CHECK(cond)                                                             \
  do {                                                                          \
    if (!(cond)) {                                                              \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);  \
      bm_test_failed_checks++;                                                  \
    }                                                                           \
  } while (0)

#define CHECK_MSG(cond, ...)                                                    \
  do {                                                                          \
    if (!(cond)) {                                                              \
      fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);  \
      fprintf(stderr, __VA_ARGS__);                                             \
      fputc('\n', stderr);                                                      \
      bm_test_failed_checks++;                                                  \
    }                                                                           \
  } while (0)

/* The call must succeed; prints the status message otherwise. */
#define CHECK_OK(expr)                                                          \
  do {                                                                          \
    bm_status s__ = (expr);                                                     \
    if (s__) {                                                                  \
      fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #expr,     \
              bm_status_message(s__));                                          \
      bm_test_failed_checks++;                                                  \
      bm_status_free(s__);                                                      \
    }                                                                           \
  } while (0)

/* The call must fail with `code` and a message containing `substr` (or NULL). */
#define CHECK_ERR(expr, code, substr) bm_test_check_err((expr), (code), (substr), #expr, __FILE__, __LINE__)

#define RUN(fn) bm_test_run(#fn, fn)

void bm_test_check_err(bm_status s, bm_code code, const char *substr, const char *expr,
                       const char *file, int line);
void bm_test_run(const char *name, void (*fn)(void));
int bm_test_finish(void);

/* Deterministic random numbers (splitmix64). */
uint64_t bm_test_rand_u64(uint64_t *state);
float bm_test_rand_uniform(uint64_t *state, float lo, float hi);
void bm_test_fill_uniform(float *p, int64_t n, uint64_t seed, float lo, float hi);

/* max |a-b| / max(max|b|, tiny): one relative error for a whole tensor. */
double bm_test_rel_err(const float *a, const float *b, int64_t n);
/* ||a - b|| / ||b|| (2-norms; NaN if any difference is NaN) */
double bm_test_rms_rel(const float *a, const float *b, int64_t n);
/* max over elements of |a-b| / (atol + rtol*|b|) > 1 -> number of violations */
int64_t bm_test_count_mismatch(const float *a, const float *b, int64_t n, double atol, double rtol);

/* An LLM golden of ../shared/golden/hf/<family>/golden.safetensors
 * (transformers' f32 reference; its README): the prompt, its logits, the
 * greedy continuation with the logits of each decode step, and a two-row
 * batch. The ids are converted to i32 (malloc'd); the logits point into the
 * mapped file (f32, aligned by the writer). */
typedef struct bm_test_llm_golden {
  struct bm_st_file *st;
  int32_t *ids, *greedy, *bids;  /* (1, P), (1, N), (2, BP) */
  int64_t P, N, BP, V;           /* prompt length, new tokens, batch prompt length, vocabulary */
  const float *logits;           /* (1, P, V) */
  const float *decode_logits;    /* (1, N - 1, V): after feeding greedy[0..N-2] */
  const float *batch_logits;     /* (2, BP, V) */
} bm_test_llm_golden;
/* Opens DIR/golden.safetensors; on error G holds nothing to free but
 * bm_test_llm_golden_close may still be called. */
bm_status bm_test_llm_golden_open(const char *dir, bm_test_llm_golden *G);
void bm_test_llm_golden_close(bm_test_llm_golden *G);
/* the index of the largest of p[0..n) (the first of equals) */
int64_t bm_test_argmax(const float *p, int64_t n);

/* Path helpers: BM_SHARED_DIR / rel, into a static buffer (one at a time). */
const char *bm_test_shared(const char *rel);
/* A fresh temporary directory for this test process (created once). */
const char *bm_test_tmpdir(void);

#endif
