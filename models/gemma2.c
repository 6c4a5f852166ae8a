/* gemma2.c - Gemma 2: embeddings scaled by sqrt(hidden), RMSNorm with
 * (1 + w), four norms per layer (pre/post attention, pre/post MLP),
 * alternating sliding-window layers, attention and final logit soft-caps,
 * query_pre_attn_scalar, GeGLU (gelu tanh), tied embeddings. */
#include <math.h>

#include "llm.h"

#define P "model.layers.%d."

static bm_node *gemma2_layer(bm_llm *L, bm_node *x, int l) {
  const bm_hf_config *c = L->c;
  bm_graph *g = L->g;
  int64_t D = c->hidden, H = c->heads, KV = c->kv_heads, hd = c->head_dim, F = c->intermediate;
  bm_llm_attn a = {0};
  a.wq = bm_llm_w(L, 2, (int64_t[]){H * hd, D}, P "self_attn.q_proj.weight", l);
  a.wk = bm_llm_w(L, 2, (int64_t[]){KV * hd, D}, P "self_attn.k_proj.weight", l);
  a.wv = bm_llm_w(L, 2, (int64_t[]){KV * hd, D}, P "self_attn.v_proj.weight", l);
  a.wo = bm_llm_w(L, 2, (int64_t[]){D, H * hd}, P "self_attn.o_proj.weight", l);
  if (c->attention_bias) {
    a.bq = bm_llm_wa(L, 1, (int64_t[]){H * hd}, P "self_attn.q_proj.bias", l);
    a.bk = bm_llm_wa(L, 1, (int64_t[]){KV * hd}, P "self_attn.k_proj.bias", l);
    a.bv = bm_llm_wa(L, 1, (int64_t[]){KV * hd}, P "self_attn.v_proj.bias", l);
    a.bo = bm_llm_wa(L, 1, (int64_t[]){D}, P "self_attn.o_proj.bias", l);
  }
  double qpas = c->query_pre_attn_scalar > 0 ? c->query_pre_attn_scalar : (double)hd;
  a.scale = (float)(1.0 / sqrt(qpas));
  a.softcap = (float)c->attn_softcap;
  a.window = c->layer_sliding[l] ? (int)c->sliding_window : 0;

  bm_node *h = bm_llm_norm(L, x, D, P "input_layernorm.weight", l);
  h = bm_llm_attention(L, h, l, &a);
  x = bm_add(g, x, bm_llm_norm(L, h, D, P "post_attention_layernorm.weight", l));
  h = bm_llm_norm(L, x, D, P "pre_feedforward_layernorm.weight", l);
  bm_node *wg = bm_llm_w(L, 2, (int64_t[]){F, D}, P "mlp.gate_proj.weight", l);
  bm_node *wu = bm_llm_w(L, 2, (int64_t[]){F, D}, P "mlp.up_proj.weight", l);
  bm_node *wd = bm_llm_w(L, 2, (int64_t[]){D, F}, P "mlp.down_proj.weight", l);
  h = bm_llm_mlp(L, h, wg, wu, wd, L->act);
  return bm_add(g, x, bm_llm_norm(L, h, D, P "post_feedforward_layernorm.weight", l));
}

const bm_llm_arch bm_llm_arch_gemma2 = {.model_type = "gemma2", .layer = gemma2_layer, .gemma = true};
