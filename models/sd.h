/* sd.h - the Stable Diffusion 1.x / 2.x model builders shared by
 * models/clip.c (text encoder), models/unet.c (UNet2DConditionModel),
 * models/vae.c (AutoencoderKL) and models/sd.c (the family: folders,
 * single-file checkpoints, the key-mapping table, the package "extra").
 *
 * Every builder reads its weights by their diffusers / transformers name
 * (e.g. "down_blocks.0.resnets.0.conv1.weight") through a bm_sd_src, which
 * adds the component prefix ("unet/") and, for a single-file original
 * checkpoint, maps the name to the original key
 * ("model.diffusion_model.input_blocks.1.0.in_layers.2.weight") with the
 * one table of bm_sd_map_key.
 */
#ifndef BM_MODELS_SD_H
#define BM_MODELS_SD_H

#include "models.h"

#define BM_SD_MAX_BLOCKS 8

/* ------------------------------------------------------------------ weights */

/* What the key mapping needs to know about the models (from their configs). */
typedef struct bm_sd_keys {
  int unet_layers;          /* UNet layers_per_block */
  unsigned unet_up_attn;    /* bit i: up block i (diffusers order) has attentions */
  int vae_blocks;           /* number of VAE decoder up blocks */
  bool openclip;            /* text encoder stored as OpenCLIP (SD 2.x: cond_stage_model.model.*) */
} bm_sd_keys;

/* Maps a diffusers name with its component prefix ("unet/...", "vae/...",
 * "text_encoder/...") to the original single-file checkpoint key. *part is
 * -1, or 0/1/2 when the tensor is that third (by rows) of the original one
 * (OpenCLIP's fused in_proj q/k/v). *conv1x1 is set when the original
 * stores a (O, I) linear weight as a (O, I, 1, 1) convolution (the VAE's
 * attention). Returns false if no rule of the table covers the name. */
bool bm_sd_map_key(const bm_sd_keys *k, const char *name, char *out, size_t size, int *part,
                   bool *conv1x1);

/* Where a builder reads its weights from. */
typedef struct bm_sd_src {
  bm_weight_source *src;
  const char *prefix;       /* prepended to every name: "unet/", "vae/", "text_encoder/" or "" */
  const bm_sd_keys *keys;   /* non-NULL: a single-file checkpoint, names go through bm_sd_map_key */
  bm_dtype dtype;           /* dtype of matmul and conv weights (f32, f16, bf16); norm weights and
                             * conv biases stay f32 */
  /* Compute dtype (f32 when zero-initialized, f16, bf16): the activations
   * between kernels, linear biases and the CLIP embedding tables are in it.
   * Graph inputs and outputs stay f32: the builders cast at both ends. */
  bm_dtype act;
} bm_sd_src;

/* Declares weight prefix+name (printf-style) with the given dtype and
 * shape; records an error in g (naming both keys for a mapped name) and
 * returns NULL if it is missing or its shape differs. */
