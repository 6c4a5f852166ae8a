/* test_llm_generate.c - token sampling (runtime/sample.h) and the generation
 * driver (runtime/llm.h): greedy decoding through the KV cache must give
 * transformers' greedy ids on every golden LLM (../shared/golden/hf), a
 * batch must give each prompt's tokens alone, chunked prefill and cache
 * reuse must not change them; plus embedded files (package blobs) and the
 * errors. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../compiler/compile.h"
#include "../models/models.h"
#include "../runtime/llm.h"
#include "../runtime/safetensors.h"
#include "../runtime/sample.h"
#include "testutil.h"

/* ------------------------------------------------------------------ sampling */

static bm_sample_params plain(float temp) {
  bm_sample_params p = bm_sample_params_default();
  p.temperature = temp;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  p.repeat_penalty = 1.0f;
  return p;
}

/* the candidate set after filtering, as a bit mask over ids < 32 */
static uint32_t cand_mask(const bm_sample_params *p, const float *logits, int32_t V, const int32_t *recent,
                          size_t nr) {
  bm_token_sampler *s = NULL;
  CHECK_OK(bm_token_sampler_create(V, p, &s));
  if (!s) return 0xffffffffu;
  const int32_t *ids;
  const float *probs;
  int32_t n = 0;
  uint32_t m = 0;
  double sum = 0;
  CHECK_OK(bm_token_sampler_candidates(s, logits, recent, nr, &ids, &probs, &n));
  for (int32_t i = 0; i < n; i++) {
    m |= 1u << ids[i];
    sum += probs[i];
  }
  CHECK_MSG(n == 0 || fabs(sum - 1.0) < 1e-5, "candidate probabilities sum to %g", sum);
  bm_token_sampler_destroy(s);
  return m;
}

static int32_t sample_once(const bm_sample_params *p, const float *logits, int32_t V, const int32_t *recent,
                           size_t nr) {
  bm_token_sampler *s = NULL;
  int32_t t = -1;
  CHECK_OK(bm_token_sampler_create(V, p, &s));
  if (s) CHECK_OK(bm_token_sampler_sample(s, logits, recent, nr, &t));
  bm_token_sampler_destroy(s);
  return t;
}

static void test_greedy(void) {
  enum { V = 1000 };
  static float x[V];
  bm_test_fill_uniform(x, V, 7, -5, 5);
  int32_t best = 0;
  for (int i = 1; i < V; i++)
    if (x[i] > x[best]) best = i;
  bm_sample_params p = bm_sample_params_default(); /* top-k etc. set, but temperature 0 = greedy */
  p.temperature = 0;
  CHECK(sample_once(&p, x, V, NULL, 0) == best);
  CHECK(bm_sample_argmax(x, V) == best);
  /* ties: the lowest index; NaN never wins */
  float t[5] = {NAN, 1, 3, 3, 2};
  CHECK(sample_once(&p, t, 5, NULL, 0) == 2);
  CHECK(bm_sample_argmax(t, 5) == 2);
  /* a negative temperature is greedy too */
  p.temperature = -1;
  CHECK(sample_once(&p, t, 5, NULL, 0) == 2);
}

static void test_top_k(void) {
  float x[5] = {1, 5, 3, 5, 2};
  bm_sample_params p = plain(1.0f);
  p.top_k = 2;
  CHECK(cand_mask(&p, x, 5, NULL, 0) == ((1u << 1) | (1u << 3)));
  p.top_k = 3;
  CHECK(cand_mask(&p, x, 5, NULL, 0) == ((1u << 1) | (1u << 2) | (1u << 3)));
  p.top_k = 1; /* ties with the k-th value are kept, as HF */
  CHECK(cand_mask(&p, x, 5, NULL, 0) == ((1u << 1) | (1u << 3)));
  p.top_k = 10; /* more than the vocabulary: everything */
  CHECK(cand_mask(&p, x, 5, NULL, 0) == 0x1f);
  p.top_k = 0;
  CHECK(cand_mask(&p, x, 5, NULL, 0) == 0x1f);
  /* temperature does not change the set, only the probabilities */
  p.top_k = 2;
  p.temperature = 0.1f;
  CHECK(cand_mask(&p, x, 5, NULL, 0) == ((1u << 1) | (1u << 3)));
}

