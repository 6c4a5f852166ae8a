/* sd.c - the Stable Diffusion 1.x / 2.x family: loads a diffusers pipeline
 * folder (unet/, vae/, text_encoder/, tokenizer/, scheduler/) or a
 * single-file original checkpoint (model.diffusion_model.*,
 * first_stage_model.*, cond_stage_model.*) through one key-mapping table,
 * and builds the functions text_encoder, unet, vae_decoder, vae_encoder
 * and tokenizer, plus the package "extra" JSON describing the pipeline.
 * Also the weight and layer helpers shared by clip.c, unet.c and vae.c. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "../ir/interp.h"
#include "../runtime/safetensors.h"
#include "sd.h"

/* ------------------------------------------------------------------ the key-mapping table */

/* How a rule computes the original indices from the diffusers ones. */
typedef enum key_ix {
  IX_SAME,        /* copied */
  IX_DOWN,        /* down_blocks.i.*.j -> input_blocks.(1 + i*(L+1) + j) */
  IX_DOWN_SAMPLE, /* down_blocks.i.downsamplers -> input_blocks.(1 + i*(L+1) + L) */
  IX_UP,          /* up_blocks.i.*.j -> output_blocks.(i*(L+1) + j) */
  IX_UP_SAMPLE,   /* up_blocks.i.upsamplers -> output_blocks.(i*(L+1) + L).(2 if attention else 1) */
  IX_VAE_UP,      /* decoder.up_blocks.i -> decoder.up.(n-1-i) */
} key_ix;

/* Renames of the rest of a name after a block prefix. */
typedef struct key_inner {
  const char *from, *to;
  int part;       /* -1, or the third (q, k, v) of a fused in_proj */
  bool conv1x1;   /* the original is a (O, I, 1, 1) conv */
} key_inner;

static const key_inner unet_resnet[] = {
    {"norm1.", "in_layers.0.", -1, false},   {"conv1.", "in_layers.2.", -1, false},
    {"time_emb_proj.", "emb_layers.1.", -1, false}, {"norm2.", "out_layers.0.", -1, false},
    {"conv2.", "out_layers.3.", -1, false},  {"conv_shortcut.", "skip_connection.", -1, false},
    {NULL, NULL, 0, false}};
static const key_inner vae_resnet[] = {{"conv_shortcut.", "nin_shortcut.", -1, false},
                                       {NULL, NULL, 0, false}};
static const key_inner vae_attn[] = {
    {"group_norm.", "norm.", -1, false},     {"to_q.weight", "q.weight", -1, true},
    {"to_k.weight", "k.weight", -1, true},   {"to_v.weight", "v.weight", -1, true},
    {"to_out.0.weight", "proj_out.weight", -1, true}, {"to_q.", "q.", -1, false},
    {"to_k.", "k.", -1, false},              {"to_v.", "v.", -1, false},
    {"to_out.0.", "proj_out.", -1, false},   {NULL, NULL, 0, false}};
static const key_inner openclip_layer[] = {
    {"layer_norm1.", "ln_1.", -1, false},    {"layer_norm2.", "ln_2.", -1, false},
    {"self_attn.q_proj.weight", "attn.in_proj_weight", 0, false},
    {"self_attn.k_proj.weight", "attn.in_proj_weight", 1, false},
    {"self_attn.v_proj.weight", "attn.in_proj_weight", 2, false},
    {"self_attn.q_proj.bias", "attn.in_proj_bias", 0, false},
    {"self_attn.k_proj.bias", "attn.in_proj_bias", 1, false},
    {"self_attn.v_proj.bias", "attn.in_proj_bias", 2, false},
    {"self_attn.out_proj.", "attn.out_proj.", -1, false},
    {"mlp.fc1.", "mlp.c_fc.", -1, false},    {"mlp.fc2.", "mlp.c_proj.", -1, false},
    {NULL, NULL, 0, false}};

enum { ONLY_HF_CLIP = 1, ONLY_OPENCLIP = 2 };

typedef struct key_rule {
  const char *from; /* diffusers prefix with its component, %d = an index */
  const char *to;   /* original prefix */
  key_ix ix;
  const key_inner *inner;
  int only;
} key_rule;

#define UNET "model.diffusion_model."
#define VAE "first_stage_model."
#define OCLIP "cond_stage_model.model."

