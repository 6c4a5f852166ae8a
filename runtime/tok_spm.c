/* tok_spm.c - SentencePiece: a minimal protobuf reader for .model files, the
 * normalizer (precompiled charsmap double-array trie, dummy prefix, ▁
 * escaping, extra-whitespace removal), BPE with byte fallback and Unigram
 * (Viterbi), as sentencepiece 0.1.9x does them. */
#include <float.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"
#include "unicode.h"

#define SPACE_SYMBOL "\xE2\x96\x81" /* U+2581 ▁ */

/* ------------------------------------------------------------------ protobuf */

typedef struct pb {
  const uint8_t *p, *end;
} pb;

static bool pb_varint(pb *r, uint64_t *v) {
  *v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (r->p >= r->end) return false;
    uint8_t b = *r->p++;
    *v |= (uint64_t)(b & 0x7F) << shift;
    if (!(b & 0x80)) return true;
  }
  return false;
}

/* Reads one field: varint/fixed values in *val, length-delimited in data/len. */
static bool pb_field(pb *r, uint32_t *field, uint32_t *wire, uint64_t *val, pb *sub) {
  uint64_t key;
  if (!pb_varint(r, &key) || key >> 32) return false;
  *field = (uint32_t)(key >> 3);
  *wire = (uint32_t)(key & 7);
  switch (*wire) {
  case 0: return pb_varint(r, val);
  case 1:
    if (r->end - r->p < 8) return false;
    memcpy(val, r->p, 8);
    r->p += 8;
    return true;
  case 5: {
    if (r->end - r->p < 4) return false;
    uint32_t v;
    memcpy(&v, r->p, 4);
    *val = v;
    r->p += 4;
    return true;
  }
  case 2: {
    uint64_t len;
    if (!pb_varint(r, &len) || len > (uint64_t)(r->end - r->p)) return false;
    sub->p = r->p;
    sub->end = r->p + len;
    r->p += len;
    return true;
  }
  default: return false;
  }
}

#define CORRUPT(...) bm_status_make(BM_ERR_CORRUPT, __VA_ARGS__)

