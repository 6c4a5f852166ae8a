/* llm.c - the generation driver (llm.h): reads a causal LM package's
 * manifest "extra", loads its embedded tokenizer, prefills a batch of
 * prompts through "prefill", then decodes token by token through "decode"
 * and the KV cache, sampling with sample.h and streaming detokenized text. */
#include "llm.h"

#include <cjson/cJSON.h>

#include "chat_template.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { IN_IDS = 0, IN_POS, IN_START, IN_KVLEN, IN_LAST, N_IN };
static const char *const input_names[N_IN] = {"input_ids", "positions", "start", "kv_len", "last"};

typedef struct fn_desc {
  int f;         /* function index */
  int in[N_IN];  /* input indices by role; in[IN_LAST] = -1: none */
  int out;       /* logits output index */
} fn_desc;

typedef struct row {
  int32_t *seq;     /* (max_ctx + 1) the row's tokens: prompt, then generated */
  size_t n;         /* tokens in seq */
  size_t n_cached;  /* seq[0, n_cached) have their keys/values in the cache */
  bm_token_sampler *sampler;
  bm_detok detok;
  bool active;
} row;

struct bm_gen {
  bm_package *pkg;
  bm_session *ses;
  cJSON *extra;
  bm_tokenizer *tok;
  bm_gen_info info;
  fn_desc prefill, decode;
  row rows[BM_GEN_MAX_ROWS];
  int32_t *ids, *pos;       /* (max_batch * max_seq) */
  int32_t *start, *kv_len;  /* (max_batch) */
  int32_t *last_pos;        /* (max_batch) prefill's `last`: each row's last real position in the chunk */
  float *last;              /* (max_batch, vocab) logits of each row's last prompt token */
  char text[4096];          /* streamed text of one token */
};

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

const char *bm_gen_stop_name(bm_gen_stop s) {
  switch (s) {
  case BM_GEN_STOP_NONE: return "none";
  case BM_GEN_STOP_EOS: return "eos";
  case BM_GEN_STOP_MAX_TOKENS: return "max_tokens";
  case BM_GEN_STOP_CONTEXT: return "context";
  case BM_GEN_STOP_CALLBACK: return "callback";
  }
  return "?";
}

bm_gen_request bm_gen_request_default(void) {
  bm_gen_request r;
  memset(&r, 0, sizeof r);
  r.sample = bm_sample_params_default();
  r.sample.temperature = 0; /* greedy */
  r.detok_flags = BM_TOK_SKIP_SPECIAL;
  return r;
}

/* ------------------------------------------------------------------ open */

#define BAD(...) bm_status_make(BM_ERR_INVALID_ARGUMENT, __VA_ARGS__)

static const cJSON *jget(const cJSON *o, const char *k) {
  return cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, k) : NULL;
}

/* An integer field of extra in [lo, hi]. */
static bm_status extra_int(const cJSON *extra, const char *key, int64_t lo, int64_t hi, int64_t *out) {
  const cJSON *v = jget(extra, key);
  if (!cJSON_IsNumber(v) || v->valuedouble < (double)lo || v->valuedouble > (double)hi ||
      v->valuedouble != (double)(int64_t)v->valuedouble)
    return bm_status_make(BM_ERR_CORRUPT, "manifest extra.%s: expected an integer in [%lld, %lld]", key,
                          (long long)lo, (long long)hi);
  *out = (int64_t)v->valuedouble;
  return NULL;
}

/* Finds function `name` with inputs input_ids/positions/start/kv_len (i32,
 * (batch, seq) / (batch)), with `want_last` also prefill's optional `last`
 * (batch) (packages from before it have none: their logits hold every
 * position), and an f32 logits output (batch, seq or 1, vocab). */
