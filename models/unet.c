/* unet.c - diffusers' UNet2DConditionModel as used by Stable Diffusion 1.x
 * and 2.x (and their 9-channel inpainting variants): sinusoidal timestep
 * embedding, ResNet blocks with the time embedding, spatial transformers
 * (self-attention, cross-attention, GEGLU feed-forward) with conv (SD 1.x)
 * or linear (SD 2.x) proj_in/proj_out, down/up samplers and the skip
 * connections. Built from the diffusers config.json. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "sd.h"

/* ------------------------------------------------------------------ config */

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

/* An int or a list of n ints (a list of a different length is an error). */
static bool int_or_list(const cJSON *o, const char *k, int n, int64_t def, int64_t *out) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
  if (!v || cJSON_IsNull(v)) {
    for (int i = 0; i < n; i++) out[i] = def;
    return true;
  }
  if (cJSON_IsNumber(v)) {
    double d = fabs(v->valuedouble) < 2147483648.0 ? v->valuedouble : -1; /* -1: refused later */
    for (int i = 0; i < n; i++) out[i] = (int64_t)d;
    return true;
  }
  if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != n) return false;
  for (int i = 0; i < n; i++) {
    const cJSON *e = cJSON_GetArrayItem(v, i);
    if (!cJSON_IsNumber(e) || !(fabs(e->valuedouble) < 2147483648.0)) return false;
    out[i] = (int64_t)e->valuedouble;
  }
  return true;
}