static int hex_digit(char c) {
  return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

bm_status bm_tok_load_spm(bm_tokenizer *t, const uint8_t *data, size_t size) {
  pb r = {data, data + size}, sub;
  uint32_t field, wire;
  uint64_t val;
  int32_t n_pieces = 0;
  pb trainer = {0}, normalizer = {0};
  bool have_trainer = false, have_norm = false;
  while (r.p < r.end) {
    if (!pb_field(&r, &field, &wire, &val, &sub))
      return CORRUPT("%s: malformed protobuf at offset %zu (truncated or not a SentencePiece model)", t->name,
                     (size_t)(r.p - data));
    if (field == 1 && wire == 2) {
      if (++n_pieces > (1 << 24)) return CORRUPT("%s: too many pieces", t->name);
    } else if (field == 2 && wire == 2) {
      trainer = sub;
      have_trainer = true;
    } else if (field == 3 && wire == 2) {
      normalizer = sub;
      have_norm = true;
    }
  }
  if (n_pieces == 0) return CORRUPT("%s: no pieces (not a SentencePiece model)", t->name);
  bm_status st = bm_tok_alloc_vocab(t, n_pieces);
  if (st) return st;
  bm_tok_table tt;
  if (!bm_tok_table_init(&tt, n_pieces)) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "%s: pieces", t->name);
  /* pieces */
  r = (pb){data, data + size};
  int32_t id = 0;
  while (r.p < r.end) {
    pb_field(&r, &field, &wire, &val, &sub); /* validated above */
    if (!(field == 1 && wire == 2)) continue;
    pb pr = sub, ps;
    const uint8_t *piece = NULL;
    size_t plen = 0;
    while (pr.p < pr.end) {
      if (!pb_field(&pr, &field, &wire, &val, &ps)) {
        st = CORRUPT("%s: piece %d: malformed protobuf", t->name, id);
        goto done;
      }
      if (field == 1 && wire == 2) piece = ps.p, plen = (size_t)(ps.end - ps.p);
      else if (field == 2 && wire == 5) {
        uint32_t u = (uint32_t)val;
        float f;
        memcpy(&f, &u, 4);
        t->score[id] = f;
      } else if (field == 3 && wire == 0) {
        if (val < 1 || val > 6) {
          st = CORRUPT("%s: piece %d: bad type %llu", t->name, id, (unsigned long long)val);
          goto done;
        }
        t->type[id] = (uint8_t)val;
      }
    }
    if (!piece || !plen) {
      st = CORRUPT("%s: piece %d is empty", t->name, id);
      goto done;
    }
    if (!bm_tok_table_set(&tt, id, piece, plen)) {
      st = bm_status_make(BM_ERR_OUT_OF_MEMORY, "%s: pieces", t->name);
      goto done;
    }
    id++;
  }
  if ((st = bm_tok_table_pack(t, &tt))) goto done;
  /* trainer spec */
  int model_type = 1;
  int64_t ids[4] = {0, 1, 2, -1}; /* unk, bos, eos, pad */
  snprintf(t->unk_surface, sizeof t->unk_surface, " \xE2\x81\x87 ");
  while (have_trainer && trainer.p < trainer.end) {
    if (!pb_field(&trainer, &field, &wire, &val, &sub)) {
      st = CORRUPT("%s: trainer_spec: malformed protobuf", t->name);
      goto done;
    }
    if (field == 3 && wire == 0) model_type = (int)val;
    else if (field == 35 && wire == 0) t->byte_fallback = val != 0;
    else if (field >= 40 && field <= 43 && wire == 0) ids[field - 40] = (int32_t)(uint32_t)val;
    else if (field == 44 && wire == 2) {
      size_t n = (size_t)(sub.end - sub.p);
      if (n >= sizeof t->unk_surface) n = sizeof t->unk_surface - 1;
      memcpy(t->unk_surface, sub.p, n);
      t->unk_surface[n] = 0;
    }
  }
  if (model_type == 1) t->model = BM_TOK_MODEL_SPM_UNIGRAM;
  else if (model_type == 2) t->model = BM_TOK_MODEL_SPM_BPE;
  else {
    st = bm_status_make(BM_ERR_UNSUPPORTED, "%s: SentencePiece model type %d (only unigram=1 and bpe=2)", t->name, model_type);
    goto done;
  }
  for (int i = 0; i < 4; i++)
    if (ids[i] < -1 || ids[i] >= t->n_vocab) {
      st = CORRUPT("%s: trainer_spec special id %lld out of range (vocab %d)", t->name, (long long)ids[i], t->n_vocab);
      goto done;
    }
  if (ids[0] < 0) {
    st = CORRUPT("%s: trainer_spec has no unk_id (SentencePiece requires one)", t->name);
    goto done;
  }
  t->unk = (int32_t)ids[0];
  t->bos = (int32_t)ids[1];
  t->eos = (int32_t)ids[2];
  t->pad = (int32_t)ids[3];
  /* normalizer spec */
  t->add_dummy_prefix = t->remove_extra_ws = t->escape_ws = true;
  while (have_norm && normalizer.p < normalizer.end) {
    if (!pb_field(&normalizer, &field, &wire, &val, &sub)) {
      st = CORRUPT("%s: normalizer_spec: malformed protobuf", t->name);
      goto done;
    }
    if (field == 3 && wire == 0) t->add_dummy_prefix = val != 0;
    else if (field == 4 && wire == 0) t->remove_extra_ws = val != 0;
    else if (field == 5 && wire == 0) t->escape_ws = val != 0;
    else if (field == 2 && wire == 2 && sub.end > sub.p) {
      size_t n = (size_t)(sub.end - sub.p);
      uint32_t trie_size;
      if (n < 4 || (memcpy(&trie_size, sub.p, 4), trie_size % 4) || trie_size > n - 4) {
        st = CORRUPT("%s: precompiled_charsmap: bad trie size", t->name);
        goto done;
      }
      free(t->charsmap);
      t->charsmap = malloc(n);
      if (!t->charsmap) {
        st = bm_status_make(BM_ERR_OUT_OF_MEMORY, "%s: charsmap", t->name);
        goto done;
      }
      memcpy(t->charsmap, sub.p, n);
      t->charsmap_size = n;
      t->trie = (const uint32_t *)(t->charsmap + 4);
      t->trie_units = trie_size / 4;
      t->norm_str = (const char *)t->charsmap + 4 + trie_size;
      t->norm_size = n - 4 - trie_size;
    }
  }
  /* types, byte pieces, scores range, longest piece */
  for (int i = 0; i < 256; i++) t->byte_id[i] = t->byte_id_w[i] = -1;
  t->min_score = FLT_MAX;
  t->max_score = FLT_MIN;
  for (int32_t i = 0; i < t->n_vocab; i++) {
    const char *s = bm_tok_str(t, i);
    size_t n = bm_tok_len(t, i);
    if (t->type[i] == BM_TT_BYTE) {
      /* exactly "<0xNN>" (sscanf's %X would also take "-1" or " 1") */
      int hi = n == 6 ? hex_digit(s[3]) : -1, lo = n == 6 ? hex_digit(s[4]) : -1;
      if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>' || hi < 0 || lo < 0) {
        st = CORRUPT("%s: byte piece %d is not <0xNN>", t->name, i);
        goto done;
      }
      t->byte_id[hi * 16 + lo] = i;
    }
    if (t->type[i] == BM_TT_NORMAL) {
      if (t->score[i] < t->min_score) t->min_score = t->score[i];
      if (t->score[i] > t->max_score) t->max_score = t->score[i];
    }
    if ((t->type[i] == BM_TT_NORMAL || t->type[i] == BM_TT_USER || t->type[i] == BM_TT_UNUSED) &&
        (int32_t)n > t->max_piece_len)
      t->max_piece_len = (int32_t)n;
  }
  if (t->unk >= 0) t->type[t->unk] = BM_TT_UNKNOWN;
  if ((st = bm_tok_build_vocab_map(t))) goto done;
  st = bm_tok_build_match(t, true);
