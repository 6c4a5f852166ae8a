/* sd.h - the Stable Diffusion 1.x / 2.x pipelines of libbmrt: txt2img,
 * img2img and inpainting on a compiled SD package (functions text_encoder,
 * unet, vae_decoder, vae_encoder; docs/models_sd.md), with every sampler
 * and schedule of sampler.h. See docs/sd.md.
 *
 *   bm_package *pkg; bm_sd *sd;
 *   BM_CHECK(bm_package_open("sd15.bmpk", NULL, &pkg));
 *   BM_CHECK(bm_sd_open(pkg, NULL, &sd));       // session, tokenizer, buffers
 *   bm_sd_request rq = bm_sd_request_default(); // txt2img, euler, 20 steps, cfg 7.5
 *   rq.prompt = "a photo of a cat"; rq.seed = 42;
 *   rq.on_image = save_png; rq.user = ...;      // gets (H, W, 3) uint8 pixels
 *   bm_sd_result res;
 *   BM_CHECK(bm_sd_generate(sd, &rq, &res));
 *   bm_sd_close(sd); bm_package_close(pkg);
 *
 * How an image is made (k-diffusion style, as AUTOMATIC1111 and ComfyUI):
 *  1. The prompt and the negative prompt are tokenized with the package's
 *     CLIP tokenizer (77 tokens, truncated) and encoded in one text_encoder
 *     call with batch 2 (uncond, cond).
 *  2. Sigmas: schedule `schedule` over the model's discrete sigma table
 *     (from extra.scheduler's betas), steps + 1 values ending with 0.
 *  3. Initial latents: torch.randn((1, C, h, w), generator=manual_seed(seed))
 *     on a CPU generator (torch_rng.h): the latents diffusers draws for that
 *     seed with a CPU generator. x = noise * sigmas[0] (txt2img).
 *  4. The sampler runs on x with the UNet wrapped as a Karras denoiser:
 *     c_in = 1/sqrt(sigma^2+1), t = the fractional timestep of sigma in the
 *     table (log-sigma interpolation), epsilon: D = x - sigma * eps, v:
 *     D = x/(sigma^2+1) - v * sigma/sqrt(sigma^2+1). Classifier-free
 *     guidance runs uncond and cond in ONE UNet call with batch 2 and mixes
 *     D = D_u + cfg * (D_c - D_u); CFG++ samplers also get D_u.
 *  5. vae_decoder(x / scaling_factor + shift) -> pixels (x+1)/2*255.
 * Batch count n: images seed, seed+1, ..., seed+n-1, one after another.
 *
 * img2img: the init image is encoded (vae_encoder: mean + std * randn, the
 * draw coming first from the image's generator, as diffusers), the schedule
 * for `steps` is cut to its last int(steps * strength) steps, and x =
 * latent + noise * sigma_start (noise: the generator's next draw).
 * Inpainting: the mask (white = repaint) is averaged down to the latent
 * grid. Regular UNets (4 input channels): latent masking in the denoiser
 * (ComfyUI KSamplerX0Inpaint, k-diffusion style): before every model call
 * the kept region of x is replaced by latent + noise * sigma and after it
 * the kept region of D by the latent; the result is blended once more at
 * the end. 9-channel inpainting UNets: the UNet input is (x * c_in, mask,
 * masked-image latent) with masked image = image * (mask < 0.5), encoded
 * with the VAE mean, and no latent masking (diffusers'
 * StableDiffusionInpaintPipeline). txt2img/img2img on a 9-channel UNet use
 * mask 1 and a gray masked image (AUTOMATIC1111).
 *
 * Memory: bm_sd_open allocates every buffer (latents, embeddings, sampler
 * scratch, images); bm_sd_generate allocates nothing except what the
 * tokenizer uses while encoding the prompts. A bm_sd is not thread-safe. */
#ifndef BM_SD_H_RUNTIME
#define BM_SD_H_RUNTIME

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bm_runtime.h"
#include "sampler.h"
#include "tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

