/* tokenizer.c - the common half of the tokenizers: vocabulary tables and hash
 * maps, added/special token matching, the BPE merge engine, format detection
 * and loading, encode/decode entry points and the streaming detokenizer. */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>
#include <xxhash.h>

#include "chat_template.h"
#include "tok_internal.h"
#include "unicode.h"

/* ------------------------------------------------------------------ small buffers */

bool bm_tok_ids_push(bm_tok_ids *ids, int32_t id) {
  if (ids->n == ids->cap) {
    size_t cap = ids->cap ? ids->cap * 2 : 64;
    int32_t *v = realloc(ids->v, cap * sizeof *v);
    if (!v) return false;
    ids->v = v;
    ids->cap = cap;
  }
  ids->v[ids->n++] = id;
  return true;
}

bool bm_tok_buf_append(bm_tok_buf *b, const void *p, size_t n) {
  if (n > SIZE_MAX / 2 - b->n) return false;
  if (b->n + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + n + 1) cap *= 2;
    char *v = realloc(b->v, cap);
    if (!v) return false;
    b->v = v;
    b->cap = cap;
  }
  if (n) memcpy(b->v + b->n, p, n);
  b->n += n;
  b->v[b->n] = 0;
  return true;
}

/* ------------------------------------------------------------------ vocabulary */

bm_status bm_tok_alloc_vocab(bm_tokenizer *t, int32_t n_vocab) {
  if (n_vocab <= 0 || n_vocab > (1 << 24))
    return bm_status_make(BM_ERR_CORRUPT, "%s: vocabulary size %d out of range (1..16777216)", t->name, n_vocab);
  t->n_vocab = n_vocab;
  t->off = calloc((size_t)n_vocab + 1, sizeof *t->off);
  t->score = calloc((size_t)n_vocab, sizeof *t->score);
  t->type = malloc((size_t)n_vocab);
  if (!t->off || !t->score || !t->type)
    return bm_status_make(BM_ERR_OUT_OF_MEMORY, "%s: vocabulary of %d tokens", t->name, n_vocab);
  memset(t->type, BM_TT_NORMAL, (size_t)n_vocab);
  return NULL;
}

bm_status bm_tok_check_dense(const bm_tokenizer *t, int64_t n_ids, int64_t n_tokens, const char *what) {
  if (n_ids <= 2 * n_tokens + 1024) return NULL;
  return bm_status_make(BM_ERR_CORRUPT, "%s: %s: ids go up to %" PRId64 " for %" PRId64
                        " tokens (a vocabulary must be mostly contiguous)", t->name, what, n_ids - 1, n_tokens);
}

void bm_tok_set_texts(bm_tokenizer *t, char *text, uint32_t *off) {
  free(t->text);
  free(t->off);
  t->text = text;
  t->off = off;
}

static uint32_t hash_bytes(const char *s, size_t n) { return (uint32_t)XXH3_64bits(s, n); }

bm_status bm_tok_build_vocab_map(bm_tokenizer *t) {
  uint32_t cap = 16;
  while (cap < (uint32_t)t->n_vocab * 2u) cap *= 2;
  free(t->vocab.slot);
  t->vocab.slot = malloc(cap * sizeof(int32_t));
  if (!t->vocab.slot) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "%s: vocabulary hash", t->name);
  memset(t->vocab.slot, 0xFF, cap * sizeof(int32_t));
  t->vocab.mask = cap - 1;
  for (int32_t id = 0; id < t->n_vocab; id++) {
    size_t n = bm_tok_len(t, id);
    if (!n) continue;
    const char *s = bm_tok_str(t, id);
    uint32_t h = hash_bytes(s, n) & t->vocab.mask;
    for (;;) {
      int32_t o = t->vocab.slot[h];
      if (o < 0) {
        t->vocab.slot[h] = id;
        break;
      }
      if (bm_tok_len(t, o) == n && !memcmp(bm_tok_str(t, o), s, n)) break; /* first id wins */
      h = (h + 1) & t->vocab.mask;
    }
  }
  return NULL;
}

int32_t bm_tok_map_find(const bm_tokenizer *t, const char *s, size_t n) {
  if (!t->vocab.slot || !n) return -1;
  uint32_t h = hash_bytes(s, n) & t->vocab.mask;
  for (;;) {
    int32_t o = t->vocab.slot[h];
    if (o < 0) return -1;
    if (bm_tok_len(t, o) == n && !memcmp(bm_tok_str(t, o), s, n)) return o;
    h = (h + 1) & t->vocab.mask;
  }
}

static uint32_t hash_pair(uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdull;
  k ^= k >> 33;
  return (uint32_t)k;
}

bm_status bm_tok_pairmap_init(bm_tok_pairmap *m, size_t n) {
  uint32_t cap = 16;
  while (cap < n * 2 && cap < (1u << 30)) cap *= 2;
  m->key = calloc(cap, sizeof *m->key);
  m->rank = malloc(cap * sizeof *m->rank);
  m->id = malloc(cap * sizeof *m->id);
  m->mask = cap - 1;
  if (!m->key || !m->rank || !m->id) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "merge table of %zu pairs", n);
  return NULL;
}