done:
  bm_tok_table_free(&tt);
  return st;
}

/* ------------------------------------------------------------------ normalizer */

static uint32_t trie_unit(const bm_tokenizer *t, uint32_t i) {
  uint32_t u;
  memcpy(&u, (const uint8_t *)t->trie + 4 * (size_t)i, 4);
  return u;
}

/* Longest charsmap rule matching s[0..n): returns its length and sets *rep (NUL-terminated). */
static size_t charsmap_match(const bm_tokenizer *t, const uint8_t *s, size_t n, const char **rep) {
  if (!t->trie_units) return 0;
  uint32_t u = trie_unit(t, 0);
  uint32_t node = (u >> 10) << ((u & (1u << 9)) >> 6);
  size_t best = 0;
  for (size_t i = 0; i < n; i++) {
    node ^= s[i];
    if (node >= t->trie_units) break;
    u = trie_unit(t, node);
    if ((u & ((1u << 31) | 0xFF)) != s[i]) break;
    node ^= (u >> 10) << ((u & (1u << 9)) >> 6);
    if (node >= t->trie_units) break;
    if ((u >> 8) & 1) {
      uint32_t v = trie_unit(t, node) & 0x7FFFFFFFu;
      if (v < t->norm_size && memchr(t->norm_str + v, 0, t->norm_size - v)) {
        best = i + 1;
        *rep = t->norm_str + v;
      }
    }
  }
  return best;
}

/* One normalization step at s[0..n): the output is rep[0..rep_len); returns the input consumed. */
static size_t normalize_prefix(const bm_tokenizer *t, const char *s, size_t n, const char **rep, size_t *rep_len) {
  size_t m;
  if (t->n_user && bm_tok_match_at(t, true, s, n, &m) >= 0) {
    *rep = s;
    *rep_len = m;
    return m;
  }
  const char *r;
  size_t len = charsmap_match(t, (const uint8_t *)s, n, &r);
  if (len) {
    *rep = r;
    *rep_len = strlen(r);
    return len;
  }
  len = bm_utf8_valid_len((const uint8_t *)s, n);
  if (!len) {
    *rep = "\xEF\xBF\xBD";
    *rep_len = 3;
    return 1;
  }
  *rep = s;
  *rep_len = len;
  return len;
}

