/* sample.c - next-token sampling on logits (see sample.h for the order of
 * the steps and their conventions). */
#include "sample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct cand {
  float v;   /* (penalized, tempered) logit */
  int32_t i; /* token id */
} cand;

struct bm_token_sampler {
  int32_t vocab;
  bm_sample_params p;
  bm_sample_rng rng;
  cand *c;       /* (vocab) candidates */
  float *heap;   /* (vocab) top-k selection */
  int32_t *ids;  /* (vocab) candidates' ids, for bm_token_sampler_candidates */
  float *probs;  /* (vocab) their probabilities */
  uint8_t *seen; /* (vocab) repetition penalty: token already penalized */
};

bm_sample_params bm_sample_params_default(void) {
  return (bm_sample_params){.temperature = 0.8f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f,
                            .repeat_penalty = 1.0f, .repeat_last_n = 64, .seed = 0};
}

bm_status bm_sample_params_check(const bm_sample_params *p) {
  if (!p) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "sampling parameters: NULL");
  if (isnan(p->temperature) || isinf(p->temperature))
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "temperature %g is not a finite number", p->temperature);
  if (isnan(p->top_p) || p->top_p <= 0)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "top-p %g is not in (0, 1] (1 = off)", p->top_p);
  if (isnan(p->min_p) || p->min_p < 0 || p->min_p > 1)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "min-p %g is not in [0, 1] (0 = off)", p->min_p);
  if (isnan(p->repeat_penalty) || isinf(p->repeat_penalty) || p->repeat_penalty <= 0)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "repetition penalty %g is not a positive number (1 = off)",
                          p->repeat_penalty);
  if (p->repeat_last_n < -1)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "repeat_last_n %d: expected -1 (all), 0 (none) or a count",
                          p->repeat_last_n);
  return NULL;
}

/* ------------------------------------------------------------------ PRNG */

static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

void bm_sample_rng_seed(bm_sample_rng *r, uint64_t seed) {
  uint64_t x = seed;
  for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t bm_sample_rng_next(bm_sample_rng *r) {
  uint64_t *s = r->s;
  uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return result;
}

double bm_sample_rng_uniform(bm_sample_rng *r) { return (double)(bm_sample_rng_next(r) >> 11) * 0x1.0p-53; }

/* ------------------------------------------------------------------ sampler */

bm_status bm_token_sampler_create(int32_t vocab, const bm_sample_params *p, bm_token_sampler **out) {
  if (!out) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "bm_token_sampler_create: out is NULL");
  *out = NULL;
  if (vocab < 1) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "sampler: vocabulary size %d", vocab);
  bm_sample_params def = bm_sample_params_default();
  if (!p) p = &def;
  BM_RETURN_IF_ERROR(bm_sample_params_check(p));
  bm_token_sampler *s = calloc(1, sizeof *s);
  if (s) {
    s->c = malloc(sizeof *s->c * (size_t)vocab);
    s->heap = malloc(sizeof *s->heap * (size_t)vocab);
    s->ids = malloc(sizeof *s->ids * (size_t)vocab);
    s->probs = malloc(sizeof *s->probs * (size_t)vocab);
    s->seen = calloc((size_t)vocab, 1);
  }
  if (!s || !s->c || !s->heap || !s->ids || !s->probs || !s->seen) {
    bm_token_sampler_destroy(s);
    return bm_status_make(BM_ERR_OUT_OF_MEMORY, "sampler scratch for %d tokens", vocab);
  }
  s->vocab = vocab;
  s->p = *p;
  bm_sample_rng_seed(&s->rng, p->seed);
  *out = s;
  return NULL;
}

void bm_token_sampler_destroy(bm_token_sampler *s) {
  if (!s) return;
  free(s->c);
  free(s->heap);
  free(s->ids);
  free(s->probs);
  free(s->seen);
  free(s);
}

void bm_token_sampler_reset(bm_token_sampler *s) {
  if (s) bm_sample_rng_seed(&s->rng, s->p.seed);
}

bm_status bm_token_sampler_set_params(bm_token_sampler *s, const bm_sample_params *p) {
  if (!s) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "bm_token_sampler_set_params: NULL sampler");
  BM_RETURN_IF_ERROR(bm_sample_params_check(p));
  s->p = *p;
  bm_token_sampler_reset(s);
  return NULL;
}

int32_t bm_sample_argmax(const float *x, int32_t n) {
  if (n <= 0) return -1;
  int32_t best = 0;
  float bv = isnan(x[0]) ? -INFINITY : x[0];
  for (int32_t i = 1; i < n; i++)
    if (x[i] > bv) { /* false for NaN */
      bv = x[i];
      best = i;
    }
  return best;
}

/* min-heap of floats: the k largest values seen, heap[0] the smallest of them */
static void heap_sift_down(float *h, int32_t n, int32_t i) {
  for (;;) {
    int32_t l = 2 * i + 1, r = l + 1, m = i;
    if (l < n && h[l] < h[m]) m = l;
    if (r < n && h[r] < h[m]) m = r;
    if (m == i) return;
    float t = h[i];
    h[i] = h[m];
    h[m] = t;
    i = m;
  }
}

/* The k-th largest of the candidates' values (1 <= k <= n). */
static float kth_largest(const cand *c, int32_t n, int32_t k, float *h) {
  for (int32_t i = 0; i < k; i++) h[i] = c[i].v;
  for (int32_t i = k / 2 - 1; i >= 0; i--) heap_sift_down(h, k, i);
  for (int32_t i = k; i < n; i++)
    if (c[i].v > h[0]) {
      h[0] = c[i].v;
      heap_sift_down(h, k, 0);
    }
  return h[0];
}