static bm_status find_fn(bm_gen *g, const char *name, bool want_last, fn_desc *d, int64_t *batch, int64_t *seq,
                         int64_t *vocab) {
  BM_RETURN_IF_ERROR(bm_package_find_function(g->pkg, name, &d->f));
  d->in[IN_LAST] = -1;
  for (int k = 0; k < N_IN; k++) {
    bm_tensor_info t;
    if (k == IN_LAST) {
      if (!want_last) continue;
      bm_status s = bm_function_find_input(g->pkg, d->f, input_names[k], &d->in[k]);
      if (s) { /* an older package: logits of every position */
        bm_status_free(s);
        d->in[k] = -1;
        continue;
      }
    } else {
      BM_RETURN_IF_ERROR(bm_function_find_input(g->pkg, d->f, input_names[k], &d->in[k]));
    }
    BM_RETURN_IF_ERROR(bm_function_input_info(g->pkg, d->f, d->in[k], &t));
    int want = k <= IN_POS ? 2 : 1;
    if (t.dtype != BM_DTYPE_I32 || t.ndim != want)
      return bm_status_make(BM_ERR_INCOMPATIBLE, "function '%s': input '%s' is %s with %d dims, expected i32 with %d",
                            name, t.name, bm_dtype_name(t.dtype), t.ndim, want);
    if (k == IN_IDS) {
      *batch = t.shape[0];
      *seq = t.shape[1];
    }
  }
  d->out = -1;
  for (int i = 0; i < bm_function_output_count(g->pkg, d->f); i++) {
    bm_tensor_info t;
    BM_RETURN_IF_ERROR(bm_function_output_info(g->pkg, d->f, i, &t));
    if (!strcmp(t.name, "logits")) {
      if (t.dtype != BM_DTYPE_F32 || t.ndim != 3)
        return bm_status_make(BM_ERR_INCOMPATIBLE, "function '%s': logits are %s with %d dims, expected f32 (batch, seq, vocab)",
                              name, bm_dtype_name(t.dtype), t.ndim);
      d->out = i;
      *vocab = t.shape[2];
    }
  }
  if (d->out < 0) return bm_status_make(BM_ERR_INCOMPATIBLE, "function '%s' has no output 'logits'", name);
  return NULL;
}

static void add_eos(bm_gen_info *in, int32_t id) {
  if (id < 0 || id >= in->vocab || in->n_eos >= BM_GEN_MAX_EOS) return;
  for (int i = 0; i < in->n_eos; i++)
    if (in->eos[i] == id) return;
  in->eos[in->n_eos++] = id;
}

/* The tokenizer described by extra.tokenizer, from the package's blobs. */
static bm_status load_tokenizer(bm_gen *g) {
  const cJSON *t = jget(g->extra, "tokenizer");
  if (!t || cJSON_IsNull(t)) return NULL;
  const cJSON *file = jget(t, "file"), *file2 = jget(t, "file2"), *config = jget(t, "config");
  if (!cJSON_IsString(file))
    return bm_status_make(BM_ERR_CORRUPT, "manifest extra.tokenizer.file: expected a blob name");
  const void *d1 = NULL, *d2 = NULL, *dc = NULL;
  size_t n1 = 0, n2 = 0, nc = 0;
  BM_RETURN_IF_ERROR(bm_package_blob(g->pkg, file->valuestring, &d1, &n1));
  if (cJSON_IsString(file2)) BM_RETURN_IF_ERROR(bm_package_blob(g->pkg, file2->valuestring, &d2, &n2));
  if (cJSON_IsString(config)) BM_RETURN_IF_ERROR(bm_package_blob(g->pkg, config->valuestring, &dc, &nc));
  bm_status s = bm_tokenizer_load_memory(d2 ? BM_TOK_FORMAT_CLIP_VOCAB_MERGES : BM_TOK_FORMAT_AUTO, d1, n1, d2, n2,
                                         file->valuestring, &g->tok);
  if (!s && dc) s = bm_tokenizer_apply_config(g->tok, dc, nc, config->valuestring);
  if (s) return bm_status_wrap(s, "the package's tokenizer");
  return NULL;
}