/* The one table: diffusers name prefix -> original checkpoint prefix (first match wins). */
static const key_rule key_rules[] = {
    {"unet/time_embedding.linear_1.", UNET "time_embed.0.", IX_SAME, NULL, 0},
    {"unet/time_embedding.linear_2.", UNET "time_embed.2.", IX_SAME, NULL, 0},
    {"unet/conv_in.", UNET "input_blocks.0.0.", IX_SAME, NULL, 0},
    {"unet/conv_norm_out.", UNET "out.0.", IX_SAME, NULL, 0},
    {"unet/conv_out.", UNET "out.2.", IX_SAME, NULL, 0},
    {"unet/down_blocks.%d.resnets.%d.", UNET "input_blocks.%d.0.", IX_DOWN, unet_resnet, 0},
    {"unet/down_blocks.%d.attentions.%d.", UNET "input_blocks.%d.1.", IX_DOWN, NULL, 0},
    {"unet/down_blocks.%d.downsamplers.0.conv.", UNET "input_blocks.%d.0.op.", IX_DOWN_SAMPLE, NULL, 0},
    {"unet/mid_block.resnets.0.", UNET "middle_block.0.", IX_SAME, unet_resnet, 0},
    {"unet/mid_block.attentions.0.", UNET "middle_block.1.", IX_SAME, NULL, 0},
    {"unet/mid_block.resnets.1.", UNET "middle_block.2.", IX_SAME, unet_resnet, 0},
    {"unet/up_blocks.%d.resnets.%d.", UNET "output_blocks.%d.0.", IX_UP, unet_resnet, 0},
    {"unet/up_blocks.%d.attentions.%d.", UNET "output_blocks.%d.1.", IX_UP, NULL, 0},
    {"unet/up_blocks.%d.upsamplers.0.conv.", UNET "output_blocks.%d.%d.conv.", IX_UP_SAMPLE, NULL, 0},
    {"vae/encoder.conv_norm_out.", VAE "encoder.norm_out.", IX_SAME, NULL, 0},
    {"vae/decoder.conv_norm_out.", VAE "decoder.norm_out.", IX_SAME, NULL, 0},
    {"vae/encoder.down_blocks.%d.resnets.%d.", VAE "encoder.down.%d.block.%d.", IX_SAME, vae_resnet, 0},
    {"vae/encoder.down_blocks.%d.downsamplers.0.conv.", VAE "encoder.down.%d.downsample.conv.", IX_SAME, NULL, 0},
    {"vae/encoder.mid_block.resnets.0.", VAE "encoder.mid.block_1.", IX_SAME, vae_resnet, 0},
    {"vae/encoder.mid_block.resnets.1.", VAE "encoder.mid.block_2.", IX_SAME, vae_resnet, 0},
    {"vae/encoder.mid_block.attentions.0.", VAE "encoder.mid.attn_1.", IX_SAME, vae_attn, 0},
    {"vae/decoder.mid_block.resnets.0.", VAE "decoder.mid.block_1.", IX_SAME, vae_resnet, 0},
    {"vae/decoder.mid_block.resnets.1.", VAE "decoder.mid.block_2.", IX_SAME, vae_resnet, 0},
    {"vae/decoder.mid_block.attentions.0.", VAE "decoder.mid.attn_1.", IX_SAME, vae_attn, 0},
    {"vae/decoder.up_blocks.%d.resnets.%d.", VAE "decoder.up.%d.block.%d.", IX_VAE_UP, vae_resnet, 0},
    {"vae/decoder.up_blocks.%d.upsamplers.0.conv.", VAE "decoder.up.%d.upsample.conv.", IX_VAE_UP, NULL, 0},
    {"vae/", VAE, IX_SAME, NULL, 0}, /* conv_in, conv_out, quant_conv, post_quant_conv */
    {"text_encoder/", "cond_stage_model.transformer.", IX_SAME, NULL, ONLY_HF_CLIP},
    {"text_encoder/text_model.embeddings.token_embedding.", OCLIP "token_embedding.", IX_SAME, NULL, ONLY_OPENCLIP},
    {"text_encoder/text_model.embeddings.position_embedding.weight", OCLIP "positional_embedding", IX_SAME, NULL, ONLY_OPENCLIP},
    {"text_encoder/text_model.encoder.layers.%d.", OCLIP "transformer.resblocks.%d.", IX_SAME, openclip_layer, ONLY_OPENCLIP},
    {"text_encoder/text_model.final_layer_norm.", OCLIP "ln_final.", IX_SAME, NULL, ONLY_OPENCLIP},
};

/* Matches pattern (literals and %d) against the start of s; returns the
 * length matched or -1, with the indices in ix[]. */
static int match_prefix(const char *pat, const char *s, int *ix, int *nix) {
  const char *p = pat, *q = s;
  *nix = 0;
  while (*p) {
    if (p[0] == '%' && p[1] == 'd') {
      if (*q < '0' || *q > '9' || *nix >= 2) return -1;
      long v = 0;
      while (*q >= '0' && *q <= '9' && v < 100000) v = v * 10 + (*q++ - '0');
      ix[(*nix)++] = (int)v;
      p += 2;
    } else {
      if (*p != *q) return -1;
      p++;
      q++;
    }
  }
  return (int)(q - s);
}

bool bm_sd_map_key(const bm_sd_keys *k, const char *name, char *out, size_t size, int *part,
                   bool *conv1x1) {
  *part = -1;
  *conv1x1 = false;
  const int L = k->unet_layers;
  for (size_t r = 0; r < sizeof key_rules / sizeof key_rules[0]; r++) {
    const key_rule *rule = &key_rules[r];
    if ((rule->only == ONLY_HF_CLIP && k->openclip) || (rule->only == ONLY_OPENCLIP && !k->openclip))
      continue;
    int ix[2] = {0, 0}, nix;
    int len = match_prefix(rule->from, name, ix, &nix);
    if (len < 0) continue;
    int a = ix[0], b = ix[1];
    switch (rule->ix) {
    case IX_SAME: break;
    case IX_DOWN: a = 1 + ix[0] * (L + 1) + ix[1]; break;
    case IX_DOWN_SAMPLE: a = 1 + ix[0] * (L + 1) + L; break;
    case IX_UP: a = ix[0] * (L + 1) + ix[1]; break;
    case IX_UP_SAMPLE:
      a = ix[0] * (L + 1) + L;
      b = ix[0] < 32 && (k->unet_up_attn >> ix[0] & 1) ? 2 : 1;
      break;
    case IX_VAE_UP: a = k->vae_blocks - 1 - ix[0]; break;
    }
    char head[256];
    snprintf(head, sizeof head, rule->to, a, b);
    const char *rest = name + len, *rest_to = rest;
    char tail[256];
    for (const key_inner *in = rule->inner; in && in->from; in++) {
      size_t n = strlen(in->from);
      if (strncmp(rest, in->from, n) == 0) {
        snprintf(tail, sizeof tail, "%s%s", in->to, rest + n);
        rest_to = tail;
        *part = in->part;
        *conv1x1 = in->conv1x1;
        break;
      }
    }
    return (size_t)snprintf(out, size, "%s%s", head, rest_to) < size;
  }
  return false;
}

