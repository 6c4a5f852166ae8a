/* noise.c - noise sources for stochastic samplers: torch's CPU generator
 * (bit-compatible randn) and a seeded Brownian-tree-style sampler that
 * gives consistent Brownian paths when the step count changes. */
#include <math.h>
#include <string.h>

#include "sampler.h"

/* ------------------------------------------------------------ torch */

static bm_status torch_next(void *user, double sigma, double sigma_next, float *out, int64_t n) {
  bm_noise_torch *s = user;
  bm_torch_randn(&s->rng, out, n);
  return NULL;
}

void bm_noise_torch_init(bm_noise_torch *s, uint64_t seed) {
  memset(s, 0, sizeof *s);
  bm_torch_rng_seed(&s->rng, seed);
}

bm_noise_source bm_noise_torch_source(bm_noise_torch *s) {
  bm_noise_source src = {torch_next, s};
  return src;
}

/* ---------------------------------------------------------- Brownian */

static uint64_t splitmix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

/* Standard normal number e of node `node` (counter based, reproducible). */
static double node_normal(uint64_t seed, uint64_t node, int64_t e) {
  uint64_t k = splitmix(seed ^ splitmix(node * 0x100000001b3ull + 0x51ed27u));
  uint64_t a = splitmix(k + 2 * (uint64_t)e), b = splitmix(k + 2 * (uint64_t)e + 1);
  double u1 = ((a >> 11) + 1.0) * (1.0 / 9007199254740993.0); /* (0, 1] */
  double u2 = (b >> 11) * (1.0 / 9007199254740992.0);
  return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

/* W(t) for every element into w: dyadic Brownian bridge refinement from
 * W(t0) = 0, W(t1) ~ N(0, t1 - t0), then linear between the final nodes. */
static void brownian_at(const bm_noise_brownian *s, double t, float *w) {
  double a = s->t0, b = s->t1;
  if (t <= a) {
    memset(w, 0, sizeof(float) * (size_t)s->n);
    return;
  }
  if (t > b) t = b;
  for (int64_t e = 0; e < s->n; e++) {
    double wa = 0.0, wb = sqrt(b - a) * node_normal(s->seed, 1, e), lo = a, hi = b;
    uint64_t node = 1;
    for (int d = 0; d < s->depth && hi - lo > 0; d++) {
      double mid = 0.5 * (lo + hi);
      double wm = 0.5 * (wa + wb) + 0.5 * sqrt(hi - lo) * node_normal(s->seed, 2 * node, e);
      if (t < mid) {
        hi = mid;
        wb = wm;
        node = 2 * node;
      } else {
        lo = mid;
        wa = wm;
        node = 2 * node + 1;
      }
    }
    double f = hi > lo ? (t - lo) / (hi - lo) : 0.0;
    w[e] = (float)(wa + f * (wb - wa));
  }
}

bm_status bm_noise_brownian_init(bm_noise_brownian *s, uint64_t seed, double sigma_min,
                                 double sigma_max, float *scratch, int64_t n) {
  memset(s, 0, sizeof *s);
  if (!(sigma_min >= 0) || !(sigma_max > sigma_min) || !scratch || n <= 0)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT,
                          "brownian noise: need 0 <= sigma_min < sigma_max (got %g, %g), scratch and n > 0",
                          sigma_min, sigma_max);
  s->seed = seed;
  s->t0 = sigma_min;
  s->t1 = sigma_max;
  s->depth = 24;
  s->scratch = scratch;
  s->n = n;
  return NULL;
}

bm_status bm_noise_brownian_increment(bm_noise_brownian *s, double ta, double tb, float *out) {
  float *wa = s->scratch, *wb = s->scratch + s->n;
  brownian_at(s, ta, wa);
  brownian_at(s, tb, wb);
  for (int64_t e = 0; e < s->n; e++) out[e] = wb[e] - wa[e];
  return NULL;
}

/* (W(sigma_next) - W(sigma)) / sqrt(|sigma_next - sigma|): N(0, 1). */
static bm_status brownian_next(void *user, double sigma, double sigma_next, float *out, int64_t n) {
  bm_noise_brownian *s = user;
  if (n != s->n)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "brownian noise: made for n = %lld, asked for %lld",
                          (long long)s->n, (long long)n);
  double lo = sigma < sigma_next ? sigma : sigma_next, hi = sigma < sigma_next ? sigma_next : sigma;
  double sign = sigma < sigma_next ? 1.0 : -1.0;
  if (hi - lo <= 0) {
    memset(out, 0, sizeof(float) * (size_t)n);
    return NULL;
  }
  BM_RETURN_IF_ERROR(bm_noise_brownian_increment(s, lo, hi, out));
  double k = sign / sqrt(hi - lo);
  for (int64_t e = 0; e < n; e++) out[e] = (float)(out[e] * k);
  return NULL;
}

bm_noise_source bm_noise_brownian_source(bm_noise_brownian *s) {
  bm_noise_source src = {brownian_next, s};
  return src;
}