static bm_status gen_open(bm_gen *g, const bm_gen_options *o) {
  const char *man = bm_package_manifest_json(g->pkg);
  cJSON *root = cJSON_Parse(man ? man : "");
  if (!root) return bm_status_make(BM_ERR_CORRUPT, "manifest does not parse");
  const cJSON *ex = jget(root, "extra");
  g->extra = ex ? cJSON_DetachItemViaPointer(root, (cJSON *)ex) : NULL;
  cJSON_Delete(root);
  const cJSON *kind = jget(g->extra, "kind");
  if (!cJSON_IsString(kind) || strcmp(kind->valuestring, "causal_lm") != 0)
    return bm_status_make(BM_ERR_INCOMPATIBLE,
                          "package '%s' is not a causal language model (manifest extra.kind is %s%s%s, expected "
                          "\"causal_lm\"; compile a Hugging Face LLM folder with bmc)",
                          bm_package_model_name(g->pkg), cJSON_IsString(kind) ? "\"" : "",
                          cJSON_IsString(kind) ? kind->valuestring : "missing", cJSON_IsString(kind) ? "\"" : "");
  bm_gen_info *in = &g->info;
  const cJSON *arch = jget(g->extra, "arch");
  in->arch = cJSON_IsString(arch) ? arch->valuestring : "?";

  int64_t pb = 0, ps = 0, pv = 0, db = 0, ds = 0, dv = 0, ctx = 0, ev = 0;
  BM_RETURN_IF_ERROR(find_fn(g, "prefill", true, &g->prefill, &pb, &ps, &pv));
  BM_RETURN_IF_ERROR(find_fn(g, "decode", false, &g->decode, &db, &ds, &dv));
  BM_RETURN_IF_ERROR(extra_int(g->extra, "max_ctx", 1, 1 << 24, &ctx));
  BM_RETURN_IF_ERROR(extra_int(g->extra, "vocab_size", 1, 1 << 30, &ev));
  if (pv != dv || pv != ev)
    return bm_status_make(BM_ERR_INCOMPATIBLE, "vocabulary sizes differ: prefill logits %lld, decode %lld, extra %lld",
                          (long long)pv, (long long)dv, (long long)ev);
  if (ds != 1) return bm_status_make(BM_ERR_INCOMPATIBLE, "function 'decode' takes %lld positions, expected 1", (long long)ds);
  if (pb < 1 || db < 1 || ps < 1)
    return bm_status_make(BM_ERR_INCOMPATIBLE, "prefill batch %lld / seq %lld, decode batch %lld", (long long)pb,
                          (long long)ps, (long long)db);
  int64_t mb = pb < db ? pb : db;
  if (mb > BM_GEN_MAX_ROWS) mb = BM_GEN_MAX_ROWS;
  in->vocab = (int32_t)pv;
  in->max_batch = (int)mb;
  in->max_seq = (int)(ps < ctx ? ps : ctx);
  in->max_ctx = (int)ctx;
  in->bos = -1;
  const cJSON *v, *bos = jget(g->extra, "bos_token_id"), *eos = jget(g->extra, "eos_token_id");
  if (cJSON_IsNumber(bos)) in->bos = (int32_t)bos->valuedouble;
  else if (cJSON_IsArray(bos) && cJSON_IsNumber(cJSON_GetArrayItem(bos, 0)))
    in->bos = (int32_t)cJSON_GetArrayItem(bos, 0)->valuedouble;
  if (in->bos < 0 || in->bos >= in->vocab) in->bos = -1;
  if (cJSON_IsNumber(eos)) add_eos(in, (int32_t)eos->valuedouble);
  if (cJSON_IsArray(eos))
    cJSON_ArrayForEach(v, eos) if (cJSON_IsNumber(v)) add_eos(in, (int32_t)v->valuedouble);

  if (!(o && o->no_tokenizer)) BM_RETURN_IF_ERROR(load_tokenizer(g));
  if (g->tok) {
    in->has_tokenizer = true;
    if (bm_tokenizer_vocab_size(g->tok) > in->vocab)
      return bm_status_make(BM_ERR_INCOMPATIBLE, "the tokenizer has %d tokens but the model only %d",
                            bm_tokenizer_vocab_size(g->tok), in->vocab);
    if (in->bos < 0) in->bos = bm_tokenizer_bos(g->tok);
    add_eos(in, bm_tokenizer_eos(g->tok));
    in->chat = bm_tokenizer_chat_kind(g->tok);
  }
  const cJSON *chat = jget(g->extra, "chat_template");
  if (cJSON_IsString(chat) && bm_chat_kind_from_name(chat->valuestring) != BM_CHAT_NONE)
    in->chat = bm_chat_kind_from_name(chat->valuestring);

  bm_session_options so = {.threads = o ? o->threads : 0};
  BM_RETURN_IF_ERROR(bm_session_create(g->pkg, &so, &g->ses));
  size_t cells = (size_t)in->max_batch * (size_t)in->max_seq;
  g->ids = malloc(sizeof(int32_t) * cells);
  g->pos = malloc(sizeof(int32_t) * cells);
  g->start = malloc(sizeof(int32_t) * (size_t)in->max_batch);
  g->kv_len = malloc(sizeof(int32_t) * (size_t)in->max_batch);
  g->last_pos = malloc(sizeof(int32_t) * (size_t)in->max_batch);
  g->last = malloc(sizeof(float) * (size_t)in->max_batch * (size_t)in->vocab);
  if (!g->ids || !g->pos || !g->start || !g->kv_len || !g->last_pos || !g->last)
    return bm_status_make(BM_ERR_OUT_OF_MEMORY, "generation buffers (%d rows of %d tokens)", in->max_batch, in->max_seq);
  for (int r = 0; r < in->max_batch; r++) {
    g->rows[r].seq = malloc(sizeof(int32_t) * ((size_t)in->max_ctx + 1));
    if (!g->rows[r].seq) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "row %d: %d tokens", r, in->max_ctx);
    BM_RETURN_IF_ERROR(bm_token_sampler_create(in->vocab, NULL, &g->rows[r].sampler));
  }
  return NULL;
}