bm_status bm_sd_unet_config_parse(const char *json, const char *where, bm_sd_unet_config *c) {
  memset(c, 0, sizeof *c);
  cJSON *o = cJSON_Parse(json);
  bm_status s = NULL;
#define FAIL(...) do { s = bm_status_make(__VA_ARGS__); goto done; } while (0)
  if (!cJSON_IsObject(o)) FAIL(BM_ERR_CORRUPT, "%s: not a JSON object", where);
  const cJSON *bo = cJSON_GetObjectItemCaseSensitive(o, "block_out_channels");
  const cJSON *db = cJSON_GetObjectItemCaseSensitive(o, "down_block_types");
  const cJSON *ub = cJSON_GetObjectItemCaseSensitive(o, "up_block_types");
  c->nblocks = cJSON_IsArray(bo) ? cJSON_GetArraySize(bo) : 0;
  if (c->nblocks < 1 || c->nblocks > BM_SD_MAX_BLOCKS || !cJSON_IsArray(db) || !cJSON_IsArray(ub) ||
      cJSON_GetArraySize(db) != c->nblocks || cJSON_GetArraySize(ub) != c->nblocks)
    FAIL(BM_ERR_INVALID_ARGUMENT,
         "%s: block_out_channels, down_block_types and up_block_types must be lists of equal "
         "length 1..%d", where, BM_SD_MAX_BLOCKS);
  for (int i = 0; i < c->nblocks; i++) {
    const cJSON *b = cJSON_GetArrayItem(bo, i);
    const cJSON *d = cJSON_GetArrayItem(db, i), *u = cJSON_GetArrayItem(ub, i);
    c->block_out[i] = cJSON_IsNumber(b) && fabs(b->valuedouble) < 2147483648.0 ? (int64_t)b->valuedouble : 0;
    const char *dn = cJSON_IsString(d) ? d->valuestring : "", *un = cJSON_IsString(u) ? u->valuestring : "";
    if (!strcmp(dn, "CrossAttnDownBlock2D")) c->down_attn[i] = true;
    else if (strcmp(dn, "DownBlock2D")) FAIL(BM_ERR_UNSUPPORTED, "%s: down block type '%s' (supported: CrossAttnDownBlock2D, DownBlock2D)", where, dn);
    if (!strcmp(un, "CrossAttnUpBlock2D")) c->up_attn[i] = true;
    else if (strcmp(un, "UpBlock2D")) FAIL(BM_ERR_UNSUPPORTED, "%s: up block type '%s' (supported: CrossAttnUpBlock2D, UpBlock2D)", where, un);
    if (c->block_out[i] <= 0) FAIL(BM_ERR_INVALID_ARGUMENT, "%s: bad block_out_channels[%d]", where, i);
  }
  const cJSON *mt = cJSON_GetObjectItemCaseSensitive(o, "mid_block_type");
  const char *mid = cJSON_IsString(mt) ? mt->valuestring : "UNetMidBlock2DCrossAttn";
  if (!strcmp(mid, "UNetMidBlock2DCrossAttn")) c->mid_attn = true;
  else FAIL(BM_ERR_UNSUPPORTED, "%s: mid_block_type '%s' (supported: UNetMidBlock2DCrossAttn)", where, mid);
  c->in_channels = (int64_t)num(o, "in_channels", 4);
  c->out_channels = (int64_t)num(o, "out_channels", 4);
  c->layers_per_block = (int)num(o, "layers_per_block", 2);
  c->cross_dim = (int64_t)num(o, "cross_attention_dim", 1280);
  c->linear_proj = flag(o, "use_linear_projection", false);
  c->groups = (int)num(o, "norm_num_groups", 32);
  c->eps = (float)num(o, "norm_eps", 1e-5);
  c->flip_sin_to_cos = flag(o, "flip_sin_to_cos", true);
  c->freq_shift = (float)num(o, "freq_shift", 0);
  c->center_input = flag(o, "center_input_sample", false);
  c->downsample_padding = (int)num(o, "downsample_padding", 1);
  /* diffusers naming quirk: attention_head_dim is the number of heads
   * when num_attention_heads is null */
  int64_t heads[BM_SD_MAX_BLOCKS], tl[BM_SD_MAX_BLOCKS];
  const cJSON *nh = cJSON_GetObjectItemCaseSensitive(o, "num_attention_heads");
  const char *hk = nh && !cJSON_IsNull(nh) ? "num_attention_heads" : "attention_head_dim";
  if (!int_or_list(o, hk, c->nblocks, 8, heads))
    FAIL(BM_ERR_INVALID_ARGUMENT, "%s: %s must be an int or a list of %d", where, hk, c->nblocks);
  if (!int_or_list(o, "transformer_layers_per_block", c->nblocks, 1, tl))
    FAIL(BM_ERR_UNSUPPORTED, "%s: transformer_layers_per_block must be an int or a list of %d ints", where, c->nblocks);
  for (int i = 0; i < c->nblocks; i++) {
    c->heads[i] = heads[i];
    c->transformer_layers[i] = (int)tl[i];
    if (heads[i] <= 0 || c->block_out[i] % heads[i] || tl[i] < 1 || tl[i] > 64)
      FAIL(BM_ERR_INVALID_ARGUMENT, "%s: block %d: %lld channels, %lld heads, %lld transformer layers",
           where, i, (long long)c->block_out[i], (long long)heads[i], (long long)tl[i]);
  }
  /* features SD 1.x / 2.x do not use */
  static const char *const must_be_null[] = {"class_embed_type", "addition_embed_type",
                                             "encoder_hid_dim", "time_cond_proj_dim",
                                             "num_class_embeds", "reverse_transformer_layers_per_block"};
  for (size_t i = 0; i < sizeof must_be_null / sizeof must_be_null[0]; i++) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, must_be_null[i]);
    if (v && !cJSON_IsNull(v)) FAIL(BM_ERR_UNSUPPORTED, "%s: %s is set (not supported for SD 1.x/2.x UNets)", where, must_be_null[i]);
  }
  if (flag(o, "dual_cross_attention", false) || flag(o, "only_cross_attention", false))
    FAIL(BM_ERR_UNSUPPORTED, "%s: dual_cross_attention / only_cross_attention are not supported", where);
  const cJSON *te = cJSON_GetObjectItemCaseSensitive(o, "time_embedding_type");
  if (te && cJSON_IsString(te) && strcmp(te->valuestring, "positional"))
    FAIL(BM_ERR_UNSUPPORTED, "%s: time_embedding_type '%s' (supported: positional)", where, te->valuestring);
  const cJSON *ts = cJSON_GetObjectItemCaseSensitive(o, "resnet_time_scale_shift");
  if (ts && cJSON_IsString(ts) && strcmp(ts->valuestring, "default"))
    FAIL(BM_ERR_UNSUPPORTED, "%s: resnet_time_scale_shift '%s' (supported: default)", where, ts->valuestring);
  if (num(o, "resnet_out_scale_factor", 1.0) != 1.0 || num(o, "mid_block_scale_factor", 1.0) != 1.0)
    FAIL(BM_ERR_UNSUPPORTED, "%s: resnet_out_scale_factor / mid_block_scale_factor other than 1", where);
  if (c->layers_per_block < 1 || c->layers_per_block > 16 || c->groups < 1 || c->in_channels < 1 ||
      c->out_channels < 1 || c->cross_dim < 1)
    FAIL(BM_ERR_INVALID_ARGUMENT, "%s: bad layers_per_block/norm_num_groups/channels", where);
