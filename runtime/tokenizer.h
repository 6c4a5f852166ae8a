/* tokenizer.h - text <-> token ids for the model families bm runs, in plain C:
 * byte-level BPE (HF tokenizer.json of Llama 3 / Qwen, tiktoken tokenizer.model
 * of Llama 3), SentencePiece (.model: BPE with byte fallback for Llama 2 /
 * Mistral, Unigram with NFKC charsmap for T5-style models; also HF
 * tokenizer.json of the Mistral/Llama-2 kind) and CLIP BPE (vocab.json +
 * merges.txt or bpe_simple_vocab_16e6.txt.gz). Part of libbmrt.
 *
 *   bm_tokenizer *tok;
 *   BM_CHECK(bm_tokenizer_load("models/llama3", &tok));
 *   int32_t ids[512]; size_t n;
 *   BM_CHECK(bm_tokenizer_encode(tok, text, strlen(text), BM_TOK_ADD_BOS, ids, 512, &n));
 *   ... generate ...
 *   bm_detok d; bm_detok_init(&d, tok, 0);
 *   for each new id: bm_detok_push(&d, id, buf, sizeof buf, &len); fwrite(buf, 1, len, stdout);
 *   bm_detok_flush(&d, buf, sizeof buf, &len);
 *   bm_tokenizer_free(tok);
 *
 * Behaviour follows the reference implementations exactly (see
 * docs/tokenizers.md and ../shared/tokenizers/README.md): sentencepiece for
 * .model files, HF tokenizers for tokenizer.json, tiktoken for the Llama 3
 * tiktoken file, openai simple_tokenizer.py for CLIP. A loaded tokenizer is
 * immutable: encode/decode may run concurrently from several threads. Encode
 * allocates temporary memory proportional to the text.
 *
 * All loaders validate every length and offset of their input; a malformed
 * file gives BM_ERR_CORRUPT with a message naming the file and the problem. */
#ifndef BM_TOKENIZER_H
#define BM_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bm_runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bm_tokenizer bm_tokenizer;

/* File formats. AUTO sniffs the content (gzip magic, JSON, tiktoken lines,
 * CLIP merges text, else SentencePiece protobuf). */
typedef enum bm_tok_format {
  BM_TOK_FORMAT_AUTO = 0,
  BM_TOK_FORMAT_HF_JSON,           /* tokenizer.json (model type BPE) */
  BM_TOK_FORMAT_SENTENCEPIECE,     /* tokenizer.model / spiece.model (protobuf) */
  BM_TOK_FORMAT_TIKTOKEN,          /* "base64 rank" lines: Llama 3 original tokenizer.model */
  BM_TOK_FORMAT_CLIP_MERGES,       /* bpe_simple_vocab_16e6.txt, gzipped or not */
  BM_TOK_FORMAT_CLIP_VOCAB_MERGES, /* vocab.json (data) + merges.txt (data2) */
} bm_tok_format;

/* The algorithm a loaded tokenizer runs. */
typedef enum bm_tok_model {
  BM_TOK_MODEL_BYTE_BPE = 0, /* byte-level BPE with a regex pre-tokenizer (Llama 3, Qwen) */
  BM_TOK_MODEL_SPM_BPE,      /* SentencePiece-style BPE on ▁-escaped text, byte fallback */
  BM_TOK_MODEL_SPM_UNIGRAM,  /* SentencePiece Unigram (Viterbi) */
  BM_TOK_MODEL_CLIP,         /* CLIP BPE: cleaned, lower-cased, </w> end-of-word */
} bm_tok_model;

/* Chat formats (chat_template.h renders them). */
typedef enum bm_chat_kind {
  BM_CHAT_NONE = 0,
  BM_CHAT_LLAMA3,  /* <|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|> */
  BM_CHAT_LLAMA2,  /* <s>[INST] <<SYS>>...<</SYS>> ... [/INST] ... </s> */
  BM_CHAT_MISTRAL, /* <s>[INST] ... [/INST] ...</s> (Mistral v0.1 / Mixtral) */
  BM_CHAT_CHATML,  /* <|im_start|>role\n...<|im_end|>\n (Qwen) */
  BM_CHAT_GEMMA,   /* <bos><start_of_turn>user\n...<end_of_turn>\n */
  BM_CHAT_PHI3,    /* <|user|>\n...<|end|>\n<|assistant|>\n */
  BM_CHAT_KIND_COUNT
} bm_chat_kind;