bm_status bm_gen_open(bm_package *pkg, const bm_gen_options *o, bm_gen **out) {
  if (!out) return BAD("bm_gen_open: out is NULL");
  *out = NULL;
  if (!pkg) return BAD("bm_gen_open: package is NULL");
  bm_gen *g = calloc(1, sizeof *g);
  if (!g) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "generator");
  g->pkg = pkg;
  bm_status s = gen_open(g, o);
  if (s) {
    bm_gen_close(g);
    return s;
  }
  *out = g;
  return NULL;
}

void bm_gen_close(bm_gen *g) {
  if (!g) return;
  for (int r = 0; r < BM_GEN_MAX_ROWS; r++) {
    free(g->rows[r].seq);
    bm_token_sampler_destroy(g->rows[r].sampler);
  }
  free(g->ids);
  free(g->pos);
  free(g->start);
  free(g->kv_len);
  free(g->last_pos);
  free(g->last);
  bm_session_destroy(g->ses);
  bm_tokenizer_free(g->tok);
  cJSON_Delete(g->extra);
  free(g);
}

const bm_gen_info *bm_gen_get_info(const bm_gen *g) { return g ? &g->info : NULL; }
const bm_tokenizer *bm_gen_tokenizer(const bm_gen *g) { return g ? g->tok : NULL; }
bm_session *bm_gen_session(bm_gen *g) { return g ? g->ses : NULL; }

void bm_gen_reset(bm_gen *g) {
  if (!g) return;
  for (int r = 0; r < g->info.max_batch; r++) g->rows[r].n = g->rows[r].n_cached = 0;
}

bm_status bm_gen_row_tokens(const bm_gen *g, int r, const int32_t **ids, size_t *n, size_t *n_cached) {
  if (!g || !ids || !n) return BAD("bm_gen_row_tokens: NULL argument");
  if (r < 0 || r >= g->info.max_batch) return BAD("row %d out of range [0, %d)", r, g->info.max_batch);
  *ids = g->rows[r].seq;
  *n = g->rows[r].n;
  if (n_cached) *n_cached = g->rows[r].n_cached;
  return NULL;
}

/* ------------------------------------------------------------------ generate */

/* Runs function d on B rows of S positions from g->ids/pos/start/kv_len
 * (and g->last_pos when d takes `last`); *logits borrows the output
 * (B, S, vocab), or (B, 1, vocab) with `last`. With `greedy` (decode, S = 1)
 * the logits stay where they are and greedy[r] gets row r's argmax instead
 * (on the device for a GPU session: one id per row comes back). */