/* descending value, then ascending id */
static int cmp_cand(const void *a, const void *b) {
  const cand *x = a, *y = b;
  if (x->v > y->v) return -1;
  if (x->v < y->v) return 1;
  return (x->i > y->i) - (x->i < y->i);
}

/* exp(v - max) with the +inf cases made well defined */
static double weight(float v, float max) {
  if (isinf(max) && max > 0) return v == max ? 1.0 : 0.0;
  return exp((double)v - (double)max);
}

/* Steps 1-6: leaves the candidates in s->ids / s->probs (normalized). */
static bm_status filter(bm_token_sampler *s, const float *logits, const int32_t *recent, size_t n_recent,
                        int32_t *n_out) {
  *n_out = 0;
  if (!logits) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "sampler: logits is NULL");
  if (n_recent && !recent) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "sampler: recent tokens NULL");
  const bm_sample_params *p = &s->p;
  int32_t V = s->vocab, n = V;
  cand *c = s->c;
  for (int32_t i = 0; i < V; i++) c[i] = (cand){isnan(logits[i]) ? -INFINITY : logits[i], i};

  /* 1. repetition penalty over the distinct tokens of the window */
  if (p->repeat_penalty != 1.0f && p->repeat_last_n != 0 && n_recent) {
    size_t w = p->repeat_last_n < 0 || (size_t)p->repeat_last_n > n_recent ? n_recent : (size_t)p->repeat_last_n;
    const int32_t *t = recent + (n_recent - w);
    for (size_t j = 0; j < w; j++) {
      int32_t id = t[j];
      if (id < 0 || id >= V || s->seen[id]) continue;
      s->seen[id] = 1;
      float v = c[id].v;
      c[id].v = v > 0 ? v / p->repeat_penalty : v * p->repeat_penalty;
    }
    for (size_t j = 0; j < w; j++)
      if (t[j] >= 0 && t[j] < V) s->seen[t[j]] = 0;
  }

  /* 2. greedy */
  if (p->temperature <= 0) {
    int32_t best = 0;
    for (int32_t i = 1; i < V; i++)
      if (c[i].v > c[best].v) best = i;
    s->ids[0] = best;
    s->probs[0] = 1.0f;
    *n_out = 1;
    return NULL;
  }

  /* 3. temperature */
  if (p->temperature != 1.0f)
    for (int32_t i = 0; i < n; i++) c[i].v = c[i].v / p->temperature;

  /* 4. top-k: everything >= the k-th largest value */
  if (p->top_k > 0 && p->top_k < n) {
    float kth = kth_largest(c, n, p->top_k, s->heap);
    int32_t m = 0;
    for (int32_t i = 0; i < n; i++)
      if (c[i].v >= kth) c[m++] = c[i];
    n = m;
  }

  float max = -INFINITY;
  for (int32_t i = 0; i < n; i++)
    if (c[i].v > max) max = c[i].v;
  if (max == -INFINITY)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "sampler: every logit is -inf or NaN (nothing to sample)");

  /* 5. top-p over the sorted candidates */
  if (p->top_p < 1.0f) {
    qsort(c, (size_t)n, sizeof *c, cmp_cand);
    double sum = 0;
    for (int32_t i = 0; i < n; i++) sum += weight(c[i].v, max);
    double before = 0, lim = (double)p->top_p * sum;
    int32_t keep = 0;
    while (keep < n && (keep == 0 || before < lim)) before += weight(c[keep++].v, max);
    n = keep;
  }

  /* 6. min-p: p_i >= min_p * p_max  <=>  exp(v_i - max) >= min_p */
  if (p->min_p > 0) {
    int32_t m = 0;
    for (int32_t i = 0; i < n; i++)
      if (weight(c[i].v, max) >= (double)p->min_p || c[i].v == max) c[m++] = c[i];
    n = m;
  }

  double sum = 0;
  for (int32_t i = 0; i < n; i++) sum += weight(c[i].v, max);
  for (int32_t i = 0; i < n; i++) {
    s->ids[i] = c[i].i;
    s->probs[i] = (float)(weight(c[i].v, max) / sum);
  }
  *n_out = n;
  return NULL;
}

bm_status bm_token_sampler_candidates(bm_token_sampler *s, const float *logits, const int32_t *recent,
                                      size_t n_recent, const int32_t **ids, const float **probs, int32_t *n) {
  if (!s || !ids || !probs || !n) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "bm_token_sampler_candidates: NULL");
  BM_RETURN_IF_ERROR(filter(s, logits, recent, n_recent, n));
  *ids = s->ids;
  *probs = s->probs;
  return NULL;
}

bm_status bm_token_sampler_sample(bm_token_sampler *s, const float *logits, const int32_t *recent, size_t n_recent,
                                  int32_t *token) {
  if (!s || !token) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "bm_token_sampler_sample: NULL argument");
  *token = -1;
  int32_t n;
  BM_RETURN_IF_ERROR(filter(s, logits, recent, n_recent, &n));
  if (s->p.temperature <= 0) {
    *token = s->ids[0];
    return NULL;
  }
  /* 7. inverse CDF; the weights are recomputed in double from the same
   * probabilities so the choice depends only on (u, candidates) */
  double u = bm_sample_rng_uniform(&s->rng), sum = 0, cum = 0;
  for (int32_t i = 0; i < n; i++) sum += s->probs[i];
  u *= sum;
  for (int32_t i = 0; i < n; i++) {
    cum += s->probs[i];
    if (u < cum) {
      *token = s->ids[i];
      return NULL;
    }
  }
  *token = s->ids[n - 1]; /* rounding at the very end */
  return NULL;
}
