/* llama.c - the Llama family: llama (Llama 2/3, incl. llama3 rope scaling),
 * mistral (sliding window), qwen2 (q/k/v bias) and qwen3 (per-head q/k
 * RMSNorm): weight names of transformers' LlamaForCausalLM & co. mapped
 * onto the shared blocks of llm.h. */
#include <string.h>

#include "llm.h"

#define P "model.layers.%d."

static bm_status llama_check(const bm_hf_config *c) {
  if (c->mlp_bias)
    return bm_status_make(BM_ERR_UNSUPPORTED, "%s: mlp_bias is not supported", c->model_type);
  return NULL;
}

/* One pre-norm decoder layer:
 *   x = x + o_proj(attention(rope(q), rope(k), v))   on input_layernorm(x)
 *   x = x + down(act(gate(h)) * up(h))               h = post_attention_layernorm(x) */
static bm_node *llama_layer(bm_llm *L, bm_node *x, int l) {
  const bm_hf_config *c = L->c;
  bm_graph *g = L->g;
  int64_t D = c->hidden, H = c->heads, KV = c->kv_heads, hd = c->head_dim, F = c->intermediate;
  bool qwen2 = !strcmp(c->model_type, "qwen2"), qwen3 = !strcmp(c->model_type, "qwen3");
  bool qkv_bias = qwen2 || c->attention_bias;
  bool o_bias = !qwen2 && c->attention_bias; /* Qwen2's o_proj never has a bias */

  bm_llm_attn a = {0};
  a.wq = bm_llm_w(L, 2, (int64_t[]){H * hd, D}, P "self_attn.q_proj.weight", l);
  a.wk = bm_llm_w(L, 2, (int64_t[]){KV * hd, D}, P "self_attn.k_proj.weight", l);
  a.wv = bm_llm_w(L, 2, (int64_t[]){KV * hd, D}, P "self_attn.v_proj.weight", l);
  a.wo = bm_llm_w(L, 2, (int64_t[]){D, H * hd}, P "self_attn.o_proj.weight", l);
  if (qkv_bias) {
    a.bq = bm_llm_wa(L, 1, (int64_t[]){H * hd}, P "self_attn.q_proj.bias", l);
    a.bk = bm_llm_wa(L, 1, (int64_t[]){KV * hd}, P "self_attn.k_proj.bias", l);
    a.bv = bm_llm_wa(L, 1, (int64_t[]){KV * hd}, P "self_attn.v_proj.bias", l);
  }
  if (o_bias) a.bo = bm_llm_wa(L, 1, (int64_t[]){D}, P "self_attn.o_proj.bias", l);
  if (qwen3) {
    a.q_norm = bm_llm_w32(L, 1, (int64_t[]){hd}, P "self_attn.q_norm.weight", l);
    a.k_norm = bm_llm_w32(L, 1, (int64_t[]){hd}, P "self_attn.k_norm.weight", l);
  }
  a.window = c->layer_sliding[l] ? (int)c->sliding_window : 0;

  bm_node *h = bm_llm_norm(L, x, D, P "input_layernorm.weight", l);
  x = bm_add(g, x, bm_llm_attention(L, h, l, &a));
  h = bm_llm_norm(L, x, D, P "post_attention_layernorm.weight", l);
  bm_node *wg = bm_llm_w(L, 2, (int64_t[]){F, D}, P "mlp.gate_proj.weight", l);
  bm_node *wu = bm_llm_w(L, 2, (int64_t[]){F, D}, P "mlp.up_proj.weight", l);
  bm_node *wd = bm_llm_w(L, 2, (int64_t[]){D, F}, P "mlp.down_proj.weight", l);
  return bm_add(g, x, bm_llm_mlp(L, h, wg, wu, wd, L->act));
}

const bm_llm_arch bm_llm_arch_llama = {.model_type = "llama", .check = llama_check, .layer = llama_layer};
const bm_llm_arch bm_llm_arch_mistral = {.model_type = "mistral", .check = llama_check, .layer = llama_layer};
const bm_llm_arch bm_llm_arch_qwen2 = {.model_type = "qwen2", .check = llama_check, .layer = llama_layer};
const bm_llm_arch bm_llm_arch_qwen3 = {.model_type = "qwen3", .check = llama_check, .layer = llama_layer};
