/* fuzz_tokenize.c - libFuzzer target for tokenization itself: the real
 * tokenizers of ../shared/tokenizers (loaded once) encode arbitrary bytes
 * and decode arbitrary ids.
 *
 * Input: byte 0 picks the tokenizer (low 4 bits) and the mode (bit 7: the
 * rest is little-endian int32 ids to decode; clear: text to encode);
 * byte 1 holds the encode flags (BM_TOK_ADD_BOS/EOS/PARSE_SPECIAL) or the
 * decode flags. The folder is $BM_FUZZ_TOKENIZERS or BM_SHARED_DIR/tokenizers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "../runtime/tokenizer.h"

static const char *const g_names[] = {
    "llama3",                     /* tokenizer.json: byte-level BPE + tokenizer_config.json */
    "llama3/tokenizer.model",     /* tiktoken */
    "llama2_spm",                 /* SentencePiece BPE with byte fallback */
    "mistral_v1",                 /* tokenizer.json of the SentencePiece kind */
    "mistral_v3/tokenizer.model.v3",
    "unigram_t5style/test_model.model", /* Unigram with the NFKC charsmap */
    "clip",                       /* vocab.json + merges.txt */
    "clip/bpe_simple_vocab_16e6.txt.gz",
    "qwen",
};
#define NTOK (int)(sizeof g_names / sizeof g_names[0])
static bm_tokenizer *g_tok[NTOK];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  const char *dir = getenv("BM_FUZZ_TOKENIZERS");
  char path[1024];
  for (int i = 0; i < NTOK; i++) {
#ifdef BM_SHARED_DIR
    snprintf(path, sizeof path, "%s/%s", dir ? dir : BM_SHARED_DIR "/tokenizers", g_names[i]);
#else
    snprintf(path, sizeof path, "%s/%s", dir ? dir : "../shared/tokenizers", g_names[i]);
#endif
    bm_status s = bm_tokenizer_load(path, &g_tok[i]);
    if (s) {
      fprintf(stderr, "fuzz_tokenize: skipping %s: %s\n", path, bm_status_message(s));
      bm_status_free(s);
    }
  }
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2) return 0;
  const bm_tokenizer *tok = g_tok[(data[0] & 15) % NTOK];
  if (!tok) return 0;
  const uint8_t *p = data + 2;
  size_t n = size - 2;
  if (!(data[0] & 0x80)) {
    uint32_t flags = data[1] & (BM_TOK_ADD_BOS | BM_TOK_ADD_EOS | BM_TOK_PARSE_SPECIAL);
    bm_fuzz_exercise_tokenizer(tok, (const char *)p, n, flags);
    return 0;
  }
  /* decode ids; id == vocab is out of range and must be refused */
  size_t nids = n / 4;
  int32_t *ids = malloc((nids ? nids : 1) * sizeof *ids);
  int32_t vocab = bm_tokenizer_vocab_size(tok);
  int bad = 0;
  for (size_t i = 0; i < nids; i++) {
    uint32_t v = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 | (uint32_t)p[4 * i + 2] << 16 |
                 (uint32_t)p[4 * i + 3] << 24;
    ids[i] = (int32_t)(v % (uint32_t)(vocab + 1));
    bad |= ids[i] == vocab;
  }
  uint32_t flags = data[1] & BM_TOK_SKIP_SPECIAL;
  if (bad) {
    char *text = NULL;
    size_t len;
    bm_status s = bm_tokenizer_decode_alloc(tok, ids, nids, flags, &text, &len);
    if (!s || bm_status_code(s) != BM_ERR_INVALID_ARGUMENT) abort();
    bm_status_free(s);
  } else {
    bm_fuzz_check_decode(tok, ids, nids, flags);
  }
  free(ids);
  return 0;
}
