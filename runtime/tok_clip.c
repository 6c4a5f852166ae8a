/* tok_clip.c - the CLIP tokenizer (openai simple_tokenizer.py): loading from
 * bpe_simple_vocab_16e6.txt(.gz) or vocab.json + merges.txt, text cleaning
 * (the feasible part of ftfy.fix_text, html unescape, white-space cleaning,
 * lower-casing), the CLIP pre-tokenizer regex as a matcher, and BPE with
 * "</w>" end-of-word symbols. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <zlib.h>

#include "tok_internal.h"
#include "unicode.h"

#define CLIP_N_MERGES (49152 - 256 - 2) /* simple_tokenizer.py: merges[1:49152-256-2+1] */
#define MAX_INFLATED (64u << 20)

/* ------------------------------------------------------------------ loading */

static bm_status inflate_gz(const char *name, const uint8_t *data, size_t size, bm_tok_buf *out) {
  z_stream z;
  memset(&z, 0, sizeof z);
  if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "%s: zlib init", name);
  z.next_in = (Bytef *)data;
  z.avail_in = size > UINT32_MAX ? UINT32_MAX : (uInt)size;
  char buf[65536];
  int rc;
  do {
    z.next_out = (Bytef *)buf;
    z.avail_out = sizeof buf;
    rc = inflate(&z, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END) break;
    size_t got = sizeof buf - z.avail_out;
    if (out->n + got > MAX_INFLATED || !bm_tok_buf_append(out, buf, got)) {
      inflateEnd(&z);
      return bm_status_make(BM_ERR_CORRUPT, "%s: inflated data larger than %u bytes", name, MAX_INFLATED);
    }
    if (rc == Z_OK && z.avail_in == 0 && z.avail_out != 0) {
      rc = Z_BUF_ERROR; /* input ended before the stream did */
      break;
    }
  } while (rc != Z_STREAM_END);
  inflateEnd(&z);
  if (rc != Z_STREAM_END) return bm_status_make(BM_ERR_CORRUPT, "%s: bad or truncated gzip data (zlib %d)", name, rc);
  return NULL;
}

/* Converts a CLIP vocabulary string (byte-mapped, optional "</w>") to raw bytes + "</w>". */
static bool clip_raw(const char *s, size_t n, bm_tok_buf *out) {
  out->n = 0;
  bool eow = n >= 4 && !memcmp(s + n - 4, "</w>", 4);
  if (!bm_tok_unmap_bytes(s, eow ? n - 4 : n, out)) return false;
  return !eow || bm_tok_buf_append(out, "</w>", 4);
}

/* Finishes a CLIP tokenizer whose texts are set: byte symbols, specials. */
static bm_status clip_finish(bm_tokenizer *t) {
  bm_status st = bm_tok_build_vocab_map(t);
  if (st) return st;
  for (int b = 0; b < 256; b++) {
    char w[5] = {(char)b, '<', '/', 'w', '>'};
    t->byte_id[b] = bm_tok_map_find(t, w, 1);
    t->byte_id_w[b] = bm_tok_map_find(t, w, 5);
    if (t->byte_id[b] < 0 || t->byte_id_w[b] < 0)
      return bm_status_make(BM_ERR_CORRUPT, "%s: byte 0x%02X has no symbol in the vocabulary", t->name, b);
  }
  t->bos = bm_tok_map_find(t, "<|startoftext|>", 15);
  t->eos = bm_tok_map_find(t, "<|endoftext|>", 13);
  if (t->bos < 0 || t->eos < 0) return bm_status_make(BM_ERR_CORRUPT, "%s: no <|startoftext|> / <|endoftext|>", t->name);
  t->type[t->bos] = t->type[t->eos] = BM_TT_CONTROL;
  t->model = BM_TOK_MODEL_CLIP;
  t->use_merges = true;
  return bm_tok_build_match(t, false);
}