static void test_top_p_min_p(void) {
  /* probabilities 0.5, 0.2, 0.2, 0.1 (ids 0, 1, 2, 3) */
  float x[4] = {logf(0.5f), logf(0.2f), logf(0.2f), logf(0.1f)};
  bm_sample_params p = plain(1.0f);
  p.top_p = 0.45f;
  CHECK(cand_mask(&p, x, 4, NULL, 0) == 0x1);
  p.top_p = 0.55f; /* 0.5 < 0.55: the next (the lower id of the tie) is kept */
  CHECK(cand_mask(&p, x, 4, NULL, 0) == 0x3);
  p.top_p = 0.85f;
  CHECK(cand_mask(&p, x, 4, NULL, 0) == 0x7);
  p.top_p = 0.95f;
  CHECK(cand_mask(&p, x, 4, NULL, 0) == 0xf);
  p.top_p = 1.0f;
  p.min_p = 0.3f; /* threshold 0.15 */
  CHECK(cand_mask(&p, x, 4, NULL, 0) == 0x7);
  p.min_p = 0.5f; /* threshold 0.25 */
  CHECK(cand_mask(&p, x, 4, NULL, 0) == 0x1);
  p.min_p = 0.1f; /* threshold 0.05 */
  CHECK(cand_mask(&p, x, 4, NULL, 0) == 0xf);
  /* top-k (ties kept: {0, 1, 2}), then top-p over the renormalized rest:
   * 0.556, 0.222, 0.222 */
  p.min_p = 0;
  p.top_k = 2;
  CHECK(cand_mask(&p, x, 4, NULL, 0) == 0x7);
  p.top_p = 0.5f;
  CHECK(cand_mask(&p, x, 4, NULL, 0) == 0x1);
  p.top_p = 0.6f;
  CHECK(cand_mask(&p, x, 4, NULL, 0) == 0x3);
  /* min-p after temperature: T = 2 flattens 0.5/0.1 to ratio sqrt(5) */
  p = plain(2.0f);
  p.min_p = 0.5f; /* sqrt(0.2/0.5) = 0.632 >= 0.5 kept, sqrt(0.1/0.5) = 0.447 dropped */
  CHECK(cand_mask(&p, x, 4, NULL, 0) == 0x7);
}

static void test_repetition_penalty(void) {
  bm_sample_params p = plain(0.0f);
  p.repeat_penalty = 2.0f;
  p.repeat_last_n = -1;
  float pos[2] = {2.0f, 1.5f}, neg[2] = {-1.0f, -1.5f};
  int32_t r0[1] = {0};
  CHECK(sample_once(&p, pos, 2, r0, 1) == 1); /* 2 / 2 = 1 < 1.5 */
  CHECK(sample_once(&p, neg, 2, r0, 1) == 1); /* -1 * 2 = -2 < -1.5 */
  p.repeat_penalty = 1.0f;
  CHECK(sample_once(&p, pos, 2, r0, 1) == 0);
  /* distinct tokens are penalized once; ids out of range are ignored */
  p = plain(1.0f);
  p.repeat_penalty = 2.0f;
  p.repeat_last_n = -1;
  float x[4] = {2.0f, -2.0f, 1.0f, 0.5f};
  int32_t rec[5] = {1, 0, 1, 99, -3};
  bm_token_sampler *s = NULL;
  CHECK_OK(bm_token_sampler_create(4, &p, &s));
  const int32_t *ids;
  const float *probs;
  int32_t n = 0;
  if (s) CHECK_OK(bm_token_sampler_candidates(s, x, rec, 5, &ids, &probs, &n));
  CHECK(n == 4);
  float want[4] = {1.0f, -4.0f, 1.0f, 0.5f};
  double z = 0;
  for (int i = 0; i < 4; i++) z += exp(want[i]);
  for (int i = 0; i < n && i < 4; i++)
    CHECK_MSG(fabs(probs[i] - exp(want[ids[i]]) / z) < 1e-6, "token %d prob %g", ids[i], probs[i]);
  /* the window: only the last token (id 1) */
  p.repeat_last_n = 1;
  CHECK_OK(bm_token_sampler_set_params(s, &p));
  int32_t rec2[2] = {0, 1};
  if (s) CHECK_OK(bm_token_sampler_candidates(s, x, rec2, 2, &ids, &probs, &n));
  z = exp(2.0) + exp(-4.0) + exp(1.0) + exp(0.5);
  for (int i = 0; i < n; i++)
    if (ids[i] == 0) CHECK(fabs(probs[i] - exp(2.0) / z) < 1e-6);
  bm_token_sampler_destroy(s);
}

static void test_seed(void) {
  enum { V = 300, N = 200 };
  static float x[V];
  bm_test_fill_uniform(x, V, 3, -2, 2);
  bm_sample_params p = bm_sample_params_default();
  p.temperature = 1.0f;
  p.top_k = 0;
  p.min_p = 0;
  p.seed = 42;
  int32_t a[N], b[N], c[N];
  bm_token_sampler *s = NULL;
  CHECK_OK(bm_token_sampler_create(V, &p, &s));
  if (!s) return;
  for (int i = 0; i < N; i++) CHECK_OK(bm_token_sampler_sample(s, x, NULL, 0, &a[i]));
  bm_token_sampler_reset(s);
  for (int i = 0; i < N; i++) CHECK_OK(bm_token_sampler_sample(s, x, NULL, 0, &b[i]));
  CHECK(memcmp(a, b, sizeof a) == 0);
  p.seed = 43;
  CHECK_OK(bm_token_sampler_set_params(s, &p));
  for (int i = 0; i < N; i++) CHECK_OK(bm_token_sampler_sample(s, x, NULL, 0, &c[i]));
  CHECK(memcmp(a, c, sizeof a) != 0);
  bm_token_sampler_destroy(s);
  /* the PRNG itself is fixed: xoshiro256** seeded by splitmix64 */
  bm_sample_rng r1, r2;
  bm_sample_rng_seed(&r1, 1);
  bm_sample_rng_seed(&r2, 1);
  for (int i = 0; i < 10; i++) CHECK(bm_sample_rng_next(&r1) == bm_sample_rng_next(&r2));
  double u = bm_sample_rng_uniform(&r1);
  CHECK(u >= 0 && u < 1);
}