#undef FAIL
done:
  cJSON_Delete(o);
  return s;
}

/* ------------------------------------------------------------------ blocks */

typedef struct unet_ctx {
  bm_graph *g;
  const bm_sd_src *w;
  const bm_sd_unet_config *c;
  int B;              /* batch symbol */
  bm_node *temb_act;  /* silu(time embedding) (batch, 4*C0) */
  int64_t temb_dim;
  bm_node *ctx;       /* encoder_hidden_states (batch, ctx_len, cross_dim) */
  int64_t ctx_len;
} unet_ctx;

/* ResnetBlock2D. x (batch, cin, h, w) -> (batch, cout, h, w) */
static bm_node *resnet(unet_ctx *u, const char *p, bm_node *x, int64_t cin, int64_t cout) {
  bm_graph *g = u->g;
  char n[160];
  snprintf(n, sizeof n, "%s.norm1", p);
  bm_node *h = bm_sd_group_norm(g, u->w, x, n, cin, u->c->groups, u->c->eps, true);
  snprintf(n, sizeof n, "%s.conv1", p);
  h = bm_sd_conv(g, u->w, h, n, cin, cout, 3, 1, 1);
  snprintf(n, sizeof n, "%s.time_emb_proj", p);
  bm_node *t = bm_sd_linear(g, u->w, u->temb_act, n, u->temb_dim, cout, true); /* (batch, cout) */
  int64_t ts[4] = {BM_SYM(u->B), cout, 1, 1};
  h = bm_add(g, h, bm_reshape(g, t, 4, ts));
  snprintf(n, sizeof n, "%s.norm2", p);
  h = bm_sd_group_norm(g, u->w, h, n, cout, u->c->groups, u->c->eps, true);
  snprintf(n, sizeof n, "%s.conv2", p);
  h = bm_sd_conv(g, u->w, h, n, cout, cout, 3, 1, 1);
  if (cin != cout) {
    snprintf(n, sizeof n, "%s.conv_shortcut", p);
    x = bm_sd_conv(g, u->w, x, n, cin, cout, 1, 1, 0);
  }
  return bm_add(g, x, h);
}

/* Attention with to_q/to_k/to_v (no bias) and to_out.0. x (batch, S, C),
 * ctx (batch, Sk, Cctx) or NULL for self-attention. */