/* Adds merge `rank` "a b" (a, b raw) -> (a+b); all three must be in the vocabulary. */
static bool add_merge(bm_tokenizer *t, bm_tok_buf *a, bm_tok_buf *b, int32_t rank) {
  int32_t ia = bm_tok_map_find(t, a->v, a->n), ib = bm_tok_map_find(t, b->v, b->n);
  if (ia < 0 || ib < 0 || !bm_tok_buf_append(a, b->v, b->n)) return false;
  int32_t im = bm_tok_map_find(t, a->v, a->n);
  if (im < 0) return false;
  bm_tok_pairmap_put(&t->merges, ia, ib, rank, im);
  return true;
}

/* Splits line [s, e) at its single space. */
static bool split_merge(const char *s, const char *e, bm_tok_buf *a, bm_tok_buf *b) {
  const char *sp = memchr(s, ' ', (size_t)(e - s));
  if (!sp || sp == s || sp + 1 >= e || memchr(sp + 1, ' ', (size_t)(e - sp - 1))) return false;
  return clip_raw(s, (size_t)(sp - s), a) && clip_raw(sp + 1, (size_t)(e - sp - 1), b);
}

static const char *line_end(const char *p, const char *end) {
  const char *e = memchr(p, '\n', (size_t)(end - p));
  return e ? e : end;
}

bm_status bm_tok_load_clip_merges(bm_tokenizer *t, const uint8_t *data, size_t size) {
  bm_tok_buf text = {0}, a = {0}, b = {0};
  bm_tok_table tt = {0};
  bm_status st = NULL;
  if (size >= 2 && data[0] == 0x1f && data[1] == 0x8b) {
    if ((st = inflate_gz(t->name, data, size, &text))) goto done;
  } else if (!bm_tok_buf_append(&text, data, size)) {
    goto oom;
  }
  /* line 0 is a header; lines 1..CLIP_N_MERGES are the merges */
  const char *p = text.v, *end = text.v + text.n;
  const char *lines[2];
  if (!text.n) {
    st = bm_status_make(BM_ERR_CORRUPT, "%s: empty merges file", t->name);
    goto done;
  }
  p = line_end(p, end) + 1;
  lines[0] = p;
  int n_vocab = 512 + CLIP_N_MERGES + 2;
  if ((st = bm_tok_alloc_vocab(t, n_vocab))) goto done;
  if (!bm_tok_table_init(&tt, n_vocab)) goto oom;
  /* ids 0..255: bytes in GPT-2 bytes_to_unicode order (printable first), then with </w> */
  int order[256], k = 0;
  for (int i = 0; i < 256; i++)
    if (bm_tok_byte_to_cp((uint8_t)i) == (uint32_t)i) order[k++] = i;
  for (int i = 0; i < 256; i++)
    if (bm_tok_byte_to_cp((uint8_t)i) != (uint32_t)i) order[k++] = i;
  for (int i = 0; i < 256; i++) {
    char w[5] = {(char)order[i], '<', '/', 'w', '>'};
    if (!bm_tok_table_set(&tt, i, w, 1) || !bm_tok_table_set(&tt, 256 + i, w, 5)) goto oom;
  }
  p = lines[0];
  for (int r = 0; r < CLIP_N_MERGES; r++) {
    if (p >= end) {
      st = bm_status_make(BM_ERR_CORRUPT, "%s: %d merges, expected at least %d", t->name, r, CLIP_N_MERGES);
      goto done;
    }
    const char *e = line_end(p, end);
    const char *le = e > p && e[-1] == '\r' ? e - 1 : e;
    if (!split_merge(p, le, &a, &b)) {
      st = bm_status_make(BM_ERR_CORRUPT, "%s: merge line %d is not 'a b' over the byte alphabet", t->name, r + 2);
      goto done;
    }
    if (!bm_tok_buf_append(&a, b.v, b.n) || !bm_tok_table_set(&tt, 512 + r, a.v, a.n)) goto oom;
    p = e + 1;
  }
  if (!bm_tok_table_set(&tt, n_vocab - 2, "<|startoftext|>", 15) || !bm_tok_table_set(&tt, n_vocab - 1, "<|endoftext|>", 13))
    goto oom;
  if ((st = bm_tok_table_pack(t, &tt))) goto done;
  if ((st = bm_tok_build_vocab_map(t))) goto done;
  if ((st = bm_tok_pairmap_init(&t->merges, CLIP_N_MERGES))) goto done;
  p = lines[0];
  for (int r = 0; r < CLIP_N_MERGES; r++) {
    const char *e = line_end(p, end);
    const char *le = e > p && e[-1] == '\r' ? e - 1 : e;
    if (!split_merge(p, le, &a, &b) || !add_merge(t, &a, &b, r)) {
      st = bm_status_make(BM_ERR_CORRUPT, "%s: merge line %d names unknown symbols", t->name, r + 2);
      goto done;
    }
    p = e + 1;
  }
  st = clip_finish(t);
  goto done;
oom:
  st = bm_status_make(BM_ERR_OUT_OF_MEMORY, "%s: loading", t->name);
done:
  free(text.v);
  free(a.v);
  free(b.v);
  bm_tok_table_free(&tt);
  return st;
}

