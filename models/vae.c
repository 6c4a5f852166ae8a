/* vae.c - diffusers' AutoencoderKL (the Stable Diffusion VAE): the encoder
 * (image -> latent mean, logvar, std) and the decoder (latent -> image),
 * each with its mid-block self-attention and the optional
 * quant_conv/post_quant_conv. The scaling factor is applied by the
 * pipeline, not here. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "sd.h"

#define VAE_EPS 1e-6f

/* A number field; values outside (-2^31, 2^31) (and inf) give -1, which the
 * range checks refuse: converting them to the int fields would be undefined. */
static double num(const cJSON *o, const char *k, double def) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
  if (!cJSON_IsNumber(v)) return def;
  return fabs(v->valuedouble) < 2147483648.0 ? v->valuedouble : -1;
}

static bool flag(const cJSON *o, const char *k, bool def) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
  return cJSON_IsBool(v) ? cJSON_IsTrue(v) : def;
}

bm_status bm_sd_vae_config_parse(const char *json, const char *where, bm_sd_vae_config *c) {
  memset(c, 0, sizeof *c);
  cJSON *o = cJSON_Parse(json);
  bm_status s = NULL;
  if (!cJSON_IsObject(o)) {
    cJSON_Delete(o);
    return bm_status_make(BM_ERR_CORRUPT, "%s: not a JSON object", where);
  }
  const cJSON *bo = cJSON_GetObjectItemCaseSensitive(o, "block_out_channels");
  c->nblocks = cJSON_IsArray(bo) ? cJSON_GetArraySize(bo) : 0;
  if (c->nblocks < 1 || c->nblocks > BM_SD_MAX_BLOCKS) {
    s = bm_status_make(BM_ERR_INVALID_ARGUMENT, "%s: block_out_channels must be a list of 1..%d",
                       where, BM_SD_MAX_BLOCKS);
  }
  for (int i = 0; !s && i < c->nblocks; i++) {
    const cJSON *b = cJSON_GetArrayItem(bo, i);
    c->block_out[i] = cJSON_IsNumber(b) && fabs(b->valuedouble) < 2147483648.0 ? (int64_t)b->valuedouble : 0;
    if (c->block_out[i] <= 0)
      s = bm_status_make(BM_ERR_INVALID_ARGUMENT, "%s: bad block_out_channels[%d]", where, i);
  }
  c->in_channels = (int64_t)num(o, "in_channels", 3);
  c->out_channels = (int64_t)num(o, "out_channels", 3);
  c->latent_channels = (int64_t)num(o, "latent_channels", 4);
  c->layers_per_block = (int)num(o, "layers_per_block", 1);
  c->groups = (int)num(o, "norm_num_groups", 32);
  c->quant_conv = flag(o, "use_quant_conv", true);
  c->post_quant_conv = flag(o, "use_post_quant_conv", true);
  c->mid_attn = flag(o, "mid_block_add_attention", true);
  c->scaling_factor = num(o, "scaling_factor", 0.18215);
  c->shift_factor = num(o, "shift_factor", 0.0);
  if (!s && (c->layers_per_block < 1 || c->layers_per_block > 16 || c->groups < 1 ||
             c->in_channels < 1 || c->out_channels < 1 || c->latent_channels < 1))
    s = bm_status_make(BM_ERR_INVALID_ARGUMENT, "%s: bad layers_per_block/norm_num_groups/channels", where);
  cJSON_Delete(o);
  return s;
}

/* ResnetBlock2D without time embedding (eps 1e-6). */
static bm_node *resnet(bm_graph *g, const bm_sd_src *w, const bm_sd_vae_config *c, const char *p,
                       bm_node *x, int64_t cin, int64_t cout) {
  char n[160];
  snprintf(n, sizeof n, "%s.norm1", p);
  bm_node *h = bm_sd_group_norm(g, w, x, n, cin, c->groups, VAE_EPS, true);
  snprintf(n, sizeof n, "%s.conv1", p);
  h = bm_sd_conv(g, w, h, n, cin, cout, 3, 1, 1);
  snprintf(n, sizeof n, "%s.norm2", p);
  h = bm_sd_group_norm(g, w, h, n, cout, c->groups, VAE_EPS, true);
  snprintf(n, sizeof n, "%s.conv2", p);
  h = bm_sd_conv(g, w, h, n, cout, cout, 3, 1, 1);
  if (cin != cout) {
    snprintf(n, sizeof n, "%s.conv_shortcut", p);
    x = bm_sd_conv(g, w, x, n, cin, cout, 1, 1, 0);
  }
  return bm_add(g, x, h);
}