/* ------------------------------------------------------------------ weights */

static bool vname(char *buf, size_t size, const bm_sd_src *w, const char *fmt, va_list ap) {
  size_t k = (size_t)snprintf(buf, size, "%s", w->prefix ? w->prefix : "");
  if (k >= size) return false;
  return (size_t)vsnprintf(buf + k, size - k, fmt, ap) < size - k;
}

bool bm_sd_has(const bm_sd_src *w, const char *fmt, ...) {
  char name[256], key[256];
  va_list ap;
  va_start(ap, fmt);
  bool ok = vname(name, sizeof name, w, fmt, ap);
  va_end(ap);
  if (!ok) return false;
  if (!w->keys) return bm_weight_source_find(w->src, name) != NULL;
  int part;
  bool c11;
  return bm_sd_map_key(w->keys, name, key, sizeof key, &part, &c11) &&
         bm_weight_source_find(w->src, key) != NULL;
}

/* A single-file checkpoint's tensor for diffusers name `name`. */
static bm_node *mapped_weight(bm_graph *g, const bm_sd_src *w, const char *name, bm_dtype t, int ndim,
                              const int64_t *shape) {
  char key[256], a[96], b[96];
  int part;
  bool c11;
  if (!bm_sd_map_key(w->keys, name, key, sizeof key, &part, &c11)) {
    bm_graph_fail(g, bm_status_make(BM_ERR_INTERNAL, "no rule of the SD key table maps '%s'", name));
    return NULL;
  }
  const bm_st_tensor *st = bm_weight_source_find(w->src, key);
  if (!st) {
    bm_graph_fail(g, bm_status_make(BM_ERR_NOT_FOUND, "missing weight '%s' (diffusers '%s') in the checkpoint",
                                    key, name));
    return NULL;
  }
  bm_status s = bm_st_check_dtype(st);
  if (!s && st->dtype != BM_DTYPE_F32 && st->dtype != BM_DTYPE_F16 && st->dtype != BM_DTYPE_BF16)
    s = bm_status_make(BM_ERR_UNSUPPORTED, "weight '%s' is %s; expected f32, f16 or bf16", key,
                       bm_dtype_name(st->dtype));
  if (s) {
    bm_graph_fail(g, s);
    return NULL;
  }
  /* the expected checkpoint shape */
  int64_t want[BM_MAX_DIMS + 2];
  int wn = ndim;
  for (int i = 0; i < ndim; i++) want[i] = shape[i];
  if (part >= 0) want[0] *= 3;
  if (c11) {
    want[wn++] = 1;
    want[wn++] = 1;
  }
  bool same = st->ndim == wn;
  for (int i = 0; same && i < wn; i++) same = st->shape[i] == want[i];
  if (!same) {
    bm_graph_fail(g, bm_status_make(BM_ERR_INVALID_ARGUMENT,
                                    "weight '%s' (diffusers '%s') has shape %s in the checkpoint, the model expects %s",
                                    key, name, bm_st_shape_str(st->ndim, st->shape, a, sizeof a),
                                    bm_st_shape_str(wn, want, b, sizeof b)));
    return NULL;
  }
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) n *= shape[i];
  int64_t first = part >= 0 ? part * n : 0; /* first element */
  char node_name[280];
  static const char *const parts[3] = {"q", "k", "v"};
  if (part >= 0) snprintf(node_name, sizeof node_name, "%s#%s", key, parts[part]);
  else snprintf(node_name, sizeof node_name, "%s", key);
  size_t nbytes = bm_dtype_nbytes(t, n);
  if (st->dtype == t)
    return bm_weight(g, node_name, t, ndim, shape, (const char *)st->data + bm_dtype_nbytes(t, first), nbytes);
  void *data = bm_arena_alloc(g->module->arena, nbytes ? nbytes : 1);
  if (!data) {
    bm_graph_fail(g, bm_status_make(BM_ERR_OUT_OF_MEMORY, "weight '%s'", key));
    return NULL;
  }
  for (int64_t i = 0; i < n; i++) bm_store_f32(data, t, i, bm_load_f32(st->data, st->dtype, first + i));
  return bm_weight(g, node_name, t, ndim, shape, data, nbytes);
}

bm_node *bm_sd_weight(bm_graph *g, const bm_sd_src *w, bm_dtype t, int ndim, const int64_t *shape,
                      const char *fmt, ...) {
  if (!g || bm_graph_status(g)) return NULL;
  char name[256];
  va_list ap;
  va_start(ap, fmt);
  bool ok = vname(name, sizeof name, w, fmt, ap);
  va_end(ap);
  if (!ok) {
    bm_graph_fail(g, bm_status_make(BM_ERR_INVALID_ARGUMENT, "weight name too long: %s...", name));
    return NULL;
  }
  if (w->keys) return mapped_weight(g, w, name, t, ndim, shape);
  return bm_model_weight(g, w->src, name, t, ndim, shape);
}

/* ------------------------------------------------------------------ layers */

bm_node *bm_sd_linear(bm_graph *g, const bm_sd_src *w, bm_node *x, const char *p, int64_t in,
                      int64_t out, bool bias) {
  int64_t ws[2] = {out, in}, bs[1] = {out};
  bm_node *wt = bm_sd_weight(g, w, w->dtype, 2, ws, "%s.weight", p);
  bm_node *b = bias ? bm_sd_weight(g, w, w->act, 1, bs, "%s.bias", p) : NULL;
  if (bias && !b) return NULL;
  return bm_linear(g, x, wt, b);
}

