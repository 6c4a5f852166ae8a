/* deepseek_v2.c - DeepSeek-V2: multi-head latent attention (low-rank q
 * and kv, a decoupled interleaved rope key shared by the heads) and a MoE
 * feed-forward (softmax -> greedy top-k -> optional renorm -> routed
 * scaling, plus shared experts) after the first first_k_dense_replace
 * dense layers. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "llm.h"

#define P "model.layers.%d."

static bm_status deepseek_check(const bm_hf_config *c) {
  if (c->kv_lora_rank < 1 || c->qk_rope_head_dim < 2 || c->qk_nope_head_dim < 1 || c->v_head_dim < 1)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT,
                          "deepseek_v2: kv_lora_rank %lld, qk_rope_head_dim %lld, qk_nope_head_dim %lld, "
                          "v_head_dim %lld must be positive",
                          (long long)c->kv_lora_rank, (long long)c->qk_rope_head_dim,
                          (long long)c->qk_nope_head_dim, (long long)c->v_head_dim);
  if (c->n_experts > 0 && strcmp(c->topk_method, "greedy") != 0)
    return bm_status_make(BM_ERR_UNSUPPORTED,
                          "deepseek_v2: topk_method '%s' is not supported (supported: greedy)", c->topk_method);
  if (c->n_experts > 0 && (c->experts_per_tok < 1 || c->experts_per_tok > c->n_experts))
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "deepseek_v2: num_experts_per_tok %lld of %lld experts",
                          (long long)c->experts_per_tok, (long long)c->n_experts);
  return NULL;
}

/* A gated MLP whose weights are model.layers.L.mlp.<part>{gate,up,down}_proj. */
static bm_node *dense_mlp(bm_llm *L, bm_node *h, int l, const char *part, int64_t F) {
  int64_t D = L->c->hidden;
  bm_node *wg = bm_llm_w(L, 2, (int64_t[]){F, D}, P "mlp.%sgate_proj.weight", l, part);
  bm_node *wu = bm_llm_w(L, 2, (int64_t[]){F, D}, P "mlp.%sup_proj.weight", l, part);
  bm_node *wd = bm_llm_w(L, 2, (int64_t[]){D, F}, P "mlp.%sdown_proj.weight", l, part);
  return bm_llm_mlp(L, h, wg, wu, wd, L->act);
}

static bm_node *deepseek_layer(bm_llm *L, bm_node *x, int l) {
  const bm_hf_config *c = L->c;
  bm_graph *g = L->g;
  int64_t D = c->hidden, H = c->heads, qk = c->qk_nope_head_dim + c->qk_rope_head_dim;
  int64_t kvr = c->kv_lora_rank, R = c->qk_rope_head_dim, qr = c->q_lora_rank;
  bm_llm_mla a = {0};
  char name[256];
  int64_t in = D, nope = c->qk_nope_head_dim;
  if (qr > 0) {
    a.wq_a = bm_llm_w(L, 2, (int64_t[]){qr, D}, P "self_attn.q_a_proj.weight", l);
    a.q_a_norm = bm_llm_w32(L, 1, (int64_t[]){qr}, P "self_attn.q_a_layernorm.weight", l);
    snprintf(name, sizeof name, P "self_attn.q_b_proj.weight", l);
    in = qr;
  } else {
    snprintf(name, sizeof name, P "self_attn.q_proj.weight", l);
  }
  /* per head: nope rows, then rope rows */
  a.wq_nope = bm_llm_w_group_rows(L, name, H * qk, in, H, 0, nope);
  a.wq_pe = bm_llm_w_group_rows(L, name, H * qk, in, H, nope, R);
  /* the latent rows, then the rope key rows */
  snprintf(name, sizeof name, P "self_attn.kv_a_proj_with_mqa.weight", l);
  a.w_lat = bm_llm_w_rows(L, name, kvr + R, D, 0, kvr);
  a.w_kpe = bm_llm_w_rows(L, name, kvr + R, D, kvr, R);
  a.kv_a_norm = bm_llm_w32(L, 1, (int64_t[]){kvr}, P "self_attn.kv_a_layernorm.weight", l);
  snprintf(name, sizeof name, P "self_attn.kv_b_proj.weight", l);
  bm_llm_split_kv_b(L, name, &a.w_uk, &a.w_uv);
  a.wo = bm_llm_w(L, 2, (int64_t[]){D, H * c->v_head_dim}, P "self_attn.o_proj.weight", l);
  /* softmax scale qk_head_dim^-1/2, times mscale(factor, mscale_all_dim)^2
   * under yarn rope scaling (as DeepSeek's reference code) */
  double scale = 1.0 / sqrt((double)qk);
  if (!strcmp(c->rope_type, "yarn") && c->rope_mscale_all_dim > 0) {
    double ms = bm_llm_yarn_mscale(c->rope_factor, c->rope_mscale_all_dim);
    scale *= ms * ms;
  }
  a.scale = (float)scale;

  bm_node *h = bm_llm_norm(L, x, D, P "input_layernorm.weight", l);
  x = bm_add(g, x, bm_llm_mla_attention(L, h, l, &a));
  h = bm_llm_norm(L, x, D, P "post_attention_layernorm.weight", l);
  if (c->n_experts == 0 || l < c->first_k_dense_replace)
    return bm_add(g, x, dense_mlp(L, h, l, "", c->intermediate));
  int E = (int)c->n_experts;
  int64_t F = c->moe_intermediate;
  const char *ex = P "mlp.experts.%d.%s.weight";
  bm_llm_moe m = {
      .router = bm_llm_w(L, 2, (int64_t[]){E, D}, P "mlp.gate.weight", l),
      .experts = E,
      .top_k = (int)c->experts_per_tok,
      .softmax_first = true,
      .renorm = c->norm_topk_prob && c->experts_per_tok > 1,
      .scale = (float)c->routed_scaling_factor,
      .w_gate = bm_llm_w_stack(L, ex, l, "gate_proj", E, F, D),
      .w_up = bm_llm_w_stack(L, ex, l, "up_proj", E, F, D),
      .w_down = bm_llm_w_stack(L, ex, l, "down_proj", E, D, F),
      .act = L->act,
  };
  bm_node *y = bm_llm_moe_block(L, h, &m);
  if (c->n_shared_experts > 0)
    y = bm_add(g, y, dense_mlp(L, h, l, "shared_experts.", F * c->n_shared_experts));
  return bm_add(g, x, y);
}

/* the rope of DeepSeek-V2 rotates interleaved pairs (complex multiply) over
 * qk_rope_head_dim channels */
const bm_llm_arch bm_llm_arch_deepseek_v2 = {.model_type = "deepseek_v2",
                                             .check = deepseek_check,
                                             .layer = deepseek_layer,
                                             .rope_mode = 1,
                                             .rope_dim = -1};
