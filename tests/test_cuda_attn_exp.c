/* test_cuda_attn_exp.c - the softmax exponentials on the FMA pipe of the
 * wgmma attention (codegen/cuda/lang.c bm_ex2_poly, emit_attention.c wa_exp):
 * the prelude's polynomial coefficients against 2^x on the host, and which
 * exponentials, rescaling and hold (bm_wg_hold) a kernel gets per knob. No
 * NVRTC, no GPU (test_ops_cuda's "attn_exp_" cases run the kernels). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../codegen/clike/clike.h"
#include "../passes/passes.h"
#include "cuda_source.h"
#include "testutil.h"

/* the coefficients of the prelude's degree-deg polynomial, highest first (as
 * the Horner line reads them, the constant 1 last); false if not found */
static bool prelude_coefs(int deg, float *c) {
  const char *src = bm_clike_cuda.prelude, *fn = src ? strstr(src, "BM_DEV float bm_ex2_poly(") : NULL;
  char mark[16];
  snprintf(mark, sizeof mark, "/* deg %d */", deg);
  const char *p = fn ? strstr(fn, mark) : NULL;
  if (!p) return false;
  p = strstr(p, "p = ");
  const char *end = p ? strchr(p, ';') : NULL;
  int n = 0;
  for (const char *s = p; s && s < end && n <= deg; s++) {
    bool starts = (*s >= '0' && *s <= '9') && !(s[-1] >= 'a' && s[-1] <= 'z') && s[-1] != '_' && s[-1] != '.';
    if (!starts) continue;
    char *e;
    c[n++] = strtof(s, &e);
    s = e;
  }
  return n == deg + 1 && c[deg] == 1.0f;
}

/* a host model of bm_ex2_poly: 1.5 * 2^23 + x rounded down is 1.5 * 2^23 + floor(x) */
static float model_ex2(float x, const float *c, int deg) {
  x = fmaxf(x, -127.0f);
  const float r = floorf(x) + 12582912.0f, f = x - (r - 12582912.0f);
  float p = c[0];
  for (int i = 1; i <= deg; i++) p = fmaf(p, f, c[i]);
  uint32_t rb, pb, ob;
  memcpy(&rb, &r, 4);
  memcpy(&pb, &p, 4);
  ob = (rb << 23) + pb;
  float o;
  memcpy(&o, &ob, 4);
  return o;
}

static uint32_t bits(float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  return u;
}

static void test_poly(void) {
  static const double bound[6] = {0, 0, 0, 9e-5, 3.1e-6, 1.6e-7}; /* lang.c's comment */
  for (int deg = 3; deg <= 5; deg++) {
    float c[6];
    CHECK_MSG(prelude_coefs(deg, c), "bm_ex2_poly: no degree-%d polynomial in the prelude", deg);
    if (!prelude_coefs(deg, c)) continue;
    /* p(f) in [1, 2): adding floor(x) << 23 never borrows from the sign */
    bool in12 = true;
    for (int i = 0; i < 4096; i++) {
      float f = (float)i / 4096.0f, p = c[0];
      for (int j = 1; j <= deg; j++) p = fmaf(p, f, c[j]);
      in12 = in12 && p >= 1.0f && p < 2.0f;
    }
    CHECK_MSG(in12, "degree %d: p(f) leaves [1, 2)", deg);
    /* relative error against 2^x, x in [-126, 8] (P <= 2^8 with the stale max) */
    double worst = 0.0;
    for (int i = -126 * 1024; i <= 8 * 1024; i++) {
      float x = (float)i / 1024.0f + 0.37f / 1024.0f;
      double want = exp2((double)x), err = fabs((double)model_ex2(x, c, deg) - want) / want;
      worst = err > worst ? err : worst;
    }
    CHECK_MSG(worst < bound[deg], "degree %d: relative error %.3g >= %.3g", deg, worst, bound[deg]);
    /* exact where it matters: masked (-inf) and underflowing scores give +0 (a row that sees
     * no key keeps l = 0), 2^n exact, NaN clamped to 0 */
    static const float zero_at[] = {-INFINITY, -127.0f, -127.5f, -1000.0f, -3e38f};
    for (size_t i = 0; i < sizeof zero_at / sizeof *zero_at; i++)
      CHECK_MSG(bits(model_ex2(zero_at[i], c, deg)) == 0u, "degree %d: 2^%g is not +0", deg, zero_at[i]);
    CHECK(bits(model_ex2(NAN, c, deg)) == 0u);
    for (int n = -126; n <= 8; n++) CHECK_MSG(model_ex2((float)n, c, deg) == ldexpf(1.0f, n), "degree %d: 2^%d", deg, n);
  }
}