/* Frequencies follow the probabilities. */
static void test_distribution(void) {
  float x[3] = {logf(0.5f), logf(0.3f), logf(0.2f)};
  bm_sample_params p = plain(1.0f);
  p.seed = 7;
  bm_token_sampler *s = NULL;
  CHECK_OK(bm_token_sampler_create(3, &p, &s));
  if (!s) return;
  int cnt[3] = {0};
  enum { N = 20000 };
  for (int i = 0; i < N; i++) {
    int32_t t = -1;
    CHECK_OK(bm_token_sampler_sample(s, x, NULL, 0, &t));
    if (t >= 0 && t < 3) cnt[t]++;
  }
  CHECK_MSG(fabs(cnt[0] / (double)N - 0.5) < 0.02 && fabs(cnt[1] / (double)N - 0.3) < 0.02 &&
                fabs(cnt[2] / (double)N - 0.2) < 0.02,
            "frequencies %d %d %d of %d", cnt[0], cnt[1], cnt[2], N);
  bm_token_sampler_destroy(s);
}

static void test_sample_errors(void) {
  bm_sample_params p = bm_sample_params_default();
  bm_token_sampler *s = NULL;
  p.top_p = 0;
  CHECK_ERR(bm_token_sampler_create(10, &p, &s), BM_ERR_INVALID_ARGUMENT, "top-p");
  p = bm_sample_params_default();
  p.temperature = NAN;
  CHECK_ERR(bm_token_sampler_create(10, &p, &s), BM_ERR_INVALID_ARGUMENT, "temperature");
  p = bm_sample_params_default();
  p.repeat_penalty = 0;
  CHECK_ERR(bm_token_sampler_create(10, &p, &s), BM_ERR_INVALID_ARGUMENT, "penalty");
  p = bm_sample_params_default();
  p.min_p = 2;
  CHECK_ERR(bm_token_sampler_create(10, &p, &s), BM_ERR_INVALID_ARGUMENT, "min-p");
  CHECK_ERR(bm_token_sampler_create(0, NULL, &s), BM_ERR_INVALID_ARGUMENT, "vocabulary");
  CHECK(s == NULL);
  /* all -inf: nothing to sample (greedy still answers) */
  float x[3] = {-INFINITY, -INFINITY, NAN};
  p = plain(1.0f);
  CHECK_OK(bm_token_sampler_create(3, &p, &s));
  int32_t t;
  if (s) CHECK_ERR(bm_token_sampler_sample(s, x, NULL, 0, &t), BM_ERR_INVALID_ARGUMENT, "-inf");
  bm_token_sampler_destroy(s);
}

/* ------------------------------------------------------------------ generation on the goldens */



/* Builds the model folder `dir` and compiles it (-O0: fast to build, same
 * tokens) to tmp/<name>.bmpk with the given bounds and embedded files. */
static bm_status compile_folder(const char *dir, const char *name, int max_ctx, int max_batch, int max_seq,
                                const bm_embedded_file *blobs, int nblobs, char *pkg_path, size_t cap) {
  char *extra = NULL;
  bm_model_options mo = {.max_ctx = max_ctx, .max_batch = max_batch, .max_seq = max_seq, .extra_json = &extra};
  bm_module *m = NULL;
  bm_weight_source *src = NULL;
  BM_RETURN_IF_ERROR(bm_model_build(dir, &mo, &m, &src));
  snprintf(pkg_path, cap, "%s/%s.bmpk", bm_test_tmpdir(), name);
  bm_compile_options co;
  bm_compile_options_init(&co);
  co.target.opt_level = 0;
  co.extra_json = extra;
  co.blobs = blobs;
  co.nblobs = nblobs;
  bm_status s = bm_compile_module(m, &co, pkg_path);
  bm_module_destroy(m);
  bm_weight_source_close(src);
  free(extra);
  return s;
}

typedef struct counter {
  int calls[BM_GEN_MAX_ROWS];
  int stop_after; /* stop a row after this many tokens (0 = never) */
} counter;

