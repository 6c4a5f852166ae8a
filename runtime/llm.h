/* llm.h - the text generation driver of libbmrt: runs a compiled causal LM
 * package (functions "prefill" and "decode" with a persistent KV cache, see
 * docs/models.md) on a batch of prompts, samples tokens (sample.h), streams
 * them detokenized (tokenizer.h) and times prefill and decode. See
 * docs/llm.md.
 *
 *   bm_package *pkg; bm_gen *g;
 *   BM_CHECK(bm_package_open("model.bmpk", NULL, &pkg));
 *   BM_CHECK(bm_gen_open(pkg, NULL, &g));            // session, tokenizer, samplers
 *   int32_t *ids; size_t n;
 *   BM_CHECK(bm_tokenizer_encode_alloc(bm_gen_tokenizer(g), text, len,
 *                                      BM_TOK_ADD_BOS | BM_TOK_PARSE_SPECIAL, &ids, &n));
 *   bm_gen_request rq = bm_gen_request_default();
 *   rq.n_rows = 1; rq.prompts = (const int32_t *const[]){ids}; rq.prompt_lens = &n;
 *   rq.max_new_tokens = 128; rq.on_token = print_token;
 *   bm_gen_result res;
 *   BM_CHECK(bm_gen_generate(g, &rq, &res));
 *   bm_gen_close(g); bm_package_close(pkg);
 *
 * Each row of the batch is one row of the KV cache. The driver remembers
 * every row's sequence (the tokens whose keys and values are in the cache):
 * with `reuse_cache`, a new prompt that starts with the cached tokens (the
 * next turn of a chat) is prefilled only from where it differs. Prompts are
 * prefilled once, in chunks of at most max_seq tokens; every further token
 * goes through "decode" (one position per row), never recomputing the
 * prompt. All buffers are allocated by bm_gen_open; generating allocates
 * nothing. A bm_gen is not thread-safe. */
#ifndef BM_LLM_H_RUNTIME
#define BM_LLM_H_RUNTIME

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bm_runtime.h"
#include "sample.h"
#include "tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

#define BM_GEN_MAX_ROWS 64 /* most rows one request can have */
#define BM_GEN_MAX_EOS 16

typedef struct bm_gen bm_gen;

/* What the package's manifest "extra" and functions say about the model. */
typedef struct bm_gen_info {
  const char *arch;       /* "llama", "qwen3", ... (borrowed) */
  int32_t vocab;          /* logits per position */
  int max_batch;          /* rows per call (the functions' batch bound) */
  int max_seq;            /* longest prefill chunk */
  int max_ctx;            /* KV cache positions per row */
  int32_t bos;            /* -1 if none */
  int n_eos;
  int32_t eos[BM_GEN_MAX_EOS]; /* config eos ids, plus the tokenizer's */
  bool has_tokenizer;     /* the package embeds one and it was loaded */
  bm_chat_kind chat;      /* chat format (manifest, else the tokenizer's guess) */
} bm_gen_info;

typedef struct bm_gen_options {
  int threads;            /* 0 = all CPUs */
  bool no_tokenizer;      /* do not load the embedded tokenizer */
} bm_gen_options;

/* Checks that pkg is a causal LM package (extra.kind "causal_lm", functions
 * prefill and decode with the expected inputs and logits), creates its
 * session and loads the embedded tokenizer (if any). pkg must outlive g. */
bm_status bm_gen_open(bm_package *pkg, const bm_gen_options *o, bm_gen **out);
void bm_gen_close(bm_gen *g); /* NULL is fine */

const bm_gen_info *bm_gen_get_info(const bm_gen *g);
const bm_tokenizer *bm_gen_tokenizer(const bm_gen *g); /* NULL if none */
bm_session *bm_gen_session(bm_gen *g);

/* Called for every generated token of a row, in order, with the text this
 * token completes (complete UTF-8 only; may be empty). At the end of a row
 * it is called once more with token -1 and what the detokenizer still held
 * (only if non-empty). Return nonzero to stop the row. */
typedef int (*bm_gen_token_fn)(void *user, int row, int32_t token, const char *text, size_t len);

typedef enum bm_gen_stop {
  BM_GEN_STOP_NONE = 0,
  BM_GEN_STOP_EOS,        /* an eos or stop token was sampled (not emitted) */
  BM_GEN_STOP_MAX_TOKENS, /* max_new_tokens reached */
  BM_GEN_STOP_CONTEXT,    /* the KV cache is full */
  BM_GEN_STOP_CALLBACK,   /* on_token returned nonzero */
} bm_gen_stop;
const char *bm_gen_stop_name(bm_gen_stop s); /* "eos", "max_tokens", ... */

typedef struct bm_gen_request {
  int n_rows;                     /* 1..max_batch */
  const int32_t *const *prompts;  /* row r: prompt_lens[r] token ids (BOS included if wanted) */
  const size_t *prompt_lens;      /* each 1..max_ctx */
  int max_new_tokens;             /* per row; <= 0: until eos or the context is full */
  bm_sample_params sample;        /* every row gets its own PRNG seeded with sample.seed */
  bool reuse_cache;               /* keep the row's cached prefix (chat); else start at 0 */
  bool ignore_eos;                /* do not stop on the eos ids (stop_ids still stop) */
  const int32_t *stop_ids;        /* more stop tokens besides the eos ids (may be NULL) */
  int n_stop_ids;
  uint32_t detok_flags;           /* BM_TOK_SKIP_SPECIAL etc. for the streamed text */
  bm_gen_token_fn on_token;       /* may be NULL */
  void *user;
} bm_gen_request;

/* n_rows 0, greedy sampling, reuse off, skip special tokens in the text. */
bm_gen_request bm_gen_request_default(void);

typedef struct bm_gen_result {
  int64_t prompt_tokens;    /* prompt tokens prefilled, all rows */
  int64_t reused_tokens;    /* prompt tokens already in the cache (reuse_cache) */
  int64_t generated_tokens; /* tokens sampled, all rows (stop tokens included) */
  int64_t decode_tokens;    /* tokens fed through decode, all rows */
  int prefill_runs, decode_runs;
  double prefill_seconds;   /* prefill runs and the first token's sampling */
  double decode_seconds;    /* the decode loop (runs and sampling) */
  bm_gen_stop stop[BM_GEN_MAX_ROWS];
  int n_new[BM_GEN_MAX_ROWS]; /* tokens generated per row (stop token included) */
} bm_gen_result;

/* Prefills the rows' prompts and generates until every row stops. A bad
 * request (token id out of range, prompt longer than the context, too many
 * rows) fails with BM_ERR_INVALID_ARGUMENT before anything runs. */
bm_status bm_gen_generate(bm_gen *g, const bm_gen_request *rq, bm_gen_result *res);

/* Row r's sequence: the prompt and the tokens generated by the last call
 * (borrowed until the next call). *n_cached receives how many of them have
 * their keys and values in the cache (may be NULL). */
bm_status bm_gen_row_tokens(const bm_gen *g, int row, const int32_t **ids, size_t *n, size_t *n_cached);

/* Forgets every row's cached sequence (the next request starts at 0). */
void bm_gen_reset(bm_gen *g);

#ifdef __cplusplus
}
#endif
#endif