static bool normalize(const bm_tokenizer *t, const char *s, size_t n, bm_tok_buf *out) {
  out->n = 0;
  size_t i = 0;
  const char *rep;
  size_t rl;
  if (t->remove_extra_ws)
    while (i < n) {
      size_t c = normalize_prefix(t, s + i, n - i, &rep, &rl);
      if (!(rl == 1 && rep[0] == ' ')) break;
      i += c;
    }
  if (i == n) return true;
  if (t->add_dummy_prefix && !bm_tok_buf_append(out, t->escape_ws ? SPACE_SYMBOL : " ", t->escape_ws ? 3 : 1))
    return false;
  bool prev_space = t->remove_extra_ws;
  while (i < n) {
    size_t c = normalize_prefix(t, s + i, n - i, &rep, &rl);
    if (prev_space && t->remove_extra_ws)
      while (rl && rep[0] == ' ') rep++, rl--;
    if (rl) {
      for (size_t k = 0; k < rl; k++) {
        bool ok = t->escape_ws && rep[k] == ' ' ? bm_tok_buf_append(out, SPACE_SYMBOL, 3) : bm_tok_buf_append(out, rep + k, 1);
        if (!ok) return false;
      }
      prev_space = rep[rl - 1] == ' ';
    }
    i += c;
    if (!t->remove_extra_ws) prev_space = false;
  }
  if (t->remove_extra_ws) {
    const char *sp = t->escape_ws ? SPACE_SYMBOL : " ";
    size_t sl = strlen(sp);
    while (out->n >= sl && !memcmp(out->v + out->n - sl, sp, sl)) out->n -= sl;
  }
  return true;
}

/* ------------------------------------------------------------------ encode */

static size_t one_char_len(const char *s, size_t n) {
  static const uint8_t len[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  size_t l = len[(uint8_t)s[0] >> 4];
  return l < n ? l : n;
}

static bool eligible(const bm_tokenizer *t, int32_t id) {
  uint8_t ty = t->type[id];
  return ty == BM_TT_NORMAL || ty == BM_TT_USER || ty == BM_TT_UNUSED;
}

/* Emits one piece of the result: its id, or its bytes / <unk> when unknown. */
static bool emit(const bm_tokenizer *t, const char *w, size_t n, int32_t id, bm_tok_ids *out) {
  if (id >= 0) return bm_tok_ids_push(out, id);
  if (t->byte_fallback) {
    for (size_t i = 0; i < n; i++) {
      int32_t b = t->byte_id[(uint8_t)w[i]];
      if (!bm_tok_ids_push(out, b >= 0 ? b : t->unk)) return false;
    }
    return true;
  }
  return bm_tok_ids_push(out, t->unk);
}

static bm_status encode_bpe(const bm_tokenizer *t, const char *w, size_t n, bm_tok_ids *out) {
  bm_tok_sym *s = malloc(n * sizeof *s);
  if (!s) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "encode");
  int32_t ns = 0;
  for (size_t i = 0; i < n;) {
    size_t m;
    bool frozen = t->n_user && bm_tok_match_at(t, true, w + i, n - i, &m) >= 0;
    if (!frozen) m = one_char_len(w + i, n - i);
    int32_t id = bm_tok_map_find(t, w + i, m);
    if (id >= 0 && !eligible(t, id)) id = -1;
    s[ns] = (bm_tok_sym){id, (uint32_t)i, (uint32_t)m, ns - 1, -1, frozen};
    if (ns) s[ns - 1].next = ns;
    ns++;
    i += m;
  }
  bool ok = bm_tok_bpe(t, w, s, ns);
  for (int32_t i = 0; ok && ns && i >= 0; i = s[i].next) {
    int32_t id = s[i].id;
    if (id < 0 || !eligible(t, id)) id = -1;
    ok = emit(t, w + s[i].start, s[i].len, id, out);
  }
  free(s);
  return ok ? NULL : bm_status_make(BM_ERR_OUT_OF_MEMORY, "encode");
}