void bm_tok_pairmap_put(bm_tok_pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t id) {
  uint64_t k = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
  uint32_t h = hash_pair(k) & m->mask;
  while (m->key[h] && m->key[h] != k) h = (h + 1) & m->mask;
  if (m->key[h]) return;
  m->key[h] = k;
  m->rank[h] = rank;
  m->id[h] = id;
}

bool bm_tok_pairmap_get(const bm_tok_pairmap *m, int32_t a, int32_t b, int32_t *rank, int32_t *id) {
  if (!m->key) return false;
  uint64_t k = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
  uint32_t h = hash_pair(k) & m->mask;
  while (m->key[h]) {
    if (m->key[h] == k) {
      *rank = m->rank[h];
      *id = m->id[h];
      return true;
    }
    h = (h + 1) & m->mask;
  }
  return false;
}

/* ------------------------------------------------------------------ added / user tokens */

/* Sort key of a match candidate: first byte ascending, then longest first. */
typedef struct match_key {
  uint8_t first;
  uint32_t len;
  int32_t id;
} match_key;

static int cmp_match(const void *pa, const void *pb) {
  const match_key *a = pa, *b = pb;
  if (a->first != b->first) return a->first < b->first ? -1 : 1;
  if (a->len != b->len) return a->len > b->len ? -1 : 1;
  return a->id < b->id ? -1 : a->id > b->id;
}

static bool is_match_type(const bm_tokenizer *t, int32_t id, bool user) {
  uint8_t ty = t->type[id];
  if (user) return ty == BM_TT_USER;
  return ty == BM_TT_CONTROL || ty == BM_TT_ADDED || ty == BM_TT_UNKNOWN;
}

bm_status bm_tok_build_match(bm_tokenizer *t, bool user) {
  int32_t n = 0;
  for (int32_t id = 0; id < t->n_vocab; id++)
    if (bm_tok_len(t, id) && is_match_type(t, id, user)) n++;
  int32_t *v = malloc(((size_t)n + 1) * sizeof *v);
  match_key *keys = malloc(((size_t)n + 1) * sizeof *keys);
  if (!v || !keys) {
    free(v);
    free(keys);
    return bm_status_make(BM_ERR_OUT_OF_MEMORY, "%s: special token table", t->name);
  }
  n = 0;
  for (int32_t id = 0; id < t->n_vocab; id++)
    if (bm_tok_len(t, id) && is_match_type(t, id, user))
      keys[n++] = (match_key){(uint8_t)bm_tok_str(t, id)[0], (uint32_t)bm_tok_len(t, id), id};
  qsort(keys, (size_t)n, sizeof *keys, cmp_match);
  for (int32_t i = 0; i < n; i++) v[i] = keys[i].id;
  free(keys);
  int32_t *start = user ? t->user_start : t->added_start;
  for (int b = 0, i = 0; b <= 256; b++) {
    start[b] = i;
    while (b < 256 && i < n && (uint8_t)bm_tok_str(t, v[i])[0] == b) i++;
  }
  if (user) {
    free(t->user);
    t->user = v;
    t->n_user = n;
  } else {
    free(t->added);
    t->added = v;
    t->n_added = n;
  }
  return NULL;
}

int32_t bm_tok_match_at(const bm_tokenizer *t, bool user, const char *s, size_t n, size_t *mlen) {
  const int32_t *v = user ? t->user : t->added;
  const int32_t *start = user ? t->user_start : t->added_start;
  if (!v || !n) return -1;
  uint8_t b = (uint8_t)s[0];
  for (int32_t i = start[b]; i < start[b + 1]; i++) {
    size_t len = bm_tok_len(t, v[i]);
    if (len <= n && !memcmp(bm_tok_str(t, v[i]), s, len)) {
      *mlen = len;
      return v[i];
    }
  }
  return -1;
}

/* ------------------------------------------------------------------ BPE engine */

/* A candidate merge of symbols left+right; valid while both are unchanged. */
typedef struct bpe_cand {
  double key; /* lower merges first */
  uint32_t pos; /* start of the left symbol: ties go to the leftmost pair */
  int32_t left, right, id;
  uint32_t len;
} bpe_cand;

typedef struct bpe_heap {
  bpe_cand *v;
  size_t n, cap;
} bpe_heap;

static bool cand_less(const bpe_cand *a, const bpe_cand *b) {
  if (a->key != b->key) return a->key < b->key;
  return a->pos < b->pos;
}

static bool heap_push(bpe_heap *h, bpe_cand c) {
  if (h->n == h->cap) {
    size_t cap = h->cap ? h->cap * 2 : 64;
    bpe_cand *v = realloc(h->v, cap * sizeof *v);
    if (!v) return false;
    h->v = v;
    h->cap = cap;
  }
  size_t i = h->n++;
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (!cand_less(&c, &h->v[p])) break;
    h->v[i] = h->v[p];
    i = p;
  }
  h->v[i] = c;
  return true;
}

static bpe_cand heap_pop(bpe_heap *h) {
  bpe_cand top = h->v[0], last = h->v[--h->n];
  size_t i = 0;
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, m = i;
    const bpe_cand *mc = &last;
    if (l < h->n && cand_less(&h->v[l], mc)) m = l, mc = &h->v[l];
    if (r < h->n && cand_less(&h->v[r], mc)) m = r, mc = &h->v[r];
    if (m == i) break;
    h->v[i] = h->v[m];
    i = m;
  }
  if (h->n) h->v[i] = last;
  return top;
}

