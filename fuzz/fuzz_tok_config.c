/* fuzz_tok_config.c - libFuzzer target for tokenizer_config.json
 * (bm_tokenizer_apply_config) applied to a small byte-level BPE tokenizer. */
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "../runtime/tokenizer.h"

static const char g_tokenizer_json[] =
    "{\"added_tokens\": [{\"id\": 6, \"content\": \"<|begin_of_text|>\", \"special\": true},"
    " {\"id\": 7, \"content\": \"<|eot_id|>\", \"special\": true}],"
    " \"pre_tokenizer\": {\"type\": \"ByteLevel\"},"
    " \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"c\": 2, \"ab\": 3, \"abc\": 4, \"\\u0120\": 5},"
    " \"merges\": [\"a b\", \"ab c\"]}}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  bm_tokenizer *tok = NULL;
  bm_status s = bm_tokenizer_load_memory(BM_TOK_FORMAT_HF_JSON, g_tokenizer_json, strlen(g_tokenizer_json), NULL, 0,
                                         "fuzz", &tok);
  if (s) abort(); /* the fixed tokenizer must load */
  s = bm_tokenizer_apply_config(tok, (const char *)data, size, "tokenizer_config.json");
  if (s) {
    bm_fuzz_check_status(s, "bm_tokenizer_apply_config");
  } else {
    int32_t v = bm_tokenizer_vocab_size(tok);
    if (bm_tokenizer_bos(tok) >= v || bm_tokenizer_eos(tok) >= v || bm_tokenizer_pad(tok) >= v) abort();
    (void)bm_tokenizer_chat_kind(tok);
    bm_fuzz_exercise_tokenizer(tok, "abc abc", 7, BM_TOK_ADD_BOS | BM_TOK_ADD_EOS | BM_TOK_PARSE_SPECIAL);
  }
  bm_tokenizer_free(tok);
  return 0;
}
