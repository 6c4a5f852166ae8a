/* tok_internal.h - the tokenizer object shared by tokenizer.c (common parts),
 * tok_bpe.c (byte-level BPE), tok_spm.c (SentencePiece) and tok_clip.c.
 * Private to libbmrt. */
#ifndef BM_TOK_INTERNAL_H
#define BM_TOK_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

/* Token types (the SentencePiece enum, plus the HF added tokens). */
enum {
  BM_TT_NORMAL = 1,
  BM_TT_UNKNOWN = 2,
  BM_TT_CONTROL = 3, /* special: never produced from plain text */
  BM_TT_USER = 4,    /* user-defined: matched in the text, never split */
  BM_TT_UNUSED = 5,
  BM_TT_BYTE = 6,    /* <0xNN> byte-fallback piece */
  BM_TT_ADDED = 7,   /* HF added token with special = false */
};

/* Pre-tokenizers of byte-level BPE (hand-written equivalents of the regexes). */
typedef enum bm_pretok {
  BM_PRETOK_LLAMA3 = 0, /* \p{N}{1,3} */
  BM_PRETOK_QWEN,       /* \p{N} */
  BM_PRETOK_GPT2,       /* 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
} bm_pretok;

/* Open-addressing hash from a byte string (a token's text) to its id. */
typedef struct bm_tok_strmap {
  int32_t *slot; /* id or -1 */
  uint32_t mask;
} bm_tok_strmap;

/* Open-addressing hash from an id pair to (rank, merged id). */
typedef struct bm_tok_pairmap {
  uint64_t *key; /* (a << 32 | b) + 1; 0 = empty */
  int32_t *rank, *id;
  uint32_t mask;
} bm_tok_pairmap;

struct bm_tokenizer {
  bm_tok_model model;
  char name[128]; /* the source, for messages */
  int32_t n_vocab;
  /* token texts: bytes text[off[i] .. off[i+1]) */
  char *text;
  uint32_t *off;
  float *score;
  uint8_t *type;
  bm_tok_strmap vocab; /* all tokens with a text (first id wins) */
  bm_tok_pairmap merges;
  bool use_merges; /* merge by rank from `merges` (HF, CLIP); else by vocab lookup of the concatenation */
  bool rank_is_id; /* tiktoken: the merge priority of a concatenation is its id */
  bool ignore_merges;
  bool byte_fallback;
  bm_pretok pretok;
  bool nfc;
  int32_t byte_id[256];   /* byte-level: the single-byte token; SPM: <0xNN>; CLIP: the byte symbol */
  int32_t byte_id_w[256]; /* CLIP: the byte symbol with </w> */
  int32_t bos, eos, pad, unk;
  bm_chat_kind chat;
  /* added / special tokens matched in the text, bucketed by first byte */
  int32_t *added;        /* ids, sorted by first byte then by decreasing length */
  int32_t n_added;
  int32_t added_start[257];
  /* SentencePiece */
  bool add_dummy_prefix, remove_extra_ws, escape_ws, hf_prepend;
  uint8_t *charsmap;     /* precompiled charsmap blob (copied) */
  size_t charsmap_size;
  const uint32_t *trie;  /* into charsmap */
  uint32_t trie_units;
  const char *norm_str;  /* into charsmap */
  size_t norm_size;
  float min_score, max_score;
  int32_t max_piece_len; /* bytes */
  char unk_surface[32];
  int32_t *user;         /* user-defined piece ids, bucketed like `added` */
  int32_t n_user;
  int32_t user_start[257];
};

/* ------------------------------------------------------------------ helpers (tokenizer.c) */

/* A growable id vector. */
typedef struct bm_tok_ids {
  int32_t *v;
  size_t n, cap;
} bm_tok_ids;
bool bm_tok_ids_push(bm_tok_ids *ids, int32_t id);

/* A growable byte buffer. */
typedef struct bm_tok_buf {
  char *v;
  size_t n, cap;
} bm_tok_buf;
bool bm_tok_buf_append(bm_tok_buf *b, const void *p, size_t n);

static inline size_t bm_tok_len(const bm_tokenizer *t, int32_t id) { return t->off[id + 1] - t->off[id]; }
static inline const char *bm_tok_str(const bm_tokenizer *t, int32_t id) { return t->text + t->off[id]; }

/* Allocates n_vocab token slots (texts empty, type NORMAL, score 0). */
bm_status bm_tok_alloc_vocab(bm_tokenizer *t, int32_t n_vocab);
/* Refuses a vocabulary whose largest id is far beyond its number of tokens
 * (more than 2 x n_tokens + 1024 ids): every table is sized by the largest
 * id, so a 14-byte file declaring id 16 M would allocate ~200 MB and take a
 * second to load. Real vocabularies are contiguous up to a few gaps. */
bm_status bm_tok_check_dense(const bm_tokenizer *t, int64_t n_ids, int64_t n_tokens, const char *what);
/* Sets every token text from one packed buffer `text` with offsets (takes ownership of text). */
void bm_tok_set_texts(bm_tokenizer *t, char *text, uint32_t *off);
bm_status bm_tok_build_vocab_map(bm_tokenizer *t);
int32_t bm_tok_map_find(const bm_tokenizer *t, const char *s, size_t n);
bm_status bm_tok_pairmap_init(bm_tok_pairmap *m, size_t n);
/* Inserts (a, b) -> (rank, id); an existing pair keeps its first (lowest) rank. */
void bm_tok_pairmap_put(bm_tok_pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t id);
bool bm_tok_pairmap_get(const bm_tok_pairmap *m, int32_t a, int32_t b, int32_t *rank, int32_t *id);
/* Builds the added-token (or user-defined) match table from the ids with `type`. */
bm_status bm_tok_build_match(bm_tokenizer *t, bool user);
/* Longest added/user token matching text[0..n) (candidates of `table`), or -1; *mlen its length. */
int32_t bm_tok_match_at(const bm_tokenizer *t, bool user, const char *s, size_t n, size_t *mlen);

/* Collects (id -> text) while loading, then packs the texts in id order. */
typedef struct bm_tok_table {
  bm_tok_buf buf;
  uint32_t *pos, *len;
  uint8_t *set;
  int32_t n;
} bm_tok_table;
bool bm_tok_table_init(bm_tok_table *tt, int32_t n);
void bm_tok_table_free(bm_tok_table *tt);
bool bm_tok_table_set(bm_tok_table *tt, int32_t id, const void *p, size_t n);
bm_status bm_tok_table_pack(bm_tokenizer *t, bm_tok_table *tt);

/* One BPE symbol: a byte span of the word and its token id (-1 = none). */
typedef struct bm_tok_sym {
  int32_t id;
  uint32_t start, len;
  int32_t prev, next;
  bool frozen;
} bm_tok_sym;

/* Merges the symbols of `word` (text, n syms linked 0..n-1) in place with the
 * tokenizer's rule: by merge rank (use_merges), by id of the concatenation
 * (rank_is_id), or by SentencePiece score of the concatenation. Returns
 * false on out of memory. Ties go to the leftmost pair. */
bool bm_tok_bpe(const bm_tokenizer *t, const char *word, bm_tok_sym *syms, int32_t n);

/* GPT-2 byte <-> unicode map used by byte-level BPE files and CLIP. */
uint32_t bm_tok_byte_to_cp(uint8_t b);
int bm_tok_cp_to_byte(uint32_t cp); /* -1 if not in the map */
/* Converts a byte-level token string (UTF-8 of mapped code points) to raw
 * bytes, appending to out. False if a code point is not in the map. */
bool bm_tok_unmap_bytes(const char *s, size_t n, bm_tok_buf *out);

/* ------------------------------------------------------------------ per-model parts */

/* tok_bpe.c */
bm_status bm_tok_load_hf_json(bm_tokenizer *t, const char *data, size_t size);
bm_status bm_tok_load_tiktoken(bm_tokenizer *t, const char *data, size_t size);
bm_status bm_tok_bytebpe_encode(const bm_tokenizer *t, const char *s, size_t n, bm_tok_ids *out);
/* tok_spm.c */
bm_status bm_tok_load_spm(bm_tokenizer *t, const uint8_t *data, size_t size);
bm_status bm_tok_spm_encode(const bm_tokenizer *t, const char *s, size_t n, bm_tok_ids *out);
/* tok_clip.c */
bm_status bm_tok_load_clip_merges(bm_tokenizer *t, const uint8_t *data, size_t size);
bm_status bm_tok_load_clip_vocab(bm_tokenizer *t, const char *vocab, size_t vsize,
                                 const char *merges, size_t msize);
bm_status bm_tok_clip_encode(const bm_tokenizer *t, const char *s, size_t n, bm_tok_ids *out);

#endif