static bool spm_mergeable(uint8_t ty) { return ty == BM_TT_NORMAL || ty == BM_TT_USER || ty == BM_TT_UNUSED; }

/* Finds the merge of syms[l] and syms[r], if any. */
static bool bpe_candidate(const bm_tokenizer *t, const char *word, const bm_tok_sym *syms, int32_t l, int32_t r,
                          bpe_cand *c) {
  if (l < 0 || r < 0 || syms[l].frozen || syms[r].frozen) return false;
  c->left = l;
  c->right = r;
  c->pos = syms[l].start;
  c->len = syms[l].len + syms[r].len;
  if (t->use_merges) {
    int32_t rank, id;
    if (syms[l].id < 0 || syms[r].id < 0 || !bm_tok_pairmap_get(&t->merges, syms[l].id, syms[r].id, &rank, &id))
      return false;
    c->key = rank;
    c->id = id;
    return true;
  }
  int32_t id = bm_tok_map_find(t, word + syms[l].start, c->len);
  if (id < 0) return false;
  if (t->rank_is_id) {
    c->key = id;
  } else {
    if (!spm_mergeable(t->type[id])) return false;
    c->key = -(double)t->score[id];
  }
  c->id = id;
  return true;
}

bool bm_tok_bpe(const bm_tokenizer *t, const char *word, bm_tok_sym *syms, int32_t n) {
  if (n < 2) return true;
  bpe_heap h = {0};
  bpe_cand c;
  for (int32_t i = 0; i + 1 < n; i++)
    if (bpe_candidate(t, word, syms, i, i + 1, &c) && !heap_push(&h, c)) goto oom;
  while (h.n) {
    c = heap_pop(&h);
    bm_tok_sym *L = &syms[c.left], *R = &syms[c.right];
    if (!L->len || !R->len || L->next != c.right || L->len + R->len != c.len) continue;
    L->id = c.id;
    L->len += R->len;
    R->len = 0;
    L->next = R->next;
    if (R->next >= 0) syms[R->next].prev = c.left;
    int32_t li = c.left;
    bpe_cand c2;
    if (bpe_candidate(t, word, syms, L->prev, li, &c2) && !heap_push(&h, c2)) goto oom;
    if (bpe_candidate(t, word, syms, li, L->next, &c2) && !heap_push(&h, c2)) goto oom;
  }
  free(h.v);
  return true;
oom:
  free(h.v);
  return false;
}

/* ------------------------------------------------------------------ GPT-2 byte map */

static bool byte_is_printable(int b) { return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255); }

/* The 68 bytes that are not printable (0..32, 127..160, 173) map to the code
 * points 256..323 in byte order; computed, not searched (both directions run
 * for every character of every vocabulary entry while loading). */
uint32_t bm_tok_byte_to_cp(uint8_t b) {
  if (byte_is_printable(b)) return b;
  if (b <= 32) return 256u + b;
  if (b <= 160) return 256u + 33 + (uint32_t)(b - 127);
  return 256u + 67; /* 173 */
}

int bm_tok_cp_to_byte(uint32_t cp) {
  if (cp < 256) return byte_is_printable((int)cp) ? (int)cp : -1;
  if (cp >= 256 + 68) return -1;
  uint32_t n = cp - 256;
  if (n < 33) return (int)n;
  if (n < 67) return 127 + (int)(n - 33);
  return 173;
}

bool bm_tok_unmap_bytes(const char *s, size_t n, bm_tok_buf *out) {
  size_t i = 0;
  while (i < n) {
    uint32_t cp;
    size_t l = bm_utf8_decode((const uint8_t *)s + i, n - i, &cp);
    int b = bm_tok_cp_to_byte(cp);
    if (b < 0) return false;
    char c = (char)b;
    if (!bm_tok_buf_append(out, &c, 1)) return false;
    i += l;
  }
  return true;
}

/* ------------------------------------------------------------------ token table builder */

/* Collects (id -> text) while loading, then packs them in id order. */
bool bm_tok_table_init(bm_tok_table *tt, int32_t n) {
  memset(tt, 0, sizeof *tt);
  tt->n = n;
  tt->pos = calloc((size_t)n, sizeof *tt->pos);
  tt->len = calloc((size_t)n, sizeof *tt->len);
  tt->set = calloc((size_t)n, 1);
  return tt->pos && tt->len && tt->set;
}

void bm_tok_table_free(bm_tok_table *tt) {
  free(tt->buf.v);
  free(tt->pos);
  free(tt->len);
  free(tt->set);
}

bool bm_tok_table_set(bm_tok_table *tt, int32_t id, const void *p, size_t n) {
  if (tt->buf.n + n > UINT32_MAX / 2) return false;
  tt->pos[id] = (uint32_t)tt->buf.n;
  tt->len[id] = (uint32_t)n;
  tt->set[id] = 1;
  return bm_tok_buf_append(&tt->buf, p, n);
}

bm_status bm_tok_table_pack(bm_tokenizer *t, bm_tok_table *tt) {
  char *text = malloc(tt->buf.n + 1);
  uint32_t *off = malloc(((size_t)tt->n + 1) * sizeof *off);
  if (!text || !off) {
    free(text);
    free(off);
    return bm_status_make(BM_ERR_OUT_OF_MEMORY, "%s: token texts", t->name);
  }
  uint32_t o = 0;
  for (int32_t i = 0; i < tt->n; i++) {
    off[i] = o;
    if (tt->len[i]) memcpy(text + o, tt->buf.v + tt->pos[i], tt->len[i]);
    o += tt->len[i];
  }
  off[tt->n] = o;
  bm_tok_set_texts(t, text, off);
  return NULL;
}