bm_status bm_tok_load_clip_vocab(bm_tokenizer *t, const char *vocab, size_t vsize, const char *merges, size_t msize) {
  bm_status st = NULL;
  bm_tok_buf a = {0}, b = {0};
  bm_tok_table tt = {0};
  cJSON *root = cJSON_ParseWithLength(vocab, vsize);
  if (!cJSON_IsObject(root)) {
    st = bm_status_make(BM_ERR_CORRUPT, "%s: vocab.json is not a JSON object", t->name);
    goto done;
  }
  double maxid = -1;
  const cJSON *e;
  cJSON_ArrayForEach(e, root) {
    if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble >= (1 << 24) || e->valuedouble != (int32_t)e->valuedouble) {
      st = bm_status_make(BM_ERR_CORRUPT, "%s: vocab.json entry '%.64s' has a bad id", t->name, e->string ? e->string : "");
      goto done;
    }
    if (e->valuedouble > maxid) maxid = e->valuedouble;
  }
  if ((st = bm_tok_check_dense(t, (int64_t)maxid + 1, cJSON_GetArraySize(root), "vocab.json"))) goto done;
  if ((st = bm_tok_alloc_vocab(t, (int32_t)maxid + 1))) goto done;
  if (!bm_tok_table_init(&tt, t->n_vocab)) goto oom;
  cJSON_ArrayForEach(e, root) {
    int32_t id = (int32_t)e->valuedouble;
    if (tt.set[id] || !e->string || !clip_raw(e->string, strlen(e->string), &a)) {
      st = bm_status_make(BM_ERR_CORRUPT, "%s: vocab.json entry %d ('%.64s') is duplicate or not byte-mapped", t->name,
                          id, e->string ? e->string : "");
      goto done;
    }
    if (!bm_tok_table_set(&tt, id, a.v, a.n)) goto oom;
  }
  for (int32_t i = 0; i < t->n_vocab; i++)
    if (!tt.set[i]) t->type[i] = BM_TT_UNUSED;
  if ((st = bm_tok_table_pack(t, &tt))) goto done;
  if ((st = bm_tok_build_vocab_map(t))) goto done;
  const char *p = merges, *end = merges + msize;
  size_t n_lines = 0;
  for (const char *q = p; q < end; q = line_end(q, end) + 1) n_lines++;
  if ((st = bm_tok_pairmap_init(&t->merges, n_lines))) goto done;
  int32_t rank = 0, line = 0;
  while (p < end) {
    const char *le = line_end(p, end), *next = le + 1;
    line++;
    if (le > p && le[-1] == '\r') le--;
    if (le > p && !(line == 1 && *p == '#')) {
      if (!split_merge(p, le, &a, &b) || !add_merge(t, &a, &b, rank)) {
        st = bm_status_make(BM_ERR_CORRUPT, "%s: merges.txt line %d is malformed or names unknown symbols", t->name, line);
        goto done;
      }
      rank++;
    }
    p = next;
  }
  st = clip_finish(t);
  goto done;
oom:
  st = bm_status_make(BM_ERR_OUT_OF_MEMORY, "%s: loading", t->name);
done:
  cJSON_Delete(root);
  free(a.v);
  free(b.v);
  bm_tok_table_free(&tt);
  return st;
}

/* ------------------------------------------------------------------ text cleaning */