/* The mid block's single-head self-attention. x (1, C, h, w) */
static bm_node *attention(bm_graph *g, const bm_sd_src *w, const bm_sd_vae_config *c, const char *p,
                          bm_node *x, int64_t C, int64_t h, int64_t wd) {
  char n[160];
  snprintf(n, sizeof n, "%s.group_norm", p);
  bm_node *t = bm_sd_group_norm(g, w, x, n, C, c->groups, VAE_EPS, false);
  int64_t s3[3] = {1, C, h * wd}, s4[4] = {1, C, h, wd};
  t = bm_transpose(g, bm_reshape(g, t, 3, s3), 1, 2); /* (1, hw, C) */
  bm_node *qkv[3];
  const char *names[3] = {"to_q", "to_k", "to_v"};
  for (int i = 0; i < 3; i++) {
    snprintf(n, sizeof n, "%s.%s", p, names[i]);
    qkv[i] = bm_sd_linear(g, w, t, n, C, C, true);
  }
  t = bm_sd_attention(g, qkv[0], qkv[1], qkv[2], 1, false);
  snprintf(n, sizeof n, "%s.to_out.0", p);
  t = bm_sd_linear(g, w, t, n, C, C, true);
  t = bm_reshape(g, bm_transpose(g, t, 1, 2), 4, s4);
  return bm_add(g, t, x);
}

static bm_node *mid_block(bm_graph *g, const bm_sd_src *w, const bm_sd_vae_config *c, const char *p,
                          bm_node *x, int64_t C, int64_t h, int64_t wd) {
  char n[128];
  snprintf(n, sizeof n, "%s.mid_block.resnets.0", p);
  x = resnet(g, w, c, n, x, C, C);
  if (c->mid_attn) {
    snprintf(n, sizeof n, "%s.mid_block.attentions.0", p);
    x = attention(g, w, c, n, x, C, h, wd);
  }
  snprintf(n, sizeof n, "%s.mid_block.resnets.1", p);
  return resnet(g, w, c, n, x, C, C);
}

static bool check_size(bm_graph *g, const bm_sd_vae_config *c, int64_t h, int64_t wd, int64_t f,
                       const char *what) {
  if (h >= 1 && wd >= 1 && h % f == 0 && wd % f == 0) return true;
  bm_graph_fail(g, bm_status_make(BM_ERR_INVALID_ARGUMENT, "VAE %s size %lldx%lld must be a multiple of %lld",
                                  what, (long long)h, (long long)wd, (long long)f));
  (void)c;
  return false;
}