/* Encode flags. */
enum {
  BM_TOK_ADD_BOS = 1u << 0,       /* prepend the BOS id (if the tokenizer has one) */
  BM_TOK_ADD_EOS = 1u << 1,       /* append the EOS id (T5 style; CLIP always has both) */
  /* Recognise special / added tokens written in the text (HF added_tokens,
   * the tiktoken special tokens, SentencePiece control pieces such as <s> or
   * [INST]) and emit their ids. Without it such text is encoded as plain
   * text. SentencePiece user-defined pieces are always recognised, as in
   * sentencepiece. CLIP always recognises <|startoftext|> / <|endoftext|>. */
  BM_TOK_PARSE_SPECIAL = 1u << 2,
};

/* Decode flags. */
enum {
  BM_TOK_SKIP_SPECIAL = 1u << 0, /* render special/control tokens as nothing */
};

/* Loads a tokenizer from a file or a model directory. For a directory the
 * first present of tokenizer.json, tokenizer.model, tokenizer.model.v3,
 * spiece.model, vocab.json + merges.txt, bpe_simple_vocab_16e6.txt.gz is
 * used, and tokenizer_config.json (if present) supplies bos/eos/pad tokens
 * and the chat format. */
bm_status bm_tokenizer_load(const char *path, bm_tokenizer **out);

/* Loads from memory (the bytes are copied; the caller keeps ownership).
 * `data2` is merges.txt for BM_TOK_FORMAT_CLIP_VOCAB_MERGES, NULL otherwise.
 * `name` names the source in error messages (may be NULL). */
bm_status bm_tokenizer_load_memory(bm_tok_format format, const void *data, size_t size,
                                   const void *data2, size_t size2, const char *name,
                                   bm_tokenizer **out);

/* Applies a HF tokenizer_config.json: bos_token / eos_token / pad_token
 * (strings or {"content": ...}) and chat_template (detected with
 * bm_chat_detect). Optional; bm_tokenizer_load calls it for directories. */
bm_status bm_tokenizer_apply_config(bm_tokenizer *tok, const char *json, size_t size,
                                    const char *name);

void bm_tokenizer_free(bm_tokenizer *tok); /* NULL is fine */

/* Encodes UTF-8 text (len bytes; need not be NUL-terminated; invalid UTF-8
 * is handled like the reference: replaced by U+FFFD or fed as bytes).
 * Writes at most `cap` ids; *n receives the full count. If the count exceeds
 * cap the call fails with BM_ERR_INVALID_ARGUMENT ("ids buffer too small");
 * call with cap = 0 to size the buffer. */
bm_status bm_tokenizer_encode(const bm_tokenizer *tok, const char *text, size_t len,
                              uint32_t flags, int32_t *ids, size_t cap, size_t *n);
/* Same, returning a malloc'd array (free() it). */
bm_status bm_tokenizer_encode_alloc(const bm_tokenizer *tok, const char *text, size_t len,
                                    uint32_t flags, int32_t **ids, size_t *n);

/* Fixed-length encoding as text encoders want it (CLIP: n_ctx = 77): BOS +
 * tokens + EOS (flags BM_TOK_ADD_BOS/EOS as given), truncated to keep the
 * first n_ctx-1 ids plus EOS (when EOS was requested), then padded with
 * pad_id to n_ctx. ids has room for n_ctx. *n_real (may be NULL) receives
 * the number of non-pad ids. CLIP-L pipelines pad with EOS (49407),
 * OpenCLIP ViT-H/bigG with 0. */
bm_status bm_tokenizer_encode_padded(const bm_tokenizer *tok, const char *text, size_t len,
                                     uint32_t flags, int32_t *ids, size_t n_ctx, int32_t pad_id,
                                     size_t *n_real);

