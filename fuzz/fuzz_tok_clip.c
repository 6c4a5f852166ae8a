/* fuzz_tok_clip.c - libFuzzer target for the CLIP tokenizer loaders:
 * merges text (bpe_simple_vocab_16e6.txt, gzipped or not) and
 * vocab.json + merges.txt. Input: a mode byte; mode bit 0 clear: the rest
 * is a merges file; set: the rest is vocab.json, a NUL byte, merges.txt. */
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "../runtime/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  const uint8_t *p = data + 1;
  size_t n = size - 1;
  bm_tokenizer *tok;
  if (data[0] & 1) {
    const uint8_t *sep = memchr(p, 0, n);
    size_t n1 = sep ? (size_t)(sep - p) : n;
    const uint8_t *p2 = sep ? sep + 1 : NULL;
    size_t n2 = sep ? n - n1 - 1 : 0;
    tok = bm_fuzz_load_tokenizer(BM_TOK_FORMAT_CLIP_VOCAB_MERGES, p, n1, p2, n2);
  } else {
    tok = bm_fuzz_load_tokenizer(BM_TOK_FORMAT_CLIP_MERGES, p, n, NULL, 0);
  }
  if (!tok) return 0;
  bm_fuzz_exercise_tokenizer(tok, bm_fuzz_sample_text, strlen(bm_fuzz_sample_text),
                             BM_TOK_ADD_BOS | BM_TOK_ADD_EOS);
  bm_tokenizer_free(tok);
  return 0;
}
