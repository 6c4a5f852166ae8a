/* sampler.h - diffusion samplers (k-diffusion / ComfyUI style, in sigma
 * space), diffusers-compatible schedulers (timestep space), sigma schedules
 * and noise sources. Pure C numerics on float32 latent buffers; the model is
 * reached through a callback. See docs/samplers.md for the table of every
 * sampler and schedule with its reference.
 *
 * Two families:
 *
 * 1. k-diffusion samplers (bm_sample). The denoiser callback returns the
 *    denoised (x0) prediction D(x, sigma) of a Karras-style model (x = x0 +
 *    sigma * eps; an epsilon/v/flow model is wrapped by the caller). CFG++
 *    samplers (info->cfg_pp) also need the unconditional x0 prediction: the
 *    callback gets a non-NULL `uncond` buffer and fills it too.
 *
 *      bm_sampler_run r = {0};
 *      r.denoise = my_denoiser; r.user = ctx;      // D(x, sigma)
 *      r.x = latents; r.n = 4 * 64 * 64;           // in: x_T = noise * sigmas[0]
 *      r.sigmas = sigmas; r.steps = 20;            // steps + 1 values, last 0
 *      r.noise = noise_source;                     // for stochastic samplers
 *      BM_RETURN_IF_ERROR(bm_sample("dpmpp_2m", &r)); // out: x_0 in latents
 *
 * 2. diffusers-compatible schedulers (bm_scheduler_run): the pipelines' loop
 *      set_timesteps(steps); latents *= init_noise_sigma;
 *      for t in timesteps: in = scale_model_input(latents, t);
 *                          out = model(in, t); latents = step(out, t, latents)
 *    The model callback returns the raw model output; its meaning is given by
 *    the config's prediction type (epsilon, v, flow).
 *
 * Stochastic samplers draw every N(0,1) tensor from one bm_noise_source:
 * a function returning the next standard-normal tensor for the interval
 * (sigma, sigma_next). bm_noise_torch_* (torch's CPU generator) and
 * bm_noise_brownian_* (a seeded Brownian-tree-style sampler) are provided;
 * tests feed pre-recorded tensors.
 *
 * Memory: a run needs BM_SAMPLER_SCRATCH_BUFFERS work buffers of n floats.
 * Pass them as `scratch` (allocated once, reused for every run) or leave it
 * NULL and the run allocates and frees them itself.
 */
#ifndef BM_SAMPLER_H
#define BM_SAMPLER_H

#include <stdint.h>

#include "bm_runtime.h"
#include "torch_rng.h"

#define BM_SAMPLER_SCRATCH_BUFFERS 24

/* ------------------------------------------------------------ callbacks */

/* D(x, sigma): writes the denoised (x0) prediction of x (n floats) at noise
 * level sigma into `denoised`. `uncond` is NULL except for CFG++ samplers,
 * where the callback also writes the unconditional x0 prediction there
 * (denoised then holds the CFG-guided prediction). */
typedef bm_status (*bm_denoiser_fn)(void *user, const float *x, double sigma, float *denoised,
                                    float *uncond);

/* A source of standard-normal tensors: writes the next N(0,1) tensor of n
 * floats for the step from sigma to sigma_next. */
typedef bm_status (*bm_noise_fn)(void *user, double sigma, double sigma_next, float *out,
                                 int64_t n);
typedef struct bm_noise_source {
  bm_noise_fn next; /* NULL: stochastic samplers fail with a clear error */
  void *user;
} bm_noise_source;

/* What a sampler reports once per step (k-diffusion's callback). */
typedef struct bm_sampler_step {
  int i;                  /* step index */
  double sigma, sigma_hat;
  const float *x;         /* x at the start of step i (dpm_adaptive: after the attempt) */
  const float *denoised;  /* the step's first denoised prediction */
  int64_t n;
  /* dpm_adaptive only (one report per attempted step, accepted or not). */
  double t, h, error;     /* -log sigma reached, next PID step, error estimate */
  int n_accept;           /* running count of accepted steps */
} bm_sampler_step;
typedef void (*bm_step_fn)(void *user, const bm_sampler_step *step);

/* ------------------------------------------------------------- options */

/* NAN (or 0 for the ints) means "the reference's default" for that sampler:
 * eta 1 for ancestral/SDE samplers (0 for res_multistep, dpm_fast,
 * dpm_adaptive), s_noise 1, s_churn 0, s_tmin 0, s_tmax inf. */