#define BM_SD_MAX_STEPS 10000
#define BM_SD_MAX_BATCH_COUNT 100000

typedef struct bm_sd bm_sd;

/* What the package says about the model (borrowed strings live as long as g). */
typedef struct bm_sd_info {
  const char *version;       /* "sd1", "sd2" */
  const char *model_name;    /* the package's model name */
  int width, height;         /* image size in pixels (fixed when compiling) */
  int latent_w, latent_h, latent_channels; /* (C, h, w) of a latent */
  int unet_in_channels;      /* 4, or 9 for inpainting UNets */
  int max_batch;             /* the UNet's batch bound (2: cond+uncond in one call) */
  int text_len, text_hidden; /* 77, hidden size of the encoder output */
  int text_vocab;            /* token ids the text encoder takes (0 = unknown) */
  int clip_skip;             /* compiled into the text encoder */
  bm_prediction prediction;  /* BM_PRED_EPSILON or BM_PRED_V */
  double scaling_factor, shift_factor;
  int n_train_timesteps;     /* the discrete table's length (1000) */
  bool has_tokenizer, has_vae_encoder;
} bm_sd_info;

typedef struct bm_sd_options {
  int threads;      /* 0 = all CPUs */
  int profile;      /* time every kernel (bm_session_profile on bm_sd_session) */
  bool no_tokenizer;
} bm_sd_options;

/* Checks that pkg is an SD package (extra.family "stable-diffusion", the
 * functions text_encoder, unet, vae_decoder and their inputs), creates its
 * session, loads its tokenizer (package blobs, else the "tokenizer"
 * function's outputs) and allocates every buffer. pkg must outlive sd. */
bm_status bm_sd_open(bm_package *pkg, const bm_sd_options *o, bm_sd **out);
void bm_sd_close(bm_sd *sd); /* NULL is fine */
const bm_sd_info *bm_sd_get_info(const bm_sd *sd);
const bm_tokenizer *bm_sd_tokenizer(const bm_sd *sd); /* NULL if none */
bm_session *bm_sd_session(bm_sd *sd);
/* The model's discrete sigma table (ascending, n_train_timesteps values). */
const float *bm_sd_sigma_table(const bm_sd *sd);

typedef enum bm_sd_mode { BM_SD_TXT2IMG = 0, BM_SD_IMG2IMG, BM_SD_INPAINT } bm_sd_mode;
const char *bm_sd_mode_name(bm_sd_mode m);

/* Sampler names: a sampler.h name (euler_ancestral, dpmpp_2m, ...), an
 * alias (euler_a, k_euler_a, dpm2, dpm2_a, dpmpp_2s_a, ...) or an
 * AUTOMATIC1111 display name ("Euler a", "DPM++ 2M", "DPM++ 2M Karras",
 * "DPM++ SDE Karras", ...: case, spaces, '-' and "++" are normalized; a
 * trailing "karras"/"exponential"/... names the schedule). Resolves to the
 * registry entry and, if the name carried one, a schedule (else NULL).
 * Unknown names: BM_ERR_NOT_FOUND listing every sampler. */
bm_status bm_sd_resolve_sampler(const char *name, const bm_sampler_info **sampler, const char **schedule);
/* AUTOMATIC1111's display name of a sampler ("Euler a"), or its own name. */
const char *bm_sd_sampler_display_name(const char *sampler);

/* Progress, once per sampler step (and once with done = true). */
typedef struct bm_sd_progress {
  int image, images;     /* image index (0-based) and batch count */
  int step, steps;       /* steps done / sampler steps of this image */
  int model_evals;       /* denoiser evaluations so far (this image): the NFE */
  int unet_calls;        /* UNet runs (a CFG evaluation is one batch-2 run) */
  double seconds;        /* since this image's sampling started */
  bool done;
} bm_sd_progress;
typedef void (*bm_sd_progress_fn)(void *user, const bm_sd_progress *p);
/* A ready-made progress callback: a bar on stderr ("\r"-updated on a
 * terminal, one line per image otherwise); user is ignored. */
void bm_sd_progress_stderr(void *user, const bm_sd_progress *p);