bm_node *bm_sd_weight(bm_graph *g, const bm_sd_src *w, bm_dtype t, int ndim, const int64_t *shape,
                      const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* Whether weight prefix+name exists (after mapping). */
bool bm_sd_has(const bm_sd_src *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* x (..., in) -> (..., out) with weight "<p>.weight" (out, in) in w->dtype and,
 * if bias, "<p>.bias" (out) in w->act (added to the activations). */
bm_node *bm_sd_linear(bm_graph *g, const bm_sd_src *w, bm_node *x, const char *p, int64_t in,
                      int64_t out, bool bias);
/* conv2d with weight "<p>.weight" (out, in, k, k) and bias "<p>.bias". */
bm_node *bm_sd_conv(bm_graph *g, const bm_sd_src *w, bm_node *x, const char *p, int64_t in,
                    int64_t out, int k, int stride, int pad);
/* GroupNorm "<p>.weight/.bias" (C), optionally followed by SiLU (fused by the
 * fuse_epilogue pass). */
bm_node *bm_sd_group_norm(bm_graph *g, const bm_sd_src *w, bm_node *x, const char *p, int64_t c,
                          int groups, float eps, bool silu);
bm_node *bm_sd_layer_norm(bm_graph *g, const bm_sd_src *w, bm_node *x, const char *p, int64_t c,
                          float eps);
/* Multi-head attention on token-major tensors: q (B, Sq, H*D), k and v
 * (B, Sk, H*D) -> (B, Sq, H*D) through the fused attention op. */
bm_node *bm_sd_attention(bm_graph *g, bm_node *q, bm_node *k, bm_node *v, int64_t heads,
                         bool causal);

/* ------------------------------------------------------------------ CLIP text encoder (clip.c) */

typedef struct bm_sd_clip_config {
  int64_t vocab, hidden, intermediate, heads, layers, max_pos;
  float eps;
  bm_op act;          /* BM_OP_QUICK_GELU (CLIP-L) or BM_OP_GELU (OpenCLIP) */
  int64_t eos_id;     /* pooled = the first eos; 2 = legacy configs: the largest id */
  int64_t pad_id;     /* for the pipeline (extra JSON) */
  int64_t proj_dim;   /* > 0: CLIPTextModelWithProjection (text_projection) */
} bm_sd_clip_config;

/* ------------------------------------------------------------------ model_index.json (sd.c) */

/* Reads a diffusers pipeline's model_index.json text (`where` names it in
 * errors): it must be a JSON object with a string "_class_name" shorter
 * than `size` bytes, which is copied to class_name (NUL-terminated).
 * Errors: BM_ERR_CORRUPT (not an object, no _class_name), BM_ERR_UNSUPPORTED
 * (name too long). */
bm_status bm_sd_model_index_parse(const char *json, const char *where, char *class_name, size_t size);

/* Reads a transformers CLIPTextConfig (config.json text; `where` names it in errors). */
bm_status bm_sd_clip_config_parse(const char *json, const char *where, bm_sd_clip_config *c);

/* Builds the text encoder into g:
 *   input_ids (batch, max_pos) i32 ->
 *     hidden_states (batch, max_pos, C): the conditioning: final_layer_norm of
 *                   hidden_states[-clip_skip] (clip_skip 1 = last_hidden_state)
 *     pooled        (batch, C): final-normed state at the eos token
 *     penultimate   (batch, max_pos, C): hidden_states[-2], not normed (SDXL)
 *     text_embeds   (batch, proj_dim): only with a projection
 * batch is symbol `batch_sym` of g. */
void bm_sd_clip_build(bm_graph *g, const bm_sd_src *w, const bm_sd_clip_config *c, int batch_sym,
                      int clip_skip);

/* ------------------------------------------------------------------ UNet (unet.c) */

typedef struct bm_sd_unet_config {
  int64_t in_channels, out_channels;
  int nblocks;                            /* len(block_out_channels) */
  int64_t block_out[BM_SD_MAX_BLOCKS];
  bool down_attn[BM_SD_MAX_BLOCKS];       /* CrossAttnDownBlock2D (vs DownBlock2D) */
  bool up_attn[BM_SD_MAX_BLOCKS];         /* CrossAttnUpBlock2D, diffusers up order */
  int layers_per_block;
  int transformer_layers[BM_SD_MAX_BLOCKS]; /* per down block */
  int64_t heads[BM_SD_MAX_BLOCKS];        /* per down block (the attention_head_dim quirk resolved) */
  int64_t cross_dim;
  bool linear_proj;                       /* use_linear_projection (SD 2.x) */
  bool mid_attn;                          /* UNetMidBlock2DCrossAttn */
  int groups;
  float eps;
  bool flip_sin_to_cos;
  float freq_shift;
  bool center_input;
  int downsample_padding;
} bm_sd_unet_config;

bm_status bm_sd_unet_config_parse(const char *json, const char *where, bm_sd_unet_config *c);

/* Builds the UNet into g:
 *   sample (batch, in_channels, h, w) f32, timestep (batch) f32,
 *   encoder_hidden_states (batch, ctx_len, cross_dim) f32 -> model_output (batch, out_channels, h, w)
 * h and w must be multiples of 2^(nblocks-1). */
void bm_sd_unet_build(bm_graph *g, const bm_sd_src *w, const bm_sd_unet_config *c, int batch_sym,
                      int64_t h, int64_t wd, int64_t ctx_len);

/* ------------------------------------------------------------------ VAE (vae.c) */

typedef struct bm_sd_vae_config {
  int64_t in_channels, out_channels, latent_channels;
  int nblocks;
  int64_t block_out[BM_SD_MAX_BLOCKS];
  int layers_per_block;
  int groups;
  bool quant_conv, post_quant_conv, mid_attn;
  double scaling_factor, shift_factor;
} bm_sd_vae_config;

bm_status bm_sd_vae_config_parse(const char *json, const char *where, bm_sd_vae_config *c);

/* image (1, in_channels, H, W) -> mean, logvar (clamped to [-30, 20]), std
 * (1, latent_channels, H/f, W/f), f = 2^(nblocks-1). */
void bm_sd_vae_encoder_build(bm_graph *g, const bm_sd_src *w, const bm_sd_vae_config *c, int64_t H,
                             int64_t W);
/* latent (1, latent_channels, h, w) -> image (1, out_channels, h*f, w*f). The
 * pipeline divides by scaling_factor first. */
void bm_sd_vae_decoder_build(bm_graph *g, const bm_sd_src *w, const bm_sd_vae_config *c, int64_t h,
                             int64_t wd);

#endif
