/* torch_rng.c - PyTorch's CPU generator (mt19937) and its rand/randn for
 * float32, bit for bit (see torch_rng.h for the algorithm). */
#include "torch_rng.h"

#include <math.h>
#include <string.h>

/* ------------------------------------------------------------ mt19937 */

void bm_torch_rng_seed(bm_torch_rng *g, uint64_t seed) {
  bm_torch_rng_mode mode = g->mode;
  memset(g, 0, sizeof(*g));
  g->mode = mode;
  g->state[0] = (uint32_t)(seed & 0xffffffffu);
  for (int j = 1; j < BM_MT19937_N; j++)
    g->state[j] = 1812433253u * (g->state[j - 1] ^ (g->state[j - 1] >> 30)) + (uint32_t)j;
  g->left = 1;
  g->next = 0;
}

static void mt_twist(bm_torch_rng *g) {
  const int n = BM_MT19937_N, m = 397;
  uint32_t *s = g->state;
  for (int k = 0; k < n; k++) {
    uint32_t y = (s[k] & 0x80000000u) | (s[(k + 1) % n] & 0x7fffffffu);
    s[k] = s[(k + m) % n] ^ (y >> 1) ^ ((y & 1u) ? 0x9908b0dfu : 0u);
  }
  g->left = n;
  g->next = 0;
}

uint32_t bm_torch_rng_u32(bm_torch_rng *g) {
  if (--g->left == 0) mt_twist(g);
  uint32_t y = g->state[g->next++];
  y ^= y >> 11;
  y ^= (y << 7) & 0x9d2c5680u;
  y ^= (y << 15) & 0xefc60000u;
  y ^= y >> 18;
  return y;
}

uint64_t bm_torch_rng_u64(bm_torch_rng *g) {
  uint64_t hi = bm_torch_rng_u32(g);
  uint64_t lo = bm_torch_rng_u32(g);
  return (hi << 32) | lo;
}

static float uniform_f32(bm_torch_rng *g) {
  return (float)(bm_torch_rng_u32(g) & 0xffffffu) * (1.0f / 16777216.0f);
}

static double uniform_f64(bm_torch_rng *g) {
  return (double)(bm_torch_rng_u64(g) & ((1ull << 53) - 1)) * (1.0 / 9007199254740992.0);
}

void bm_torch_rand(bm_torch_rng *g, float *out, int64_t n) {
  for (int64_t i = 0; i < n; i++) out[i] = uniform_f32(g);
}

/* ------------------------------------------- avx_mathfun in scalar float */

/* log256_ps: cephes logf polynomial, as avx_mathfun.h evaluates it. torch's
 * AVX2 kernels are compiled with FMA and the compiler fuses each multiply
 * into the add that consumes it; the fmaf calls below reproduce exactly the
 * fusions that match torch's output bit for bit (checked against
 * shared/golden/rng). */
static float mathfun_logf(float x) {
  if (!(x > 0.0f)) return NAN;
  if (x < 1.17549435e-38f) x = 1.17549435e-38f;
  uint32_t bits;
  memcpy(&bits, &x, 4);
  int32_t ex = (int32_t)(bits >> 23) - 0x7f;
  bits = (bits & ~0x7f800000u) | 0x3f000000u; /* mantissa in [0.5, 1) */
  memcpy(&x, &bits, 4);
  float e = (float)ex + 1.0f;
  float tmp = 0.0f;
  float one = 1.0f;
  int mask = x < 0.707106781186547524f;
  if (mask) tmp = x;
  x = x - one;
  if (mask) e = e - one;
  x = x + tmp;
  float z = x * x;
  float y = 7.0376836292E-2f;
  y = fmaf(y, x, -1.1514610310E-1f);
  y = fmaf(y, x, 1.1676998740E-1f);
  y = fmaf(y, x, -1.2420140846E-1f);
  y = fmaf(y, x, 1.4249322787E-1f);
  y = fmaf(y, x, -1.6668057665E-1f);
  y = fmaf(y, x, 2.0000714765E-1f);
  y = fmaf(y, x, -2.4999993993E-1f);
  y = fmaf(y, x, 3.3333331174E-1f);
  y = y * x;
  y = fmaf(y, z, e * -2.12194440e-4f);
  y = fmaf(-z, 0.5f, y);
  x = x + y;
  x = fmaf(e, 0.693359375f, x);
  return x;
}