/* ------------------------------------------------------------------ loading */

static void set_name(bm_tokenizer *t, const char *name) {
  if (!name) name = "<memory>";
  size_t n = strlen(name);
  if (n >= sizeof t->name) name += n - (sizeof t->name - 1);
  snprintf(t->name, sizeof t->name, "%s", name);
}

void bm_tokenizer_free(bm_tokenizer *t) {
  if (!t) return;
  free(t->text);
  free(t->off);
  free(t->score);
  free(t->type);
  free(t->vocab.slot);
  free(t->merges.key);
  free(t->merges.rank);
  free(t->merges.id);
  free(t->added);
  free(t->user);
  free(t->charsmap);
  free(t);
}

static bm_tok_format sniff(const uint8_t *p, size_t n, bool have_data2) {
  if (n >= 2 && p[0] == 0x1f && p[1] == 0x8b) return BM_TOK_FORMAT_CLIP_MERGES;
  size_t i = 0;
  while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\r' || p[i] == '\n')) i++;
  if (i < n && p[i] == '{') return have_data2 ? BM_TOK_FORMAT_CLIP_VOCAB_MERGES : BM_TOK_FORMAT_HF_JSON;
  if ((n >= 17 && !memcmp(p, "\"bpe_simple_vocab", 17)) || (n >= 8 && !memcmp(p, "#version", 8)))
    return BM_TOK_FORMAT_CLIP_MERGES;
  /* tiktoken: "<base64> <digits>\n" */
  size_t j = 0;
  while (j < n && (((p[j] | 0x20) >= 'a' && (p[j] | 0x20) <= 'z') || (p[j] >= '0' && p[j] <= '9') || p[j] == '+' ||
                   p[j] == '/' || p[j] == '='))
    j++;
  if (j > 0 && j < n && p[j] == ' ') {
    size_t k = j + 1;
    while (k < n && p[k] >= '0' && p[k] <= '9') k++;
    if (k > j + 1 && (k == n || p[k] == '\n' || p[k] == '\r')) return BM_TOK_FORMAT_TIKTOKEN;
  }
  return BM_TOK_FORMAT_SENTENCEPIECE;
}

static int32_t find_text(const bm_tokenizer *t, const char *s) {
  return bm_tokenizer_find(t, s, strlen(s));
}

/* Default special ids and chat format from the token names. */
static void guess_specials(bm_tokenizer *t) {
  static const char *const bos_names[] = {"<|begin_of_text|>", "<s>", "<bos>", "<|startoftext|>"};
  static const char *const eos_names[] = {"<|end_of_text|>", "</s>", "<eos>", "<|endoftext|>"};
  if (t->bos < 0)
    for (size_t i = 0; i < sizeof bos_names / sizeof *bos_names && t->bos < 0; i++) t->bos = find_text(t, bos_names[i]);
  if (t->eos < 0)
    for (size_t i = 0; i < sizeof eos_names / sizeof *eos_names && t->eos < 0; i++) t->eos = find_text(t, eos_names[i]);
  if (find_text(t, "<|start_header_id|>") >= 0) t->chat = BM_CHAT_LLAMA3;
  else if (find_text(t, "<|im_start|>") >= 0) t->chat = BM_CHAT_CHATML;
  else if (find_text(t, "<start_of_turn>") >= 0) t->chat = BM_CHAT_GEMMA;
  else if (find_text(t, "<|user|>") >= 0 && find_text(t, "<|assistant|>") >= 0) t->chat = BM_CHAT_PHI3;
  else if (find_text(t, "[INST]") >= 0 && t->type[find_text(t, "[INST]")] == BM_TT_CONTROL) t->chat = BM_CHAT_MISTRAL;
}

bm_status bm_tokenizer_load_memory(bm_tok_format format, const void *data, size_t size, const void *data2,
                                   size_t size2, const char *name, bm_tokenizer **out) {
  if (!out) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "bm_tokenizer_load_memory: out is NULL");
  *out = NULL;
  if (!data && size) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "bm_tokenizer_load_memory: data is NULL");
  bm_tokenizer *t = calloc(1, sizeof *t);
  if (!t) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "tokenizer");
  set_name(t, name);
  t->bos = t->eos = t->pad = t->unk = -1;
  if (!size) {
    bm_tokenizer_free(t);
    return bm_status_make(BM_ERR_CORRUPT, "%s: empty tokenizer file", name ? name : "<memory>");
  }
  if (format == BM_TOK_FORMAT_AUTO) format = sniff(data, size, data2 != NULL);
  bm_status st = NULL;
  switch (format) {
  case BM_TOK_FORMAT_HF_JSON: st = bm_tok_load_hf_json(t, data, size); break;
  case BM_TOK_FORMAT_SENTENCEPIECE: st = bm_tok_load_spm(t, data, size); break;
  case BM_TOK_FORMAT_TIKTOKEN: st = bm_tok_load_tiktoken(t, data, size); break;
  case BM_TOK_FORMAT_CLIP_MERGES: st = bm_tok_load_clip_merges(t, data, size); break;
  case BM_TOK_FORMAT_CLIP_VOCAB_MERGES:
    if (!data2 || !size2) {
      st = bm_status_make(BM_ERR_CORRUPT, "%s: vocab.json needs merges.txt (empty or missing)", t->name);
      break;
    }
    st = bm_tok_load_clip_vocab(t, data, size, data2, size2);
    break;
  default: st = bm_status_make(BM_ERR_INVALID_ARGUMENT, "bm_tokenizer_load_memory: unknown format %d", (int)format);
  }
  if (!st && !t->vocab.slot) st = bm_tok_build_vocab_map(t);
  if (!st && !t->added) st = bm_tok_build_match(t, false);
  if (st) {
    bm_tokenizer_free(t);
    return st;
  }
  guess_specials(t);
  *out = t;
  return NULL;
}