static int count_token(void *user, int row, int32_t token, const char *text, size_t len) {
  counter *c = user;
  if (token < 0) return 0;
  c->calls[row]++;
  return c->stop_after && c->calls[row] >= c->stop_after;
}

/* Greedy generation of rows (prompts, lens); the tokens generated for each
 * row go to out[r] (up to max_new). */
static bm_status greedy(bm_gen *g, int rows, const int32_t *const *prompts, const size_t *lens, int max_new,
                        bool reuse, int32_t (*out)[64], bm_gen_result *res) {
  bm_gen_request rq = bm_gen_request_default();
  rq.n_rows = rows;
  rq.prompts = prompts;
  rq.prompt_lens = lens;
  rq.max_new_tokens = max_new;
  rq.ignore_eos = true;
  rq.reuse_cache = reuse;
  counter c = {{0}};
  rq.on_token = count_token;
  rq.user = &c;
  BM_RETURN_IF_ERROR(bm_gen_generate(g, &rq, res));
  for (int r = 0; r < rows; r++) {
    const int32_t *seq;
    size_t n, nc;
    BM_RETURN_IF_ERROR(bm_gen_row_tokens(g, r, &seq, &n, &nc));
    CHECK(n == lens[r] + (size_t)res->n_new[r]);
    CHECK(c.calls[r] == res->n_new[r]);
    for (int i = 0; i < res->n_new[r] && i < 64; i++) out[r][i] = seq[lens[r] + (size_t)i];
  }
  return NULL;
}

static void check_golden(const char *name) {
  char dir[1024], pkg_path[1024];
  snprintf(dir, sizeof dir, "%s/%s", bm_test_shared("golden/hf"), name);
  bm_test_llm_golden G;
  bm_status s = bm_test_llm_golden_open(dir, &G);
  if (s) {
    CHECK_OK(s);
    bm_test_llm_golden_close(&G);
    return;
  }
  bm_package *pkg = NULL;
  bm_gen *g = NULL;
  s = compile_folder(dir, name, 64, 2, 48, NULL, 0, pkg_path, sizeof pkg_path);
  if (!s) s = bm_package_open(pkg_path, NULL, &pkg);
  bm_gen_options go = {.threads = 2};
  if (!s) s = bm_gen_open(pkg, &go, &g);
  if (s) {
    fprintf(stderr, "%s: %s\n", name, bm_status_message(s));
    CHECK_OK(s);
    goto done;
  }
  const bm_gen_info *in = bm_gen_get_info(g);
  CHECK(in->max_batch == 2 && in->max_ctx == 64 && in->max_seq == 48 && !in->has_tokenizer);

  /* 1. the prompt alone: transformers' greedy ids, exactly */
  int32_t out[2][64], alone[2][64];
  bm_gen_result res;
  const int32_t *p1[1] = {G.ids};
  size_t l1[1] = {(size_t)G.P};
  s = greedy(g, 1, p1, l1, (int)G.N, false, out, &res);
  CHECK_OK(s);
  if (!s) {
    CHECK(res.n_new[0] == G.N && res.stop[0] == BM_GEN_STOP_MAX_TOKENS);
    CHECK(res.prompt_tokens == G.P && res.decode_tokens == G.N - 1 && res.prefill_runs == 1);
    for (int i = 0; i < G.N; i++)
      CHECK_MSG(out[0][i] == G.greedy[i], "%s: token %d is %d, transformers %d", name, i, out[0][i], G.greedy[i]);
  }

  /* 2. the next turn reuses the cache: prompt + 6 generated tokens is
   * prefilled from its last token only, and goes on as before */
  int32_t longer[128];
  memcpy(longer, G.ids, sizeof(int32_t) * (size_t)G.P);
  memcpy(longer + G.P, G.greedy, sizeof(int32_t) * 6);
  const int32_t *p2[1] = {longer};
  size_t l2[1] = {(size_t)G.P + 6};
  s = greedy(g, 1, p2, l2, (int)G.N - 6, true, out, &res);
  CHECK_OK(s);
  if (!s) {
    CHECK_MSG(res.reused_tokens == G.P + 5 && res.prompt_tokens == 1, "%s: reused %lld, prefilled %lld", name,
              (long long)res.reused_tokens, (long long)res.prompt_tokens);
    for (int i = 0; i + 6 < G.N; i++)
      CHECK_MSG(out[0][i] == G.greedy[6 + i], "%s: after reuse token %d is %d, expected %d", name, i, out[0][i],
                G.greedy[6 + i]);
  }

  /* 3. two prompts in one batch give each prompt's tokens alone; then
   * rows of different lengths (the shorter one padded) */
  const int32_t *pb[2] = {G.bids, G.bids + G.BP};
  size_t lb[2] = {(size_t)G.BP, (size_t)G.BP};
  for (int r = 0; r < 2 && !s; r++) s = greedy(g, 1, pb + r, lb + r, 8, false, alone + r, &res);
  CHECK_OK(s);
  int32_t both[2][64];
  if (!s) s = greedy(g, 2, pb, lb, 8, false, both, &res);
  CHECK_OK(s);
  if (!s) {
    CHECK(res.n_new[0] == 8 && res.n_new[1] == 8 && res.decode_runs == 7);
    for (int r = 0; r < 2; r++)
      for (int i = 0; i < 8; i++)
        CHECK_MSG(both[r][i] == alone[r][i], "%s: batch row %d token %d is %d, alone %d", name, r, i, both[r][i],
                  alone[r][i]);
  }
  const int32_t *pm[2] = {G.bids + G.BP, G.ids};
  size_t lm[2] = {(size_t)G.BP, (size_t)G.P};
  if (!s) s = greedy(g, 2, pm, lm, 8, false, both, &res);
  CHECK_OK(s);
  if (!s)
    for (int i = 0; i < 8; i++) {
      CHECK_MSG(both[0][i] == alone[1][i], "%s: mixed batch row 0 token %d", name, i);
      CHECK_MSG(both[1][i] == G.greedy[i], "%s: mixed batch row 1 token %d is %d, expected %d", name, i, both[1][i],
                G.greedy[i]);
    }

done:
  bm_gen_close(g);
  bm_package_close(pkg);
  bm_test_llm_golden_close(&G);
}

