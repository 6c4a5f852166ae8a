/* tok_bpe.c - byte-level BPE: HF tokenizer.json loading (byte-level and the
 * SentencePiece-like BPE kind), the tiktoken tokenizer.model of Llama 3, the
 * Llama 3 / Qwen / GPT-2 pre-tokenizers as hand-written matchers, and the
 * byte-level encode. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "tok_internal.h"
#include "unicode.h"

/* ------------------------------------------------------------------ pre-tokenizers */

enum { C_OTHER = 0, C_L, C_N, C_S };

static int cls(uint32_t c) {
  if (bm_uni_is_letter(c)) return C_L;
  if (bm_uni_is_number(c)) return C_N;
  if (bm_uni_is_space(c)) return C_S;
  return C_OTHER;
}

static uint32_t fold_ascii(uint32_t c) {
  if (c == 0x17F) return 's'; /* LATIN SMALL LETTER LONG S case-folds to s */
  return c < 0x80 && c >= 'A' && c <= 'Z' ? c + 32 : c;
}

/* 's|'t|'re|'ve|'m|'ll|'d, case-insensitive or not; returns the end or 0. */
static size_t contraction(const uint32_t *c, size_t n, size_t i, bool icase) {
  if (c[i] != '\'' || i + 1 >= n) return 0;
  uint32_t a = icase ? fold_ascii(c[i + 1]) : c[i + 1];
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
  if (i + 2 >= n) return 0;
  uint32_t b = icase ? fold_ascii(c[i + 2]) : c[i + 2];
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
  return 0;
}

/* The Llama 3 (max_digits 3) / Qwen (max_digits 1) pattern:
 * (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 * Returns the end (exclusive) of the match starting at i. */
static size_t match_llama3(const uint32_t *c, const uint8_t *k, size_t n, size_t i, size_t max_digits) {
  size_t j = contraction(c, n, i, true);
  if (j) return j;
  if (k[i] == C_L || (c[i] != '\r' && c[i] != '\n' && k[i] != C_N && i + 1 < n && k[i + 1] == C_L)) {
    j = k[i] == C_L ? i + 1 : i + 2;
    while (j < n && k[j] == C_L) j++;
    return j;
  }
  if (k[i] == C_N) {
    j = i + 1;
    while (j < n && j - i < max_digits && k[j] == C_N) j++;
    return j;
  }
  j = i;
  if (c[j] == ' ' && j + 1 < n && k[j + 1] == C_OTHER) j++;
  if (k[j] == C_OTHER) {
    while (j < n && k[j] == C_OTHER) j++;
    while (j < n && (c[j] == '\r' || c[j] == '\n')) j++;
    return j;
  }
  /* c[i] is white space */
  size_t e = i;
  while (e < n && k[e] == C_S) e++;
  size_t nl = e;
  while (nl > i && c[nl - 1] != '\r' && c[nl - 1] != '\n') nl--;
  if (nl > i) return nl;          /* \s*[\r\n]+ */
  if (e == n) return e;           /* \s+(?!\S) at the end */
  if (e - i >= 2) return e - 1;   /* \s+(?!\S): leave one space for the next word */
  return e;                       /* \s+ */
}

/* GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
static size_t match_gpt2(const uint32_t *c, const uint8_t *k, size_t n, size_t i) {
  size_t j = contraction(c, n, i, false);
  if (j) return j;
  size_t s = c[i] == ' ' && i + 1 < n && k[i + 1] != C_S ? i + 1 : i;
  if (k[s] != C_S) {
    int want = k[s];
    j = s + 1;
    while (j < n && k[j] == want) j++;
    return j;
  }
  size_t e = i;
  while (e < n && k[e] == C_S) e++;
  if (e == n) return e;
  if (e - i >= 2) return e - 1;
  return e;
}

/* ------------------------------------------------------------------ encode */