static bm_status read_file(const char *path, char **data, size_t *size) {
  *data = NULL;
  *size = 0;
  FILE *f = fopen(path, "rb");
  if (!f) return bm_status_make(BM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
  struct stat sb;
  if (fstat(fileno(f), &sb) || !S_ISREG(sb.st_mode) || sb.st_size > (1ll << 31)) {
    fclose(f);
    return bm_status_make(BM_ERR_IO, "%s: not a regular file of at most 2 GiB", path);
  }
  size_t n = (size_t)sb.st_size;
  char *p = malloc(n + 1);
  if (!p) {
    fclose(f);
    return bm_status_make(BM_ERR_OUT_OF_MEMORY, "%s: %zu bytes", path, n);
  }
  size_t got = fread(p, 1, n, f);
  fclose(f);
  if (got != n) {
    free(p);
    return bm_status_make(BM_ERR_IO, "%s: short read (%zu of %zu bytes)", path, got, n);
  }
  p[n] = 0;
  *data = p;
  *size = n;
  return NULL;
}

static bool file_exists(const char *dir, const char *name, char *path, size_t cap) {
  snprintf(path, cap, "%s/%s", dir, name);
  struct stat sb;
  return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

bm_status bm_tokenizer_load(const char *path, bm_tokenizer **out) {
  if (out) *out = NULL; /* output parameters are cleared on entry */
  if (!out || !path) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "bm_tokenizer_load: NULL argument");
  struct stat sb;
  if (stat(path, &sb)) return bm_status_make(BM_ERR_IO, "%s: %s", path, strerror(errno));
  char p1[4096], p2[4096];
  const char *file = path, *file2 = NULL;
  bm_tok_format fmt = BM_TOK_FORMAT_AUTO;
  bool dir = S_ISDIR(sb.st_mode);
  if (dir) {
    static const char *const names[] = {"tokenizer.json", "tokenizer.model", "tokenizer.model.v3", "spiece.model"};
    file = NULL;
    for (size_t i = 0; i < sizeof names / sizeof *names && !file; i++)
      if (file_exists(path, names[i], p1, sizeof p1)) file = p1;
    if (!file && file_exists(path, "vocab.json", p1, sizeof p1) && file_exists(path, "merges.txt", p2, sizeof p2)) {
      file = p1;
      file2 = p2;
      fmt = BM_TOK_FORMAT_CLIP_VOCAB_MERGES;
    }
    if (!file && file_exists(path, "bpe_simple_vocab_16e6.txt.gz", p1, sizeof p1)) file = p1;
    if (!file)
      return bm_status_make(BM_ERR_NOT_FOUND, "%s: no tokenizer.json, tokenizer.model, spiece.model, "
                                              "vocab.json+merges.txt or bpe_simple_vocab_16e6.txt.gz", path);
  }
  char *d1 = NULL, *d2 = NULL;
  size_t n1 = 0, n2 = 0;
  bm_status st = read_file(file, &d1, &n1);
  if (!st && file2) st = read_file(file2, &d2, &n2);
  if (!st) st = bm_tokenizer_load_memory(fmt, d1, n1, d2, n2, file, out);
  free(d1);
  free(d2);
  if (st || !dir) return st;
  if (file_exists(path, "tokenizer_config.json", p2, sizeof p2)) {
    st = read_file(p2, &d1, &n1);
    if (!st) st = bm_tokenizer_apply_config(*out, d1, n1, p2);
    free(d1);
    if (st) {
      bm_tokenizer_free(*out);
      *out = NULL;
    }
  }
  return st;
}

/* A config token entry: "text", {"content": "text"} or null. Returns 1 and
 * sets *id when present (-1 for null), 0 when absent. */
static int config_token(const bm_tokenizer *t, const cJSON *root, const char *key, int32_t *id, bm_status *st,
                        const char *name) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
  if (!v) return 0;
  if (cJSON_IsNull(v)) {
    *id = -1;
    return 1;
  }
  if (cJSON_IsObject(v)) v = cJSON_GetObjectItemCaseSensitive(v, "content");
  if (!cJSON_IsString(v)) {
    *st = bm_status_make(BM_ERR_CORRUPT, "%s: %s is not a string", name, key);
    return 0;
  }
  *id = find_text(t, v->valuestring);
  if (*id < 0) {
    *st = bm_status_make(BM_ERR_CORRUPT, "%s: %s '%.64s' is not in the vocabulary", name, key, v->valuestring);
    return 0;
  }
  return 1;
}