static void test_llama2(void) { check_golden("llama2"); }
static void test_llama3(void) { check_golden("llama3"); }
static void test_mistral(void) { check_golden("mistral"); }
static void test_qwen2(void) { check_golden("qwen2"); }
static void test_qwen3(void) { check_golden("qwen3"); }
static void test_gemma2(void) { check_golden("gemma2"); }
static void test_phi3(void) { check_golden("phi3"); }
static void test_mixtral(void) { check_golden("mixtral"); }
static void test_deepseek_v2(void) { check_golden("deepseek_v2"); }

/* Chunked prefill (max_seq 8 < the prompt), stops, the callback, the
 * context limit, bad requests; embedded files. */
static void test_chunks_stops_errors(void) {
  char dir[1024], pkg_path[1024];
  snprintf(dir, sizeof dir, "%s", bm_test_shared("golden/hf/llama2"));
  bm_test_llm_golden G;
  bm_status s = bm_test_llm_golden_open(dir, &G);
  if (s) {
    CHECK_OK(s);
    bm_test_llm_golden_close(&G);
    return;
  }
  /* a tokenizer blob whose vocabulary (32000) exceeds the model's (512) */
  char tpath[1024];
  snprintf(tpath, sizeof tpath, "%s", bm_test_shared("tokenizers/llama2_spm"));
  bm_tokenizer_files tf;
  CHECK_OK(bm_tokenizer_files_read(tpath, &tf));
  CHECK(tf.nblobs == 1 && tf.vocab == 32000 && tf.json && strstr(tf.json, "tokenizer/tokenizer.model"));
  char *e2 = NULL;
  CHECK_ERR(bm_extra_add_tokenizer("{\"vocab_size\": 512}", &tf, NULL, &e2), BM_ERR_INVALID_ARGUMENT, "32000");
  CHECK_ERR(bm_extra_add_tokenizer("{}", NULL, "nosuch", &e2), BM_ERR_INVALID_ARGUMENT, "nosuch");
  CHECK_OK(bm_extra_add_tokenizer("{\"kind\": \"causal_lm\"}", NULL, "chatml", &e2));
  CHECK(e2 && strstr(e2, "\"chat_template\":\"chatml\"") && strstr(e2, "\"tokenizer\":null"));
  free(e2);
  bm_embedded_file extra_blob = {"notes/hello.txt", "hello, package", 14};
  bm_embedded_file blobs[2] = {tf.blobs[0], extra_blob};

  bm_package *pkg = NULL;
  bm_gen *g = NULL;
  s = compile_folder(dir, "llama2_chunks", 32, 2, 8, blobs, 2, pkg_path, sizeof pkg_path);
  if (!s) s = bm_package_open(pkg_path, NULL, &pkg);
  bm_gen_options go = {.threads = 2};
  if (!s) s = bm_gen_open(pkg, &go, &g);
  if (s) {
    CHECK_OK(s);
    goto done;
  }
  /* the embedded files come back byte for byte */
  const void *data;
  size_t size;
  CHECK(bm_package_blob_count(pkg) == 2);
  CHECK(bm_package_blob_name(pkg, 1) && !strcmp(bm_package_blob_name(pkg, 1), "notes/hello.txt"));
  CHECK(bm_package_blob_name(pkg, 2) == NULL);
  CHECK_OK(bm_package_blob(pkg, "tokenizer/tokenizer.model", &data, &size));
  CHECK(size == tf.blobs[0].size && data && !memcmp(data, tf.blobs[0].data, size));
  CHECK_OK(bm_package_blob(pkg, "notes/hello.txt", &data, &size));
  CHECK(size == 14 && data && !memcmp(data, "hello, package", 14));
  CHECK_ERR(bm_package_blob(pkg, "nosuch", &data, &size), BM_ERR_NOT_FOUND, "nosuch");

  int32_t out[2][64];
  bm_gen_result res;
  const int32_t *p1[1] = {G.ids};
  size_t l1[1] = {(size_t)G.P};
  /* prefill in chunks of 8: the same greedy ids */
  s = greedy(g, 1, p1, l1, (int)G.N, false, out, &res);
  CHECK_OK(s);
  if (!s) {
    CHECK(res.prefill_runs == (int)((G.P + 7) / 8));
    for (int i = 0; i < G.N; i++) CHECK_MSG(out[0][i] == G.greedy[i], "chunked prefill: token %d", i);
  }
  /* no token limit: the 32-position context stops it after 32 - P + 1 tokens */
  s = greedy(g, 1, p1, l1, 0, false, out, &res);
  CHECK_OK(s);
  if (!s) CHECK_MSG(res.stop[0] == BM_GEN_STOP_CONTEXT && res.n_new[0] == 32 - G.P + 1, "stop %s after %d",
                    bm_gen_stop_name(res.stop[0]), res.n_new[0]);
  /* stop tokens, the callback */
  bm_gen_request rq = bm_gen_request_default();
  rq.n_rows = 1;
  rq.prompts = p1;
  rq.prompt_lens = l1;
  rq.max_new_tokens = 10;
  rq.stop_ids = &G.greedy[2];
  rq.n_stop_ids = 1;
  CHECK_OK(bm_gen_generate(g, &rq, &res));
  CHECK(res.stop[0] == BM_GEN_STOP_EOS && res.n_new[0] <= 3);
  counter c = {{0}, .stop_after = 4};
  rq.n_stop_ids = 0;
  rq.on_token = count_token;
  rq.user = &c;
  CHECK_OK(bm_gen_generate(g, &rq, &res));
  CHECK(res.stop[0] == BM_GEN_STOP_CALLBACK && res.n_new[0] == 4);
  /* sampling is deterministic for a seed */
  int32_t a[2][64] = {{0}}, b[2][64] = {{0}};
  rq.on_token = NULL;
  rq.sample = bm_sample_params_default();
  rq.sample.temperature = 1.5f;
  rq.sample.seed = 9;
  const int32_t *pp[2] = {G.ids, G.ids};
  size_t ll[2] = {(size_t)G.P, (size_t)G.P};
  rq.n_rows = 2;
  rq.prompts = pp;
  rq.prompt_lens = ll;
  rq.max_new_tokens = 8;
  for (int k = 0; k < 2; k++) {
    CHECK_OK(bm_gen_generate(g, &rq, &res));
    for (int r = 0; r < 2; r++) {
      const int32_t *seq;
      size_t n;
      CHECK_OK(bm_gen_row_tokens(g, r, &seq, &n, NULL));
      for (int i = 0; i < 8 && (size_t)(G.P + i) < n; i++) (k ? b : a)[r][i] = seq[G.P + i];
    }
  }
  CHECK(!memcmp(a, b, sizeof(int32_t) * 64 * 2) || res.n_new[0] < 8);
  CHECK(!memcmp(a[0], a[1], sizeof(int32_t) * 8)); /* same prompt, same seed: same tokens in each row */

  /* bad requests */
  rq = bm_gen_request_default();
  int32_t bad[2] = {1, 512};
  const int32_t *pbad[1] = {bad};
  size_t lbad[1] = {2};
  rq.n_rows = 1;
  rq.prompts = pbad;
  rq.prompt_lens = lbad;
  CHECK_ERR(bm_gen_generate(g, &rq, &res), BM_ERR_INVALID_ARGUMENT, "512");
  static int32_t big[40];
  const int32_t *pbig[1] = {big};
  size_t lbig[1] = {40};
  rq.prompts = pbig;
  rq.prompt_lens = lbig;
  CHECK_ERR(bm_gen_generate(g, &rq, &res), BM_ERR_INVALID_ARGUMENT, "context");
  lbig[0] = 0;
  CHECK_ERR(bm_gen_generate(g, &rq, &res), BM_ERR_INVALID_ARGUMENT, "empty");
  lbig[0] = 3;
  rq.n_rows = 3;
  CHECK_ERR(bm_gen_generate(g, &rq, &res), BM_ERR_INVALID_ARGUMENT, "max_batch");
  rq.n_rows = 1;
  rq.sample.top_p = -1;
  CHECK_ERR(bm_gen_generate(g, &rq, &res), BM_ERR_INVALID_ARGUMENT, "top-p");
  bm_gen *g2 = NULL;
  CHECK_ERR(bm_gen_open(NULL, NULL, &g2), BM_ERR_INVALID_ARGUMENT, NULL);
  CHECK(g2 == NULL);

done:
  bm_gen_close(g);
  bm_package_close(pkg);
  bm_tokenizer_files_free(&tf);
  bm_test_llm_golden_close(&G);
}

