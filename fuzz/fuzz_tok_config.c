/* fuzz_tok_config.c - libFuzzer target for tokenizer_config.json
 * (bm_tokenizer_apply_config) applied to a small byte-level BPE tokenizer.
 * The tokenizer is loaded once: apply_config may only change bos / eos /
 * pad / the chat kind, which this target checks (the rest of the struct is
 * byte-identical afterwards) and then restores for the next input. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "../runtime/tok_internal.h"
#include "../runtime/tokenizer.h"

static const char g_tokenizer_json[] =
    "{\"added_tokens\": [{\"id\": 6, \"content\": \"<|begin_of_text|>\", \"special\": true},"
    " {\"id\": 7, \"content\": \"<|eot_id|>\", \"special\": true}],"
    " \"pre_tokenizer\": {\"type\": \"ByteLevel\"},"
    " \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"c\": 2, \"ab\": 3, \"abc\": 4, \"\\u0120\": 5},"
    " \"merges\": [\"a b\", \"ab c\"]}}";

static bm_tokenizer *g_tok;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  bm_status s = bm_tokenizer_load_memory(BM_TOK_FORMAT_HF_JSON, g_tokenizer_json, strlen(g_tokenizer_json), NULL, 0,
                                         "fuzz", &g_tok);
  if (s) abort(); /* the fixed tokenizer must load */
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  bm_tokenizer *tok = g_tok, before, after;
  memcpy(&before, tok, sizeof before);
  bm_status s = bm_tokenizer_apply_config(tok, (const char *)data, size, "tokenizer_config.json");
  if (s) {
    bm_fuzz_check_status(s, "bm_tokenizer_apply_config");
  } else {
    int32_t v = bm_tokenizer_vocab_size(tok);
    if (bm_tokenizer_bos(tok) >= v || bm_tokenizer_eos(tok) >= v || bm_tokenizer_pad(tok) >= v) abort();
    (void)bm_tokenizer_chat_kind(tok);
    bm_fuzz_exercise_tokenizer(tok, "abc abc", 7, BM_TOK_ADD_BOS | BM_TOK_ADD_EOS | BM_TOK_PARSE_SPECIAL);
  }
  /* only the special ids and the chat kind may have changed; put them back */
  memcpy(&after, tok, sizeof after);
  after.bos = before.bos;
  after.eos = before.eos;
  after.pad = before.pad;
  after.chat = before.chat;
  if (memcmp(&after, &before, sizeof before) != 0) {
    fprintf(stderr, "fuzz: bm_tokenizer_apply_config changed more than bos/eos/pad/chat\n");
    abort();
  }
  memcpy(tok, &before, sizeof before);
  return 0;
}