static bm_status run_fn(bm_gen *g, const fn_desc *d, int B, int S, const float **logits, int32_t *greedy) {
  int64_t s2[2] = {B, S}, s1[1] = {B};
  BM_RETURN_IF_ERROR(bm_session_set_input(g->ses, d->f, d->in[IN_IDS], g->ids, BM_DTYPE_I32, 2, s2));
  BM_RETURN_IF_ERROR(bm_session_set_input(g->ses, d->f, d->in[IN_POS], g->pos, BM_DTYPE_I32, 2, s2));
  BM_RETURN_IF_ERROR(bm_session_set_input(g->ses, d->f, d->in[IN_START], g->start, BM_DTYPE_I32, 1, s1));
  BM_RETURN_IF_ERROR(bm_session_set_input(g->ses, d->f, d->in[IN_KVLEN], g->kv_len, BM_DTYPE_I32, 1, s1));
  if (d->in[IN_LAST] >= 0)
    BM_RETURN_IF_ERROR(bm_session_set_input(g->ses, d->f, d->in[IN_LAST], g->last_pos, BM_DTYPE_I32, 1, s1));
  BM_RETURN_IF_ERROR(bm_session_run(g->ses, d->f));
  if (greedy) {
    *logits = NULL;
    return bm_session_output_argmax(g->ses, d->f, d->out, greedy, B);
  }
  const void *data;
  bm_tensor_info info;
  BM_RETURN_IF_ERROR(bm_session_get_output(g->ses, d->f, d->out, &data, &info));
  int So = d->in[IN_LAST] >= 0 ? 1 : S;
  if (info.ndim != 3 || info.shape[0] != B || info.shape[1] != So || info.shape[2] != g->info.vocab)
    return bm_status_make(BM_ERR_INTERNAL, "logits have shape (%lld, %lld, %lld), expected (%d, %d, %d)",
                          (long long)info.shape[0], (long long)info.shape[1], (long long)info.shape[2], B, So,
                          g->info.vocab);
  *logits = data;
  return NULL;
}

static bool is_stop(const bm_gen *g, const bm_gen_request *rq, int32_t t) {
  for (int i = 0; i < g->info.n_eos && !rq->ignore_eos; i++)
    if (g->info.eos[i] == t) return true;
  for (int i = 0; i < rq->n_stop_ids; i++)
    if (rq->stop_ids[i] == t) return true;
  return false;
}

/* Ends row r: flushes its detokenizer to the callback. */
static void finish_row(bm_gen *g, const bm_gen_request *rq, int r, bm_gen_stop why, bm_gen_result *res) {
  row *w = &g->rows[r];
  w->active = false;
  res->stop[r] = why;
  size_t len = 0;
  bm_status s = g->tok ? bm_detok_flush(&w->detok, g->text, sizeof g->text, &len) : NULL;
  if (s) {
    bm_status_free(s);
    len = 0;
  }
  if (rq->on_token && len) rq->on_token(rq->user, r, -1, g->text, len);
}

/* Appends token t to row r, streams it and decides whether the row goes on. */
static bm_status push_token(bm_gen *g, const bm_gen_request *rq, int r, int32_t t, bm_gen_result *res) {
  row *w = &g->rows[r];
  if (t < 0 || t >= g->info.vocab)
    return bm_status_make(BM_ERR_INTERNAL, "row %d: token %d outside the vocabulary [0, %d)", r, t, g->info.vocab);
  w->seq[w->n++] = t; /* n <= max_ctx + 1: n_cached <= max_ctx before this */
  res->generated_tokens++;
  res->n_new[r]++;
  if (is_stop(g, rq, t)) {
    finish_row(g, rq, r, BM_GEN_STOP_EOS, res);
    return NULL;
  }
  size_t len = 0;
  if (g->tok) {
    bm_status s = bm_detok_push(&w->detok, t, g->text, sizeof g->text, &len);
    if (s) { /* a token longer than the buffer: skip its text rather than fail the run */
      bm_status_free(s);
      len = 0;
    }
  }
  if (rq->on_token && rq->on_token(rq->user, r, t, g->text, len)) {
    finish_row(g, rq, r, BM_GEN_STOP_CALLBACK, res);
    return NULL;
  }
  if (rq->max_new_tokens > 0 && res->n_new[r] >= rq->max_new_tokens) {
    finish_row(g, rq, r, BM_GEN_STOP_MAX_TOKENS, res);
    return NULL;
  }
  if (w->n_cached + 1 > (size_t)g->info.max_ctx) /* no room to decode the new token */
    finish_row(g, rq, r, BM_GEN_STOP_CONTEXT, res);
  return NULL;
}