static bm_status encode_piece(const bm_tokenizer *t, const char *p, size_t n, bm_tok_ids *out, bm_tok_sym **syms,
                              size_t *syms_cap) {
  if (t->ignore_merges || n == 1) {
    int32_t id = bm_tok_map_find(t, p, n);
    if (id >= 0 && t->type[id] == BM_TT_NORMAL) return bm_tok_ids_push(out, id) ? NULL : bm_status_make(BM_ERR_OUT_OF_MEMORY, "encode");
  }
  if (n > *syms_cap) {
    bm_tok_sym *v = realloc(*syms, n * sizeof *v);
    if (!v) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "encode: %zu symbols", n);
    *syms = v;
    *syms_cap = n;
  }
  bm_tok_sym *s = *syms;
  for (size_t i = 0; i < n; i++) {
    int32_t id = t->byte_id[(uint8_t)p[i]];
    if (id < 0) id = t->unk;
    if (id < 0) return bm_status_make(BM_ERR_UNSUPPORTED, "%s: byte 0x%02X has no token and there is no <unk>", t->name, (uint8_t)p[i]);
    s[i] = (bm_tok_sym){id, (uint32_t)i, 1, (int32_t)i - 1, i + 1 < n ? (int32_t)i + 1 : -1, false};
  }
  if (!bm_tok_bpe(t, p, s, (int32_t)n)) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "encode");
  for (int32_t i = 0; i >= 0; i = s[i].next)
    if (!bm_tok_ids_push(out, s[i].id)) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "encode");
  return NULL;
}

bm_status bm_tok_bytebpe_encode(const bm_tokenizer *t, const char *s, size_t n, bm_tok_ids *out) {
  bm_cpbuf cp = {0};
  bm_tok_buf norm = {0};
  uint32_t *offs = NULL;
  uint8_t *kind = NULL;
  bm_tok_sym *syms = NULL;
  size_t syms_cap = 0;
  bm_status st = NULL;
  const uint8_t *u = (const uint8_t *)s;
  for (size_t i = 0; i < n;) {
    uint32_t c;
    i += bm_utf8_decode(u + i, n - i, &c);
    if (!bm_cpbuf_push(&cp, c)) goto oom;
  }
  if (t->nfc && !bm_uni_nfc_quick(s, n)) {
    if (!bm_uni_nfc(&cp)) goto oom;
    for (size_t i = 0; i < cp.n; i++) {
      char b[4];
      if (!bm_tok_buf_append(&norm, b, bm_utf8_encode(cp.v[i], b))) goto oom;
    }
    s = norm.v;
    n = norm.n;
    u = (const uint8_t *)s;
  }
  /* code point offsets into s (recomputed: NFC may have changed the text) */
  offs = malloc((cp.n + 1) * sizeof *offs);
  kind = malloc(cp.n + 1);
  if (!offs || !kind) goto oom;
  size_t m = 0;
  for (size_t i = 0; i < n && m < cp.n;) {
    offs[m] = (uint32_t)i;
    uint32_t c;
    i += bm_utf8_decode(u + i, n - i, &c);
    cp.v[m] = c;
    kind[m] = (uint8_t)cls(c);
    m++;
  }
  offs[m] = (uint32_t)n;
  for (size_t i = 0; i < m;) {
    size_t j = t->pretok == BM_PRETOK_GPT2 ? match_gpt2(cp.v, kind, m, i)
                                           : match_llama3(cp.v, kind, m, i, t->pretok == BM_PRETOK_QWEN ? 1 : 3);
    if ((st = encode_piece(t, s + offs[i], offs[j] - offs[i], out, &syms, &syms_cap))) break;
    i = j;
  }
  goto done;
oom:
  st = bm_status_make(BM_ERR_OUT_OF_MEMORY, "encode: %zu bytes of text", n);
done:
  bm_cpbuf_free(&cp);
  free(norm.v);
  free(offs);
  free(kind);
  free(syms);
  return st;
}

/* ------------------------------------------------------------------ HF tokenizer.json */

static const char *const LLAMA3_RE =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char *const QWEN_RE =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

static const char *jstr(const cJSON *o, const char *key) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
  return cJSON_IsString(v) ? v->valuestring : NULL;
}
static bool jtrue(const cJSON *o, const char *key) { return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, key)); }

/* Walks a component (normalizer / pre_tokenizer / decoder) and its Sequence
 * children, recording what this loader understands. */
typedef struct hf_features {
  bool byte_level, metaspace, prepend, replace_space, nfc, split_regex, unknown;
  const char *regex;
  char unknown_name[64];
} hf_features;