bm_node *bm_sd_conv(bm_graph *g, const bm_sd_src *w, bm_node *x, const char *p, int64_t in,
                    int64_t out, int k, int stride, int pad) {
  int64_t ws[4] = {out, in, k, k}, bs[1] = {out};
  bm_node *wt = bm_sd_weight(g, w, w->dtype, 4, ws, "%s.weight", p);
  bm_node *b = bm_sd_weight(g, w, BM_DTYPE_F32, 1, bs, "%s.bias", p);
  if (!b) return NULL;
  return bm_conv2d(g, x, wt, b, stride, stride, pad, pad, 1, 1, 1);
}

bm_node *bm_sd_group_norm(bm_graph *g, const bm_sd_src *w, bm_node *x, const char *p, int64_t c,
                          int groups, float eps, bool silu) {
  int64_t s[1] = {c};
  bm_node *gw = bm_sd_weight(g, w, BM_DTYPE_F32, 1, s, "%s.weight", p);
  bm_node *gb = bm_sd_weight(g, w, BM_DTYPE_F32, 1, s, "%s.bias", p);
  if (!gw || !gb) return NULL;
  bm_node *y = bm_group_norm(g, x, gw, gb, groups, eps);
  return silu ? bm_silu(g, y) : y;
}

bm_node *bm_sd_layer_norm(bm_graph *g, const bm_sd_src *w, bm_node *x, const char *p, int64_t c,
                          float eps) {
  int64_t s[1] = {c};
  bm_node *lw = bm_sd_weight(g, w, BM_DTYPE_F32, 1, s, "%s.weight", p);
  bm_node *lb = bm_sd_weight(g, w, BM_DTYPE_F32, 1, s, "%s.bias", p);
  if (!lw || !lb) return NULL;
  return bm_layer_norm(g, x, lw, lb, eps);
}

/* (B, S, H*D) -> (B, H, S, D); a reshape only when H == 1 */
static bm_node *split_heads(bm_graph *g, bm_node *x, int64_t heads) {
  if (!x) return NULL;
  bm_dim B = x->shape[0], S = x->shape[1];
  int64_t D = x->shape[2].add / heads;
  if (heads == 1) return bm_reshape_d(g, x, 4, (bm_dim[]){B, bm_dim_c(1), S, bm_dim_c(D)});
  x = bm_reshape_d(g, x, 4, (bm_dim[]){B, S, bm_dim_c(heads), bm_dim_c(D)});
  return bm_permute(g, x, (int[]){0, 2, 1, 3});
}

bm_node *bm_sd_attention(bm_graph *g, bm_node *q, bm_node *k, bm_node *v, int64_t heads,
                         bool causal) {
  if (!q || !k || !v) return NULL;
  bm_dim B = q->shape[0], S = q->shape[1], C = q->shape[2];
  if (!bm_dim_is_static(C) || C.add % heads) {
    bm_graph_fail(g, bm_status_make(BM_ERR_INVALID_ARGUMENT, "attention: %lld channels, %lld heads",
                                    (long long)C.add, (long long)heads));
    return NULL;
  }
  bm_node *o = bm_attention(g, split_heads(g, q, heads), split_heads(g, k, heads),
                            split_heads(g, v, heads), NULL, 0.0f, causal, 0, 0.0f); /* (B, H, S, D) */
  if (heads > 1) o = bm_permute(g, o, (int[]){0, 2, 1, 3});
  return bm_reshape_d(g, o, 3, (bm_dim[]){B, S, C});
}

/* ------------------------------------------------------------------ files */