static bm_node *attn(unet_ctx *u, const char *p, bm_node *x, bm_node *ctx, int64_t C, int64_t cctx,
                     int64_t heads) {
  bm_graph *g = u->g;
  char n[200];
  bm_node *src = ctx ? ctx : x;
  snprintf(n, sizeof n, "%s.to_q", p);
  bm_node *q = bm_sd_linear(g, u->w, x, n, C, C, false);
  snprintf(n, sizeof n, "%s.to_k", p);
  bm_node *k = bm_sd_linear(g, u->w, src, n, cctx, C, false);
  snprintf(n, sizeof n, "%s.to_v", p);
  bm_node *v = bm_sd_linear(g, u->w, src, n, cctx, C, false);
  bm_node *o = bm_sd_attention(g, q, k, v, heads, false);
  snprintf(n, sizeof n, "%s.to_out.0", p);
  return bm_sd_linear(g, u->w, o, n, C, C, true);
}

/* BasicTransformerBlock. x (batch, S, C) */
static bm_node *transformer_block(unet_ctx *u, const char *p, bm_node *x, int64_t C, int64_t heads) {
  bm_graph *g = u->g;
  char n[256]; /* p is at most 200 bytes (callers), plus a suffix */
  snprintf(n, sizeof n, "%s.norm1", p);
  bm_node *h = bm_sd_layer_norm(g, u->w, x, n, C, 1e-5f);
  snprintf(n, sizeof n, "%s.attn1", p);
  x = bm_add(g, x, attn(u, n, h, NULL, C, C, heads));
  snprintf(n, sizeof n, "%s.norm2", p);
  h = bm_sd_layer_norm(g, u->w, x, n, C, 1e-5f);
  snprintf(n, sizeof n, "%s.attn2", p);
  x = bm_add(g, x, attn(u, n, h, u->ctx, C, u->c->cross_dim, heads));
  snprintf(n, sizeof n, "%s.norm3", p);
  h = bm_sd_layer_norm(g, u->w, x, n, C, 1e-5f);
  /* GEGLU: proj -> (hidden, gate) halves; hidden * gelu(gate) */
  snprintf(n, sizeof n, "%s.ff.net.0.proj", p);
  h = bm_sd_linear(g, u->w, h, n, C, 8 * C, true); /* (batch, S, 8C) */
  bm_node *hid = bm_slice(g, h, 2, 0, 4 * C, 1);
  bm_node *gate = bm_slice(g, h, 2, 4 * C, 8 * C, 1);
  h = bm_mul(g, hid, bm_gelu(g, gate));
  snprintf(n, sizeof n, "%s.ff.net.2", p);
  return bm_add(g, x, bm_sd_linear(g, u->w, h, n, 4 * C, C, true));
}

/* Transformer2DModel. x (batch, C, h, w) -> (batch, C, h, w) */
static bm_node *spatial_transformer(unet_ctx *u, const char *p, bm_node *x, int64_t C, int64_t h,
                                    int64_t wd, int64_t heads, int nlayers) {
  bm_graph *g = u->g;
  char n[200];
  bm_node *res = x;
  snprintf(n, sizeof n, "%s.norm", p);
  x = bm_sd_group_norm(g, u->w, x, n, C, u->c->groups, 1e-6f, false);
  int64_t s3[3] = {BM_SYM(u->B), C, h * wd};
  snprintf(n, sizeof n, "%s.proj_in", p);
  if (u->c->linear_proj) {
    x = bm_transpose(g, bm_reshape(g, x, 3, s3), 1, 2); /* (batch, hw, C) */
    x = bm_sd_linear(g, u->w, x, n, C, C, true);
  } else {
    x = bm_sd_conv(g, u->w, x, n, C, C, 1, 1, 0);
    x = bm_transpose(g, bm_reshape(g, x, 3, s3), 1, 2); /* (batch, hw, C) */
  }
  for (int l = 0; l < nlayers; l++) {
    snprintf(n, sizeof n, "%s.transformer_blocks.%d", p, l);
    x = transformer_block(u, n, x, C, heads);
  }
  snprintf(n, sizeof n, "%s.proj_out", p);
  int64_t s4[4] = {BM_SYM(u->B), C, h, wd};
  if (u->c->linear_proj) {
    x = bm_sd_linear(g, u->w, x, n, C, C, true);
    x = bm_reshape(g, bm_transpose(g, x, 1, 2), 4, s4);
  } else {
    x = bm_reshape(g, bm_transpose(g, x, 1, 2), 4, s4);
    x = bm_sd_conv(g, u->w, x, n, C, C, 1, 1, 0);
  }
  return bm_add(g, x, res);
}