bm_status bm_tokenizer_apply_config(bm_tokenizer *t, const char *json, size_t size, const char *name) {
  if (!t || (!json && size)) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "bm_tokenizer_apply_config: NULL argument");
  if (!name) name = "tokenizer_config.json";
  cJSON *root = cJSON_ParseWithLength(json, size);
  if (!root || !cJSON_IsObject(root)) {
    cJSON_Delete(root);
    return bm_status_make(BM_ERR_CORRUPT, "%s: not a JSON object", name);
  }
  bm_status st = NULL;
  int32_t id;
  if (config_token(t, root, "bos_token", &id, &st, name)) t->bos = id;
  if (!st && config_token(t, root, "eos_token", &id, &st, name)) t->eos = id;
  if (!st && config_token(t, root, "pad_token", &id, &st, name)) t->pad = id;
  const cJSON *tpl = cJSON_GetObjectItemCaseSensitive(root, "chat_template");
  if (!st && cJSON_IsArray(tpl)) { /* [{"name": "default", "template": "..."}, ...] */
    const cJSON *e;
    cJSON_ArrayForEach(e, tpl) {
      const cJSON *nm = cJSON_GetObjectItemCaseSensitive(e, "name");
      if (cJSON_IsString(nm) && !strcmp(nm->valuestring, "default")) {
        tpl = cJSON_GetObjectItemCaseSensitive(e, "template");
        break;
      }
    }
  }
  if (!st && cJSON_IsString(tpl)) {
    bm_chat_kind k = bm_chat_detect(tpl->valuestring);
    if (k != BM_CHAT_NONE) t->chat = k;
  }
  cJSON_Delete(root);
  return st;
}

/* ------------------------------------------------------------------ queries */

bm_tok_model bm_tokenizer_model(const bm_tokenizer *t) { return t->model; }
int32_t bm_tokenizer_vocab_size(const bm_tokenizer *t) { return t->n_vocab; }
int32_t bm_tokenizer_bos(const bm_tokenizer *t) { return t->bos; }
int32_t bm_tokenizer_eos(const bm_tokenizer *t) { return t->eos; }
int32_t bm_tokenizer_pad(const bm_tokenizer *t) { return t->pad; }
int32_t bm_tokenizer_unk(const bm_tokenizer *t) { return t->unk; }
bm_chat_kind bm_tokenizer_chat_kind(const bm_tokenizer *t) { return t->chat; }

const char *bm_tokenizer_token_text(const bm_tokenizer *t, int32_t id, size_t *len) {
  if (id < 0 || id >= t->n_vocab) return NULL;
  if (len) *len = bm_tok_len(t, id);
  return bm_tok_str(t, id);
}

int32_t bm_tokenizer_find(const bm_tokenizer *t, const char *s, size_t n) {
  int32_t id = bm_tok_map_find(t, s, n);
  if (id >= 0) return id;
  for (int32_t i = 0; i < t->n_vocab; i++) /* tokens shadowed in the map by an earlier duplicate */
    if (bm_tok_len(t, i) == n && n && !memcmp(bm_tok_str(t, i), s, n)) return i;
  return -1;
}

bool bm_tokenizer_is_special(const bm_tokenizer *t, int32_t id) {
  return id >= 0 && id < t->n_vocab && (t->type[id] == BM_TT_CONTROL || id == t->bos || id == t->eos);
}

bm_status bm_tokenizer_set_special(bm_tokenizer *t, int32_t bos, int32_t eos, int32_t pad) {
  if (bos < -1 || bos >= t->n_vocab || eos < -1 || eos >= t->n_vocab || pad < -1 || pad >= t->n_vocab)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "special ids %d/%d/%d out of range (vocab %d)", bos, eos, pad,
                          t->n_vocab);
  t->bos = bos;
  t->eos = eos;
  t->pad = pad;
  return NULL;
}

/* ------------------------------------------------------------------ encode */

static bm_status encode_segment(const bm_tokenizer *t, const char *s, size_t n, bm_tok_ids *out) {
  if (!n) return NULL;
  switch (t->model) {
  case BM_TOK_MODEL_BYTE_BPE: return bm_tok_bytebpe_encode(t, s, n, out);
  case BM_TOK_MODEL_SPM_BPE:
  case BM_TOK_MODEL_SPM_UNIGRAM: return bm_tok_spm_encode(t, s, n, out);
  case BM_TOK_MODEL_CLIP: return bm_tok_clip_encode(t, s, n, out);
  }
  return bm_status_make(BM_ERR_INTERNAL, "bad tokenizer model %d", (int)t->model);
}

static bm_status encode_ids(const bm_tokenizer *t, const char *s, size_t n, uint32_t flags, bm_tok_ids *out) {
  if (!s && n) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "encode: text is NULL");
  bm_status st = NULL;
  if ((flags & BM_TOK_ADD_BOS) && t->bos >= 0 && !bm_tok_ids_push(out, t->bos)) goto oom;
  if ((flags & BM_TOK_PARSE_SPECIAL) && t->n_added) {
    size_t seg = 0, i = 0;
    while (i < n) {
      size_t mlen;
      int32_t id = bm_tok_match_at(t, false, s + i, n - i, &mlen);
      if (id < 0) {
        i++;
        continue;
      }
      if ((st = encode_segment(t, s + seg, i - seg, out))) return st;
      if (!bm_tok_ids_push(out, id)) goto oom;
      i += mlen;
      seg = i;
    }
    if ((st = encode_segment(t, s + seg, n - seg, out))) return st;
  } else if ((st = encode_segment(t, s, n, out))) {
    return st;
  }
  if ((flags & BM_TOK_ADD_EOS) && t->eos >= 0 && !bm_tok_ids_push(out, t->eos)) goto oom;
  return NULL;
