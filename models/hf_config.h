/* hf_config.h - a Hugging Face config.json read into one flat struct that
 * covers every field the LLM builders (models/llm.h) use.
 *
 * Missing or null fields get the transformers default of the model type
 * (e.g. head_dim = hidden / heads, kv_heads = heads). Both spellings of the
 * rope settings are read: transformers 5 "rope_parameters" and the older
 * top-level "rope_theta" + "rope_scaling".
 */
#ifndef BM_HF_CONFIG_H
#define BM_HF_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "../runtime/bm_runtime.h"

#define BM_HF_MAX_LAYERS 512
#define BM_HF_MAX_IDS 8

typedef struct bm_hf_config {
  char model_type[64];     /* "llama", "gemma2", ... */
  char architecture[128];  /* architectures[0], "" if absent */

  int64_t vocab, hidden, layers, heads, kv_heads, head_dim, intermediate;
  int64_t max_pos;         /* max_position_embeddings */
  double eps;              /* rms_norm_eps */
  char hidden_act[32];     /* "silu", "gelu_pytorch_tanh", ... (hidden_activation for gemma) */

  /* rope */
  char rope_type[32];      /* "default", "llama3", "linear", "yarn", ... */
  double rope_theta;
  double rope_factor;      /* llama3 / linear / yarn scaling factor */
  double rope_low_freq_factor, rope_high_freq_factor; /* llama3 */
  int64_t rope_orig_max_pos; /* original_max_position_embeddings (llama3, yarn) */
  double rope_beta_fast, rope_beta_slow, rope_mscale, rope_mscale_all_dim; /* yarn */
  double partial_rotary_factor; /* fraction of head_dim rotated (1 = all) */

  /* attention */
  int64_t sliding_window;  /* 0 = none */
  uint8_t layer_sliding[BM_HF_MAX_LAYERS]; /* 1: layer l uses the sliding window */
  double attn_softcap, final_softcap; /* 0 = none (gemma2) */
  double query_pre_attn_scalar;       /* 0 = head_dim (gemma2 scales by its -1/2 power) */
  bool attention_bias, mlp_bias, tie_word_embeddings;

  /* mixture of experts (mixtral, deepseek_v2); n_experts == 0: dense */
  int64_t n_experts, experts_per_tok, moe_intermediate, n_shared_experts;
  int64_t first_k_dense_replace, n_group, topk_group;
  bool norm_topk_prob;
  double routed_scaling_factor;
  char topk_method[32];    /* "greedy", "group_limited_greedy" */

  /* multi-head latent attention (deepseek_v2); kv_lora_rank == 0: none */
  int64_t q_lora_rank;     /* 0 = plain q_proj */
  int64_t kv_lora_rank, qk_nope_head_dim, qk_rope_head_dim, v_head_dim;

  /* special tokens; -1 / count 0 when absent */
  int64_t bos_ids[BM_HF_MAX_IDS], eos_ids[BM_HF_MAX_IDS];
  int nbos, neos;
  int64_t pad_id;
} bm_hf_config;

/* Reads DIR/config.json (or PATH itself if it names a .json file). Errors
 * name the file and the field. */
bm_status bm_hf_config_load(const char *path, bm_hf_config *out);
/* Parses config text; `what` names it in errors. */
bm_status bm_hf_config_parse(const char *json, const char *what, bm_hf_config *out);
/* Reads only model_type and architectures[0] (either may come back ""),
 * for detection and error messages. Fails when there is no config.json. */
bm_status bm_hf_config_peek(const char *path, char *model_type, size_t mt_size, char *arch,
                            size_t arch_size);

#endif
