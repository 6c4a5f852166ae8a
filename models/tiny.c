/* tiny.c - "tiny", the built-in default model: a small conv + transformer
 * image classifier with generated weights. It exists so that a fresh
 * checkout can compile and run something end to end with no download, and
 * it touches the main op families: conv2d, GroupNorm+SiLU, attention,
 * LayerNorm, GELU MLP, residuals, reductions, a symbolic batch.
 *
 *   image (batch, 3, 32, 32) -> logits (batch, 10), probs (batch, 10)
 */
#include <math.h>
#include <stdio.h>

#include "models.h"

#define TINY_C 32      /* channels after the stem */
#define TINY_D 64      /* token dim */
#define TINY_HEADS 4
#define TINY_LAYERS 2
#define TINY_CLASSES 10

static bm_node *conv_gn_silu(bm_graph *g, bm_weight_source *src, bm_node *x, const char *p,
                             int cin, int cout, int stride) {
  int64_t ws[4] = {cout, cin, 3, 3}, bs[1] = {cout};
  bm_node *w = bm_model_weightf(g, src, BM_DTYPE_F32, 4, ws, "%s.conv.weight", p);
  bm_node *b = bm_model_weightf(g, src, BM_DTYPE_F32, 1, bs, "%s.conv.bias", p);
  x = bm_conv2d(g, x, w, b, stride, stride, 1, 1, 1, 1, 1);
  bm_node *gw = bm_model_weightf(g, src, BM_DTYPE_F32, 1, bs, "%s.norm.weight", p);
  bm_node *gb = bm_model_weightf(g, src, BM_DTYPE_F32, 1, bs, "%s.norm.bias", p);
  x = bm_group_norm(g, x, gw, gb, 8, 1e-5f);
  return bm_silu(g, x);
}

static bm_node *linear(bm_graph *g, bm_weight_source *src, bm_node *x, const char *p, int in,
                       int out) {
  int64_t ws[2] = {out, in}, bs[1] = {out};
  bm_node *w = bm_model_weightf(g, src, BM_DTYPE_F32, 2, ws, "%s.weight", p);
  bm_node *b = bm_model_weightf(g, src, BM_DTYPE_F32, 1, bs, "%s.bias", p);
  return bm_linear(g, x, w, b);
}

static bm_node *layer_norm(bm_graph *g, bm_weight_source *src, bm_node *x, const char *p) {
  int64_t s[1] = {TINY_D};
  bm_node *w = bm_model_weightf(g, src, BM_DTYPE_F32, 1, s, "%s.weight", p);
  bm_node *b = bm_model_weightf(g, src, BM_DTYPE_F32, 1, s, "%s.bias", p);
  return bm_layer_norm(g, x, w, b, 1e-5f);
}

/* Self-attention written as plain matmul/softmax: the attention fusion
 * pass turns it into one flash-attention kernel. x: (batch, T, D) */
static bm_node *attention_block(bm_graph *g, bm_weight_source *src, bm_node *x, int layer,
                                int64_t T) {
  char p[64];
  const int hd = TINY_D / TINY_HEADS;
  snprintf(p, sizeof p, "blocks.%d.norm1", layer);
  bm_node *h = layer_norm(g, src, x, p);
  bm_node *qkv[3];
  const char *names[3] = {"q", "k", "v"};
  for (int i = 0; i < 3; i++) {
    snprintf(p, sizeof p, "blocks.%d.attn.%s", layer, names[i]);
    bm_node *t = linear(g, src, h, p, TINY_D, TINY_D); /* (batch, T, D) */
    int64_t s4[4] = {BM_SYM(0), T, TINY_HEADS, hd};
    t = bm_reshape(g, t, 4, s4);                         /* (batch, T, H, hd) */
    int perm[4] = {0, 2, 1, 3};
    qkv[i] = bm_permute(g, t, perm);                     /* (batch, H, T, hd) */
  }
  bm_node *scores = bm_matmul(g, qkv[0], qkv[1], false, true); /* (batch, H, T, T) */
  scores = bm_mul(g, scores, bm_scalar(g, 1.0f / sqrtf((float)hd)));
  bm_node *probs = bm_softmax(g, scores, -1);
  bm_node *o = bm_matmul(g, probs, qkv[2], false, false);      /* (batch, H, T, hd) */
  int perm[4] = {0, 2, 1, 3};
  o = bm_permute(g, o, perm);                                   /* (batch, T, H, hd) */
  int64_t s3[3] = {BM_SYM(0), T, TINY_D};
  o = bm_reshape(g, o, 3, s3);
  snprintf(p, sizeof p, "blocks.%d.attn.out", layer);
  x = bm_add(g, x, linear(g, src, o, p, TINY_D, TINY_D));

  snprintf(p, sizeof p, "blocks.%d.norm2", layer);
  h = layer_norm(g, src, x, p);
  snprintf(p, sizeof p, "blocks.%d.mlp.fc1", layer);
  h = bm_gelu(g, linear(g, src, h, p, TINY_D, 4 * TINY_D));
  snprintf(p, sizeof p, "blocks.%d.mlp.fc2", layer);
  return bm_add(g, x, linear(g, src, h, p, 4 * TINY_D, TINY_D));
}

static bm_status tiny_build(bm_module *m, bm_weight_source *src, const bm_model_options *o) {
  if (o->dtype != BM_DTYPE_F32)
    return bm_status_make(BM_ERR_UNSUPPORTED, "tiny: compute dtype %s (the built-in model runs in f32 only; "
                          "--dtype applies to LLM and Stable Diffusion models)", bm_dtype_name(o->dtype));
  bm_graph *g = bm_graph_create(m, "main");
  if (!g) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "tiny: graph");
  int batch = bm_sym_declare(g, "batch", o->max_batch > 0 ? o->max_batch : 4);
  int64_t is[4] = {BM_SYM(batch), 3, 32, 32};
  bm_node *x = bm_input(g, "image", BM_DTYPE_F32, 4, is);  /* (batch, 3, 32, 32) */
  x = conv_gn_silu(g, src, x, "stem.0", 3, TINY_C, 1);     /* (batch, C, 32, 32) */
  x = conv_gn_silu(g, src, x, "stem.1", TINY_C, TINY_D, 2); /* (batch, D, 16, 16) */
  x = conv_gn_silu(g, src, x, "stem.2", TINY_D, TINY_D, 2); /* (batch, D, 8, 8) */
  const int64_t T = 64;
  int64_t s3[3] = {BM_SYM(batch), TINY_D, T};
  x = bm_reshape(g, x, 3, s3);                             /* (batch, D, T) */
  x = bm_transpose(g, x, 1, 2);                            /* (batch, T, D) */
  for (int l = 0; l < TINY_LAYERS; l++) x = attention_block(g, src, x, l, T);
  x = layer_norm(g, src, x, "norm");
  x = bm_mean(g, x, 1, false);                             /* (batch, D) */
  bm_node *logits = linear(g, src, x, "head", TINY_D, TINY_CLASSES); /* (batch, 10) */
  bm_output_add(g, "logits", logits);
  bm_output_add(g, "probs", bm_softmax(g, logits, -1));
  return NULL;
}

const bm_model_def bm_model_tiny = {
    .name = "tiny",
    .description = "built-in conv+transformer classifier with generated weights (default)",
    .build = tiny_build,
};