/* Windows-1252 meanings of C1 controls 0x80..0x9F (ftfy fix_c1_controls); 0 = undefined. */
static const uint16_t CP1252[32] = {0x20AC, 0, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160,
                                    0x2039, 0x0152, 0, 0x017D, 0, 0, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013,
                                    0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0, 0x017E, 0x0178};

/* ftfy remove_control_chars */
static bool ftfy_control(uint32_t c) {
  return c <= 0x08 || c == 0x0B || (c >= 0x0E && c <= 0x1F) || c == 0x7F || (c >= 0x206A && c <= 0x206F) ||
         c == 0xFEFF || (c >= 0xFFF9 && c <= 0xFFFC) || (c >= 0x1D173 && c <= 0x1D17A) || (c >= 0xE0000 && c <= 0xE007F);
}

/* ftfy fix_latin_ligatures; returns the replacement (NULL if none). */
static const char *ligature(uint32_t c) {
  switch (c) {
  case 0x0132: return "IJ";
  case 0x0133: return "ij";
  case 0x0149: return "\xCA\xBCn";
  case 0x01C4: return "D\xC5\xBD";
  case 0x01C5: return "D\xC5\xBE";
  case 0x01C6: return "d\xC5\xBE";
  case 0x01C7: return "LJ";
  case 0x01C8: return "Lj";
  case 0x01C9: return "lj";
  case 0x01CA: return "NJ";
  case 0x01CB: return "Nj";
  case 0x01CC: return "nj";
  case 0x01F1: return "DZ";
  case 0x01F2: return "Dz";
  case 0x01F3: return "dz";
  case 0xFB00: return "ff";
  case 0xFB01: return "fi";
  case 0xFB02: return "fl";
  case 0xFB03: return "ffi";
  case 0xFB04: return "ffl";
  case 0xFB05: return "\xC5\xBFt";
  case 0xFB06: return "st";
  default: return NULL;
  }
}

static bool push_utf8(bm_cpbuf *b, const char *s) {
  size_t n = strlen(s);
  for (size_t i = 0; i < n;) {
    uint32_t c;
    i += bm_utf8_decode((const uint8_t *)s + i, n - i, &c);
    if (!bm_cpbuf_push(b, c)) return false;
  }
  return true;
}

/* The feasible subset of ftfy.fix_text: C1 controls as cp1252, Latin
 * ligatures, full/half width, curly quotes, line breaks, control
 * characters, NFC. (Not done: mojibake repair, terminal escapes.) */
static bool ftfy_lite(bm_cpbuf *in) {
  bm_cpbuf out = {0};
  for (size_t i = 0; i < in->n; i++) {
    uint32_t c = in->v[i];
    if (c >= 0x80 && c <= 0x9F && CP1252[c - 0x80]) c = CP1252[c - 0x80];
    const char *lig = ligature(c);
    if (lig) {
      if (!push_utf8(&out, lig)) goto oom;
      continue;
    }
    c = bm_uni_width_fold(c);
    if (c == 0x02BC || (c >= 0x2018 && c <= 0x201B)) c = '\'';
    else if (c >= 0x201C && c <= 0x201F) c = '"';
    if (c == '\r' && i + 1 < in->n && in->v[i + 1] == '\n') continue;
    if (c == '\r' || c == 0x2028 || c == 0x2029 || c == 0x85) c = '\n';
    if (ftfy_control(c)) continue;
    if (!bm_cpbuf_push(&out, c)) goto oom;
  }
  if (!bm_uni_nfc(&out)) goto oom;
  bm_cpbuf_free(in);
  *in = out;
  return true;
oom:
  bm_cpbuf_free(&out);
  return false;
}

static const struct {
  const char *name;
  uint32_t cp;
} ENTITIES[] = {{"amp", '&'},     {"lt", '<'},      {"gt", '>'},      {"quot", '"'},     {"apos", '\''},
                {"nbsp", 0xA0},   {"copy", 0xA9},   {"reg", 0xAE},    {"trade", 0x2122}, {"hellip", 0x2026},
                {"mdash", 0x2014}, {"ndash", 0x2013}, {"lsquo", 0x2018}, {"rsquo", 0x2019}, {"ldquo", 0x201C},
                {"rdquo", 0x201D}, {"deg", 0xB0},    {"times", 0xD7},  {"eacute", 0xE9}, {"euro", 0x20AC}};