typedef struct vnode {
  float score;
  int32_t start; /* -1: unreached */
  int32_t id;
} vnode;

static bm_status encode_unigram(const bm_tokenizer *t, const char *w, size_t n, bm_tok_ids *out) {
  vnode *best = malloc((n + 1) * sizeof *best);
  int32_t *path = malloc((n + 1) * sizeof *path);
  if (!best || !path) {
    free(best);
    free(path);
    return bm_status_make(BM_ERR_OUT_OF_MEMORY, "encode");
  }
  for (size_t i = 0; i <= n; i++) best[i] = (vnode){0, -1, -1};
  const float unk_score = t->min_score - 10.0f;
  for (size_t i = 0; i < n;) {
    float base = best[i].score;
    size_t mblen = one_char_len(w + i, n - i);
    bool single = false;
    size_t maxl = (size_t)t->max_piece_len < n - i ? (size_t)t->max_piece_len : n - i;
    for (size_t l = 1; l <= maxl; l++) {
      int32_t id = bm_tok_map_find(t, w + i, l);
      if (id < 0 || (t->type[id] != BM_TT_NORMAL && t->type[id] != BM_TT_USER)) continue;
      float sc = t->type[id] == BM_TT_USER ? (float)l * t->max_score - 0.1f : t->score[id];
      float cand = sc + base;
      vnode *tn = &best[i + l];
      if (tn->start < 0 || cand > tn->score) *tn = (vnode){cand, (int32_t)i, id};
      if (l == mblen) single = true;
    }
    if (!single) {
      vnode *tn = &best[i + mblen];
      float cand = unk_score + base;
      if (tn->start < 0 || cand > tn->score) *tn = (vnode){cand, (int32_t)i, t->unk};
    }
    i += mblen;
  }
  /* backtrack */
  size_t np = 0;
  for (int32_t e = (int32_t)n; e > 0; e = best[e].start) path[np++] = e;
  bool ok = true;
  int32_t run_start = -1, run_end = -1; /* a run of unknown pieces becomes one */
  for (size_t k = np; k-- > 0 && ok;) {
    int32_t e = path[k], s = best[e].start, id = best[e].id;
    if (id == t->unk) {
      if (run_start < 0) run_start = s;
      run_end = e;
      continue;
    }
    if (run_start >= 0) {
      ok = emit(t, w + run_start, (size_t)(run_end - run_start), -1, out);
      run_start = -1;
    }
    if (ok) ok = bm_tok_ids_push(out, id);
  }
  if (ok && run_start >= 0) ok = emit(t, w + run_start, (size_t)(run_end - run_start), -1, out);
  free(best);
  free(path);
  return ok ? NULL : bm_status_make(BM_ERR_OUT_OF_MEMORY, "encode");
}

bm_status bm_tok_spm_encode(const bm_tokenizer *t, const char *s, size_t n, bm_tok_ids *out) {
  if (n > (1u << 30)) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "encode: text of %zu bytes is too long", n);
  bm_tok_buf w = {0};
  if (!normalize(t, s, n, &w)) {
    free(w.v);
    return bm_status_make(BM_ERR_OUT_OF_MEMORY, "encode");
  }
  bm_status st = NULL;
  size_t first = out->n;
  if (w.n) st = t->model == BM_TOK_MODEL_SPM_UNIGRAM ? encode_unigram(t, w.v, w.n, out) : encode_bpe(t, w.v, w.n, out);
  free(w.v);
  /* emit() pushes t->unk for text no piece or byte piece covers: without an
   * <unk> (a malformed vocabulary) that is -1, which must not reach a model */
  for (size_t i = first; !st && i < out->n; i++)
    if (out->v[i] < 0)
      st = bm_status_make(BM_ERR_UNSUPPORTED, "%s: text has no token (no byte piece and no <unk>)", t->name);
  return st;
}
