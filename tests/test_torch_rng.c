/* test_torch_rng.c - PyTorch's CPU generator (runtime/torch_rng.h) against
 * shared/golden/rng/torch_cpu_randn.safetensors: every tensor bit for bit
 * (randn of <16 and >=16 elements, two draws from one generator, rand,
 * seeds 0, 42, 12345 and 2^32+7). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../runtime/safetensors.h"
#include "../runtime/torch_rng.h"
#include "testutil.h"

static bm_st_file *open_golden(void) {
  bm_st_file *st = NULL;
  CHECK_OK(bm_st_open(bm_test_shared("golden/rng/torch_cpu_randn.safetensors"), &st));
  return st;
}

/* Number of elements that differ in their bits; *maxulp the largest gap. */
static int64_t bit_mismatch(const float *a, const float *b, int64_t n, int *maxulp) {
  int64_t bad = 0;
  *maxulp = 0;
  for (int64_t i = 0; i < n; i++) {
    int32_t x, y;
    memcpy(&x, &a[i], 4);
    memcpy(&y, &b[i], 4);
    if (x != y) {
      bad++;
      int d = abs(x - y);
      if (d > *maxulp) *maxulp = d;
    }
  }
  return bad;
}

static void check_tensor(bm_st_file *st, const char *name, uint64_t seed, int kind) {
  const bm_st_tensor *t = bm_st_find(st, name);
  CHECK_MSG(t != NULL, "golden tensor %s missing", name);
  if (!t) return;
  float *out = malloc(sizeof(float) * (size_t)t->numel);
  bm_torch_rng g;
  memset(&g, 0, sizeof g);
  bm_torch_rng_seed(&g, seed);
  if (kind == 1) {
    bm_torch_rand(&g, out, t->numel);
  } else if (kind == 2) { /* second draw after a (2,4,8,8) randn */
    float first[512];
    bm_torch_randn(&g, first, 512);
    bm_torch_randn(&g, out, t->numel);
  } else {
    bm_torch_randn(&g, out, t->numel);
  }
  int maxulp;
  int64_t bad = bit_mismatch(out, t->data, t->numel, &maxulp);
  CHECK_MSG(bad == 0, "%s: %lld of %lld values differ (max %d ulp)", name, (long long)bad,
            (long long)t->numel, maxulp);
  free(out);
}

static void test_golden(void) {
  bm_st_file *st = open_golden();
  if (!st) return;
  static const uint64_t seeds[] = {0, 42, 12345, 4294967303ull};
  static const char *shapes[] = {"7", "15", "16", "17", "100", "2x4x8x8", "1x4x64x64"};
  for (int s = 0; s < 4; s++) {
    char name[96];
    for (int k = 0; k < 7; k++) {
      snprintf(name, sizeof name, "randn_s%llu_%s", (unsigned long long)seeds[s], shapes[k]);
      check_tensor(st, name, seeds[s], 0);
    }
    snprintf(name, sizeof name, "randn_s%llu_two_draws_first", (unsigned long long)seeds[s]);
    check_tensor(st, name, seeds[s], 0);
    snprintf(name, sizeof name, "randn_s%llu_two_draws_second", (unsigned long long)seeds[s]);
    check_tensor(st, name, seeds[s], 2);
    snprintf(name, sizeof name, "rand_s%llu_1000", (unsigned long long)seeds[s]);
    check_tensor(st, name, seeds[s], 1);
  }
  bm_st_close(st);
}

/* mt19937 itself: the 10000th output of the reference generator seeded with
 * 5489 is 4123659995 (C++ [rand.predef]). */
static void test_mt19937(void) {
  bm_torch_rng g;
  memset(&g, 0, sizeof g);
  bm_torch_rng_seed(&g, 5489);
  uint32_t v = 0;
  for (int i = 0; i < 10000; i++) v = bm_torch_rng_u32(&g);
  CHECK(v == 4123659995u);
  /* seeds are taken modulo 2^32 */
  bm_torch_rng a, b;
  memset(&a, 0, sizeof a);
  memset(&b, 0, sizeof b);
  bm_torch_rng_seed(&a, 7);
  bm_torch_rng_seed(&b, (1ull << 32) + 7);
  CHECK(bm_torch_rng_u32(&a) == bm_torch_rng_u32(&b));
}

/* The scalar path caches r*sin(theta): 1 + 1 draws equal one 2-element draw. */
static void test_scalar_cache(void) {
  bm_torch_rng a, b;
  memset(&a, 0, sizeof a);
  memset(&b, 0, sizeof b);
  bm_torch_rng_seed(&a, 3);
  bm_torch_rng_seed(&b, 3);
  float two[2], one[2];
  bm_torch_randn(&a, two, 2);
  bm_torch_randn(&b, &one[0], 1);
  bm_torch_randn(&b, &one[1], 1);
  CHECK(two[0] == one[0] && two[1] == one[1]);
  /* reseeding clears the cache */
  bm_torch_rng_seed(&b, 3);
  bm_torch_randn(&b, &one[0], 1);
  CHECK(one[0] == two[0]);
}

/* The portable (non-AVX2) transform stays within a few ulp of torch's AVX2 one. */
static void test_scalar_mode(void) {
  bm_st_file *st = open_golden();
  if (!st) return;
  const bm_st_tensor *t = bm_st_find(st, "randn_s42_1x4x64x64");
  CHECK(t != NULL);
  if (t) {
    float *out = malloc(sizeof(float) * (size_t)t->numel);
    bm_torch_rng g;
    memset(&g, 0, sizeof g);
    g.mode = BM_TORCH_RNG_SCALAR;
    bm_torch_rng_seed(&g, 42);
    CHECK(g.mode == BM_TORCH_RNG_SCALAR);
    bm_torch_randn(&g, out, t->numel);
    int maxulp;
    bit_mismatch(out, t->data, t->numel, &maxulp);
    CHECK_MSG(maxulp <= 4, "scalar mode is %d ulp away", maxulp);
    free(out);
  }
  bm_st_close(st);
}

int main(void) {
  RUN(test_mt19937);
  RUN(test_golden);
  RUN(test_scalar_cache);
  RUN(test_scalar_mode);
  return bm_test_finish();
}