void bm_sd_vae_encoder_build(bm_graph *g, const bm_sd_src *w, const bm_sd_vae_config *c, int64_t H,
                             int64_t W) {
  const int nb = c->nblocks;
  if (!check_size(g, c, H, W, (int64_t)1 << (nb - 1), "image")) return;
  int64_t is[4] = {1, c->in_channels, H, W};
  bm_node *x = bm_input(g, "image", BM_DTYPE_F32, 4, is);
  if (w->act != BM_DTYPE_F32) x = bm_cast(g, x, w->act); /* the compute dtype from here on */
  x = bm_sd_conv(g, w, x, "encoder.conv_in", c->in_channels, c->block_out[0], 3, 1, 1);
  int64_t ch = c->block_out[0], h = H, wd = W;
  char p[128];
  for (int i = 0; i < nb; i++) {
    for (int j = 0; j < c->layers_per_block; j++) {
      snprintf(p, sizeof p, "encoder.down_blocks.%d.resnets.%d", i, j);
      x = resnet(g, w, c, p, x, ch, c->block_out[i]);
      ch = c->block_out[i];
    }
    if (i < nb - 1) {
      /* Downsample2D with padding 0: pad right and bottom by one, conv stride 2 */
      int64_t pads[8] = {0, 0, 0, 0, 0, 1, 0, 1};
      x = bm_pad(g, x, pads, 0.0f);
      snprintf(p, sizeof p, "encoder.down_blocks.%d.downsamplers.0.conv", i);
      x = bm_sd_conv(g, w, x, p, ch, ch, 3, 2, 0);
      h /= 2;
      wd /= 2;
    }
  }
  x = mid_block(g, w, c, "encoder", x, ch, h, wd);
  x = bm_sd_group_norm(g, w, x, "encoder.conv_norm_out", ch, c->groups, VAE_EPS, true);
  const int64_t L = c->latent_channels;
  x = bm_sd_conv(g, w, x, "encoder.conv_out", ch, 2 * L, 3, 1, 1); /* (1, 2L, h, w) */
  if (c->quant_conv) x = bm_sd_conv(g, w, x, "quant_conv", 2 * L, 2 * L, 1, 1, 0);
  /* the latent distribution in f32 (outputs) */
  if (x && x->dtype != BM_DTYPE_F32) x = bm_cast(g, x, BM_DTYPE_F32);
  bm_node *mean = bm_slice(g, x, 1, 0, L, 1);
  bm_node *logvar = bm_slice(g, x, 1, L, 2 * L, 1);
  logvar = bm_binary(g, BM_OP_MIN, bm_binary(g, BM_OP_MAX, logvar, bm_scalar(g, -30.0f)),
                     bm_scalar(g, 20.0f));
  bm_node *std = bm_unary(g, BM_OP_EXP, bm_mul(g, logvar, bm_scalar(g, 0.5f)));
  bm_output_add(g, "mean", mean);
  bm_output_add(g, "logvar", logvar);
  bm_output_add(g, "std", std);
}

void bm_sd_vae_decoder_build(bm_graph *g, const bm_sd_src *w, const bm_sd_vae_config *c, int64_t h,
                             int64_t wd) {
  const int nb = c->nblocks;
  if (!check_size(g, c, h, wd, 1, "latent")) return;
  const int64_t L = c->latent_channels;
  int64_t ls[4] = {1, L, h, wd};
  bm_node *x = bm_input(g, "latent", BM_DTYPE_F32, 4, ls);
  if (w->act != BM_DTYPE_F32) x = bm_cast(g, x, w->act); /* the compute dtype from here on */
  if (c->post_quant_conv) x = bm_sd_conv(g, w, x, "post_quant_conv", L, L, 1, 1, 0);
  int64_t ch = c->block_out[nb - 1];
  x = bm_sd_conv(g, w, x, "decoder.conv_in", L, ch, 3, 1, 1);
  x = mid_block(g, w, c, "decoder", x, ch, h, wd);
  char p[128];
  for (int i = 0; i < nb; i++) {
    const int64_t cout = c->block_out[nb - 1 - i];
    for (int j = 0; j < c->layers_per_block + 1; j++) {
      snprintf(p, sizeof p, "decoder.up_blocks.%d.resnets.%d", i, j);
      x = resnet(g, w, c, p, x, ch, cout);
      ch = cout;
    }
    if (i < nb - 1) {
      x = bm_upsample_nearest(g, x, 2);
      snprintf(p, sizeof p, "decoder.up_blocks.%d.upsamplers.0.conv", i);
      x = bm_sd_conv(g, w, x, p, ch, ch, 3, 1, 1);
    }
  }
  x = bm_sd_group_norm(g, w, x, "decoder.conv_norm_out", ch, c->groups, VAE_EPS, true);
  x = bm_sd_conv(g, w, x, "decoder.conv_out", ch, c->out_channels, 3, 1, 1);
  if (x && x->dtype != BM_DTYPE_F32) x = bm_cast(g, x, BM_DTYPE_F32);
  bm_output_add(g, "image", x);
}
