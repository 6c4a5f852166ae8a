/* samplers_internal.h - shared internals of the sampler library: the run
 * context handed to every sampler function and elementwise helpers. Not a
 * public header (include sampler.h). */
#ifndef BM_SAMPLERS_INTERNAL_H
#define BM_SAMPLERS_INTERNAL_H

#include <math.h>
#include <stdint.h>

#include "sampler.h"

typedef struct bm_sctx {
  bm_sampler_run *run;
  bm_sampler_options o;  /* as given (NAN = default) */
  int variant;           /* registry variant (solver type, cfg_pp, ...) */
  int64_t n;
  const float *sig;      /* run->sigmas */
  int steps;
  float *buf[BM_SAMPLER_SCRATCH_BUFFERS];
} bm_sctx;

typedef bm_status (*bm_sampler_impl)(bm_sctx *c);

/* Calls the denoiser (uncond may be NULL) and counts the call. */
bm_status bm_sctx_denoise(bm_sctx *c, const float *x, double sigma, float *den, float *uncond);
/* Draws the next N(0,1) tensor from the noise source. */
bm_status bm_sctx_noise(bm_sctx *c, double sigma, double sigma_next, float *out);
/* Reports one step to the caller's on_step. */
void bm_sctx_report(bm_sctx *c, int i, double sigma, double sigma_hat, const float *x,
                    const float *den);
/* Option value or its default. */
static inline double bm_opt(double v, double dflt) { return isnan(v) ? dflt : v; }

/* k-diffusion's get_ancestral_step(sigma_from, sigma_to, eta). */
void bm_ancestral_step(double from, double to, double eta, double *down, double *up);

/* Elementwise linear combinations, computed in double: out may alias. */
void bm_lc1(float *o, int64_t n, double a, const float *x);
void bm_lc2(float *o, int64_t n, double a, const float *x, double b, const float *y);
void bm_lc3(float *o, int64_t n, double a, const float *x, double b, const float *y, double c,
            const float *z);
void bm_lc4(float *o, int64_t n, double a, const float *x, double b, const float *y, double c,
            const float *z, double d, const float *w);
void bm_lc5(float *o, int64_t n, double a, const float *x, double b, const float *y, double c,
            const float *z, double d, const float *w, double e, const float *v);
void bm_copy(float *o, const float *x, int64_t n);

/* Samplers (one function each), grouped by file. */
/* samplers_kdiff.c */
bm_status bm_sampler_euler(bm_sctx *c);
bm_status bm_sampler_euler_ancestral(bm_sctx *c);
bm_status bm_sampler_heun(bm_sctx *c);
bm_status bm_sampler_heunpp2(bm_sctx *c);
bm_status bm_sampler_dpm_2(bm_sctx *c);
bm_status bm_sampler_dpm_2_ancestral(bm_sctx *c);
bm_status bm_sampler_lms(bm_sctx *c);
/* samplers_dpm.c */
bm_status bm_sampler_dpm_fast(bm_sctx *c);
bm_status bm_sampler_dpm_adaptive(bm_sctx *c);
bm_status bm_sampler_dpmpp_2s_ancestral(bm_sctx *c);
bm_status bm_sampler_dpmpp_sde(bm_sctx *c);
bm_status bm_sampler_dpmpp_2m(bm_sctx *c);
bm_status bm_sampler_dpmpp_2m_sde(bm_sctx *c);
bm_status bm_sampler_dpmpp_3m_sde(bm_sctx *c);
/* samplers_multistep.c */
bm_status bm_sampler_ipndm(bm_sctx *c);
bm_status bm_sampler_ipndm_v(bm_sctx *c);
bm_status bm_sampler_deis(bm_sctx *c);
bm_status bm_sampler_unipc(bm_sctx *c);
bm_status bm_sampler_sa_solver(bm_sctx *c);
bm_status bm_sampler_res_multistep(bm_sctx *c);
/* samplers_comfy.c */
bm_status bm_sampler_ddpm(bm_sctx *c);
bm_status bm_sampler_lcm(bm_sctx *c);
bm_status bm_sampler_euler_ancestral_cfg_pp(bm_sctx *c);
bm_status bm_sampler_dpmpp_2s_ancestral_cfg_pp(bm_sctx *c);
bm_status bm_sampler_dpmpp_2m_cfg_pp(bm_sctx *c);
bm_status bm_sampler_gradient_estimation(bm_sctx *c);
bm_status bm_sampler_er_sde(bm_sctx *c);
bm_status bm_sampler_seeds_2(bm_sctx *c);
bm_status bm_sampler_seeds_3(bm_sctx *c);

/* SA-Solver's stochastic Adams b coefficients (data prediction, alpha_t
 * given), for k = len(lambdas) points. */
int bm_sa_b_coeffs(double alpha_t, const double *lambdas, int k, double lambda_s,
                   double lambda_t, double tau, double *b);
/* UniPC (data prediction) shared by the sigma-space sampler and the
 * diffusers scheduler: see samplers_multistep.c. */

/* Scheduler family (samplers_diffusers.c) */
extern const bm_scheduler_info bm_scheduler_table[];
extern const int bm_scheduler_table_len;

#endif /* BM_SAMPLERS_INTERNAL_H */