/* html.unescape for numeric references and common named entities. */
static bool html_unescape(bm_cpbuf *in) {
  bm_cpbuf out = {0};
  for (size_t i = 0; i < in->n; i++) {
    uint32_t c = in->v[i];
    if (c == '&' && i + 1 < in->n) {
      size_t j = i + 1;
      if (in->v[j] == '#') {
        j++;
        bool hex = j < in->n && (in->v[j] == 'x' || in->v[j] == 'X');
        if (hex) j++;
        uint32_t v = 0;
        size_t d0 = j;
        while (j < in->n && j - d0 < 8) {
          uint32_t ch = in->v[j];
          int dv = ch >= '0' && ch <= '9' ? (int)(ch - '0')
                   : hex && (ch | 0x20) >= 'a' && (ch | 0x20) <= 'f' ? (int)((ch | 0x20) - 'a' + 10) : -1;
          if (dv < 0) break;
          v = v * (hex ? 16 : 10) + (uint32_t)dv;
          j++;
        }
        if (j > d0) {
          if (j < in->n && in->v[j] == ';') j++;
          if (v >= 0x80 && v <= 0x9F && CP1252[v - 0x80]) v = CP1252[v - 0x80];
          if (v == 0 || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) v = 0xFFFD;
          if (!bm_cpbuf_push(&out, v)) goto oom;
          i = j - 1;
          continue;
        }
      } else {
        bool done = false;
        for (size_t e = 0; e < sizeof ENTITIES / sizeof *ENTITIES && !done; e++) {
          size_t n = strlen(ENTITIES[e].name), k = 0;
          while (k < n && i + 1 + k < in->n && in->v[i + 1 + k] == (uint8_t)ENTITIES[e].name[k]) k++;
          if (k < n) continue;
          bool semi = i + 1 + n < in->n && in->v[i + 1 + n] == ';';
          if (!semi && e >= 4) continue; /* only &amp &lt &gt &quot work without ';' */
          if (!bm_cpbuf_push(&out, ENTITIES[e].cp)) goto oom;
          i += n + (semi ? 1 : 0);
          done = true;
        }
        if (done) continue;
      }
    }
    if (!bm_cpbuf_push(&out, c)) goto oom;
  }
  bm_cpbuf_free(in);
  *in = out;
  return true;
oom:
  bm_cpbuf_free(&out);
  return false;
}

static bool clip_space(uint32_t c) { return bm_uni_is_space(c) || (c >= 0x1C && c <= 0x1F); }

/* whitespace_clean(basic_clean(text)).lower() of simple_tokenizer.py */
static bool clip_clean(bm_cpbuf *b) {
  bool has_lt = false;
  for (size_t i = 0; i < b->n; i++) has_lt |= b->v[i] == '<';
  if (!has_lt && !html_unescape(b)) return false; /* ftfy's own unescape_html */
  if (!ftfy_lite(b) || !html_unescape(b) || !html_unescape(b)) return false;
  bm_cpbuf o = {0};
  bool space = true; /* drops leading white space */
  for (size_t i = 0; i < b->n; i++) {
    uint32_t c = b->v[i];
    if (clip_space(c)) {
      if (!space && !bm_cpbuf_push(&o, ' ')) goto oom;
      space = true;
      continue;
    }
    space = false;
    if (c == 0x130) { /* İ lowercases to i + combining dot above */
      if (!bm_cpbuf_push(&o, 'i')) goto oom;
      c = 0x307;
    } else if (c == 0x3A3) { /* final sigma */
      bool prev_letter = o.n > 0 && bm_uni_is_letter(o.v[o.n - 1]);
      bool next_letter = i + 1 < b->n && bm_uni_is_letter(b->v[i + 1]);
      c = prev_letter && !next_letter ? 0x3C2 : 0x3C3;
    } else {
      c = bm_uni_lower(c);
    }
    if (!bm_cpbuf_push(&o, c)) goto oom;
  }
  if (o.n && o.v[o.n - 1] == ' ') o.n--;
  bm_cpbuf_free(b);
  *b = o;
  return true;
oom:
  bm_cpbuf_free(&o);
  return false;
}