/* sincos256_ps: cephes sinf/cosf with the three-part pi/4 reduction. */
static void mathfun_sincosf(float x, float *s, float *c) {
  int sign_sin = x < 0.0f;
  x = fabsf(x);
  float y = x * 1.27323954473516f;
  int32_t j = (int32_t)y; /* truncation, as cvttps */
  j = (j + 1) & ~1;
  y = (float)j;
  int swap_sin = (j & 4) != 0;
  int poly = (j & 2) == 0;
  x = fmaf(y, -0.78515625f, x);
  x = fmaf(y, -2.4187564849853515625e-4f, x);
  x = fmaf(y, -3.77489497744594108e-8f, x);
  int sign_cos = ((~(j - 2)) & 4) != 0;
  sign_sin ^= swap_sin;
  float z = x * x;
  float yc = 2.443315711809948E-005f;
  yc = fmaf(yc, z, -1.388731625493765E-003f);
  yc = fmaf(yc, z, 4.166664568298827E-002f);
  yc = yc * z;
  yc = fmaf(yc, z, -(z * 0.5f));
  yc = yc + 1.0f;
  float ys = -1.9515295891E-4f;
  ys = fmaf(ys, z, 8.3321608736E-3f);
  ys = fmaf(ys, z, -1.6666654611E-1f);
  ys = ys * z;
  ys = fmaf(ys, x, x);
  float sv = poly ? ys : yc;
  float cv = poly ? yc : ys;
  *s = sign_sin ? -sv : sv;
  *c = sign_cos ? -cv : cv;
}

/* Box-Muller on 16 uniforms in place (torch's normal_fill_16). */
static void normal_fill_16(float *d, bm_torch_rng_mode mode) {
  const float two_pi = (float)(2.0 * 3.14159265358979323846);
  for (int j = 0; j < 8; j++) {
    float u1 = 1.0f - d[j];
    float u2 = d[j + 8];
    float s, c, radius, theta = two_pi * u2;
    if (mode == BM_TORCH_RNG_AVX2) {
      radius = sqrtf(-2.0f * mathfun_logf(u1));
      mathfun_sincosf(theta, &s, &c);
    } else {
      radius = sqrtf(-2.0f * logf(u1));
      c = cosf(theta);
      s = sinf(theta);
    }
    d[j] = radius * c;
    d[j + 8] = radius * s;
  }
}

static double normal_f64(bm_torch_rng *g) {
  if (g->has_next_normal) {
    g->has_next_normal = 0;
    return g->next_normal;
  }
  double u1 = uniform_f64(g);
  double u2 = uniform_f64(g);
  double r = sqrt(-2.0 * log(1.0 - u2));
  double theta = 2.0 * 3.14159265358979323846 * u1;
  g->has_next_normal = 1;
  g->next_normal = r * sin(theta);
  return r * cos(theta);
}

void bm_torch_randn(bm_torch_rng *g, float *out, int64_t n) {
  if (n < 16) {
    for (int64_t i = 0; i < n; i++) out[i] = (float)normal_f64(g);
    return;
  }
  for (int64_t i = 0; i < n; i++) out[i] = uniform_f32(g);
  for (int64_t i = 0; i + 16 <= n; i += 16) normal_fill_16(out + i, g->mode);
  if (n % 16 != 0) {
    float *tail = out + n - 16;
    for (int i = 0; i < 16; i++) tail[i] = uniform_f32(g);
    normal_fill_16(tail, g->mode);
  }
}