/* Samples row r's next token from logits and pushes it. */
static bm_status take_token(bm_gen *g, const bm_gen_request *rq, int r, const float *logits, bm_gen_result *res) {
  row *w = &g->rows[r];
  int32_t t;
  BM_RETURN_IF_ERROR(bm_token_sampler_sample(w->sampler, logits, w->seq, w->n, &t));
  return push_token(g, rq, r, t, res);
}

static bm_status check_request(const bm_gen *g, const bm_gen_request *rq) {
  const bm_gen_info *in = &g->info;
  if (rq->n_rows < 1 || rq->n_rows > in->max_batch)
    return BAD("%d prompts in one request; the package takes 1 to %d (max_batch)", rq->n_rows, in->max_batch);
  if (!rq->prompts || !rq->prompt_lens) return BAD("request without prompts");
  if (rq->n_stop_ids < 0 || (rq->n_stop_ids && !rq->stop_ids)) return BAD("request: bad stop_ids");
  BM_RETURN_IF_ERROR(bm_sample_params_check(&rq->sample));
  for (int r = 0; r < rq->n_rows; r++) {
    size_t n = rq->prompt_lens[r];
    if (n < 1) return BAD("prompt %d is empty (it needs at least one token, e.g. BOS)", r);
    if (n > (size_t)in->max_ctx)
      return BAD("prompt %d has %zu tokens; the context holds %d (max_ctx)", r, n, in->max_ctx);
    if (!rq->prompts[r]) return BAD("prompt %d is NULL", r);
    for (size_t i = 0; i < n; i++)
      if (rq->prompts[r][i] < 0 || rq->prompts[r][i] >= in->vocab)
        return BAD("prompt %d: token %zu is id %d, outside the vocabulary [0, %d)", r, i, rq->prompts[r][i], in->vocab);
  }
  return NULL;
}

