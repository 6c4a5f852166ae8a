/* test_tok_sparse_vocab.c - tokenizer files whose ids run far past their
 * number of tokens are refused before the id-sized tables are allocated
 * (bm_tok_check_dense): a 15-byte tiktoken file declaring rank 16 M used to
 * allocate ~200 MB and take a second (found while profiling the fuzzers).
 * Vocabularies with a few gaps still load. */
#include <string.h>

#include "testutil.h"
#include "../runtime/tokenizer.h"

static bm_status load(bm_tok_format f, const char *a, const char *b, bm_tokenizer **t) {
  return bm_tokenizer_load_memory(f, a, strlen(a), b, b ? strlen(b) : 0, "sparse", t);
}

static void test_sparse_refused(void) {
  bm_tokenizer *t = NULL;
  CHECK_ERR(load(BM_TOK_FORMAT_TIKTOKEN, "YQ== 16770000\n", NULL, &t), BM_ERR_CORRUPT, "mostly contiguous");
  CHECK(t == NULL);
  CHECK_ERR(load(BM_TOK_FORMAT_HF_JSON,
                 "{\"pre_tokenizer\": {\"type\": \"ByteLevel\"},"
                 " \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 16777000}, \"merges\": []}}",
                 NULL, &t),
            BM_ERR_CORRUPT, "mostly contiguous");
  CHECK_ERR(load(BM_TOK_FORMAT_HF_JSON,
                 "{\"added_tokens\": [{\"id\": 9000000, \"content\": \"<s>\", \"special\": true}],"
                 " \"pre_tokenizer\": {\"type\": \"ByteLevel\"},"
                 " \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": []}}",
                 NULL, &t),
            BM_ERR_CORRUPT, "ids go up to 9000000 for 3 tokens");
  CHECK_ERR(load(BM_TOK_FORMAT_CLIP_VOCAB_MERGES, "{\"a\": 0, \"b</w>\": 12000000}", "#version: 0.2\n", &t),
            BM_ERR_CORRUPT, "vocab.json");
  CHECK(t == NULL);
}

static void test_gaps_still_load(void) {
  bm_tokenizer *t = NULL;
  CHECK_OK(load(BM_TOK_FORMAT_TIKTOKEN, "YQ== 0\nYg== 1\nYw== 2\nYWI= 1000\n", NULL, &t));
  CHECK(t && bm_tokenizer_vocab_size(t) == 1001 + 256); /* + the Llama 3 specials */
  bm_tokenizer_free(t);
  t = NULL;
  CHECK_OK(load(BM_TOK_FORMAT_HF_JSON,
                "{\"added_tokens\": [{\"id\": 1000, \"content\": \"<s>\", \"special\": true}],"
                " \"pre_tokenizer\": {\"type\": \"ByteLevel\"},"
                " \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}, \"merges\": [\"a b\"]}}",
                NULL, &t));
  CHECK(t && bm_tokenizer_vocab_size(t) == 1001);
  bm_tokenizer_free(t);
}

int main(void) {
  RUN(test_sparse_refused);
  RUN(test_gaps_still_load);
  return bm_test_finish();
}