oom:
  return bm_status_make(BM_ERR_OUT_OF_MEMORY, "encode: %zu bytes of text", n);
}

bm_status bm_tokenizer_encode(const bm_tokenizer *t, const char *s, size_t len, uint32_t flags, int32_t *ids,
                              size_t cap, size_t *n) {
  if (!t || !n) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "encode: NULL argument");
  *n = 0;
  bm_tok_ids v = {0};
  bm_status st = encode_ids(t, s, len, flags, &v);
  if (!st) {
    *n = v.n;
    if (v.n > cap) st = bm_status_make(BM_ERR_INVALID_ARGUMENT, "encode: ids buffer too small (need %zu, cap %zu)", v.n, cap);
    else if (v.n) memcpy(ids, v.v, v.n * sizeof *ids);
  }
  free(v.v);
  return st;
}

bm_status bm_tokenizer_encode_alloc(const bm_tokenizer *t, const char *s, size_t len, uint32_t flags, int32_t **ids,
                                    size_t *n) {
  if (!t || !ids || !n) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "encode: NULL argument");
  *ids = NULL;
  *n = 0;
  bm_tok_ids v = {0};
  bm_status st = encode_ids(t, s, len, flags, &v);
  if (st) {
    free(v.v);
    return st;
  }
  if (!v.v && !(v.v = malloc(sizeof(int32_t)))) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "encode");
  *ids = v.v;
  *n = v.n;
  return NULL;
}

bm_status bm_tokenizer_encode_padded(const bm_tokenizer *t, const char *s, size_t len, uint32_t flags, int32_t *ids,
                                     size_t n_ctx, int32_t pad_id, size_t *n_real) {
  if (!t || !ids || n_ctx < 2) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "encode_padded: bad argument");
  if (n_real) *n_real = 0;
  bm_tok_ids v = {0};
  bm_status st = encode_ids(t, s, len, flags, &v);
  if (st) {
    free(v.v);
    return st;
  }
  size_t n = v.n;
  if (n > n_ctx) {
    n = n_ctx;
    if ((flags & BM_TOK_ADD_EOS) && t->eos >= 0) v.v[n - 1] = t->eos;
  }
  if (n) memcpy(ids, v.v, n * sizeof *ids);
  for (size_t i = n; i < n_ctx; i++) ids[i] = pad_id;
  if (n_real) *n_real = n;
  free(v.v);
  return NULL;
}

/* ------------------------------------------------------------------ decode */

typedef struct sink {
  char *out;
  size_t cap, n;
} sink;

static void sink_put(sink *k, const void *p, size_t n) {
  if (k->n + n <= k->cap) memcpy(k->out + k->n, p, n);
  k->n += n;
}

/* 0: valid prefix, wait; > 0: complete sequence of that length; < 0: invalid,
 * -(length of the maximal invalid subpart). */
static int utf8_status(const uint8_t *p, int n) {
  uint8_t c = p[0];
  if (c < 0x80) return 1;
  int want;
  if (c >= 0xC2 && c <= 0xDF) want = 2;
  else if (c >= 0xE0 && c <= 0xEF) want = 3;
  else if (c >= 0xF0 && c <= 0xF4) want = 4;
  else return -1;
  for (int i = 1; i < n; i++) {
    uint8_t lo = 0x80, hi = 0xBF;
    if (i == 1) {
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    }
    if (p[i] < lo || p[i] > hi) return -i;
  }
  return n == want ? want : 0;
}

static void detok_bytes(bm_detok *d, sink *k, const uint8_t *p, size_t n) {
  static const char repl[3] = {(char)0xEF, (char)0xBF, (char)0xBD};
  for (size_t i = 0; i < n; i++) {
    if (!d->n_pending && p[i] < 0x80) {
      sink_put(k, p + i, 1);
      continue;
    }
    d->pending[d->n_pending++] = p[i];
    while (d->n_pending) {
      int st = utf8_status(d->pending, d->n_pending);
      if (st == 0) break;
      int used = st > 0 ? st : -st;
      if (st > 0) sink_put(k, d->pending, (size_t)st);
      else sink_put(k, repl, 3);
      memmove(d->pending, d->pending + used, (size_t)(d->n_pending - used));
      d->n_pending = (uint8_t)(d->n_pending - used);
    }
  }
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f') return (c | 0x20) - 'a' + 10;
  return -1;
}