static bool file_exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static bool dir_exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Reads a whole file (malloc'd, NUL-terminated). */
static bm_status read_file(const char *path, char **out, size_t *size) {
  *out = NULL;
  FILE *f = fopen(path, "rb");
  if (!f) return bm_status_make(BM_ERR_NOT_FOUND, "%s: cannot open", path);
  char *buf = NULL;
  size_t n = 0, cap = 0;
  for (;;) {
    if (cap - n < 65536) {
      if (cap > ((size_t)1 << 30)) {
        free(buf);
        fclose(f);
        return bm_status_make(BM_ERR_INVALID_ARGUMENT, "%s: larger than 1 GiB", path);
      }
      cap = cap ? cap * 2 : 65536 * 2;
      char *nb = realloc(buf, cap + 1);
      if (!nb) {
        free(buf);
        fclose(f);
        return bm_status_make(BM_ERR_OUT_OF_MEMORY, "%s", path);
      }
      buf = nb;
    }
    size_t r = fread(buf + n, 1, cap - n, f);
    n += r;
    if (r == 0) break;
  }
  bool err = ferror(f);
  fclose(f);
  if (err) {
    free(buf);
    return bm_status_make(BM_ERR_IO, "%s: read error", path);
  }
  buf[n] = 0;
  *out = buf;
  if (size) *size = n;
  return NULL;
}

/* ------------------------------------------------------------------ single-file config inference */

static const bm_st_tensor *ckpt(bm_weight_source *src, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static const bm_st_tensor *ckpt(bm_weight_source *src, const char *fmt, ...) {
  char name[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(name, sizeof name, fmt, ap);
  va_end(ap);
  return bm_weight_source_find(src, name);
}

/* SD 1.x / 2.x defaults with the sizes read from the checkpoint's shapes
 * (layers_per_block 2, as every SD 1.x/2.x model). */
static bm_status infer_unet(bm_weight_source *src, bool sd2, bm_sd_unet_config *c) {
  memset(c, 0, sizeof *c);
  const bm_st_tensor *ci = ckpt(src, UNET "input_blocks.0.0.weight");
  if (!ci || ci->ndim != 4)
    return bm_status_make(BM_ERR_NOT_FOUND, "checkpoint: no " UNET "input_blocks.0.0.weight");
  c->in_channels = ci->shape[1];
  c->layers_per_block = 2;
  const bm_st_tensor *co = ckpt(src, UNET "out.2.weight");
  c->out_channels = co && co->ndim == 4 ? co->shape[0] : 4;
  while (c->nblocks < BM_SD_MAX_BLOCKS) {
    int k = 1 + c->nblocks * 3;
    const bm_st_tensor *t = ckpt(src, UNET "input_blocks.%d.0.out_layers.3.weight", k);
    if (!t) break;
    c->block_out[c->nblocks] = t->shape[0];
    c->down_attn[c->nblocks] = ckpt(src, UNET "input_blocks.%d.1.proj_in.weight", k) != NULL;
    c->nblocks++;
  }
  if (c->nblocks == 0) return bm_status_make(BM_ERR_NOT_FOUND, "checkpoint: no UNet input blocks");
  for (int i = 0; i < c->nblocks; i++) {
    c->up_attn[i] = ckpt(src, UNET "output_blocks.%d.1.proj_in.weight", i * 3) != NULL;
    c->transformer_layers[i] = 1;
    c->heads[i] = sd2 ? c->block_out[i] / 64 : 8;
    if (c->heads[i] < 1) c->heads[i] = 1;
  }
  const bm_st_tensor *pi = ckpt(src, UNET "middle_block.1.proj_in.weight");
  c->linear_proj = pi && pi->ndim == 2;
  const bm_st_tensor *k2 = ckpt(src, UNET "middle_block.1.transformer_blocks.0.attn2.to_k.weight");
  c->cross_dim = k2 && k2->ndim == 2 ? k2->shape[1] : (sd2 ? 1024 : 768);
  c->mid_attn = true;
  c->groups = 32;
  c->eps = 1e-5f;
  c->flip_sin_to_cos = true;
  c->downsample_padding = 1;
  return NULL;
}

static bm_status infer_vae(bm_weight_source *src, bm_sd_vae_config *c) {
  memset(c, 0, sizeof *c);
  while (c->nblocks < BM_SD_MAX_BLOCKS) {
    const bm_st_tensor *t = ckpt(src, VAE "encoder.down.%d.block.0.conv1.weight", c->nblocks);
    if (!t) break;
    c->block_out[c->nblocks++] = t->shape[0];
  }
  if (c->nblocks == 0) return bm_status_make(BM_ERR_NOT_FOUND, "checkpoint: no " VAE "encoder.down.0");
  const bm_st_tensor *ci = ckpt(src, VAE "encoder.conv_in.weight");
  const bm_st_tensor *pq = ckpt(src, VAE "post_quant_conv.weight");
  const bm_st_tensor *di = ckpt(src, VAE "decoder.conv_in.weight");
  c->in_channels = ci ? ci->shape[1] : 3;
  c->out_channels = 3;
  c->latent_channels = di ? di->shape[1] : 4;
  int l = 0;
  while (ckpt(src, VAE "encoder.down.0.block.%d.conv1.weight", l)) l++;
  c->layers_per_block = l ? l : 2;
  c->groups = 32;
  c->quant_conv = ckpt(src, VAE "quant_conv.weight") != NULL;
  c->post_quant_conv = pq != NULL;
  c->mid_attn = ckpt(src, VAE "encoder.mid.attn_1.q.weight") != NULL;
  c->scaling_factor = 0.18215;
  return NULL;
}

static bm_status infer_clip(bm_weight_source *src, bool openclip, bm_sd_clip_config *c) {
  memset(c, 0, sizeof *c);
  const char *tp = openclip ? OCLIP : "cond_stage_model.transformer.text_model.";
  const bm_st_tensor *te = openclip ? ckpt(src, OCLIP "token_embedding.weight")
                                    : ckpt(src, "%sembeddings.token_embedding.weight", tp);
  if (!te || te->ndim != 2) return bm_status_make(BM_ERR_NOT_FOUND, "checkpoint: no text encoder token embedding");
  c->vocab = te->shape[0];
  c->hidden = te->shape[1];
  c->heads = c->hidden / 64;
  c->max_pos = 77;
  c->eps = 1e-5f;
  c->eos_id = 2; /* pooled at the largest id, as legacy CLIP configs and OpenCLIP */
  if (openclip) {
    int n = 0;
    while (ckpt(src, OCLIP "transformer.resblocks.%d.ln_1.weight", n)) n++;
    c->layers = n - 1; /* SD 2.x uses the penultimate layer: diffusers drops the last */
    c->act = BM_OP_GELU;
    c->pad_id = 0;
    const bm_st_tensor *fc = ckpt(src, OCLIP "transformer.resblocks.0.mlp.c_fc.weight");
    c->intermediate = fc ? fc->shape[0] : 4 * c->hidden;
  } else {
    int n = 0;
    while (ckpt(src, "%sencoder.layers.%d.layer_norm1.weight", tp, n)) n++;
    c->layers = n;
    c->act = BM_OP_QUICK_GELU;
    c->pad_id = 49407;
    const bm_st_tensor *fc = ckpt(src, "%sencoder.layers.0.mlp.fc1.weight", tp);
    c->intermediate = fc ? fc->shape[0] : 4 * c->hidden;
  }
  if (c->layers < 2 || c->heads < 1)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "checkpoint: text encoder with %lld layers, hidden %lld",
                          (long long)c->layers, (long long)c->hidden);
  return NULL;
}

/* ------------------------------------------------------------------ the family */

typedef struct sd_parts {
  bm_sd_unet_config unet;
  bm_sd_vae_config vae;
  bm_sd_clip_config clip;
  bool sd2;
  cJSON *scheduler;            /* scheduler_config.json, or defaults */
  char *vocab, *merges;        /* tokenizer files, or NULL */
  size_t vocab_size, merges_size;
  char tok_pad[64];            /* the tokenizer's pad token text, if known */
} sd_parts;

static void parts_free(sd_parts *p) {
  cJSON_Delete(p->scheduler);
  free(p->vocab);
  free(p->merges);
}

/* Reads <dir>/<sub>/<file> into *text (NULL if absent and optional). */
static bm_status read_part(const char *dir, const char *sub, const char *file, bool optional,
                           char **text, size_t *size) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s/%s", dir, sub, file);
  *text = NULL;
  if (optional && !file_exists(path)) return NULL;
  return read_file(path, text, size);
}

static bm_status load_configs(const char *dir, sd_parts *p) {
  char *t = NULL, where[4200];
  static const char *const subs[3] = {"unet", "vae", "text_encoder"};
  for (int i = 0; i < 3; i++) {
    BM_RETURN_IF_ERROR(read_part(dir, subs[i], "config.json", false, &t, NULL));
    snprintf(where, sizeof where, "%s/%s/config.json", dir, subs[i]);
    bm_status s = i == 0 ? bm_sd_unet_config_parse(t, where, &p->unet)
                  : i == 1 ? bm_sd_vae_config_parse(t, where, &p->vae)
                           : bm_sd_clip_config_parse(t, where, &p->clip);
    free(t);
    BM_RETURN_IF_ERROR(s);
  }
  BM_RETURN_IF_ERROR(read_part(dir, "scheduler", "scheduler_config.json", true, &t, NULL));
  if (t) {
    p->scheduler = cJSON_Parse(t);
    free(t);
    if (!cJSON_IsObject(p->scheduler))
      return bm_status_make(BM_ERR_CORRUPT, "%s/scheduler/scheduler_config.json: not a JSON object", dir);
  }
  BM_RETURN_IF_ERROR(read_part(dir, "tokenizer", "vocab.json", true, &p->vocab, &p->vocab_size));
  BM_RETURN_IF_ERROR(read_part(dir, "tokenizer", "merges.txt", true, &p->merges, &p->merges_size));
  if (!p->vocab || !p->merges) {
    free(p->vocab);
    free(p->merges);
    p->vocab = p->merges = NULL;
  }
  BM_RETURN_IF_ERROR(read_part(dir, "tokenizer", "tokenizer_config.json", true, &t, NULL));
  if (t) {
    cJSON *tc = cJSON_Parse(t);
    free(t);
    const cJSON *pad = cJSON_GetObjectItemCaseSensitive(tc, "pad_token");
    if (cJSON_IsObject(pad)) pad = cJSON_GetObjectItemCaseSensitive(pad, "content");
    if (cJSON_IsString(pad)) snprintf(p->tok_pad, sizeof p->tok_pad, "%s", pad->valuestring);
    cJSON_Delete(tc);
  }
  return NULL;
}

/* SD 1.x's scheduler (DDPM-trained, scaled linear betas). */
static cJSON *default_scheduler(void) {
  cJSON *s = cJSON_CreateObject();
  cJSON_AddStringToObject(s, "_class_name", "PNDMScheduler");
  cJSON_AddNumberToObject(s, "beta_start", 0.00085);
  cJSON_AddNumberToObject(s, "beta_end", 0.012);
  cJSON_AddStringToObject(s, "beta_schedule", "scaled_linear");
  cJSON_AddNumberToObject(s, "num_train_timesteps", 1000);
  cJSON_AddNumberToObject(s, "steps_offset", 1);
  cJSON_AddBoolToObject(s, "set_alpha_to_one", false);
  cJSON_AddBoolToObject(s, "clip_sample", false);
  cJSON_AddBoolToObject(s, "skip_prk_steps", true);
  cJSON_AddStringToObject(s, "prediction_type", "epsilon");
  return s;
}

static void *arena_copy(bm_module *m, const void *p, size_t n) {
  void *d = bm_arena_alloc(m->arena, n ? n : 1);
  if (d && n) memcpy(d, p, n);
  return d;
}

static char *make_extra(const sd_parts *p, const bm_model_options *o, int64_t W, int64_t H,
                        int64_t vae_f, int max_batch, int clip_skip, bool single_file) {
  cJSON *e = cJSON_CreateObject();
  cJSON_AddStringToObject(e, "family", "stable-diffusion");
  cJSON_AddStringToObject(e, "version", p->sd2 ? "sd2" : "sd1");
  cJSON_AddStringToObject(e, "source", single_file ? "single-file" : "diffusers");
  cJSON_AddNumberToObject(e, "width", (double)W);
  cJSON_AddNumberToObject(e, "height", (double)H);
  cJSON_AddNumberToObject(e, "vae_scale_factor", (double)vae_f);
  cJSON_AddNumberToObject(e, "latent_channels", (double)p->vae.latent_channels);
  cJSON_AddNumberToObject(e, "unet_in_channels", (double)p->unet.in_channels);
  cJSON_AddBoolToObject(e, "inpainting", p->unet.in_channels == 9);
  cJSON_AddNumberToObject(e, "max_batch", max_batch);
  cJSON_AddNumberToObject(e, "scaling_factor", p->vae.scaling_factor);
  cJSON_AddNumberToObject(e, "shift_factor", p->vae.shift_factor);
  cJSON_AddNumberToObject(e, "clip_skip", clip_skip);
  cJSON_AddStringToObject(e, "dtype", bm_dtype_name(o->dtype)); /* compute dtype (inputs/outputs stay f32) */
  cJSON_AddNumberToObject(e, "text_max_length", (double)p->clip.max_pos);
  cJSON_AddNumberToObject(e, "text_hidden_size", (double)p->clip.hidden);
  cJSON_AddNumberToObject(e, "text_vocab_size", (double)p->clip.vocab); /* token ids the pipeline may pass */
  cJSON *sch = p->scheduler ? cJSON_Duplicate(p->scheduler, 1) : default_scheduler();
  const cJSON *pt = cJSON_GetObjectItemCaseSensitive(sch, "prediction_type");
  cJSON_AddStringToObject(e, "prediction_type", cJSON_IsString(pt) ? pt->valuestring : "epsilon");
  cJSON_AddItemToObject(e, "scheduler", sch);
  if (p->vocab) {
    cJSON *t = cJSON_AddObjectToObject(e, "tokenizer");
    cJSON_AddStringToObject(t, "kind", "clip");
    cJSON_AddStringToObject(t, "function", "tokenizer");
    cJSON_AddStringToObject(t, "vocab", "tokenizer/vocab.json");
    cJSON_AddStringToObject(t, "merges", "tokenizer/merges.txt");
    cJSON_AddNumberToObject(t, "max_length", (double)p->clip.max_pos);
    /* SD 1.x pads with <|endoftext|>, OpenCLIP (SD 2.x) with "!" (id 0) */
    bool pad_zero = p->tok_pad[0] ? !strcmp(p->tok_pad, "!") : p->sd2;
    cJSON_AddStringToObject(t, "pad", pad_zero ? "!" : "<|endoftext|>");
  } else {
    cJSON_AddNullToObject(e, "tokenizer");
  }
  cJSON *f = cJSON_AddObjectToObject(e, "functions");
  cJSON_AddStringToObject(f, "text_encoder", "input_ids (batch, 77) i32 -> hidden_states (batch, 77, C) [clip skip applied], pooled (batch, C), penultimate (batch, 77, C)");
  cJSON_AddStringToObject(f, "unet", "sample (batch, in_channels, h, w), timestep (batch) f32, encoder_hidden_states (batch, 77, cross_dim) -> model_output (batch, 4, h, w)");
  cJSON_AddStringToObject(f, "vae_decoder", "latent (1, 4, h, w) already divided by scaling_factor -> image (1, 3, 8h, 8w) in [-1, 1]");
  cJSON_AddStringToObject(f, "vae_encoder", "image (1, 3, 8h, 8w) in [-1, 1] -> mean, logvar, std (1, 4, h, w)");
  if (p->vocab) cJSON_AddStringToObject(f, "tokenizer", "no inputs -> the tokenizer files as i8 byte tensors");
  (void)o;
  char *txt = cJSON_Print(e);
  cJSON_Delete(e);
  return txt;
}

/* Fills p from a diffusers folder or from a single-file checkpoint. */
static bm_status describe(const bm_model_options *o, bm_weight_source *src, sd_parts *p,
                          bool *single_file, bm_sd_keys *keys) {
  const char *path = o->path ? o->path : o->weights;
  *single_file = !dir_exists(path);
  if (!*single_file) {
    BM_RETURN_IF_ERROR(load_configs(path, p));
    p->sd2 = p->unet.linear_proj || p->clip.act == BM_OP_GELU;
    return NULL;
  }
  keys->openclip = ckpt(src, OCLIP "token_embedding.weight") != NULL;
  p->sd2 = keys->openclip;
  if (o->sd_config) {
    BM_RETURN_IF_ERROR(load_configs(o->sd_config, p));
  } else {
    BM_RETURN_IF_ERROR(infer_unet(src, p->sd2, &p->unet));
    BM_RETURN_IF_ERROR(infer_vae(src, &p->vae));
    BM_RETURN_IF_ERROR(infer_clip(src, keys->openclip, &p->clip));
  }
  keys->unet_layers = p->unet.layers_per_block;
  keys->vae_blocks = p->vae.nblocks;
  for (int i = 0; i < p->unet.nblocks; i++)
    if (p->unet.up_attn[i]) keys->unet_up_attn |= 1u << i;
  return NULL;
}

static bm_status sd_build(bm_module *m, bm_weight_source *src, const bm_model_options *o) {
  const char *path = o->path ? o->path : o->weights;
  if (!path)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT,
                          "model 'sd' needs a diffusers folder or a single-file checkpoint (--model PATH)");
  sd_parts p;
  memset(&p, 0, sizeof p);
  bm_sd_keys keys;
  memset(&keys, 0, sizeof keys);
  bool single;
  bm_status s = describe(o, src, &p, &single, &keys);
  if (s) {
    parts_free(&p);
    return s;
  }
  const int64_t W = o->width > 0 ? o->width : 512, H = o->height > 0 ? o->height : 512;
  const int64_t vae_f = (int64_t)1 << (p.vae.nblocks - 1);
  const int64_t unet_f = (int64_t)1 << (p.unet.nblocks - 1);
  if (W % 8 || H % 8 || W % vae_f || H % vae_f || (W / vae_f) % unet_f || (H / vae_f) % unet_f) {
    parts_free(&p);
    return bm_status_make(BM_ERR_INVALID_ARGUMENT,
                          "image size %lldx%lld: width and height must be multiples of 8 and of %lld",
                          (long long)W, (long long)H, (long long)(vae_f * unet_f));
  }
  const int64_t h = H / vae_f, wd = W / vae_f;
  const int max_batch = o->max_batch > 0 ? o->max_batch : 2;
  const int clip_skip = o->clip_skip > 0 ? o->clip_skip : 1;
  bm_dtype dt = o->weight_dtype;
  if (dt != BM_DTYPE_F32 && dt != BM_DTYPE_F16 && dt != BM_DTYPE_BF16) {
    parts_free(&p);
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "sd: weight dtype %s (f32, f16 or bf16)", bm_dtype_name(dt));
  }
  const bm_sd_keys *k = single ? &keys : NULL;
  bm_sd_src ws_te = {src, "text_encoder/", k, dt, o->dtype}, ws_unet = {src, "unet/", k, dt, o->dtype},
            ws_vae = {src, "vae/", k, dt, o->dtype};

  bm_graph *g = bm_graph_create(m, "text_encoder");
  if (g) bm_sd_clip_build(g, &ws_te, &p.clip, bm_sym_declare(g, "batch", max_batch), clip_skip);
  bm_graph *gu = g ? bm_graph_create(m, "unet") : NULL;
  if (gu) bm_sd_unet_build(gu, &ws_unet, &p.unet, bm_sym_declare(gu, "batch", max_batch), h, wd, p.clip.max_pos);
  bm_graph *gd = gu ? bm_graph_create(m, "vae_decoder") : NULL;
  if (gd) bm_sd_vae_decoder_build(gd, &ws_vae, &p.vae, h, wd);
  bm_graph *ge = gd ? bm_graph_create(m, "vae_encoder") : NULL;
  if (ge) bm_sd_vae_encoder_build(ge, &ws_vae, &p.vae, H, W);
  if (!ge) s = bm_status_make(BM_ERR_OUT_OF_MEMORY, "sd: graphs");
  if (!s && p.vocab) {
    /* the tokenizer files as byte tensors, outputs of a function without kernels */
    bm_graph *gt = bm_graph_create(m, "tokenizer");
    void *v = gt ? arena_copy(m, p.vocab, p.vocab_size) : NULL;
    void *mg = gt ? arena_copy(m, p.merges, p.merges_size) : NULL;
    if (!v || !mg) {
      s = bm_status_make(BM_ERR_OUT_OF_MEMORY, "sd: tokenizer");
    } else {
      int64_t vs[1] = {(int64_t)p.vocab_size}, ms[1] = {(int64_t)p.merges_size};
      bm_output_add(gt, "vocab.json", bm_weight(gt, "tokenizer/vocab.json", BM_DTYPE_I8, 1, vs, v, p.vocab_size));
      bm_output_add(gt, "merges.txt", bm_weight(gt, "tokenizer/merges.txt", BM_DTYPE_I8, 1, ms, mg, p.merges_size));
    }
  }
  if (!s && o->extra_json) {
    *o->extra_json = make_extra(&p, o, W, H, vae_f, max_batch, clip_skip, single);
    if (!*o->extra_json) s = bm_status_make(BM_ERR_OUT_OF_MEMORY, "sd: extra json");
  }
  parts_free(&p);
  return s;
}

