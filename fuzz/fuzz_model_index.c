/* fuzz_model_index.c - libFuzzer target for a diffusers pipeline folder's
 * JSON: model_index.json (bm_sd_model_index_parse, models/sd.c) and the
 * component config.json files (UNet, VAE, CLIP text encoder: models/unet.c,
 * vae.c, clip.c). Byte 0 picks the parser, the rest is the JSON text. */
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "../models/sd.h"

static void check_unet(const bm_sd_unet_config *c) {
  if (c->nblocks < 1 || c->nblocks > BM_SD_MAX_BLOCKS || c->layers_per_block < 1 || c->groups < 1) abort();
  for (int i = 0; i < c->nblocks; i++)
    if (c->block_out[i] <= 0 || c->heads[i] <= 0 || c->transformer_layers[i] < 0) abort();
  if (c->in_channels < 1 || c->out_channels < 1) abort();
}

static void check_vae(const bm_sd_vae_config *c) {
  if (c->nblocks < 1 || c->nblocks > BM_SD_MAX_BLOCKS || c->layers_per_block < 1 || c->layers_per_block > 16 ||
      c->groups < 1 || c->in_channels < 1 || c->out_channels < 1 || c->latent_channels < 1)
    abort();
  for (int i = 0; i < c->nblocks; i++)
    if (c->block_out[i] <= 0) abort();
}

static void check_clip(const bm_sd_clip_config *c) {
  if (c->act != BM_OP_QUICK_GELU && c->act != BM_OP_GELU && c->act != BM_OP_GELU_TANH) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  char *text = bm_fuzz_strndup(data + 1, size - 1);
  bm_status s = NULL;
  switch (data[0] % 4) {
  case 0: {
    char cn[64];
    memset(cn, 0x55, sizeof cn);
    s = bm_sd_model_index_parse(text, "model_index.json", cn, sizeof cn);
    if (s) {
      if (cn[0]) abort(); /* cleared on failure */
    } else if (!memchr(cn, 0, sizeof cn)) {
      abort();
    }
    break;
  }
  case 1: {
    bm_sd_unet_config *c = malloc(sizeof *c);
    s = bm_sd_unet_config_parse(text, "unet/config.json", c);
    if (!s) check_unet(c);
    free(c);
    break;
  }
  case 2: {
    bm_sd_vae_config *c = malloc(sizeof *c);
    s = bm_sd_vae_config_parse(text, "vae/config.json", c);
    if (!s) check_vae(c);
    free(c);
    break;
  }
  default: {
    bm_sd_clip_config *c = malloc(sizeof *c);
    s = bm_sd_clip_config_parse(text, "text_encoder/config.json", c);
    if (!s) check_clip(c);
    free(c);
    break;
  }
  }
  bm_fuzz_check_status(s, "sd config parse");
  free(text);
  return 0;
}
