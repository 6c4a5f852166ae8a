/* fuzz_tok_hf_json.c - libFuzzer target for the HF tokenizer.json (byte-level BPE and SentencePiece-style)
 * tokenizer loader; a tokenizer that loads must encode and decode a sample
 * text consistently (see bm_fuzz_exercise_tokenizer). */
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "../runtime/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  bm_tokenizer *tok = bm_fuzz_load_tokenizer(BM_TOK_FORMAT_HF_JSON, data, size, NULL, 0);
  if (!tok) return 0;
  bm_fuzz_exercise_tokenizer(tok, bm_fuzz_sample_text, strlen(bm_fuzz_sample_text),
                             BM_TOK_ADD_BOS | BM_TOK_ADD_EOS | BM_TOK_PARSE_SPECIAL);
  bm_fuzz_exercise_tokenizer(tok, bm_fuzz_sample_text, strlen(bm_fuzz_sample_text), 0);
  bm_tokenizer_free(tok);
  return 0;
}