static void hf_walk(const cJSON *c, hf_features *f) {
  if (!c || cJSON_IsNull(c)) return;
  const char *type = jstr(c, "type");
  if (!type) {
    f->unknown = true;
    snprintf(f->unknown_name, sizeof f->unknown_name, "(component without type)");
    return;
  }
  if (!strcmp(type, "Sequence")) {
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(c, "normalizers");
    if (!list) list = cJSON_GetObjectItemCaseSensitive(c, "pretokenizers");
    if (!list) list = cJSON_GetObjectItemCaseSensitive(c, "decoders");
    const cJSON *e;
    cJSON_ArrayForEach(e, list) hf_walk(e, f);
  } else if (!strcmp(type, "ByteLevel")) {
    f->byte_level = true;
    const cJSON *ur = cJSON_GetObjectItemCaseSensitive(c, "use_regex");
    if (!f->regex && (!ur || cJSON_IsTrue(ur)) && !f->split_regex) f->regex = "gpt2";
  } else if (!strcmp(type, "Split")) {
    const cJSON *pat = cJSON_GetObjectItemCaseSensitive(c, "pattern");
    const char *re = jstr(pat, "Regex");
    f->split_regex = true;
    f->regex = re ? re : "(non-regex split)";
  } else if (!strcmp(type, "Metaspace")) {
    f->metaspace = true;
  } else if (!strcmp(type, "Prepend")) {
    f->prepend = true;
  } else if (!strcmp(type, "Replace")) {
    f->replace_space = true;
  } else if (!strcmp(type, "NFC")) {
    f->nfc = true;
  } else if (!strcmp(type, "ByteFallback") || !strcmp(type, "Fuse") || !strcmp(type, "Strip")) {
  } else {
    f->unknown = true;
    snprintf(f->unknown_name, sizeof f->unknown_name, "%s", type);
  }
}

static bool is_byte_piece(const char *s, size_t n, int *b) {
  if (n != 6 || memcmp(s, "<0x", 3) || s[5] != '>') return false;
  int v = 0;
  for (int i = 3; i < 5; i++) {
    char c = s[i];
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (d < 0) return false;
    v = v * 16 + d;
  }
  *b = v;
  return true;
}

/* The stored form of a vocab/merge string: raw bytes for byte-level. */
static bool stored_form(bool byte_level, const char *s, bm_tok_buf *out) {
  out->n = 0;
  if (byte_level) return bm_tok_unmap_bytes(s, strlen(s), out);
  return bm_tok_buf_append(out, s, strlen(s));
}

