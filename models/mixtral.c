/* mixtral.c - Mixtral: Mistral attention with a sparse MoE feed-forward
 * (router logits -> top-k -> softmax over the selected; experts w1 (gate),
 * w3 (up), w2 (down), stacked at build time). */
#include "llm.h"

#define P "model.layers.%d."

static bm_status mixtral_check(const bm_hf_config *c) {
  if (c->n_experts < 1 || c->experts_per_tok < 1 || c->experts_per_tok > c->n_experts)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT,
                          "mixtral: num_local_experts %lld and num_experts_per_tok %lld do not fit",
                          (long long)c->n_experts, (long long)c->experts_per_tok);
  return NULL;
}

static bm_node *mixtral_layer(bm_llm *L, bm_node *x, int l) {
  const bm_hf_config *c = L->c;
  bm_graph *g = L->g;
  int64_t D = c->hidden, H = c->heads, KV = c->kv_heads, hd = c->head_dim, F = c->intermediate;
  int E = (int)c->n_experts;
  bm_llm_attn a = {0};
  a.wq = bm_llm_w(L, 2, (int64_t[]){H * hd, D}, P "self_attn.q_proj.weight", l);
  a.wk = bm_llm_w(L, 2, (int64_t[]){KV * hd, D}, P "self_attn.k_proj.weight", l);
  a.wv = bm_llm_w(L, 2, (int64_t[]){KV * hd, D}, P "self_attn.v_proj.weight", l);
  a.wo = bm_llm_w(L, 2, (int64_t[]){D, H * hd}, P "self_attn.o_proj.weight", l);
  a.window = c->layer_sliding[l] ? (int)c->sliding_window : 0;

  bm_node *h = bm_llm_norm(L, x, D, P "input_layernorm.weight", l);
  x = bm_add(g, x, bm_llm_attention(L, h, l, &a));
  h = bm_llm_norm(L, x, D, P "post_attention_layernorm.weight", l);
  const char *ex = P "block_sparse_moe.experts.%d.%s.weight";
  bm_llm_moe m = {
      .router = bm_llm_w(L, 2, (int64_t[]){E, D}, P "block_sparse_moe.gate.weight", l),
      .experts = E,
      .top_k = (int)c->experts_per_tok,
      .scale = 1.0f,
      .w_gate = bm_llm_w_stack(L, ex, l, "w1", E, F, D),
      .w_up = bm_llm_w_stack(L, ex, l, "w3", E, F, D),
      .w_down = bm_llm_w_stack(L, ex, l, "w2", E, D, F),
      .act = L->act,
  };
  return bm_add(g, x, bm_llm_moe_block(L, h, &m));
}

const bm_llm_arch bm_llm_arch_mixtral = {.model_type = "mixtral", .check = mixtral_check, .layer = mixtral_layer};