/* the CUDA source of one attention node (2, 4, 300, d) x (2, 2, 300, d) with
 * the knobs set (NULL: unset); caller frees */
static char *attn_source(int64_t d, bool causal, bm_dtype dt, const char *exp, const char *deg, const char *resc,
                         const char *hold) {
  const char *names[4] = {"BM_CUDA_ATTN_EXP", "BM_CUDA_ATTN_EXP_DEG", "BM_CUDA_ATTN_RESCALE", "BM_CUDA_ATTN_HOLD"},
             *vals[4] = {exp, deg, resc, hold};
  for (int i = 0; i < 4; i++)
    if (vals[i])
      setenv(names[i], vals[i], 1);
    else
      unsetenv(names[i]);
  bm_module *m = bm_module_create("attn");
  bm_graph *g = bm_graph_create(m, "main");
  bm_node *q = bm_input(g, "q", dt, 4, (int64_t[]){2, 4, 300, d}); // (batch, heads, seq, head_dim)
  bm_node *k = bm_input(g, "k", dt, 4, (int64_t[]){2, 2, 300, d});
  bm_node *v = bm_input(g, "v", dt, 4, (int64_t[]){2, 2, 300, d});
  bm_output_add(g, "o", bm_attention(g, q, k, v, NULL, 0.0f, causal, 0, 0.0f));
  char *src = bm_test_cuda_source(m, g);
  bm_module_destroy(m);
  for (int i = 0; i < 4; i++) unsetenv(names[i]);
  return src;
}

/* the kernel's text (past the prelude, which defines bm_ex2_poly) */
static const char *kernel(const char *s) { return s ? strstr(s, "_attention(const bm_gpu_args") : NULL; }

static void test_emit(void) {
  /* off: ex2.approx for every score, the max rescaled every tile */
  char *s = attn_source(64, false, BM_DTYPE_F16, "0", NULL, "0", NULL);
  const char *k = kernel(s);
  CHECK(k && strstr(k, "const float p = bm_ex2(y);") && !strstr(k, "bm_ex2_poly(") && !strstr(k, "__any_sync"));
  free(s);
  /* a quarter of the column blocks (f16: degree 4), statically chosen */
  s = attn_source(64, false, BM_DTYPE_F16, "1/4", NULL, "0", NULL);
  k = kernel(s);
  CHECK(k && strstr(k, "const float p = x % 4 < 1 ? bm_ex2_poly(y, 4) : bm_ex2(y);"));
  free(s);
  /* bf16: degree 3; a forced degree; every block */
  s = attn_source(128, true, BM_DTYPE_BF16, "1/3", NULL, NULL, NULL);
  k = kernel(s);
  CHECK(k && strstr(k, "const float p = x % 3 < 1 ? bm_ex2_poly(y, 3) : bm_ex2(y);"));
  free(s);
  s = attn_source(64, true, BM_DTYPE_BF16, "1/1", "5", NULL, NULL);
  k = kernel(s);
  CHECK(k && strstr(k, "const float p = bm_ex2_poly(y, 5);") && !strstr(k, "bm_ex2(y)"));
  free(s);
  /* the stale max: kept while it grows by at most 8 (log2), O rescaled only if a row of the warp moved */
  s = attn_source(128, false, BM_DTYPE_F16, "0", NULL, "8", NULL);
  k = kernel(s);
  CHECK(k && strstr(k, "const bool up = !((mnew - mr[rr]) * SC <= 8.0f);") &&
        strstr(k, "if (__any_sync(0xffffffffu, corr[0] != 1.0f || corr[1] != 1.0f)) {"));
  free(s);
  /* malformed knobs: off */
  s = attn_source(64, false, BM_DTYPE_F16, "3/2", "9", "x", NULL);
  k = kernel(s);
  CHECK(k && !strstr(k, "bm_ex2_poly(") && !strstr(k, "__any_sync"));
  free(s);
}