bm_status bm_tok_load_hf_json(bm_tokenizer *t, const char *data, size_t size) {
  cJSON *root = cJSON_ParseWithLength(data, size);
  bm_status st = NULL;
  bm_tok_table tt = {0};
  bm_tok_buf a = {0}, b = {0};
  if (!root || !cJSON_IsObject(root)) {
    const char *e = cJSON_GetErrorPtr();
    st = bm_status_make(BM_ERR_CORRUPT, "%s: invalid JSON%s%zd", t->name, e ? " near offset " : "",
                        e && e >= data && e <= data + size ? (ssize_t)(e - data) : (ssize_t)-1);
    goto done;
  }
  const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
  if (!cJSON_IsObject(model)) {
    st = bm_status_make(BM_ERR_CORRUPT, "%s: no \"model\" object (is this a tokenizer.json?)", t->name);
    goto done;
  }
  const char *mtype = jstr(model, "type");
  if (mtype && strcmp(mtype, "BPE")) {
    st = bm_status_make(BM_ERR_UNSUPPORTED, "%s: model type %s (only BPE is supported)", t->name, mtype);
    goto done;
  }
  hf_features f = {0};
  hf_walk(cJSON_GetObjectItemCaseSensitive(root, "normalizer"), &f);
  hf_walk(cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), &f);
  hf_features fd = {0};
  hf_walk(cJSON_GetObjectItemCaseSensitive(root, "decoder"), &fd);
  if (f.unknown) {
    st = bm_status_make(BM_ERR_UNSUPPORTED, "%s: normalizer/pre-tokenizer %s not supported", t->name, f.unknown_name);
    goto done;
  }
  bool byte_level = f.byte_level || fd.byte_level;
  bool spm_like = !byte_level && (f.prepend || f.metaspace || f.replace_space || jtrue(model, "byte_fallback"));
  if (!byte_level && !spm_like) {
    st = bm_status_make(BM_ERR_UNSUPPORTED, "%s: BPE without ByteLevel or Metaspace-style pre-processing", t->name);
    goto done;
  }
  if (byte_level) {
    t->model = BM_TOK_MODEL_BYTE_BPE;
    t->nfc = f.nfc;
    if (!f.regex || !strcmp(f.regex, "gpt2")) t->pretok = BM_PRETOK_GPT2;
    else if (!strcmp(f.regex, LLAMA3_RE)) t->pretok = BM_PRETOK_LLAMA3;
    else if (!strcmp(f.regex, QWEN_RE)) t->pretok = BM_PRETOK_QWEN;
    else {
      st = bm_status_make(BM_ERR_UNSUPPORTED, "%s: pre-tokenizer regex not supported: %.200s", t->name, f.regex);
      goto done;
    }
  } else {
    t->model = BM_TOK_MODEL_SPM_BPE;
    t->add_dummy_prefix = true;
    t->hf_prepend = true;
    t->escape_ws = true;
    t->byte_fallback = jtrue(model, "byte_fallback");
    snprintf(t->unk_surface, sizeof t->unk_surface, " \xE2\x81\x87 ");
  }
  t->ignore_merges = jtrue(model, "ignore_merges");
  t->use_merges = true;

  const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
  const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
  const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
  if (!cJSON_IsObject(vocab) || !cJSON_IsArray(merges)) {
    st = bm_status_make(BM_ERR_CORRUPT, "%s: model.vocab must be an object and model.merges an array", t->name);
    goto done;
  }
  if (added && !cJSON_IsArray(added)) {
    st = bm_status_make(BM_ERR_CORRUPT, "%s: added_tokens is not an array", t->name);
    goto done;
  }
  /* vocabulary size: the largest id + 1 */
  double maxid = -1;
  const cJSON *e;
  cJSON_ArrayForEach(e, vocab) {
    if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble >= (1 << 24) || e->valuedouble != (int32_t)e->valuedouble) {
      st = bm_status_make(BM_ERR_CORRUPT, "%s: vocab entry '%.64s' has a bad id", t->name, e->string ? e->string : "");
      goto done;
    }
    if (e->valuedouble > maxid) maxid = e->valuedouble;
  }
  cJSON_ArrayForEach(e, added) {
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id");
    if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble >= (1 << 24) || !jstr(e, "content") ||
        !jstr(e, "content")[0]) {
      st = bm_status_make(BM_ERR_CORRUPT, "%s: added token without a valid id and content", t->name);
      goto done;
    }
    if (id->valuedouble > maxid) maxid = id->valuedouble;
  }
  if ((st = bm_tok_check_dense(t, (int64_t)maxid + 1, cJSON_GetArraySize(vocab) + cJSON_GetArraySize(added),
                               "model.vocab and added_tokens")))
    goto done;
  if ((st = bm_tok_alloc_vocab(t, (int32_t)maxid + 1))) goto done;
  if (!bm_tok_table_init(&tt, t->n_vocab)) goto oom;
  for (int i = 0; i < 256; i++) t->byte_id[i] = t->byte_id_w[i] = -1;
  cJSON_ArrayForEach(e, vocab) {
    int32_t id = (int32_t)e->valuedouble;
    if (tt.set[id]) {
      st = bm_status_make(BM_ERR_CORRUPT, "%s: id %d appears twice in model.vocab", t->name, id);
      goto done;
    }
    if (!e->string || !stored_form(byte_level, e->string, &a)) {
      st = bm_status_make(BM_ERR_CORRUPT, "%s: vocab entry %d ('%.64s') is not a byte-level string", t->name, id,
                          e->string ? e->string : "");
      goto done;
    }
    if (!bm_tok_table_set(&tt, id, a.v, a.n)) goto oom;
    int bv;
    if (byte_level && a.n == 1) t->byte_id[(uint8_t)a.v[0]] = id;
    if (!byte_level && is_byte_piece(a.v, a.n, &bv)) {
      t->type[id] = BM_TT_BYTE;
      t->byte_id[bv] = id;
    }
  }
  cJSON_ArrayForEach(e, added) {
    int32_t id = (int32_t)cJSON_GetObjectItemCaseSensitive(e, "id")->valuedouble;
    const char *content = jstr(e, "content");
    if (!bm_tok_table_set(&tt, id, content, strlen(content))) goto oom;
    t->type[id] = jtrue(e, "special") ? BM_TT_CONTROL : BM_TT_ADDED;
  }
  for (int32_t id = 0; id < t->n_vocab; id++)
    if (!tt.set[id]) t->type[id] = BM_TT_UNUSED;
  if ((st = bm_tok_table_pack(t, &tt))) goto done;
  if ((st = bm_tok_build_vocab_map(t))) goto done;
  const char *unk = jstr(model, "unk_token");
  if (unk) {
    t->unk = bm_tok_map_find(t, unk, strlen(unk));
    if (t->unk >= 0) t->type[t->unk] = BM_TT_UNKNOWN;
  }
  /* merges: "a b" strings or ["a", "b"] pairs, rank = position */
  int n_merges = cJSON_GetArraySize(merges);
  if ((st = bm_tok_pairmap_init(&t->merges, (size_t)n_merges))) goto done;
  int rank = 0;
  cJSON_ArrayForEach(e, merges) {
    const char *l = NULL, *r = NULL;
    char *tmp = NULL;
    if (cJSON_IsString(e)) {
      const char *sp = strchr(e->valuestring, ' ');
      if (sp && !strchr(sp + 1, ' ')) {
        tmp = strdup(e->valuestring);
        if (!tmp) goto oom;
        tmp[sp - e->valuestring] = 0;
        l = tmp;
        r = tmp + (sp - e->valuestring) + 1;
      }
    } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2) {
      const cJSON *x = cJSON_GetArrayItem(e, 0), *y = cJSON_GetArrayItem(e, 1);
      if (cJSON_IsString(x) && cJSON_IsString(y)) l = x->valuestring, r = y->valuestring;
    }
    int32_t il = -1, ir = -1, im = -1;
    bool ok = l && r && stored_form(byte_level, l, &a) && stored_form(byte_level, r, &b);
    if (ok) {
      il = bm_tok_map_find(t, a.v, a.n);
      ir = bm_tok_map_find(t, b.v, b.n);
      ok = bm_tok_buf_append(&a, b.v, b.n);
      if (ok) im = bm_tok_map_find(t, a.v, a.n);
    }
    free(tmp);
    if (!ok || il < 0 || ir < 0 || im < 0) {
      st = bm_status_make(BM_ERR_CORRUPT, "%s: merge %d is malformed or names tokens not in the vocabulary", t->name, rank);
      goto done;
    }
    bm_tok_pairmap_put(&t->merges, il, ir, rank, im);
    rank++;
  }
  goto done;