/* One sampler step of one image (sampler.h's bm_sampler_step) with the
 * image index. */
typedef void (*bm_sd_step_fn)(void *user, int image, const bm_sampler_step *st);
/* A finished image: pixels (height, width, 3) RGB, and its final latent
 * (C, h, w) (before scaling for the VAE). Return nonzero to stop the batch. */
typedef int (*bm_sd_image_fn)(void *user, int image, uint64_t seed, const uint8_t *rgb, const float *latent);

typedef struct bm_sd_request {
  bm_sd_mode mode;
  const char *prompt;            /* UTF-8; "" is fine */
  const char *negative_prompt;   /* NULL = "" */
  int steps;                     /* 1..BM_SD_MAX_STEPS and >= the sampler's min_steps */
  double cfg_scale;              /* <= 1 and not CFG++: no guidance (one cond run) */
  uint64_t seed;
  int batch_count;               /* images, seeds seed..seed+n-1 */
  const char *sampler;           /* see bm_sd_resolve_sampler; NULL = "euler" */
  const char *schedule;          /* sampler.h schedule; NULL = from the sampler name, else "discrete" */
  const bm_sampler_options *sampler_opts; /* NULL = the references' defaults */
  /* img2img / inpaint: pixels (height, width, 3) RGB of exactly the
   * compiled size; strength in (0, 1] (inpaint default 1) */
  const uint8_t *init_rgb;
  double strength;
  /* inpaint: (height, width) 8-bit mask, 255 = repaint, 0 = keep */
  const uint8_t *mask;
  /* Token ids instead of text (tests; packages without a tokenizer):
   * text_len ids each, used when not NULL. */
  const int32_t *prompt_ids, *negative_ids;
  /* Replay hooks (tests): */
  const float *init_noise;       /* (C, h, w): use instead of the generator draw (image 0; others: draw) */
  const float *sigmas;           /* steps + 1 sigmas instead of the schedule's */
  const bm_noise_source *noise;  /* the stochastic samplers' source; NULL: torch generator (brownian for dpmpp_*sde) */
  bool cfg_separate;             /* run uncond and cond as two batch-1 UNet calls */
  /* callbacks (may be NULL) */
  bm_sd_progress_fn on_progress;
  bm_sd_step_fn on_step;
  bm_sd_image_fn on_image;
  void *user;
} bm_sd_request;

/* txt2img, "" prompts, 20 steps, cfg 7.5, seed 0, batch 1, euler,
 * discrete schedule, strength 0.75. */
bm_sd_request bm_sd_request_default(void);

typedef struct bm_sd_result {
  int images;              /* images finished */
  int steps;               /* sampler steps per image (after strength) */
  int start_step;          /* img2img/inpaint: first step of the full schedule */
  int model_evals;         /* denoiser evaluations, all images */
  int unet_calls;          /* UNet runs, all images */
  int tokens, tokens_negative; /* prompt tokens (with BOS/EOS) before truncation to text_len */
  const char *sampler, *schedule; /* resolved names (static strings) */
  double text_seconds, sample_seconds, vae_seconds, total_seconds;
} bm_sd_result;

/* Checks the request (sampler, schedule, steps, strength, images, sizes)
 * before running anything: errors are BM_ERR_INVALID_ARGUMENT or
 * BM_ERR_NOT_FOUND naming the problem. */
bm_status bm_sd_check_request(bm_sd *sd, const bm_sd_request *rq);
/* Runs the request: batch_count images, each delivered to on_image. */
bm_status bm_sd_generate(bm_sd *sd, const bm_sd_request *rq, bm_sd_result *res);

/* The generation parameters in AUTOMATIC1111's text format (the PNG
 * "parameters" chunk) for image `image` of the request; writes at most
 * size bytes (NUL-terminated, truncated if needed). */
void bm_sd_format_parameters(const bm_sd *sd, const bm_sd_request *rq, const bm_sd_result *res, int image,
                             char *out, size_t size);

#ifdef __cplusplus
}
#endif
#endif
