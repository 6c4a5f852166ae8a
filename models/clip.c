/* clip.c - the CLIP text encoder of Stable Diffusion: CLIP ViT-L (SD 1.x,
 * quick_gelu) and OpenCLIP ViT-H (SD 2.x, gelu; in diffusers format a
 * CLIPTextModel of 23 layers), one builder parametrized by the
 * transformers CLIPTextConfig, with clip skip and the pooled output. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "sd.h"

/* A number field; values outside (-2^31, 2^31) (and inf) give -1, which the
 * range checks refuse: converting them to the int fields would be undefined. */
static double num(const cJSON *o, const char *k, double def) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
  if (!cJSON_IsNumber(v)) return def;
  return fabs(v->valuedouble) < 2147483648.0 ? v->valuedouble : -1;
}

bm_status bm_sd_clip_config_parse(const char *json, const char *where, bm_sd_clip_config *c) {
  memset(c, 0, sizeof *c);
  cJSON *root = cJSON_Parse(json);
  if (!cJSON_IsObject(root)) {
    cJSON_Delete(root);
    return bm_status_make(BM_ERR_CORRUPT, "%s: not a JSON object", where);
  }
  /* a CLIPConfig holds the text tower in text_config */
  const cJSON *o = root, *tc = cJSON_GetObjectItemCaseSensitive(root, "text_config");
  if (cJSON_IsObject(tc)) o = tc;
  c->vocab = (int64_t)num(o, "vocab_size", 49408);
  c->hidden = (int64_t)num(o, "hidden_size", 512);
  c->intermediate = (int64_t)num(o, "intermediate_size", 2048);
  c->heads = (int64_t)num(o, "num_attention_heads", 8);
  c->layers = (int64_t)num(o, "num_hidden_layers", 12);
  c->max_pos = (int64_t)num(o, "max_position_embeddings", 77);
  c->eps = (float)num(o, "layer_norm_eps", 1e-5);
  c->eos_id = (int64_t)num(o, "eos_token_id", 2);
  c->pad_id = (int64_t)num(o, "pad_token_id", 1);
  const cJSON *act = cJSON_GetObjectItemCaseSensitive(o, "hidden_act");
  const char *a = cJSON_IsString(act) ? act->valuestring : "quick_gelu";
  bm_status s = NULL;
  if (!strcmp(a, "quick_gelu")) c->act = BM_OP_QUICK_GELU;
  else if (!strcmp(a, "gelu")) c->act = BM_OP_GELU;
  else if (!strcmp(a, "gelu_new") || !strcmp(a, "gelu_pytorch_tanh")) c->act = BM_OP_GELU_TANH;
  else s = bm_status_make(BM_ERR_UNSUPPORTED, "%s: hidden_act '%s' (supported: quick_gelu, gelu, gelu_new)", where, a);
  const cJSON *archs = cJSON_GetObjectItemCaseSensitive(root, "architectures");
  const cJSON *a0 = cJSON_IsArray(archs) ? cJSON_GetArrayItem(archs, 0) : NULL;
  if (cJSON_IsString(a0) && strstr(a0->valuestring, "WithProjection"))
    c->proj_dim = (int64_t)num(o, "projection_dim", 0);
  if (!s && (c->hidden <= 0 || c->heads <= 0 || c->hidden % c->heads || c->layers < 2 ||
             c->layers > 256 || c->max_pos <= 0 || c->vocab <= 0 || c->intermediate <= 0))
    s = bm_status_make(BM_ERR_INVALID_ARGUMENT,
                       "%s: bad CLIP text config (hidden_size %lld, heads %lld, layers %lld)", where,
                       (long long)c->hidden, (long long)c->heads, (long long)c->layers);
  cJSON_Delete(root);
  return s;
}

/* One pre-norm encoder layer. x (batch, S, C) */
static bm_node *layer(bm_graph *g, const bm_sd_src *w, const bm_sd_clip_config *c, const char *tm,
                      int i, bm_node *x) {
  char p[160];
  const int64_t C = c->hidden;
  snprintf(p, sizeof p, "%sencoder.layers.%d.layer_norm1", tm, i);
  bm_node *h = bm_sd_layer_norm(g, w, x, p, C, c->eps);
  bm_node *qkv[3];
  const char *names[3] = {"q_proj", "k_proj", "v_proj"};
  for (int j = 0; j < 3; j++) {
    snprintf(p, sizeof p, "%sencoder.layers.%d.self_attn.%s", tm, i, names[j]);
    qkv[j] = bm_sd_linear(g, w, h, p, C, C, true); /* (batch, S, C) */
  }
  h = bm_sd_attention(g, qkv[0], qkv[1], qkv[2], c->heads, true);
  snprintf(p, sizeof p, "%sencoder.layers.%d.self_attn.out_proj", tm, i);
  x = bm_add(g, x, bm_sd_linear(g, w, h, p, C, C, true));
  snprintf(p, sizeof p, "%sencoder.layers.%d.layer_norm2", tm, i);
  h = bm_sd_layer_norm(g, w, x, p, C, c->eps);
  snprintf(p, sizeof p, "%sencoder.layers.%d.mlp.fc1", tm, i);
  h = bm_unary(g, c->act, bm_sd_linear(g, w, h, p, C, c->intermediate, true));
  snprintf(p, sizeof p, "%sencoder.layers.%d.mlp.fc2", tm, i);
  return bm_add(g, x, bm_sd_linear(g, w, h, p, c->intermediate, C, true));
}