typedef struct bm_sampler_options {
  double eta, s_noise, s_churn, s_tmin, s_tmax;
  double r;            /* dpmpp_sde (1/2), seeds_2 (1/2) */
  double ge_gamma;     /* gradient_estimation (2) */
  int order;           /* lms (4), ipndm/ipndm_v (4), deis (3), dpm_adaptive (3) */
  /* dpm_adaptive */
  double rtol, atol, h_init, pcoeff, icoeff, dcoeff, accept_safety;
  /* The model's discrete sigma table (ascending, timestep order) used by
   * sa_solver's tau interval (percent_to_sigma); NULL: SD1's table. */
  const float *model_sigmas;
  int model_sigmas_len;
} bm_sampler_options;

/* Options with every field at "default" (NAN / 0). */
bm_sampler_options bm_sampler_options_default(void);

/* ----------------------------------------------------- k-diffusion family */

typedef struct bm_sampler_run {
  bm_denoiser_fn denoise;
  void *user;
  float *x;              /* (n) in: the starting noisy latent; out: the result */
  int64_t n;
  const float *sigmas;   /* (steps + 1) descending; usually ends with 0 */
  int steps;
  bm_noise_source noise;
  bm_step_fn on_step;    /* may be NULL */
  void *step_user;
  const bm_sampler_options *opts; /* NULL: all defaults */
  float *scratch;        /* NULL or BM_SAMPLER_SCRATCH_BUFFERS * n floats */
  /* out */
  int model_calls;
  int noise_draws;
} bm_sampler_run;

typedef struct bm_sampler_info {
  const char *name;
  const char *reference;   /* "k-diffusion", "ComfyUI", ... and the function */
  const char *calls;       /* model calls per step, in words ("1", "2 (1 last step)") */
  int deterministic;       /* 1: never draws noise (with default options) */
  int min_steps;           /* smallest step count the reference can run */
  int cfg_pp;              /* needs the unconditional prediction */
  const char *notes;
} bm_sampler_info;

/* The registry: count, i-th entry, lookup by name. bm_sampler_find fails
 * with BM_ERR_NOT_FOUND naming the sampler and listing every valid name. */
int bm_sampler_count(void);
const bm_sampler_info *bm_sampler_at(int i);
bm_status bm_sampler_find(const char *name, const bm_sampler_info **out);

/* Runs sampler `name` on run->x in place. Errors (BM_ERR_INVALID_ARGUMENT):
 * unknown name, fewer steps than the sampler can use, non-descending or
 * negative sigmas, missing noise source for a stochastic sampler. */
bm_status bm_sample(const char *name, bm_sampler_run *run);

/* ------------------------------------------------------------- schedules */

typedef struct bm_schedule_params {
  double sigma_min, sigma_max; /* 0: from the model table (SD1: 0.0292, 14.6146) */
  double rho;                  /* karras (7), polyexponential (1) */
  double shift;                /* flow_shift (3.0 as SD3) */
  double alpha, beta;          /* beta schedule (0.6, 0.6) */
  const char *ays_model;       /* align_your_steps: "sd15" (default) or "sdxl" */
  const float *model_sigmas;   /* ascending discrete table; NULL: SD1 */
  int model_sigmas_len;
} bm_schedule_params;

int bm_schedule_count(void);
const char *bm_schedule_name(int i);
const char *bm_schedule_reference(int i);
/* Writes steps + 1 sigmas (the last one 0) into out. Unknown name:
 * BM_ERR_NOT_FOUND listing the valid ones. params may be NULL. */
bm_status bm_schedule_sigmas(const char *name, const bm_schedule_params *params, int steps,
                             float *out);

/* SD1's discrete model: betas = linspace(0.00085^.5, 0.012^.5, 1000)^2,
 * alphas_cumprod (float32), sigma table ((1-ac)/ac)^.5 (float32). */
void bm_schedule_sd1_alphas_cumprod(float out[1000]);
void bm_schedule_sd1_sigmas(float out[1000]);
/* sigma(t) of a discrete table: log-linear interpolation at fractional t. */
double bm_schedule_table_sigma(const float *table, int len, double t);
/* t(sigma): the inverse (log-sigma interpolation, as k-diffusion/ComfyUI). */
double bm_schedule_table_t(const float *table, int len, double sigma);

/* --------------------------------------------------------- noise sources */

/* torch-generator noise: every draw is torch.randn(n, generator=g) on a
 * generator seeded once (what ComfyUI's default_noise_sampler does on the
 * CPU with seed+1 and diffusers' randn_tensor with a CPU generator). */
typedef struct bm_noise_torch {
  bm_torch_rng rng;
} bm_noise_torch;
void bm_noise_torch_init(bm_noise_torch *s, uint64_t seed);
bm_noise_source bm_noise_torch_source(bm_noise_torch *s);

/* Brownian-tree-style noise: a deterministic function of (seed, sigma,
 * sigma_next) so the same seed gives consistent Brownian paths when the
 * step count changes. See docs/samplers.md for how it differs from torchsde.
 * sigma_min/sigma_max bound the interval (smallest non-zero and largest
 * sigma of the schedule). scratch: 2 * n floats owned by the caller. */