oom:
  st = bm_status_make(BM_ERR_OUT_OF_MEMORY, "%s: loading", t->name);
done:
  bm_tok_table_free(&tt);
  free(a.v);
  free(b.v);
  cJSON_Delete(root);
  return st;
}

/* ------------------------------------------------------------------ tiktoken */

static int b64val(uint8_t c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

/* Decodes standard base64 (with '=' padding) into out; false if malformed. */
static bool b64_decode(const uint8_t *s, size_t n, bm_tok_buf *out) {
  out->n = 0;
  if (n == 0 || n % 4) return false;
  for (size_t i = 0; i < n; i += 4) {
    int v[4], pad = 0;
    for (int j = 0; j < 4; j++) {
      if (s[i + j] == '=' && i + 4 == n && j >= 2) {
        v[j] = 0;
        pad++;
      } else if (pad || (v[j] = b64val(s[i + j])) < 0) {
        return false;
      }
    }
    uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
    char bytes[3] = {(char)(w >> 16), (char)(w >> 8), (char)w};
    if (!bm_tok_buf_append(out, bytes, (size_t)(3 - pad))) return false;
  }
  return true;
}

/* Llama 3.1 special tokens, appended after the base vocabulary (llama-models tokenizer.py). */
static const char *const LLAMA3_SPECIALS[] = {
    "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>", "<|step_id|>", "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>",
    "<|eot_id|>", "<|python_tag|>", "<|image|>"};
#define LLAMA3_N_SPECIAL 256

bm_status bm_tok_load_tiktoken(bm_tokenizer *t, const char *data, size_t size) {
  const uint8_t *p = (const uint8_t *)data;
  bm_status st = NULL;
  bm_tok_table tt = {0};
  bm_tok_buf tok = {0};
  /* pass 1: count lines and the largest rank */
  long max_rank = -1, lines = 0;
  for (size_t i = 0; i < size;) {
    size_t e = i;
    while (e < size && p[e] != '\n') e++;
    size_t sp = i;
    while (sp < e && p[sp] != ' ') sp++;
    if (e > i) {
      long r = 0;
      size_t d = sp + 1;
      if (sp >= e || d >= e) {
        return bm_status_make(BM_ERR_CORRUPT, "%s: line %ld: expected '<base64> <rank>'", t->name, lines + 1);
      }
      for (; d < e && p[d] != '\r'; d++) {
        if (p[d] < '0' || p[d] > '9' || r > (1 << 24))
          return bm_status_make(BM_ERR_CORRUPT, "%s: line %ld: bad rank", t->name, lines + 1);
        r = r * 10 + (p[d] - '0');
      }
      if (r >= (1 << 24)) return bm_status_make(BM_ERR_CORRUPT, "%s: line %ld: rank %ld too large", t->name, lines + 1, r);
      if (r > max_rank) max_rank = r;
      lines++;
    }
    i = e + 1;
  }
  if (lines == 0) return bm_status_make(BM_ERR_CORRUPT, "%s: no tokens", t->name);
  int32_t n_base = (int32_t)max_rank + 1;
  t->model = BM_TOK_MODEL_BYTE_BPE;
  t->pretok = BM_PRETOK_LLAMA3;
  t->rank_is_id = true;
  t->ignore_merges = true;
  if ((st = bm_tok_check_dense(t, n_base, lines, "ranks"))) return st;
  if ((st = bm_tok_alloc_vocab(t, n_base + LLAMA3_N_SPECIAL))) return st;
  if (!bm_tok_table_init(&tt, t->n_vocab)) goto oom;
  long line = 0;
  for (size_t i = 0; i < size;) {
    size_t e = i;
    while (e < size && p[e] != '\n') e++;
    if (e > i) {
      line++;
      size_t sp = i;
      while (p[sp] != ' ') sp++;
      long r = 0; /* pass 1 checked the digits; the data is not NUL-terminated (no strtol) */
      for (size_t d = sp + 1; d < e && p[d] != '\r'; d++) r = r * 10 + (p[d] - '0');
      if (!b64_decode(p + i, sp - i, &tok)) {
        st = bm_status_make(BM_ERR_CORRUPT, "%s: line %ld: bad base64 token", t->name, line);
        goto done;
      }
      if (tt.set[r]) {
        st = bm_status_make(BM_ERR_CORRUPT, "%s: line %ld: rank %ld appears twice", t->name, line, r);
        goto done;
      }
      if (!bm_tok_table_set(&tt, (int32_t)r, tok.v, tok.n)) goto oom;
    }
    i = e + 1;
  }
  for (int i = 0; i < LLAMA3_N_SPECIAL; i++) {
    char name[64];
    if (i < (int)(sizeof LLAMA3_SPECIALS / sizeof *LLAMA3_SPECIALS)) snprintf(name, sizeof name, "%s", LLAMA3_SPECIALS[i]);
    else snprintf(name, sizeof name, "<|reserved_special_token_%d|>", i - 12 + 2);
    if (!bm_tok_table_set(&tt, n_base + i, name, strlen(name))) goto oom;
    t->type[n_base + i] = BM_TT_CONTROL;
  }
  for (int32_t id = 0; id < n_base; id++)
    if (!tt.set[id]) t->type[id] = BM_TT_UNUSED;
  if ((st = bm_tok_table_pack(t, &tt))) goto done;
  if ((st = bm_tok_build_vocab_map(t))) goto done;
  for (int i = 0; i < 256; i++) {
    char c = (char)i;
    t->byte_id[i] = bm_tok_map_find(t, &c, 1);
  }
  t->bos = n_base;
  t->eos = n_base + 1;
  goto done;
oom:
  st = bm_status_make(BM_ERR_OUT_OF_MEMORY, "%s: loading", t->name);
done:
  bm_tok_table_free(&tt);
  free(tok.v);
  return st;
}
