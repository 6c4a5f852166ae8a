/* sample.h - choosing the next token from a row of logits: greedy,
 * temperature, top-k, top-p, min-p, repetition penalty, with a seeded,
 * deterministic PRNG. Part of libbmrt (used by the generation driver, llm.h).
 *
 * Order of application (the order of Hugging Face transformers'
 * `generate`: logits processors, then warpers):
 *   1. repetition penalty over the distinct recent tokens (HF
 *      RepetitionPenaltyLogitsProcessor, llama.cpp "repeat penalty"):
 *      a logit > 0 is divided by the penalty, a logit <= 0 multiplied;
 *   2. temperature <= 0: greedy, the argmax of the penalized logits (lowest
 *      index on ties; NaN counts as -inf); nothing below applies;
 *   3. temperature: logits / T;
 *   4. top-k: keep the tokens whose logit is >= the k-th largest (ties with
 *      the k-th are kept, as HF's TopKLogitsWarper);
 *   5. top-p: softmax over what is left, tokens in descending order (ties:
 *      lower index first); keep each token while the probability mass
 *      strictly before it is < top_p (so at least one, and the token that
 *      crosses top_p is kept: HF TopPLogitsWarper, llama.cpp top_p);
 *   6. min-p: drop tokens whose probability (softmax over what is left) is
 *      below min_p times the largest one (HF MinPLogitsWarper, llama.cpp);
 *   7. draw one token from the softmax of what is left with a uniform
 *      number u in [0, 1) of the PRNG (inverse CDF over the candidates in
 *      a fixed order).
 * llama.cpp's default chain applies the temperature after the filters
 * instead; the two differ only for top-p / min-p at a temperature != 1.
 *
 * The PRNG is xoshiro256** seeded through splitmix64: the same seed, the
 * same logits and the same parameters give the same tokens on every
 * machine. One sampler draws one number per sampled token (none when
 * greedy). A sampler owns scratch memory for its vocabulary size,
 * allocated once by bm_token_sampler_create; sampling allocates nothing. */
#ifndef BM_SAMPLE_H
#define BM_SAMPLE_H

#include <stddef.h>
#include <stdint.h>

#include "bm_runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bm_sample_params {
  float temperature;    /* <= 0: greedy (default 0.8) */
  int top_k;            /* <= 0: off (default 40) */
  float top_p;          /* >= 1: off (default 0.95) */
  float min_p;          /* <= 0: off (default 0.05) */
  float repeat_penalty; /* 1: off (default 1.0); must be > 0 */
  int repeat_last_n;    /* tokens the penalty looks back at: 0 none, -1 all (default 64) */
  uint64_t seed;        /* PRNG seed (default 0) */
} bm_sample_params;

/* The defaults above (those of llama.cpp's CLI, with penalty off). */
bm_sample_params bm_sample_params_default(void);
/* BM_ERR_INVALID_ARGUMENT naming the bad field (NaN, negative top-p, penalty <= 0, ...). */
bm_status bm_sample_params_check(const bm_sample_params *p);

/* xoshiro256** */
typedef struct bm_sample_rng {
  uint64_t s[4];
} bm_sample_rng;
void bm_sample_rng_seed(bm_sample_rng *r, uint64_t seed);
uint64_t bm_sample_rng_next(bm_sample_rng *r);
double bm_sample_rng_uniform(bm_sample_rng *r); /* [0, 1), 53 random bits */

/* A sampler for one sequence: parameters, PRNG and scratch. */
typedef struct bm_token_sampler bm_token_sampler;

bm_status bm_token_sampler_create(int32_t vocab, const bm_sample_params *p, bm_token_sampler **out);
void bm_token_sampler_destroy(bm_token_sampler *s); /* NULL is fine */
/* Resets the PRNG to the parameters' seed (a new sequence). */
void bm_token_sampler_reset(bm_token_sampler *s);
/* Changes the parameters (checked) and reseeds. */
bm_status bm_token_sampler_set_params(bm_token_sampler *s, const bm_sample_params *p);

/* Picks the next token from logits (vocab floats, not modified). `recent`
 * holds the sequence's tokens so far (prompt and generated, oldest first;
 * the last repeat_last_n are penalized; ids outside the vocabulary are
 * ignored). */
bm_status bm_token_sampler_sample(bm_token_sampler *s, const float *logits, const int32_t *recent, size_t n_recent,
                                int32_t *token);

/* The candidates left after steps 1-6 (for tests and debugging): their ids
 * in the order step 7 visits them and their probabilities (normalized);
 * valid until the next call. *n = 1 with probability 1 when greedy. */
bm_status bm_token_sampler_candidates(bm_token_sampler *s, const float *logits, const int32_t *recent,
                                    size_t n_recent, const int32_t **ids, const float **probs, int32_t *n);

/* Index of the largest value (NaN = -inf, lowest index on ties); -1 if n <= 0. */
int32_t bm_sample_argmax(const float *logits, int32_t n);

#ifdef __cplusplus
}
#endif
#endif
