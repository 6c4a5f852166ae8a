/* test_tokenizers.c - tokenizers against the golden ids in ../shared/tokenizers
 * (every record, every id field), decode and streaming decode, chat formats,
 * and malformed tokenizer files. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "../runtime/chat_template.h"
#include "../runtime/tokenizer.h"
#include "testutil.h"

/* ------------------------------------------------------------------ helpers */

static char *read_all(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long sz = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *p = malloc((size_t)sz + 1);
  if (p && fread(p, 1, (size_t)sz, f) != (size_t)sz) {
    free(p);
    p = NULL;
  }
  fclose(f);
  if (p) p[sz] = 0;
  *n = (size_t)sz;
  return p;
}

static cJSON *load_golden(const char *folder) {
  char rel[256];
  snprintf(rel, sizeof rel, "tokenizers/%s/golden.json", folder);
  size_t n;
  char *s = read_all(bm_test_shared(rel), &n);
  CHECK_MSG(s != NULL, "cannot read %s", rel);
  if (!s) return NULL;
  cJSON *j = cJSON_ParseWithLength(s, n);
  free(s);
  CHECK(cJSON_IsArray(j));
  return j;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static bm_tokenizer *load_tok(const char *rel) {
  bm_tokenizer *t = NULL;
  char path[1024];
  snprintf(path, sizeof path, "%s", bm_test_shared(rel));
  double t0 = now_s();
  CHECK_OK(bm_tokenizer_load(path, &t));
  double dt = now_s() - t0;
  fprintf(stderr, "  loaded %s in %.3f s\n", rel, dt);
  return t;
}

/* A known divergence from the reference: (folder, record index, field, reason). */
typedef struct divergence {
  const char *folder;
  int record;
  const char *field;
  const char *reason;
} divergence;

/* Records where we knowingly differ, with the reason. Keep this list short
 * and explicit: every other record must match. */
static const divergence KNOWN[] = {
    {NULL, 0, NULL, NULL},
};

static const char *known_divergence(const char *folder, int rec, const char *field) {
  for (size_t i = 0; KNOWN[i].folder; i++)
    if (!strcmp(KNOWN[i].folder, folder) && KNOWN[i].record == rec && !strcmp(KNOWN[i].field, field))
      return KNOWN[i].reason;
  return NULL;
}

static int n_compared, n_known;

/* Compares ids with the JSON array `want` (optionally a slice of it). */
static void check_ids(const char *what, const char *folder, int rec, const char *field, const char *text,
                      const int32_t *got, size_t n, const cJSON *want) {
  int wn = cJSON_GetArraySize(want);
  bool same = (int)n == wn;
  for (int i = 0; same && i < wn; i++) same = got[i] == cJSON_GetArrayItem(want, i)->valueint;
  const char *known = known_divergence(folder, rec, field);
  n_compared++;
  if (known) {
    n_known++;
    if (same) fprintf(stderr, "  note: %s #%d %s now matches (remove it from KNOWN)\n", folder, rec, field);
    return;
  }
  if (same) return;
  bm_test_failed_checks++;
  fprintf(stderr, "  MISMATCH %s %s record %d field %s text \"%.80s\"\n    got  [", what, folder, rec, field, text);
  for (size_t i = 0; i < n && i < 40; i++) fprintf(stderr, "%d,", got[i]);
  fprintf(stderr, "]\n    want [");
  for (int i = 0; i < wn && i < 40; i++) fprintf(stderr, "%d,", cJSON_GetArrayItem(want, i)->valueint);
  fprintf(stderr, "]\n");
}

static void encode_check(const char *what, const char *folder, int rec, const bm_tokenizer *t, const char *field,
                         const cJSON *r, uint32_t flags) {
  const cJSON *want = cJSON_GetObjectItemCaseSensitive(r, field);
  const char *text = cJSON_GetObjectItemCaseSensitive(r, "text")->valuestring;
  if (!want) return;
  int32_t *ids = NULL;
  size_t n = 0;
  CHECK_OK(bm_tokenizer_encode_alloc(t, text, strlen(text), flags, &ids, &n));
  check_ids(what, folder, rec, field, text, ids, n, want);
  free(ids);
}

/* Decodes `want` ids[skip .. n-skip_end) and compares with `decoded`; also
 * checks streaming decode token by token against the full decode. */
static void decode_check(const char *what, const char *folder, int rec, const bm_tokenizer *t, const cJSON *idsj,
                         int skip, int skip_end, const char *expect) {
  int n = cJSON_GetArraySize(idsj) - skip - skip_end;
  if (n < 0) n = 0;
  int32_t *ids = malloc(sizeof(int32_t) * (size_t)(n + 1));
  for (int i = 0; i < n; i++) ids[i] = cJSON_GetArrayItem(idsj, skip + i)->valueint;
  char *full = NULL;
  size_t len = 0;
  CHECK_OK(bm_tokenizer_decode_alloc(t, ids, (size_t)n, 0, &full, &len));
  if (full && expect && !known_divergence(folder, rec, "decoded")) {
    if (strcmp(full, expect)) {
      bm_test_failed_checks++;
      fprintf(stderr, "  MISMATCH %s %s record %d decoded:\n    got  \"%s\"\n    want \"%s\"\n", what, folder, rec, full, expect);
    }
  }
  /* streaming */
  bm_detok d;
  bm_detok_init(&d, t, 0);
  char *acc = malloc(len + 64), buf[512];
  size_t an = 0;
  for (int i = 0; i < n; i++) {
    size_t k;
    CHECK_OK(bm_detok_push(&d, ids[i], buf, sizeof buf, &k));
    /* only complete UTF-8 comes out: no dangling lead/continuation at the end */
    if (k && an + k <= len + 32) memcpy(acc + an, buf, k);
    an += k;
  }
  size_t k;
  CHECK_OK(bm_detok_flush(&d, buf, sizeof buf, &k));
  if (an + k <= len + 32) memcpy(acc + an, buf, k);
  an += k;
  CHECK_MSG(full && an == len && !memcmp(acc, full, len), "%s %s record %d: streaming decode differs", what, folder, rec);
  free(acc);
  free(full);
  free(ids);
}

/* ------------------------------------------------------------------ goldens */

static void run_spm_family(const char *folder, const char *file, const char *what) {
  char rel[256];
  snprintf(rel, sizeof rel, "tokenizers/%s/%s", folder, file);
  bm_tokenizer *t = load_tok(rel);
  cJSON *g = load_golden(folder);
  if (!t || !g) goto done;
  int rec = 0;
  const cJSON *r;
  cJSON_ArrayForEach(r, g) {
    encode_check(what, folder, rec, t, "ids", r, 0);
    encode_check(what, folder, rec, t, "ids_bos", r, BM_TOK_ADD_BOS);
    encode_check(what, folder, rec, t, "ids_eos", r, BM_TOK_ADD_EOS);
    const cJSON *dec = cJSON_GetObjectItemCaseSensitive(r, "decoded");
    decode_check(what, folder, rec, t, cJSON_GetObjectItemCaseSensitive(r, "ids"), 0, 0, dec ? dec->valuestring : NULL);
    /* pieces: the stored text of each id (unknown runs show their surface instead) */
    const cJSON *pieces = cJSON_GetObjectItemCaseSensitive(r, "pieces"), *ids = cJSON_GetObjectItemCaseSensitive(r, "ids");
    for (int i = 0; pieces && i < cJSON_GetArraySize(ids); i++) {
      int id = cJSON_GetArrayItem(ids, i)->valueint;
      size_t n;
      const char *p = bm_tokenizer_token_text(t, id, &n);
      const char *w = cJSON_GetArrayItem(pieces, i)->valuestring;
      if (id != bm_tokenizer_unk(t)) CHECK_MSG(p && n == strlen(w) && !memcmp(p, w, n), "%s record %d piece %d", folder, rec, i);
    }
    rec++;
  }
done:
  cJSON_Delete(g);
  bm_tokenizer_free(t);
}

static void test_llama2_spm(void) { run_spm_family("llama2_spm", "tokenizer.model", "spm"); }
static void test_mistral_v1_spm(void) { run_spm_family("mistral_v1", "tokenizer.model", "spm"); }
static void test_mistral_v3_spm(void) { run_spm_family("mistral_v3", "tokenizer.model.v3", "spm"); }
static void test_unigram_t5style(void) { run_spm_family("unigram_t5style", "test_model.model", "unigram"); }

static void test_mistral_v1_hf_json(void) {
  bm_tokenizer *t = load_tok("tokenizers/mistral_v1/tokenizer.json");
  cJSON *g = load_golden("mistral_v1");
  if (t && g) {
    CHECK(bm_tokenizer_model(t) == BM_TOK_MODEL_SPM_BPE);
    int rec = 0;
    const cJSON *r;
    cJSON_ArrayForEach(r, g) {
      encode_check("hf-json", "mistral_v1", rec, t, "hf_ids", r, BM_TOK_PARSE_SPECIAL);
      encode_check("hf-json", "mistral_v1", rec, t, "ids", r, 0); /* added tokens off = SentencePiece */
      encode_check("hf-json", "mistral_v1", rec, t, "ids_bos", r, BM_TOK_ADD_BOS);
      const cJSON *dec = cJSON_GetObjectItemCaseSensitive(r, "decoded");
      decode_check("hf-json", "mistral_v1", rec, t, cJSON_GetObjectItemCaseSensitive(r, "ids"), 0, 0, dec->valuestring);
      rec++;
    }
  }
  cJSON_Delete(g);
  bm_tokenizer_free(t);
}

static void run_llama3(const char *file, const char *what) {
  char rel[256];
  snprintf(rel, sizeof rel, "tokenizers/llama3/%s", file);
  bm_tokenizer *t = load_tok(rel);
  cJSON *g = load_golden("llama3");
  if (t && g) {
    CHECK(bm_tokenizer_vocab_size(t) == 128256);
    int rec = 0;
    const cJSON *r;
    cJSON_ArrayForEach(r, g) {
      encode_check(what, "llama3", rec, t, "ids", r, 0);
      encode_check(what, "llama3", rec, t, "ids_bos", r, BM_TOK_ADD_BOS);
      encode_check(what, "llama3", rec, t, "ids_special", r, BM_TOK_PARSE_SPECIAL);
      const cJSON *dec = cJSON_GetObjectItemCaseSensitive(r, "decoded");
      decode_check(what, "llama3", rec, t, cJSON_GetObjectItemCaseSensitive(r, "ids"), 0, 0, dec->valuestring);
      decode_check(what, "llama3", rec, t, cJSON_GetObjectItemCaseSensitive(r, "ids_special"), 0, 0, dec->valuestring);
      rec++;
    }
  }
  cJSON_Delete(g);
  bm_tokenizer_free(t);
}

static void test_llama3_hf_json(void) { run_llama3("tokenizer.json", "hf-json"); }
static void test_llama3_tiktoken(void) { run_llama3("tokenizer.model", "tiktoken"); }

static void test_qwen(void) {
  bm_tokenizer *t = load_tok("tokenizers/qwen/tokenizer.json");
  cJSON *g = load_golden("qwen");
  if (t && g) {
    int rec = 0;
    const cJSON *r;
    cJSON_ArrayForEach(r, g) {
      encode_check("hf-json", "qwen", rec, t, "ids", r, BM_TOK_PARSE_SPECIAL);
      encode_check("hf-json", "qwen", rec, t, "ids_plain", r, 0);
      const cJSON *dec = cJSON_GetObjectItemCaseSensitive(r, "decoded");
      decode_check("hf-json", "qwen", rec, t, cJSON_GetObjectItemCaseSensitive(r, "ids"), 0, 0, dec->valuestring);
      decode_check("hf-json", "qwen", rec, t, cJSON_GetObjectItemCaseSensitive(r, "ids_plain"), 0, 0, dec->valuestring);
      rec++;
    }
  }
  cJSON_Delete(g);
  bm_tokenizer_free(t);
}

static void run_clip(const char *path, const char *what) {
  bm_tokenizer *t = load_tok(path);
  cJSON *g = load_golden("clip");
  if (t && g) {
    CHECK(bm_tokenizer_vocab_size(t) == 49408);
    CHECK(bm_tokenizer_bos(t) == 49406 && bm_tokenizer_eos(t) == 49407);
    int rec = 0;
    const cJSON *r;
    cJSON_ArrayForEach(r, g) {
      const char *text = cJSON_GetObjectItemCaseSensitive(r, "text")->valuestring;
      uint32_t f = BM_TOK_ADD_BOS | BM_TOK_ADD_EOS;
      encode_check(what, "clip", rec, t, "ids", r, f);
      int32_t ids[77];
      size_t real;
      CHECK_OK(bm_tokenizer_encode_padded(t, text, strlen(text), f, ids, 77, 49407, &real));
      check_ids(what, "clip", rec, "ids_77_pad_eos", text, ids, 77, cJSON_GetObjectItemCaseSensitive(r, "ids_77_pad_eos"));
      CHECK_OK(bm_tokenizer_encode_padded(t, text, strlen(text), f, ids, 77, 0, &real));
      check_ids(what, "clip", rec, "ids_77_pad_zero", text, ids, 77, cJSON_GetObjectItemCaseSensitive(r, "ids_77_pad_zero"));
      const cJSON *dec = cJSON_GetObjectItemCaseSensitive(r, "decoded");
      decode_check(what, "clip", rec, t, cJSON_GetObjectItemCaseSensitive(r, "ids"), 1, 1, dec->valuestring);
      rec++;
    }
  }
  cJSON_Delete(g);
  bm_tokenizer_free(t);
}

static void test_clip_gz(void) { run_clip("tokenizers/clip/bpe_simple_vocab_16e6.txt.gz", "clip-gz"); }
static void test_clip_vocab_merges(void) { run_clip("tokenizers/clip", "clip-vocab"); }

/* ------------------------------------------------------------------ API details */

static void test_api_details(void) {
  bm_tokenizer *t = load_tok("tokenizers/llama3");
  if (!t) return;
  CHECK(bm_tokenizer_chat_kind(t) == BM_CHAT_LLAMA3);
  CHECK(bm_tokenizer_bos(t) == 128000);
  const char *s = "This is a test sentence.";
  int32_t ids[16];
  size_t n;
  CHECK_ERR(bm_tokenizer_encode(t, s, strlen(s), BM_TOK_ADD_BOS, ids, 3, &n), BM_ERR_INVALID_ARGUMENT, "too small");
  CHECK(n == 7);
  CHECK_OK(bm_tokenizer_encode(t, s, strlen(s), BM_TOK_ADD_BOS, ids, 16, &n));
  const int32_t want[] = {128000, 2028, 374, 264, 1296, 11914, 13};
  CHECK(n == 7 && !memcmp(ids, want, sizeof want));
  CHECK(bm_tokenizer_find(t, "<|eot_id|>", 10) == 128009);
  CHECK(bm_tokenizer_is_special(t, 128009));
  char out[64];
  size_t len;
  CHECK_ERR(bm_tokenizer_decode(t, (int32_t[]){5, 200000}, 2, 0, out, sizeof out, &len), BM_ERR_INVALID_ARGUMENT, "out of range");
  /* skip special */
  CHECK_OK(bm_tokenizer_decode(t, (int32_t[]){128000, 9906}, 2, BM_TOK_SKIP_SPECIAL, out, sizeof out, &len));
  CHECK(len == 5 && !strcmp(out, "Hello"));
  /* streaming: a 4-byte emoji split over byte tokens comes out whole */
  const char *emoji = "\xF0\x9F\xA6\x99";
  int32_t *e = NULL;
  size_t en = 0;
  CHECK_OK(bm_tokenizer_encode_alloc(t, emoji, 4, 0, &e, &en));
  CHECK(en >= 2);
  bm_detok d;
  bm_detok_init(&d, t, 0);
  size_t total = 0;
  for (size_t i = 0; i < en; i++) {
    size_t k;
    CHECK_OK(bm_detok_push(&d, e[i], out, sizeof out, &k));
    if (i + 1 < en) CHECK(k == 0);
    total += k;
  }
  CHECK(total == 4 && !memcmp(out, emoji, 4));
  /* a dangling lead byte becomes U+FFFD on flush; a too-small buffer keeps the state */
  bm_detok_init(&d, t, 0);
  size_t k;
  CHECK_OK(bm_detok_push(&d, e[0], out, sizeof out, &k));
  CHECK(k == 0);
  CHECK_ERR(bm_detok_flush(&d, out, 1, &k), BM_ERR_INVALID_ARGUMENT, "too small");
  CHECK_OK(bm_detok_flush(&d, out, sizeof out, &k));
  CHECK(k == 3 && !memcmp(out, "\xEF\xBF\xBD", 3));
  CHECK_ERR(bm_detok_push(&d, 9906, out, 2, &k), BM_ERR_INVALID_ARGUMENT, "too small");
  CHECK(k == 5);
  free(e);
  bm_tokenizer_free(t);

  /* Qwen directory: config gives eos <|im_end|>, no bos */
  t = load_tok("tokenizers/qwen");
  if (t) {
    CHECK(bm_tokenizer_eos(t) == 151645);
    CHECK(bm_tokenizer_bos(t) == -1);
    CHECK(bm_tokenizer_pad(t) == 151643);
    CHECK(bm_tokenizer_chat_kind(t) == BM_CHAT_CHATML);
    bm_tokenizer_free(t);
  }
  t = load_tok("tokenizers/mistral_v3/tokenizer.model.v3");
  if (t) {
    CHECK(bm_tokenizer_chat_kind(t) == BM_CHAT_MISTRAL);
    /* PARSE_SPECIAL recognises control pieces; without it they are text */
    const char *c = "[INST] hi [/INST]";
    CHECK_OK(bm_tokenizer_encode(t, c, strlen(c), BM_TOK_PARSE_SPECIAL, ids, 16, &n));
    CHECK(n >= 3 && ids[0] == 3 && ids[n - 1] == 4);
    bm_tokenizer_free(t);
  }
}

/* Encoding speed: a long text must take well under a second. */
static void test_speed(void) {
  bm_tokenizer *t = load_tok("tokenizers/qwen/tokenizer.json");
  if (!t) return;
  size_t n = 1 << 20;
  char *s = malloc(n + 1);
  const char *words = "The quick brown fox jumps over the lazy dog 1234 times; naïve café! ";
  size_t wl = strlen(words);
  for (size_t i = 0; i < n; i++) s[i] = words[i % wl];
  s[n] = 0;
  memset(s + 1000, 'a', 20000); /* one 20k-letter word: the merge must not be quadratic */
  int32_t *ids;
  size_t ni;
  double t0 = now_s();
  CHECK_OK(bm_tokenizer_encode_alloc(t, s, n, 0, &ids, &ni));
  double dt = now_s() - t0;
  fprintf(stderr, "  encoded 1 MiB into %zu tokens in %.3f s\n", ni, dt);
  CHECK(dt < 20.0); /* generous: sanitizer builds are slow */
  free(ids);
  free(s);
  bm_tokenizer_free(t);
}

/* ------------------------------------------------------------------ chat */

static void check_chat(bm_chat_kind k, const bm_chat_msg *m, int n, bool gen, const char *want) {
  char *s = NULL;
  CHECK_OK(bm_chat_format(k, m, n, gen, &s));
  CHECK_MSG(s && !strcmp(s, want), "%s:\n got  [%s]\n want [%s]", bm_chat_kind_name(k), s ? s : "(null)", want);
  free(s);
}

static void test_chat_templates(void) {
  const bm_chat_msg conv[3] = {{"user", "Hello"}, {"assistant", "Hi there!"}, {"user", "How are you?"}};
  const bm_chat_msg sys[3] = {{"system", "You are helpful."}, {"user", "Hello"}, {"assistant", "Hi there!"}};
  /* llama3/tokenizer_config.json */
  check_chat(BM_CHAT_LLAMA3, conv, 3, true,
             "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>"
             "<|start_header_id|>assistant<|end_header_id|>\n\nHi there!<|eot_id|>"
             "<|start_header_id|>user<|end_header_id|>\n\nHow are you?<|eot_id|>"
             "<|start_header_id|>assistant<|end_header_id|>\n\n");
  check_chat(BM_CHAT_LLAMA3, sys, 3, false,
             "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are helpful.<|eot_id|>"
             "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>"
             "<|start_header_id|>assistant<|end_header_id|>\n\nHi there!<|eot_id|>");
  /* Mistral-7B-Instruct (mistral_v1 vocab) */
  check_chat(BM_CHAT_MISTRAL, conv, 3, true, "<s>[INST] Hello [/INST]Hi there!</s>[INST] How are you? [/INST]");
  /* Llama-2-chat */
  check_chat(BM_CHAT_LLAMA2, sys, 3, true,
             "<s>[INST] <<SYS>>\nYou are helpful.\n<</SYS>>\n\nHello [/INST] Hi there! </s>");
  check_chat(BM_CHAT_LLAMA2, conv, 3, true, "<s>[INST] Hello [/INST] Hi there! </s><s>[INST] How are you? [/INST]");
  /* qwen/tokenizer_config.json (Qwen3) */
  check_chat(BM_CHAT_CHATML, conv, 3, true,
             "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there!<|im_end|>\n"
             "<|im_start|>user\nHow are you?<|im_end|>\n<|im_start|>assistant\n");
  check_chat(BM_CHAT_CHATML, sys, 3, false,
             "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n"
             "<|im_start|>assistant\n<think>\n\n</think>\n\nHi there!<|im_end|>\n");
  /* Gemma (google/gemma-7b-it) */
  check_chat(BM_CHAT_GEMMA, conv, 3, true,
             "<bos><start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\nHi there!<end_of_turn>\n"
             "<start_of_turn>user\nHow are you?<end_of_turn>\n<start_of_turn>model\n");
  /* Phi-3 (microsoft/Phi-3-mini-4k-instruct) */
  check_chat(BM_CHAT_PHI3, conv, 3, true,
             "<|user|>\nHello<|end|>\n<|assistant|>\nHi there!<|end|>\n<|user|>\nHow are you?<|end|>\n<|assistant|>\n");
  /* errors */
  char *s = NULL;
  const bm_chat_msg bad[2] = {{"user", "a"}, {"user", "b"}};
  CHECK_ERR(bm_chat_format(BM_CHAT_MISTRAL, bad, 2, true, &s), BM_ERR_INVALID_ARGUMENT, "alternate");
  const bm_chat_msg badrole[1] = {{"robot", "a"}};
  CHECK_ERR(bm_chat_format(BM_CHAT_CHATML, badrole, 1, true, &s), BM_ERR_INVALID_ARGUMENT, "robot");
  /* detection from the shipped templates */
  size_t n;
  char *cfg = read_all(bm_test_shared("tokenizers/qwen/tokenizer_config.json"), &n);
  cJSON *j = cJSON_ParseWithLength(cfg, n);
  CHECK(bm_chat_detect(cJSON_GetObjectItem(j, "chat_template")->valuestring) == BM_CHAT_CHATML);
  cJSON_Delete(j);
  free(cfg);
  CHECK(bm_chat_detect("{{ '<start_of_turn>' }}") == BM_CHAT_GEMMA);
  CHECK(bm_chat_kind_from_name("qwen") == BM_CHAT_CHATML);
  /* the rendered Llama 3 prompt tokenizes with the header tokens */
  bm_tokenizer *t = load_tok("tokenizers/llama3/tokenizer.model");
  if (t) {
    CHECK_OK(bm_chat_format(BM_CHAT_LLAMA3, conv, 1, true, &s));
    int32_t *ids;
    size_t ni;
    CHECK_OK(bm_tokenizer_encode_alloc(t, s, strlen(s), BM_TOK_PARSE_SPECIAL, &ids, &ni));
    const int32_t want[] = {128000, 128006, 882, 128007, 271, 9906, 128009, 128006, 78191, 128007, 271};
    CHECK(ni == 11 && !memcmp(ids, want, sizeof want));
    free(ids);
    free(s);
    bm_tokenizer_free(t);
  }
}

/* ------------------------------------------------------------------ malformed input */

static void load_mem_err(bm_tok_format f, const void *p, size_t n, const char *substr) {
  bm_tokenizer *t = NULL;
  CHECK_ERR(bm_tokenizer_load_memory(f, p, n, NULL, 0, "bad-file", &t), BM_ERR_CORRUPT, substr);
  CHECK(t == NULL);
}

static void test_malformed(void) {
  /* empty files, every format */
  for (int f = 0; f <= BM_TOK_FORMAT_CLIP_VOCAB_MERGES; f++) load_mem_err((bm_tok_format)f, "", 0, "bad-file");
  /* bad JSON */
  load_mem_err(BM_TOK_FORMAT_AUTO, "{\"model\": {", 11, "bad-file");
  const char *j1 = "{\"pre_tokenizer\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"a b\"]}}";
  const char *j2 = "{\"pre_tokenizer\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":-3},\"merges\":[]}}";
  const char *j3 = "{\"pre_tokenizer\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},"
                   "\"added_tokens\":[{\"id\":5}]}";
  load_mem_err(BM_TOK_FORMAT_HF_JSON, j1, strlen(j1), "merge 0");
  load_mem_err(BM_TOK_FORMAT_HF_JSON, j2, strlen(j2), "bad id");
  load_mem_err(BM_TOK_FORMAT_HF_JSON, j3, strlen(j3), "added token");
  /* bad base64 / ranks */
  load_mem_err(BM_TOK_FORMAT_TIKTOKEN, "@@@@ 0\n", 7, "base64");
  load_mem_err(BM_TOK_FORMAT_TIKTOKEN, "QQ=A 0\n", 7, "base64");
  load_mem_err(BM_TOK_FORMAT_TIKTOKEN, "QQ== 0\nQQ== x\n", 14, "rank");
  load_mem_err(BM_TOK_FORMAT_TIKTOKEN, "QQ== 0\nQg== 0\n", 14, "twice");
  /* truncated SentencePiece models */
  size_t n;
  char *m = read_all(bm_test_shared("tokenizers/llama2_spm/tokenizer.model"), &n);
  CHECK(m != NULL);
  if (m) {
    const size_t cuts[] = {1, 2, 7, 100, 1000, n / 2, n - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) load_mem_err(BM_TOK_FORMAT_SENTENCEPIECE, m, cuts[i], "bad-file");
    /* random corruption: never a crash; errors must be CORRUPT/UNSUPPORTED */
    uint64_t rng = 42;
    char *c = malloc(n);
    for (int it = 0; it < 40; it++) {
      memcpy(c, m, n);
      for (int k = 0; k < 8; k++) c[bm_test_rand_u64(&rng) % n] = (char)bm_test_rand_u64(&rng);
      bm_tokenizer *t = NULL;
      bm_status st = bm_tokenizer_load_memory(BM_TOK_FORMAT_SENTENCEPIECE, c, n, NULL, 0, "fuzz", &t);
      CHECK(st ? (bm_status_code(st) == BM_ERR_CORRUPT || bm_status_code(st) == BM_ERR_UNSUPPORTED) : t != NULL);
      if (t) {
        int32_t *ids;
        size_t ni;
        bm_status_free(bm_tokenizer_encode_alloc(t, "Hello world <s>", 15, BM_TOK_PARSE_SPECIAL, &ids, &ni));
        if (!st) free(ids);
      }
      bm_status_free(st);
      bm_tokenizer_free(t);
    }
    free(c);
    free(m);
  }
  /* Unigram with a corrupted charsmap region must not crash either */
  m = read_all(bm_test_shared("tokenizers/unigram_t5style/test_model.model"), &n);
  if (m) {
    uint64_t rng = 7;
    for (int it = 0; it < 20; it++) {
      char *c = malloc(n);
      memcpy(c, m, n);
      for (int k = 0; k < 64; k++) c[n - 1 - bm_test_rand_u64(&rng) % (n / 2)] = (char)bm_test_rand_u64(&rng);
      bm_tokenizer *t = NULL;
      bm_status st = bm_tokenizer_load_memory(BM_TOK_FORMAT_SENTENCEPIECE, c, n, NULL, 0, "fuzz", &t);
      if (t) {
        int32_t *ids = NULL;
        size_t ni;
        bm_status_free(bm_tokenizer_encode_alloc(t, "Ｈｅｌｌｏ wörld ½", 22, 0, &ids, &ni));
        free(ids);
      }
      bm_status_free(st);
      bm_tokenizer_free(t);
      free(c);
    }
    free(m);
  }
  /* truncated gzip */
  m = read_all(bm_test_shared("tokenizers/clip/bpe_simple_vocab_16e6.txt.gz"), &n);
  if (m) {
    load_mem_err(BM_TOK_FORMAT_AUTO, m, n / 3, "gzip");
    load_mem_err(BM_TOK_FORMAT_AUTO, m, 10, "gzip");
    free(m);
  }
  /* CLIP vocab without merges; merges naming unknown symbols */
  bm_tokenizer *t = NULL;
  CHECK_ERR(bm_tokenizer_load_memory(BM_TOK_FORMAT_CLIP_VOCAB_MERGES, "{\"a\":0}", 7, NULL, 0, "v", &t), BM_ERR_CORRUPT, "merges");
  CHECK_ERR(bm_tokenizer_load_memory(BM_TOK_FORMAT_CLIP_VOCAB_MERGES, "{\"a\":0}", 7, "#version\nx y\n", 13, "v", &t),
            BM_ERR_CORRUPT, "line 2");
  /* a missing file */
  CHECK_ERR(bm_tokenizer_load("/nonexistent/tokenizer.json", &t), BM_ERR_IO, "nonexistent");
}

int main(void) {
  RUN(test_llama2_spm);
  RUN(test_mistral_v1_spm);
  RUN(test_mistral_v1_hf_json);
  RUN(test_mistral_v3_spm);
  RUN(test_unigram_t5style);
  RUN(test_llama3_hf_json);
  RUN(test_llama3_tiktoken);
  RUN(test_qwen);
  RUN(test_clip_gz);
  RUN(test_clip_vocab_merges);
  RUN(test_api_details);
  RUN(test_speed);
  RUN(test_chat_templates);
  RUN(test_malformed);
  fprintf(stderr, "compared %d id sequences (%d known divergences)\n", n_compared, n_known);
  return bm_test_finish();
}