/* get_timestep_embedding: t (batch) -> (batch, dim), computed like diffusers
 * in f32: exponent = -ln(10000) * i / (half - shift), emb = t * exp(exponent). */
static bm_node *timestep_embedding(unet_ctx *u, bm_node *t, int64_t dim) {
  bm_graph *g = u->g;
  const int64_t half = dim / 2;
  float freqs[4096];
  if (half > 4096 || dim % 2) {
    bm_graph_fail(g, bm_status_make(BM_ERR_UNSUPPORTED, "timestep embedding dim %lld", (long long)dim));
    return NULL;
  }
  for (int64_t i = 0; i < half; i++) {
    float e = -logf(10000.0f) * (float)i;
    e = e / ((float)half - u->c->freq_shift);
    freqs[i] = expf(e);
  }
  int64_t fs[2] = {1, half}, ts[2] = {BM_SYM(u->B), 1};
  bm_node *arg = bm_mul(g, bm_reshape(g, t, 2, ts), bm_const(g, BM_DTYPE_F32, 2, fs, freqs));
  bm_node *sc[2] = {bm_unary(g, BM_OP_SIN, arg), bm_unary(g, BM_OP_COS, arg)};
  if (u->c->flip_sin_to_cos) {
    bm_node *tmp = sc[0];
    sc[0] = sc[1];
    sc[1] = tmp;
  }
  return bm_concat(g, 2, sc, 1); /* (batch, dim) */
}

