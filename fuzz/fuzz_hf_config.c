/* fuzz_hf_config.c - libFuzzer target for Hugging Face config.json parsing
 * (bm_hf_config_parse, models/hf_config.c): cJSON does the syntax, this
 * fuzzes our validation of types, ranges and defaults. */
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "../models/hf_config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *text = bm_fuzz_strndup(data, size);
  bm_hf_config *cfg = malloc(sizeof *cfg);
  bm_status s = bm_hf_config_parse(text, "config.json", cfg);
  if (s) {
    bm_fuzz_check_status(s, "bm_hf_config_parse");
  } else {
    /* the strings are NUL-terminated within their arrays */
    if (!memchr(cfg->model_type, 0, sizeof cfg->model_type) || !memchr(cfg->architecture, 0, sizeof cfg->architecture) ||
        !memchr(cfg->hidden_act, 0, sizeof cfg->hidden_act) || !memchr(cfg->rope_type, 0, sizeof cfg->rope_type) ||
        !memchr(cfg->topk_method, 0, sizeof cfg->topk_method))
      abort();
    if (cfg->nbos < 0 || cfg->nbos > BM_HF_MAX_IDS || cfg->neos < 0 || cfg->neos > BM_HF_MAX_IDS) abort();
  }
  free(cfg);
  free(text);
  return 0;
}