static bm_status generate(bm_gen *g, const bm_gen_request *rq, bm_gen_result *res) {
  const bm_gen_info *in = &g->info;
  int B = rq->n_rows;
  int32_t V = in->vocab;
  size_t todo[BM_GEN_MAX_ROWS]; /* prompt tokens still to prefill */

  /* Rows: keep the cached common prefix (at most all but the last prompt
   * token, whose logits we need), then copy the prompt in. */
  for (int r = 0; r < B; r++) {
    row *w = &g->rows[r];
    const int32_t *p = rq->prompts[r];
    size_t n = rq->prompt_lens[r], keep = 0;
    if (rq->reuse_cache) {
      size_t lim = w->n_cached < n - 1 ? w->n_cached : n - 1;
      while (keep < lim && w->seq[keep] == p[keep]) keep++;
    }
    memcpy(w->seq, p, sizeof(int32_t) * n);
    w->n = n;
    w->n_cached = keep;
    w->active = true;
    todo[r] = n - keep;
    res->reused_tokens += (int64_t)keep;
    res->prompt_tokens += (int64_t)(n - keep);
    bm_detok_init(&w->detok, g->tok, rq->detok_flags);
    BM_RETURN_IF_ERROR(bm_token_sampler_set_params(w->sampler, &rq->sample));
  }

  /* Prefill in chunks of S positions. Rows with fewer tokens left are
   * padded at the end: causal attention keeps the padding invisible to the
   * real tokens, and whatever it writes to the cache lies at positions the
   * row overwrites before it ever reads them (kv_len masks the rest). */
  double t0 = now_seconds();
  for (;;) {
    size_t most = 0;
    for (int r = 0; r < B; r++)
      if (todo[r] > most) most = todo[r];
    if (!most) break;
    int S = most < (size_t)in->max_seq ? (int)most : in->max_seq;
    for (int r = 0; r < B; r++) {
      row *w = &g->rows[r];
      size_t c = todo[r] < (size_t)S ? todo[r] : (size_t)S, at = w->n_cached;
      for (int i = 0; i < S; i++) {
        g->ids[r * S + i] = (size_t)i < c ? w->seq[at + (size_t)i] : w->seq[w->n - 1];
        g->pos[r * S + i] = (int32_t)(at + (size_t)i);
      }
      g->start[r] = (int32_t)at;
      g->kv_len[r] = (int32_t)(at + (size_t)S);
      g->last_pos[r] = c ? (int32_t)c - 1 : 0; /* only read once the row's prompt ends in this chunk */
    }
    const float *logits;
    bool one = g->prefill.in[IN_LAST] >= 0; /* logits of position last_pos[r] only */
    BM_RETURN_IF_ERROR(run_fn(g, &g->prefill, B, S, &logits, NULL));
    res->prefill_runs++;
    for (int r = 0; r < B; r++) {
      row *w = &g->rows[r];
      size_t c = todo[r] < (size_t)S ? todo[r] : (size_t)S;
      if (!c) continue;
      w->n_cached += c;
      todo[r] -= c;
      if (!todo[r])
        memcpy(g->last + (size_t)r * V, logits + (one ? (size_t)r : (size_t)r * S + c - 1) * V, sizeof(float) * V);
    }
  }
  for (int r = 0; r < B; r++) BM_RETURN_IF_ERROR(take_token(g, rq, r, g->last + (size_t)r * V, res));
  res->prefill_seconds = now_seconds() - t0;

  /* Decode: one position per row. A finished row is fed its last token at
   * its next free position (never read back: kv_len masks it). Plain greedy
   * sampling (no repetition penalty) is the argmax of the logits: taken by
   * the session (on the device for a GPU), so only the ids come back. */
  bool greedy = rq->sample.temperature <= 0 && (rq->sample.repeat_penalty == 1.0f || rq->sample.repeat_last_n == 0);
  int32_t ids[BM_GEN_MAX_ROWS];
  t0 = now_seconds();
  for (;;) {
    int active = 0;
    for (int r = 0; r < B; r++) active += g->rows[r].active;
    if (!active) break;
    for (int r = 0; r < B; r++) {
      row *w = &g->rows[r];
      /* an active row: n == n_cached + 1 (its new token is not cached yet) */
      g->ids[r] = w->seq[w->n - 1];
      g->pos[r] = (int32_t)w->n_cached;
      g->start[r] = (int32_t)w->n_cached;
      g->kv_len[r] = (int32_t)(w->n_cached + 1);
    }
    const float *logits;
    BM_RETURN_IF_ERROR(run_fn(g, &g->decode, B, 1, &logits, greedy ? ids : NULL));
    res->decode_runs++;
    for (int r = 0; r < B; r++) {
      row *w = &g->rows[r];
      if (!w->active) continue;
      w->n_cached++;
      res->decode_tokens++;
      if (greedy)
        BM_RETURN_IF_ERROR(push_token(g, rq, r, ids[r], res));
      else
        BM_RETURN_IF_ERROR(take_token(g, rq, r, logits + (size_t)r * V, res));
    }
  }
  res->decode_seconds = now_seconds() - t0;
  return NULL;
}

bm_status bm_gen_generate(bm_gen *g, const bm_gen_request *rq, bm_gen_result *res) {
  if (res) memset(res, 0, sizeof *res);
  if (!g || !rq || !res) return BAD("bm_gen_generate: NULL argument");
  BM_RETURN_IF_ERROR(check_request(g, rq));
  bm_status s = generate(g, rq, res);
  if (s) { /* the cache may hold a half-written chunk: forget what it holds */
    bm_gen_reset(g);
    return bm_status_wrap(s, "generating");
  }
  return NULL;
}