void bm_sd_unet_build(bm_graph *g, const bm_sd_src *w, const bm_sd_unet_config *c, int batch_sym,
                      int64_t h, int64_t wd, int64_t ctx_len) {
  const int nb = c->nblocks, L = c->layers_per_block;
  const int64_t f = (int64_t)1 << (nb - 1);
  if (h < 1 || wd < 1 || h % f || wd % f) {
    bm_graph_fail(g, bm_status_make(BM_ERR_INVALID_ARGUMENT,
                                    "UNet latent size %lldx%lld must be a multiple of %lld",
                                    (long long)h, (long long)wd, (long long)f));
    return;
  }
  unet_ctx u = {.g = g, .w = w, .c = c, .B = batch_sym, .ctx_len = ctx_len};
  const int64_t C0 = c->block_out[0];
  u.temb_dim = 4 * C0;
  int64_t ss[4] = {BM_SYM(batch_sym), c->in_channels, h, wd};
  int64_t ts[1] = {BM_SYM(batch_sym)};
  int64_t cs[3] = {BM_SYM(batch_sym), ctx_len, c->cross_dim};
  bm_node *x = bm_input(g, "sample", BM_DTYPE_F32, 4, ss);
  bm_node *t = bm_input(g, "timestep", BM_DTYPE_F32, 1, ts);
  u.ctx = bm_input(g, "encoder_hidden_states", BM_DTYPE_F32, 3, cs);
  if (c->center_input) x = bm_sub(g, bm_mul(g, x, bm_scalar(g, 2.0f)), bm_scalar(g, 1.0f));
  /* the compute dtype from here on (f32 inputs cast once) */
  if (w->act != BM_DTYPE_F32) {
    x = bm_cast(g, x, w->act);
    u.ctx = bm_cast(g, u.ctx, w->act);
  }

  /* time embedding: sinusoid (f32, as diffusers) -> linear_1 -> silu -> linear_2;
   * resnets use silu(temb) */
  bm_node *temb = timestep_embedding(&u, t, C0);
  if (temb && w->act != BM_DTYPE_F32) temb = bm_cast(g, temb, w->act);
  temb = bm_silu(g, bm_sd_linear(g, w, temb, "time_embedding.linear_1", C0, u.temb_dim, true));
  temb = bm_sd_linear(g, w, temb, "time_embedding.linear_2", u.temb_dim, u.temb_dim, true);
  u.temb_act = bm_silu(g, temb);

  x = bm_sd_conv(g, w, x, "conv_in", c->in_channels, C0, 3, 1, 1);
  /* the skip connections, with their channels */
  bm_node *skips[1 + BM_SD_MAX_BLOCKS * 17];
  int64_t skip_c[1 + BM_SD_MAX_BLOCKS * 17];
  int nskips = 0;
  skips[nskips] = x;
  skip_c[nskips++] = C0;
  int64_t ch = C0, hh = h, ww = wd;
  char p[128];
  for (int i = 0; i < nb; i++) {
    const int64_t cout = c->block_out[i];
    for (int j = 0; j < L; j++) {
      snprintf(p, sizeof p, "down_blocks.%d.resnets.%d", i, j);
      x = resnet(&u, p, x, ch, cout);
      ch = cout;
      if (c->down_attn[i]) {
        snprintf(p, sizeof p, "down_blocks.%d.attentions.%d", i, j);
        x = spatial_transformer(&u, p, x, ch, hh, ww, c->heads[i], c->transformer_layers[i]);
      }
      skips[nskips] = x;
      skip_c[nskips++] = ch;
    }
    if (i < nb - 1) {
      snprintf(p, sizeof p, "down_blocks.%d.downsamplers.0.conv", i);
      x = bm_sd_conv(g, w, x, p, ch, ch, 3, 2, c->downsample_padding);
      hh /= 2;
      ww /= 2;
      skips[nskips] = x;
      skip_c[nskips++] = ch;
    }
  }

  /* mid block: resnet, (transformer, resnet) */
  x = resnet(&u, "mid_block.resnets.0", x, ch, ch);
  if (c->mid_attn)
    x = spatial_transformer(&u, "mid_block.attentions.0", x, ch, hh, ww, c->heads[nb - 1],
                            c->transformer_layers[nb - 1]);
  x = resnet(&u, "mid_block.resnets.1", x, ch, ch);

  /* up blocks: reversed channels/heads; every resnet takes one skip */
  for (int i = 0; i < nb; i++) {
    const int r = nb - 1 - i; /* the matching down block */
    const int64_t cout = c->block_out[r];
    for (int j = 0; j < L + 1; j++) {
      bm_node *skip = skips[--nskips];
      bm_node *cat[2] = {x, skip};
      x = bm_concat(g, 2, cat, 1);
      snprintf(p, sizeof p, "up_blocks.%d.resnets.%d", i, j);
      x = resnet(&u, p, x, ch + skip_c[nskips], cout);
      ch = cout;
      if (c->up_attn[i]) {
        snprintf(p, sizeof p, "up_blocks.%d.attentions.%d", i, j);
        x = spatial_transformer(&u, p, x, ch, hh, ww, c->heads[r], c->transformer_layers[r]);
      }
    }
    if (i < nb - 1) {
      x = bm_upsample_nearest(g, x, 2);
      hh *= 2;
      ww *= 2;
      snprintf(p, sizeof p, "up_blocks.%d.upsamplers.0.conv", i);
      x = bm_sd_conv(g, w, x, p, ch, ch, 3, 1, 1);
    }
  }
  x = bm_sd_group_norm(g, w, x, "conv_norm_out", ch, c->groups, c->eps, true);
  x = bm_sd_conv(g, w, x, "conv_out", ch, c->out_channels, 3, 1, 1);
  if (x && x->dtype != BM_DTYPE_F32) x = bm_cast(g, x, BM_DTYPE_F32);
  bm_output_add(g, "model_output", x);
}