/* the never-taken branch that keeps the wait for P V after the softmax: by default at
 * Dv 64 without causal masking (else it spills or serializes the wgmmas), or forced */
static void test_hold(void) {
  static const char *const hold = "      bm_wg_hold(lr[1]); /* keeps the wait here */\n      bm_wgmma_wait_n64<0>(o);";
  /* (the two-warpgroup kernels: the three-warpgroup default at d64 has no hold, attn3wg) */
  setenv("BM_CUDA_ATTN", "w2n128tmaqd", 1);
  char *s = attn_source(64, false, BM_DTYPE_F16, NULL, NULL, NULL, NULL);
  const char *k = kernel(s);
  CHECK(k && strstr(k, hold));
  free(s);
  s = attn_source(64, true, BM_DTYPE_BF16, NULL, NULL, NULL, NULL);
  k = kernel(s);
  CHECK(k && strstr(k, "bm_wgmma_wait_n64<0>(o);") && !strstr(k, "bm_wg_hold("));
  free(s);
  s = attn_source(128, false, BM_DTYPE_F16, NULL, NULL, NULL, NULL);
  k = kernel(s);
  CHECK(k && strstr(k, "bm_wgmma_wait_n128<0>(o);") && !strstr(k, "bm_wg_hold("));
  free(s);
  s = attn_source(64, true, BM_DTYPE_F16, NULL, NULL, NULL, "1");
  k = kernel(s);
  CHECK(k && strstr(k, hold));
  free(s);
  unsetenv("BM_CUDA_ATTN");
  s = attn_source(64, false, BM_DTYPE_F16, NULL, NULL, NULL, NULL); /* three warpgroups: never (it spills) */
  k = kernel(s);
  CHECK(k && strstr(k, "wgmma attention w3n128tmaqd_pp") && !strstr(k, "bm_wg_hold("));
  free(s);
  s = attn_source(64, true, BM_DTYPE_F16, NULL, NULL, NULL, "1");
  k = kernel(s);
  CHECK(k && strstr(k, "wgmma attention w3n128tmaqg_pp") && !strstr(k, "bm_wg_hold("));
  free(s);
  s = attn_source(64, false, BM_DTYPE_F16, NULL, NULL, NULL, "0");
  k = kernel(s);
  CHECK(k && strstr(k, "bm_wgmma_wait_n64<0>(o);") && !strstr(k, "bm_wg_hold("));
  free(s);
  /* never in the barrier-synchronized kernels (there it serializes the wgmmas, C7518) */
  setenv("BM_CUDA_ATTN", "w1n128p", 1);
  s = attn_source(64, false, BM_DTYPE_F16, NULL, NULL, NULL, "1");
  unsetenv("BM_CUDA_ATTN");
  k = kernel(s);
  CHECK(k && strstr(k, "wgmma attention w1n128p") && strstr(k, "bm_wgmma_wait_n64<0>(o);") && !strstr(k, "bm_wg_hold("));
  free(s);
}

int main(void) {
  RUN(test_poly);
  RUN(test_emit);
  RUN(test_hold);
  return bm_test_finish();
}