/* A package whose tokenizer does not fit the model, and one that is not an LLM. */
/* A package from before prefill's `last` input: a toy bigram "model" whose
 * prefill returns logits for every position (batch, seq, V). The driver
 * must take each row's last real position from them; the next token after
 * t is (7 t + 3) % V, so any other position gives other tokens. */
enum { TOY_V = 16 };
static float toy_table[TOY_V * TOY_V];
static int32_t toy_next(int32_t t) { return (7 * t + 3) % TOY_V; }

static bm_graph *toy_fn(bm_module *m, const char *name, bool decode) {
  bm_graph *g = bm_graph_create(m, name);
  int64_t B = BM_SYM(bm_sym_declare(g, "batch", 2));
  int64_t S = decode ? 1 : BM_SYM(bm_sym_declare(g, "seq", 4));
  int64_t bs[2] = {B, S}, b1[1] = {B}, ts[2] = {TOY_V, TOY_V};
  bm_node *ids = bm_input(g, "input_ids", BM_DTYPE_I32, 2, bs);
  bm_input(g, "positions", BM_DTYPE_I32, 2, bs);
  bm_input(g, "start", BM_DTYPE_I32, 1, b1);
  bm_input(g, "kv_len", BM_DTYPE_I32, 1, b1);
  bm_node *w = bm_weight(g, "table", BM_DTYPE_F32, 2, ts, toy_table, sizeof toy_table);
  bm_output_add(g, "logits", bm_gather(g, w, ids)); /* (B, S, V): every position */
  return g;
}