typedef struct bm_noise_brownian {
  uint64_t seed;
  double t0, t1;        /* the tree's interval in sigma */
  int depth;            /* bisection depth (default 24) */
  float *scratch;       /* (2 * n) */
  int64_t n;
} bm_noise_brownian;
bm_status bm_noise_brownian_init(bm_noise_brownian *s, uint64_t seed, double sigma_min,
                                 double sigma_max, float *scratch, int64_t n);
bm_noise_source bm_noise_brownian_source(bm_noise_brownian *s);
/* W(t1) - W(t0) of the tree (the raw Brownian increment, not normalised). */
bm_status bm_noise_brownian_increment(bm_noise_brownian *s, double ta, double tb, float *out);

/* ------------------------------------------- diffusers-compatible family */

typedef enum bm_prediction {
  BM_PRED_EPSILON = 0,
  BM_PRED_V,        /* v_prediction */
  BM_PRED_FLOW,     /* flow matching velocity (noise - x0) */
  BM_PRED_SAMPLE,   /* x0 */
} bm_prediction;

/* Raw model output for model_in at scheduler timestep t. */
typedef bm_status (*bm_model_fn)(void *user, const float *model_in, double t, float *model_out);

/* A diffusers scheduler config (from_config of SD1's scheduler_config.json
 * plus the class' own options). bm_scheduler_config_sd1() fills SD1's. */
typedef struct bm_scheduler_config {
  int num_train_timesteps;       /* 1000 */
  double beta_start, beta_end;   /* 0.00085, 0.012 */
  int beta_linear;               /* 0: scaled_linear, 1: linear */
  int steps_offset;              /* 1 */
  int set_alpha_to_one;          /* 0 */
  bm_prediction prediction;
  const char *timestep_spacing;  /* NULL: the class default ("leading" or "linspace") */
  double eta;                    /* DDIM step(eta=...) */
  int skip_prk_steps;            /* PNDM (1) */
  int solver_order;              /* DEIS/UniPC/DPM-Solver (2), LMS (4) */
  int use_karras_sigmas;
  const char *algorithm_type;    /* dpmsolver++ (default), sde-dpmsolver++ */
  const char *solver_type;       /* UniPC: bh1/bh2 (bh2); DPM: midpoint/heun */
  const char *final_sigmas_type; /* "zero" (default) or "sigma_min" */
  int lower_order_final;         /* 1 */
  int original_inference_steps;  /* LCM (50) */
  double timestep_scaling;       /* LCM (10) */
  double shift;                  /* FlowMatch (1.0) */
  int predictor_order, corrector_order; /* SA-Solver (2, 2) */
} bm_scheduler_config;

void bm_scheduler_config_sd1(bm_scheduler_config *c);

/* One loop iteration as the pipelines see it. */
typedef struct bm_scheduler_step {
  int i;                    /* loop index */
  double t;                 /* timestep passed to the model */
  const float *model_in, *model_out, *prev_sample;
  const float *pred_original; /* NULL where the class' step output has none */
  int64_t n;
} bm_scheduler_step;
typedef void (*bm_scheduler_step_fn)(void *user, const bm_scheduler_step *step);

typedef struct bm_scheduler_run {
  bm_model_fn model;
  void *user;
  float *latents;           /* (n) in: the unscaled start noise x_init; out: result */
  int64_t n;
  int steps;                /* num_inference_steps */
  const bm_scheduler_config *config;
  bm_noise_source noise;    /* the step()'s randn_tensor draws, in order */
  bm_scheduler_step_fn on_step;
  void *step_user;
  float *scratch;           /* NULL or BM_SAMPLER_SCRATCH_BUFFERS * n floats */
  /* out */
  int loop_len;
  int noise_draws;
  double init_noise_sigma;
} bm_scheduler_run;

typedef struct bm_scheduler_info {
  const char *name;         /* "ddim", "euler", ... (see docs/samplers.md) */
  const char *diffusers_class;
  const char *calls;
  int deterministic;
  int min_steps;
} bm_scheduler_info;

int bm_scheduler_count(void);
const bm_scheduler_info *bm_scheduler_at(int i);
bm_status bm_scheduler_find(const char *name, const bm_scheduler_info **out);
bm_status bm_scheduler_run_loop(const char *name, bm_scheduler_run *run);

/* ------------------------------------------------ numerics (for tests) */

/* DEIS 'tab' coefficients (ComfyUI deis.get_deis_coeff_list) of a sigma
 * schedule: row i holds the order-min(i+1, max_order) coefficients of step
 * i, NaN-padded; rows of Euler steps are all NaN. */
void bm_deis_coeffs(const float *sigmas, int steps, int max_order, double (*coeff)[4]);

#endif /* BM_SAMPLER_H */
