/* phi3.c - Phi-3: Llama-shaped, with fused qkv_proj (q, k, v rows) and
 * gate_up_proj (gate rows, then up rows), split into separate weights at
 * build time; partial rotary factor from the config. */
#include <stdio.h>
#include <string.h>

#include "llm.h"

#define P "model.layers.%d."

static bm_status phi3_check(const bm_hf_config *c) {
  if (!(c->rope_type[0] == 0 || !strcmp(c->rope_type, "default")))
    return bm_status_make(BM_ERR_UNSUPPORTED,
                          "phi3: rope_type '%s' is not supported (longrope/su scaling of the 128k "
                          "variants is not implemented; supported: default)",
                          c->rope_type);
  return NULL;
}

static bm_node *phi3_layer(bm_llm *L, bm_node *x, int l) {
  const bm_hf_config *c = L->c;
  bm_graph *g = L->g;
  int64_t D = c->hidden, H = c->heads, KV = c->kv_heads, hd = c->head_dim, F = c->intermediate;
  char name[256];
  bm_llm_attn a = {0};
  snprintf(name, sizeof name, P "self_attn.qkv_proj.weight", l);
  int64_t rows = (H + 2 * KV) * hd;
  a.wq = bm_llm_w_rows(L, name, rows, D, 0, H * hd);
  a.wk = bm_llm_w_rows(L, name, rows, D, H * hd, KV * hd);
  a.wv = bm_llm_w_rows(L, name, rows, D, (H + KV) * hd, KV * hd);
  a.wo = bm_llm_w(L, 2, (int64_t[]){D, H * hd}, P "self_attn.o_proj.weight", l);
  a.window = c->layer_sliding[l] ? (int)c->sliding_window : 0;

  bm_node *h = bm_llm_norm(L, x, D, P "input_layernorm.weight", l);
  x = bm_add(g, x, bm_llm_attention(L, h, l, &a));
  h = bm_llm_norm(L, x, D, P "post_attention_layernorm.weight", l);
  snprintf(name, sizeof name, P "mlp.gate_up_proj.weight", l);
  bm_node *wg = bm_llm_w_rows(L, name, 2 * F, D, 0, F);
  bm_node *wu = bm_llm_w_rows(L, name, 2 * F, D, F, F);
  bm_node *wd = bm_llm_w(L, 2, (int64_t[]){D, F}, P "mlp.down_proj.weight", l);
  return bm_add(g, x, bm_llm_mlp(L, h, wg, wu, wd, L->act));
}

const bm_llm_arch bm_llm_arch_phi3 = {.model_type = "phi3", .check = phi3_check, .layer = phi3_layer};