static void test_prefill_without_last(void) {
  for (int t = 0; t < TOY_V; t++)
    for (int j = 0; j < TOY_V; j++) toy_table[t * TOY_V + j] = j == toy_next(t) ? 1.0f : (float)j / 100.0f;
  bm_module *m = bm_module_create("toy");
  toy_fn(m, "prefill", false);
  toy_fn(m, "decode", true);
  char path[1024];
  snprintf(path, sizeof path, "%s/toy_old_prefill.bmpk", bm_test_tmpdir());
  bm_compile_options co;
  bm_compile_options_init(&co);
  co.target.opt_level = 0;
  co.extra_json = "{\"kind\": \"causal_lm\", \"arch\": \"toy\", \"vocab_size\": 16, \"max_ctx\": 32, "
                  "\"bos_token_id\": [0], \"eos_token_id\": []}";
  CHECK_OK(bm_compile_module(m, &co, path));
  bm_module_destroy(m);
  bm_package *pkg = NULL;
  bm_gen *g = NULL;
  CHECK_OK(bm_package_open(path, NULL, &pkg));
  bm_gen_options go = {.threads = 2};
  if (pkg) CHECK_OK(bm_gen_open(pkg, &go, &g));
  if (g) {
    /* rows of 6 and 3 tokens: chunks of 4 and 2 positions, the short row padded */
    int32_t p0[6] = {1, 2, 5, 9, 4, 11}, p1[3] = {6, 13, 2};
    const int32_t *prompts[2] = {p0, p1};
    size_t lens[2] = {6, 3};
    int32_t out[2][64];
    bm_gen_result res;
    CHECK_OK(greedy(g, 2, prompts, lens, 5, false, out, &res));
    CHECK(res.prefill_runs == 2);
    for (int r = 0; r < 2; r++) {
      int32_t want = prompts[r][lens[r] - 1];
      for (int i = 0; i < 5; i++) {
        want = toy_next(want);
        CHECK_MSG(out[r][i] == want, "row %d token %d: %d, expected %d", r, i, out[r][i], want);
      }
    }
  }
  bm_gen_close(g);
  bm_package_close(pkg);
}