/* x widened to f32 (an output of a graph built in f16/bf16), or x itself. */
static bm_node *to_f32(bm_graph *g, bm_node *x) {
  return x && x->dtype != BM_DTYPE_F32 ? bm_cast(g, x, BM_DTYPE_F32) : x;
}

/* The final-normed state at the eos token of each row: one-hot row
 * selection with exact small-integer arithmetic, then a matmul.
 * ids (batch, S) i32, last (batch, S, C) -> (batch, C) */
static bm_node *pool(bm_graph *g, const bm_sd_clip_config *c, int batch_sym, bm_node *ids,
                     bm_node *last) {
  const int64_t S = c->max_pos;
  float rev[1024];
  if (S > 1024) {
    bm_graph_fail(g, bm_status_make(BM_ERR_UNSUPPORTED, "CLIP max_position_embeddings %lld > 1024",
                                    (long long)S));
    return NULL;
  }
  for (int64_t i = 0; i < S; i++) rev[i] = (float)(S - i); /* earlier positions win ties */
  int64_t rs[1] = {S};
  bm_node *later = bm_const(g, BM_DTYPE_F32, 1, rs, rev);
  bm_node *f = bm_cast(g, ids, BM_DTYPE_F32); /* (batch, S), exact below 2^24 */
  bm_node *key;
  if (c->eos_id == 2) {
    /* legacy configs: the position of the largest id (eos is the last id) */
    key = f;
  } else {
    /* 1 where id == eos, else 0 */
    bm_node *d = bm_unary(g, BM_OP_ABS, bm_sub(g, f, bm_scalar(g, (float)c->eos_id)));
    key = bm_sub(g, bm_scalar(g, 1.0f), bm_binary(g, BM_OP_MIN, d, bm_scalar(g, 1.0f)));
  }
  bm_node *score = bm_add(g, bm_mul(g, key, bm_scalar(g, (float)(S + 1))), later);
  bm_node *mx = bm_reduce_max(g, score, 1, true); /* (batch, 1) */
  bm_node *d = bm_unary(g, BM_OP_ABS, bm_sub(g, score, mx));
  bm_node *onehot = bm_sub(g, bm_scalar(g, 1.0f), bm_binary(g, BM_OP_MIN, d, bm_scalar(g, 1.0f)));
  int64_t s3[3] = {BM_SYM(batch_sym), 1, S};
  onehot = bm_reshape(g, onehot, 3, s3);
  bm_node *pooled = bm_matmul(g, onehot, last, false, false); /* (batch, 1, C) */
  int64_t s2[2] = {BM_SYM(batch_sym), c->hidden};
  return bm_reshape(g, pooled, 2, s2);
}

void bm_sd_clip_build(bm_graph *g, const bm_sd_src *w, const bm_sd_clip_config *c, int batch_sym,
                      int clip_skip) {
  if (clip_skip < 1 || clip_skip > c->layers) {
    bm_graph_fail(g, bm_status_make(BM_ERR_INVALID_ARGUMENT, "clip_skip %d: must be 1..%lld",
                                    clip_skip, (long long)c->layers));
    return;
  }
  /* transformers writes CLIPTextModel weights with or without "text_model." */
  const char *tm = bm_sd_has(w, "text_model.embeddings.token_embedding.weight") ? "text_model." : "";
  const int64_t S = c->max_pos, C = c->hidden;
  int64_t is[2] = {BM_SYM(batch_sym), S};
  bm_node *ids = bm_input(g, "input_ids", BM_DTYPE_I32, 2, is); /* (batch, S) */
  int64_t es[2] = {c->vocab, C}, ps[2] = {S, C};
  /* the embedding tables in the compute dtype: the hidden states start in it */
  bm_node *tok = bm_sd_weight(g, w, w->act, 2, es, "%sembeddings.token_embedding.weight", tm);
  bm_node *pos = bm_sd_weight(g, w, w->act, 2, ps, "%sembeddings.position_embedding.weight", tm);
  bm_node *x = bm_add(g, bm_gather(g, tok, ids), pos); /* (batch, S, C) */
  bm_node *hs_skip = NULL, *penultimate = NULL;
  for (int i = 0; i < c->layers; i++) {
    /* x is hidden_states[i]; hidden_states[-k] = hidden_states[layers + 1 - k] */
    if (i == c->layers + 1 - clip_skip) hs_skip = x;
    if (i == c->layers - 1) penultimate = x;
    x = layer(g, w, c, tm, i, x);
  }
  char p[64];
  snprintf(p, sizeof p, "%sfinal_layer_norm", tm);
  bm_node *last = bm_sd_layer_norm(g, w, x, p, C, c->eps);
  bm_node *hidden = clip_skip == 1 ? last : bm_sd_layer_norm(g, w, hs_skip, p, C, c->eps);
  bm_node *pooled = pool(g, c, batch_sym, ids, last); /* f32: a one-hot f32 row selection */
  bm_output_add(g, "hidden_states", to_f32(g, hidden));
  bm_output_add(g, "pooled", pooled);
  bm_output_add(g, "penultimate", to_f32(g, penultimate));
  if (c->proj_dim > 0) {
    int64_t js[2] = {c->proj_dim, C};
    bm_node *pw = bm_sd_weight(g, w, w->dtype, 2, js, "text_projection.weight");
    bm_output_add(g, "text_embeds", bm_linear(g, pooled, pw, NULL));
  }
}