bm_status bm_sd_model_index_parse(const char *json, const char *where, char *class_name, size_t size) {
  if (size) class_name[0] = 0;
  cJSON *j = json ? cJSON_Parse(json) : NULL;
  if (!cJSON_IsObject(j)) {
    cJSON_Delete(j);
    return bm_status_make(BM_ERR_CORRUPT, "%s: not a JSON object", where);
  }
  const cJSON *cn = cJSON_GetObjectItemCaseSensitive(j, "_class_name");
  bm_status s = NULL;
  if (!cJSON_IsString(cn) || !cn->valuestring)
    s = bm_status_make(BM_ERR_CORRUPT, "%s: no \"_class_name\" string", where);
  else if (strlen(cn->valuestring) >= size)
    s = bm_status_make(BM_ERR_UNSUPPORTED, "%s: \"_class_name\" is %zu bytes long (at most %zu)", where,
                       strlen(cn->valuestring), size ? size - 1 : 0);
  else
    memcpy(class_name, cn->valuestring, strlen(cn->valuestring) + 1);
  cJSON_Delete(j);
  return s;
}

/* A diffusers pipeline folder of StableDiffusion(Inpaint)Pipeline, or a
 * single-file checkpoint with model.diffusion_model.* keys. */
static int sd_detect(const char *path) {
  char file[4096];
  if (dir_exists(path)) {
    snprintf(file, sizeof file, "%s/model_index.json", path);
    char *t = NULL;
    bm_status s = read_file(file, &t, NULL);
    if (s) {
      bm_status_free(s);
      return 0;
    }
    char cn[256];
    s = bm_sd_model_index_parse(t, file, cn, sizeof cn);
    free(t);
    if (s) {
      bm_status_free(s);
      return 0;
    }
    return !strncmp(cn, "StableDiffusion", 15) && !strstr(cn, "XL") && !strstr(cn, "3");
  }
  size_t n = strlen(path);
  if (n < 12 || strcmp(path + n - 12, ".safetensors")) return 0;
  bm_st_file *st = NULL;
  bm_status s = bm_st_open(path, &st);
  if (s) {
    bm_status_free(s);
    return 0;
  }
  int ok = bm_st_find(st, UNET "input_blocks.0.0.weight") != NULL;
  bm_st_close(st);
  return ok;
}

const bm_model_def bm_model_sd = {
    .name = "sd",
    .description = "Stable Diffusion 1.x/2.x: diffusers folder or single-file checkpoint (--model PATH)",
    .build = sd_build,
    .detect = sd_detect,
    .formats = "Stable Diffusion 1.x/2.x diffusers folders (model_index.json) and single-file "
               ".safetensors checkpoints",
};