/* Decodes ids to UTF-8 text. Writes at most cap bytes plus a NUL when room
 * remains; *len receives the full length (without NUL); fails with
 * BM_ERR_INVALID_ARGUMENT if it does not fit or an id is out of range.
 * Invalid UTF-8 byte sequences come out as U+FFFD. SentencePiece models
 * drop the dummy-prefix space and render control pieces as nothing and
 * <unk> as " ⁇ ", like sentencepiece. */
bm_status bm_tokenizer_decode(const bm_tokenizer *tok, const int32_t *ids, size_t n,
                              uint32_t flags, char *out, size_t cap, size_t *len);
/* Same, returning a malloc'd NUL-terminated string (free() it). */
bm_status bm_tokenizer_decode_alloc(const bm_tokenizer *tok, const int32_t *ids, size_t n,
                                    uint32_t flags, char **out, size_t *len);

/* ---------------------------------------------------------------- queries */

bm_tok_model bm_tokenizer_model(const bm_tokenizer *tok);
int32_t bm_tokenizer_vocab_size(const bm_tokenizer *tok); /* ids are 0..size-1 */
int32_t bm_tokenizer_bos(const bm_tokenizer *tok);        /* -1 if none */
int32_t bm_tokenizer_eos(const bm_tokenizer *tok);        /* -1 if none */
int32_t bm_tokenizer_pad(const bm_tokenizer *tok);        /* -1 if none */
int32_t bm_tokenizer_unk(const bm_tokenizer *tok);        /* -1 if none */
/* The chat format found in tokenizer_config.json, or guessed from the
 * special tokens (BM_CHAT_NONE if unknown). */
bm_chat_kind bm_tokenizer_chat_kind(const bm_tokenizer *tok);
/* The stored text of a token (borrowed, not NUL-terminated): raw bytes for
 * byte-level BPE, the piece ("▁Hello", "<0x0A>") for SentencePiece, the
 * piece with "</w>" for CLIP. NULL for an out-of-range id. */
const char *bm_tokenizer_token_text(const bm_tokenizer *tok, int32_t id, size_t *len);
/* Looks up a token by its exact stored text (special tokens included); -1 if absent. */
int32_t bm_tokenizer_find(const bm_tokenizer *tok, const char *text, size_t len);
/* True for special / control tokens (BOS, EOS, <|eot_id|>, [INST], ...). */
bool bm_tokenizer_is_special(const bm_tokenizer *tok, int32_t id);
/* Overrides the BOS/EOS/PAD ids (-1 = none). Fails for out-of-range ids. */
bm_status bm_tokenizer_set_special(bm_tokenizer *tok, int32_t bos, int32_t eos, int32_t pad);

/* ---------------------------------------------------------------- streaming */

/* Incremental detokenizer: feed ids one at a time; each push returns only
 * complete UTF-8 (incomplete byte sequences wait for the next token), and
 * the concatenation of all pushes plus the final flush equals
 * bm_tokenizer_decode of the whole sequence. Plain struct: no allocation. */
typedef struct bm_detok {
  const bm_tokenizer *tok;
  uint32_t flags;   /* BM_TOK_SKIP_SPECIAL */
  bool prefix_done; /* SentencePiece: the dummy-prefix space was dropped (or text came first) */
  uint8_t pending[4];
  uint8_t n_pending;
} bm_detok;

void bm_detok_init(bm_detok *d, const bm_tokenizer *tok, uint32_t flags);
/* Appends the text of `id` to out (at most cap bytes, no NUL), *n = bytes
 * written. If the text does not fit, fails with BM_ERR_INVALID_ARGUMENT,
 * *n = bytes needed, and the state is unchanged (retry with a bigger buffer). */
bm_status bm_detok_push(bm_detok *d, int32_t id, char *out, size_t cap, size_t *n);
/* Emits what is still pending (an incomplete sequence becomes U+FFFD) and resets. */
bm_status bm_detok_flush(bm_detok *d, char *out, size_t cap, size_t *n);

#ifdef __cplusplus
}
#endif
#endif