static void detok_token(bm_detok *d, int32_t id, sink *k) {
  const bm_tokenizer *t = d->tok;
  const char *s = bm_tok_str(t, id);
  size_t n = bm_tok_len(t, id);
  uint8_t ty = t->type[id];
  bool spm = t->model == BM_TOK_MODEL_SPM_BPE || t->model == BM_TOK_MODEL_SPM_UNIGRAM;
  if (ty == BM_TT_CONTROL && (spm || (d->flags & BM_TOK_SKIP_SPECIAL))) return;
  if (spm) {
    if (ty == BM_TT_BYTE && n == 6 && hexval(s[3]) >= 0 && hexval(s[4]) >= 0) {
      uint8_t b = (uint8_t)(hexval(s[3]) * 16 + hexval(s[4]));
      detok_bytes(d, k, &b, 1);
      return;
    }
    if (ty == BM_TT_UNKNOWN) {
      detok_bytes(d, k, (const uint8_t *)t->unk_surface, strlen(t->unk_surface));
      d->prefix_done = true;
      return;
    }
    /* sentencepiece: the first piece that starts with ▁ loses it (the dummy
     * prefix); with remove_extra_whitespaces every leading ▁ piece does */
    size_t i = 0;
    bool consumed = false;
    if (!d->prefix_done && (t->add_dummy_prefix || t->remove_extra_ws) && n >= 3 && !memcmp(s, "\xE2\x96\x81", 3)) {
      i = 3;
      consumed = !t->remove_extra_ws;
    }
    if (consumed || i < n) d->prefix_done = true;
    size_t run = i;
    while (i < n) {
      if (i + 3 <= n && !memcmp(s + i, "\xE2\x96\x81", 3)) {
        detok_bytes(d, k, (const uint8_t *)s + run, i - run);
        detok_bytes(d, k, (const uint8_t *)" ", 1);
        i += 3;
        run = i;
      } else {
        i++;
      }
    }
    detok_bytes(d, k, (const uint8_t *)s + run, n - run);
    return;
  }
  if (t->model == BM_TOK_MODEL_CLIP && n >= 4 && !memcmp(s + n - 4, "</w>", 4)) {
    detok_bytes(d, k, (const uint8_t *)s, n - 4);
    detok_bytes(d, k, (const uint8_t *)" ", 1);
    return;
  }
  detok_bytes(d, k, (const uint8_t *)s, n);
}

void bm_detok_init(bm_detok *d, const bm_tokenizer *tok, uint32_t flags) {
  memset(d, 0, sizeof *d);
  d->tok = tok;
  d->flags = flags;
}

bm_status bm_detok_push(bm_detok *d, int32_t id, char *out, size_t cap, size_t *n) {
  if (!d || !d->tok || !n || (!out && cap)) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "detok_push: NULL argument");
  *n = 0;
  if (id < 0 || id >= d->tok->n_vocab)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "token id %d out of range (vocab %d)", id, d->tok->n_vocab);
  bm_detok saved = *d;
  sink k = {out, cap, 0};
  detok_token(d, id, &k);
  *n = k.n;
  if (k.n > cap) {
    *d = saved;
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "detok_push: output buffer too small (need %zu, cap %zu)", k.n, cap);
  }
  return NULL;
}

bm_status bm_detok_flush(bm_detok *d, char *out, size_t cap, size_t *n) {
  if (!d || !n || (!out && cap)) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "detok_flush: NULL argument");
  *n = 0;
  if (d->n_pending) {
    if (cap < 3) {
      *n = 3;
      return bm_status_make(BM_ERR_INVALID_ARGUMENT, "detok_flush: output buffer too small (need 3, cap %zu)", cap);
    }
    memcpy(out, "\xEF\xBF\xBD", 3);
    *n = 3;
  }
  bm_detok_init(d, d->tok, d->flags);
  return NULL;
}

bm_status bm_tokenizer_decode(const bm_tokenizer *t, const int32_t *ids, size_t n, uint32_t flags, char *out,
                              size_t cap, size_t *len) {
  if (!t || !len || (!ids && n) || (!out && cap)) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "decode: NULL argument");
  *len = 0;
  bm_detok d;
  bm_detok_init(&d, t, flags);
  sink k = {out, cap, 0};
  for (size_t i = 0; i < n; i++) {
    if (ids[i] < 0 || ids[i] >= t->n_vocab)
      return bm_status_make(BM_ERR_INVALID_ARGUMENT, "decode: token id %d at %zu out of range (vocab %d)", ids[i], i,
                            t->n_vocab);
    detok_token(&d, ids[i], &k);
  }
  if (d.n_pending) sink_put(&k, "\xEF\xBF\xBD", 3);
  *len = k.n;
  if (k.n > cap) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "decode: output buffer too small (need %zu, cap %zu)", k.n, cap);
  if (k.n < cap) out[k.n] = 0;
  return NULL;
}

bm_status bm_tokenizer_decode_alloc(const bm_tokenizer *t, const int32_t *ids, size_t n, uint32_t flags, char **out,
                                    size_t *len) {
  if (!out || !len) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "decode: NULL argument");
  *out = NULL;
  if (!t || (!ids && n)) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "decode: NULL argument");
  for (size_t i = 0; i < n; i++)
    if (ids[i] < 0 || ids[i] >= t->n_vocab)
      return bm_status_make(BM_ERR_INVALID_ARGUMENT, "decode: token id %d at %zu out of range (vocab %d)", ids[i], i,
                            t->n_vocab);
  size_t need;
  bm_status_free(bm_tokenizer_decode(t, ids, n, flags, NULL, 0, &need));
  char *p = malloc(need + 1);
  if (!p) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "decode: %zu bytes", need);
  bm_status st = bm_tokenizer_decode(t, ids, n, flags, p, need + 1, len);
  if (st) {
    free(p);
    return st;
  }
  *out = p;
  return NULL;
}