static void test_open_errors(void) {
  char dir[1024], pkg_path[1024];
  snprintf(dir, sizeof dir, "%s", bm_test_shared("golden/hf/qwen2"));
  char tpath[1024];
  snprintf(tpath, sizeof tpath, "%s", bm_test_shared("tokenizers/llama2_spm"));
  bm_tokenizer_files tf;
  CHECK_OK(bm_tokenizer_files_read(tpath, &tf));
  /* an extra that claims the llama2 tokenizer, on a 512-token model */
  char *extra = NULL;
  bm_model_options mo = {.max_ctx = 16, .max_batch = 1, .max_seq = 8, .extra_json = &extra};
  bm_module *m = NULL;
  bm_weight_source *src = NULL;
  CHECK_OK(bm_model_build(dir, &mo, &m, &src));
  if (!m) {
    bm_tokenizer_files_free(&tf);
    return;
  }
  char *e2 = NULL, *e3 = NULL;
  bm_tokenizer_files lie = tf; /* claims a small vocabulary to get past bmc's check */
  lie.vocab = 1;
  CHECK_OK(bm_extra_add_tokenizer(extra, &lie, "chatml", &e3));
  bm_compile_options co;
  bm_compile_options_init(&co);
  co.target.opt_level = 0;
  co.extra_json = e3;
  co.blobs = tf.blobs;
  co.nblobs = tf.nblobs;
  co.compress = 1; /* the blob is stored zstd-compressed */
  snprintf(pkg_path, sizeof pkg_path, "%s/qwen2_badtok.bmpk", bm_test_tmpdir());
  CHECK_OK(bm_compile_module(m, &co, pkg_path));
  bm_module_destroy(m);
  bm_weight_source_close(src);
  free(extra);
  free(e2);
  free(e3);
  bm_package *pkg = NULL;
  bm_gen *g = NULL;
  CHECK_OK(bm_package_open(pkg_path, NULL, &pkg));
  if (pkg) {
    const char *man = bm_package_manifest_json(pkg);
    CHECK(strstr(man, "\"compression\":\t\"zstd\"") || strstr(man, "\"zstd\""));
    const void *data;
    size_t size;
    CHECK_OK(bm_package_blob(pkg, "tokenizer/tokenizer.model", &data, &size));
    CHECK(size == tf.blobs[0].size && data && !memcmp(data, tf.blobs[0].data, size));
    CHECK_ERR(bm_gen_open(pkg, NULL, &g), BM_ERR_INCOMPATIBLE, "32000");
    CHECK(g == NULL);
    bm_gen_options go = {.threads = 1, .no_tokenizer = true};
    CHECK_OK(bm_gen_open(pkg, &go, &g));
    if (g) CHECK(bm_gen_get_info(g)->chat == BM_CHAT_CHATML && !bm_gen_tokenizer(g));
    bm_gen_close(g);
    bm_package_close(pkg);
  }
  /* a flipped byte in the blob is caught by its checksum */
  FILE *f = fopen(pkg_path, "r+b");
  CHECK(f != NULL);
  if (f) {
    /* the blob lies after the weights; find its offset in the manifest */
    char head[65536] = {0};
    size_t got = fread(head, 1, sizeof head - 1, f);
    (void)got;
    const char *b = strstr(head + 64, "\"blobs\""); /* the manifest follows the 64-byte header */
    const char *o = b ? strstr(b, "\"offset\":") : NULL;
    long off = o ? strtol(o + 9, NULL, 10) : 0;
    CHECK(off > 0);
    if (off > 0) {
      fseek(f, off + 100, SEEK_SET);
      int ch = fgetc(f);
      fseek(f, off + 100, SEEK_SET);
      fputc(ch ^ 0x55, f);
    }
    fclose(f);
    CHECK_ERR(bm_package_open(pkg_path, NULL, &pkg), BM_ERR_CORRUPT, "blob 'tokenizer/tokenizer.model'");
  }
  bm_tokenizer_files_free(&tf);

  /* the built-in tiny model is no LLM */
  bm_module *tm = NULL;
  bm_weight_source *ts = NULL;
  CHECK_OK(bm_model_build("tiny", NULL, &tm, &ts));
  if (tm) {
    bm_compile_options_init(&co);
    co.target.opt_level = 0;
    snprintf(pkg_path, sizeof pkg_path, "%s/tiny.bmpk", bm_test_tmpdir());
    CHECK_OK(bm_compile_module(tm, &co, pkg_path));
    bm_module_destroy(tm);
    bm_weight_source_close(ts);
    pkg = NULL;
    CHECK_OK(bm_package_open(pkg_path, NULL, &pkg));
    if (pkg) CHECK_ERR(bm_gen_open(pkg, NULL, &g), BM_ERR_INCOMPATIBLE, "causal_lm");
    CHECK(bm_package_blob_count(pkg) == 0);
    bm_package_close(pkg);
  }
  /* a missing tokenizer path */
  CHECK_ERR(bm_tokenizer_files_read("/nonexistent/tok", &tf), BM_ERR_IO, "/nonexistent/tok");
  snprintf(tpath, sizeof tpath, "%s", bm_test_shared("golden/hf/llama2"));
  CHECK_ERR(bm_tokenizer_files_read(tpath, &tf), BM_ERR_NOT_FOUND, "no tokenizer");
}

int main(void) {
  RUN(test_greedy);
  RUN(test_top_k);
  RUN(test_top_p_min_p);
  RUN(test_repetition_penalty);
  RUN(test_seed);
  RUN(test_distribution);
  RUN(test_sample_errors);
  RUN(test_llama2);
  RUN(test_llama3);
  RUN(test_mistral);
  RUN(test_qwen2);
  RUN(test_qwen3);
  RUN(test_gemma2);
  RUN(test_phi3);
  RUN(test_mixtral);
  RUN(test_deepseek_v2);
  RUN(test_chunks_stops_errors);
  RUN(test_open_errors);
  RUN(test_prefill_without_last);
  return bm_test_finish();
}