/* ------------------------------------------------------------------ encode */

/* One match of <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
 * at i (IGNORECASE). Returns the end, 0 if c[i] is white space (skipped). *special = the special id. */
static size_t clip_match(const bm_tokenizer *t, const uint32_t *c, size_t n, size_t i, int32_t *special) {
  static const char *const sp[2] = {"<|startoftext|>", "<|endoftext|>"};
  *special = -1;
  for (int k = 0; k < 2; k++) {
    size_t l = strlen(sp[k]), j = 0;
    while (j < l && i + j < n && bm_uni_lower(c[i + j]) == (uint8_t)sp[k][j]) j++;
    if (j == l) {
      *special = k ? t->eos : t->bos;
      return i + l;
    }
  }
  if (c[i] == '\'' && i + 1 < n) {
    uint32_t a = bm_uni_lower(c[i + 1]);
    if (a == 0x17F) a = 's';
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
    if (i + 2 < n) {
      uint32_t b = bm_uni_lower(c[i + 2]);
      if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
    }
  }
  if (bm_uni_is_letter(c[i])) {
    size_t j = i + 1;
    while (j < n && bm_uni_is_letter(c[j])) j++;
    return j;
  }
  if (bm_uni_is_number(c[i])) return i + 1;
  if (clip_space(c[i])) return 0;
  size_t j = i + 1;
  while (j < n && !clip_space(c[j]) && !bm_uni_is_letter(c[j]) && !bm_uni_is_number(c[j])) j++;
  return j;
}

static bm_status clip_word(const bm_tokenizer *t, const uint32_t *c, size_t n, bm_tok_ids *out) {
  bm_tok_buf w = {0};
  for (size_t i = 0; i < n; i++) {
    char b[4];
    if (!bm_tok_buf_append(&w, b, bm_utf8_encode(c[i], b))) goto oom;
  }
  bm_tok_sym *s = malloc(w.n * sizeof *s);
  if (!s) goto oom;
  for (size_t i = 0; i < w.n; i++) {
    uint8_t b = (uint8_t)w.v[i];
    int32_t id = i + 1 == w.n ? t->byte_id_w[b] : t->byte_id[b];
    s[i] = (bm_tok_sym){id, (uint32_t)i, 1, (int32_t)i - 1, i + 1 < w.n ? (int32_t)i + 1 : -1, false};
  }
  bool ok = bm_tok_bpe(t, w.v, s, (int32_t)w.n);
  for (int32_t i = 0; ok && i >= 0; i = s[i].next) ok = bm_tok_ids_push(out, s[i].id);
  free(s);
  free(w.v);
  return ok ? NULL : bm_status_make(BM_ERR_OUT_OF_MEMORY, "encode");
oom:
  free(w.v);
  return bm_status_make(BM_ERR_OUT_OF_MEMORY, "encode");
}

bm_status bm_tok_clip_encode(const bm_tokenizer *t, const char *s, size_t n, bm_tok_ids *out) {
  bm_cpbuf c = {0};
  bm_status st = NULL;
  for (size_t i = 0; i < n;) {
    uint32_t cp;
    i += bm_utf8_decode((const uint8_t *)s + i, n - i, &cp);
    if (!bm_cpbuf_push(&c, cp)) goto oom;
  }
  if (!clip_clean(&c)) goto oom;
  for (size_t i = 0; i < c.n && !st;) {
    int32_t special;
    size_t j = clip_match(t, c.v, c.n, i, &special);
    if (!j) {
      i++;
      continue;
    }
    if (special >= 0) {
      if (!bm_tok_ids_push(out, special)) goto oom;
    } else {
      st = clip_word(t, c.v + i, j - i, out);
    }
    i = j;
  }
  bm_cpbuf_free(&c);
  return st;
oom:
  bm_cpbuf_free(&c);
  return bm_status_make(BM_ERR_OUT_OF_MEMORY, "encode");
}
