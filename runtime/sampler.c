/* sampler.c - the sampler registry (one table: name, reference, model calls
 * per step, deterministic, minimum steps), bm_sample's dispatch and input
 * checks, and the helpers shared by every samplers_*.c file. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "samplers_internal.h"

typedef struct sampler_entry {
  bm_sampler_info info;
  bm_sampler_impl fn;
  int variant;
} sampler_entry;

#define KD "k-diffusion sampling.py"
#define CU "ComfyUI comfy/k_diffusion/sampling.py"

/* variant meanings: see each sampler function. */
static const sampler_entry table[] = {
    {{"euler", KD " sample_euler", "1", 1, 1, 0, "s_churn > 0 draws noise"}, bm_sampler_euler, 0},
    {{"ddim", CU " (ddim = sample_euler)", "1", 1, 1, 0,
      "deterministic DDIM is Euler in sigma space"}, bm_sampler_euler, 0},
    {{"flow_match_euler", "diffusers FlowMatchEulerDiscreteScheduler in sigma space", "1", 1, 1, 0,
      "Euler; the denoiser returns x - sigma * v; use the flow_shift schedule"},
     bm_sampler_euler, 0},
    {{"euler_ancestral", KD " sample_euler_ancestral", "1", 0, 1, 0, NULL},
     bm_sampler_euler_ancestral, 0},
    {{"heun", KD " sample_heun", "2 (1 on the last step)", 1, 1, 0, NULL}, bm_sampler_heun, 0},
    {{"heunpp2", CU " sample_heunpp2", "3 (2, then 1 at the end)", 1, 1, 0, NULL},
     bm_sampler_heunpp2, 0},
    {{"dpm_2", KD " sample_dpm_2", "2 (1 on the last step)", 1, 1, 0, NULL}, bm_sampler_dpm_2, 0},
    {{"dpm_2_ancestral", KD " sample_dpm_2_ancestral", "2 (1 on the last step)", 0, 1, 0, NULL},
     bm_sampler_dpm_2_ancestral, 0},
    {{"lms", KD " sample_lms (order 4)", "1", 1, 1, 0, "last step: LMS step to sigma 0"},
     bm_sampler_lms, 0},
    {{"lms_comfy", CU " sample_lms (order 4)", "1", 1, 1, 0, "last step returns denoised"},
     bm_sampler_lms, 1},
    {{"dpm_fast", KD " sample_dpm_fast", "3 (order 3 steps; nfe = steps)", 1, 1, 0,
      "uses sigma_min/max of the schedule and nfe = steps; eta 0"},
     bm_sampler_dpm_fast, 0},
    {{"dpm_adaptive", KD " sample_dpm_adaptive", "3 per attempt (order 3)", 1, 1, 0,
      "PID step size control; ignores the step count"},
     bm_sampler_dpm_adaptive, 0},
    {{"dpmpp_2s_ancestral", KD " sample_dpmpp_2s_ancestral", "2 (1 on the last step)", 0, 1, 0,
      NULL}, bm_sampler_dpmpp_2s_ancestral, 0},
    {{"dpmpp_sde", KD " sample_dpmpp_sde", "2 (1 on the last step)", 0, 1, 0,
      "2 noise draws a step"}, bm_sampler_dpmpp_sde, 0},
    {{"dpmpp_2m", KD " sample_dpmpp_2m", "1", 1, 1, 0, NULL}, bm_sampler_dpmpp_2m, 0},
    {{"dpmpp_2m_sde", KD " sample_dpmpp_2m_sde (midpoint)", "1", 0, 1, 0, NULL},
     bm_sampler_dpmpp_2m_sde, 0},
    {{"dpmpp_2m_sde_heun", KD " sample_dpmpp_2m_sde (heun)", "1", 0, 1, 0, NULL},
     bm_sampler_dpmpp_2m_sde, 1},
    {{"dpmpp_3m_sde", KD " sample_dpmpp_3m_sde", "1", 0, 1, 0, NULL}, bm_sampler_dpmpp_3m_sde, 0},
    {{"ddpm", CU " sample_ddpm", "1", 0, 1, 0, NULL}, bm_sampler_ddpm, 0},
    {{"lcm", CU " sample_lcm", "1", 0, 1, 0, "x = denoised + sigma_next * noise"},
     bm_sampler_lcm, 0},
    {{"ipndm", CU " sample_ipndm (max_order 4)", "1", 1, 1, 0, NULL}, bm_sampler_ipndm, 0},
    {{"ipndm_v", CU " sample_ipndm_v (max_order 4)", "1", 1, 1, 0, NULL}, bm_sampler_ipndm_v, 0},
    {{"deis", CU " sample_deis (max_order 3, tab)", "1", 1, 1, 0, NULL}, bm_sampler_deis, 0},
    {{"unipc", "UniPC bh1 (data prediction, order 3, sigma space)", "1", 1, 3, 0, "steps >= order, as UniPC asserts"},
     bm_sampler_unipc, 1},
    {{"unipc_bh2", "UniPC bh2 (data prediction, order 3, sigma space)", "1", 1, 3, 0, "steps >= order, as UniPC asserts"},
     bm_sampler_unipc, 2},
    {{"sa_solver", CU " sample_sa_solver (3/4)", "1", 0, 1, 0, "noise only where tau > 0"},
     bm_sampler_sa_solver, 0},
    {{"sa_solver_pece", CU " sample_sa_solver_pece", "2 (1 on the first and last step)", 0, 1, 0,
      NULL}, bm_sampler_sa_solver, 1},
    {{"euler_cfg_pp", CU " sample_euler_cfg_pp", "1", 1, 1, 1, NULL},
     bm_sampler_euler_ancestral_cfg_pp, 1},
    {{"euler_ancestral_cfg_pp", CU " sample_euler_ancestral_cfg_pp", "1", 0, 1, 1, NULL},
     bm_sampler_euler_ancestral_cfg_pp, 0},
    {{"dpmpp_2s_ancestral_cfg_pp", CU " sample_dpmpp_2s_ancestral_cfg_pp",
      "2 (1 on the last step)", 0, 1, 1, NULL}, bm_sampler_dpmpp_2s_ancestral_cfg_pp, 0},
    {{"dpmpp_2m_cfg_pp", CU " sample_dpmpp_2m_cfg_pp", "1", 1, 1, 1, NULL},
     bm_sampler_dpmpp_2m_cfg_pp, 0},
    {{"res_multistep", CU " sample_res_multistep (eta 0)", "1", 1, 1, 0,
      "draws noise (x0) each step like the reference"}, bm_sampler_res_multistep, 0},
    {{"res_multistep_cfg_pp", CU " sample_res_multistep_cfg_pp (eta 0)", "1", 1, 1, 1, NULL},
     bm_sampler_res_multistep, 1},
    {{"res_multistep_ancestral", CU " sample_res_multistep_ancestral", "1", 0, 1, 0, NULL},
     bm_sampler_res_multistep, 2},
    {{"res_multistep_ancestral_cfg_pp", CU " sample_res_multistep_ancestral_cfg_pp", "1", 0, 1,
      1, NULL}, bm_sampler_res_multistep, 3},
    {{"gradient_estimation", CU " sample_gradient_estimation", "1", 1, 1, 0, NULL},
     bm_sampler_gradient_estimation, 0},
    {{"gradient_estimation_cfg_pp", CU " sample_gradient_estimation_cfg_pp", "1", 1, 1, 1, NULL},
     bm_sampler_gradient_estimation, 1},
    {{"er_sde", CU " sample_er_sde (3 stages)", "1", 0, 1, 0, NULL}, bm_sampler_er_sde, 0},
    {{"seeds_2", CU " sample_seeds_2", "2 (1 on the last step)", 0, 1, 0, NULL},
     bm_sampler_seeds_2, 0},
    {{"seeds_3", CU " sample_seeds_3", "3 (1 on the last step)", 0, 1, 0, NULL},
     bm_sampler_seeds_3, 0},
    {{"exp_heun_2_x0", CU " sample_exp_heun_2_x0", "2 (1 on the last step)", 1, 1, 0, NULL},
     bm_sampler_seeds_2, 1},
    {{"exp_heun_2_x0_sde", CU " sample_exp_heun_2_x0_sde", "2 (1 on the last step)", 0, 1, 0,
      NULL}, bm_sampler_seeds_2, 2},
};
#define TABLE_LEN ((int)(sizeof table / sizeof table[0]))

int bm_sampler_count(void) { return TABLE_LEN; }
const bm_sampler_info *bm_sampler_at(int i) {
  return i >= 0 && i < TABLE_LEN ? &table[i].info : NULL;
}

static const sampler_entry *find_entry(const char *name) {
  for (int i = 0; name && i < TABLE_LEN; i++)
    if (strcmp(table[i].info.name, name) == 0) return &table[i];
  return NULL;
}

bm_status bm_sampler_find(const char *name, const bm_sampler_info **out) {
  *out = NULL;
  const sampler_entry *e = find_entry(name);
  if (e) {
    *out = &e->info;
    return NULL;
  }
  char list[1000];
  size_t len = 0;
  list[0] = 0;
  for (int i = 0; i < TABLE_LEN && len + 40 < sizeof list; i++)
    len += (size_t)snprintf(list + len, sizeof list - len, "%s%s", i ? ", " : "", table[i].info.name);
  return bm_status_make(BM_ERR_NOT_FOUND, "unknown sampler '%s'; valid samplers: %s",
                        name ? name : "(null)", list);
}

bm_sampler_options bm_sampler_options_default(void) {
  bm_sampler_options o;
  memset(&o, 0, sizeof o);
  o.eta = o.s_noise = o.s_churn = o.s_tmin = o.s_tmax = NAN;
  o.r = o.ge_gamma = NAN;
  o.rtol = o.atol = o.h_init = o.pcoeff = o.icoeff = o.dcoeff = o.accept_safety = NAN;
  return o;
}

bm_status bm_sample(const char *name, bm_sampler_run *run) {
  const bm_sampler_info *info;
  BM_RETURN_IF_ERROR(bm_sampler_find(name, &info));
  const sampler_entry *e = find_entry(name);
  if (!run || !run->denoise || !run->x || !run->sigmas || run->n <= 0)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT,
                          "sampler '%s': run needs denoise, x, sigmas and n > 0", name);
  if (run->steps < info->min_steps)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT,
                          "sampler '%s' needs at least %d steps, got %d", name, info->min_steps,
                          run->steps);
  for (int i = 0; i <= run->steps; i++) {
    float s = run->sigmas[i];
    if (!(s >= 0.0f) || !isfinite(s))
      return bm_status_make(BM_ERR_INVALID_ARGUMENT, "sampler '%s': sigmas[%d] = %g is not a finite non-negative number", name, i, (double)s);
    if (i > 0 && !(s < run->sigmas[i - 1]))
      return bm_status_make(BM_ERR_INVALID_ARGUMENT,
                            "sampler '%s': sigmas must decrease, but sigmas[%d] = %g >= sigmas[%d] = %g",
                            name, i, (double)s, i - 1, (double)run->sigmas[i - 1]);
  }
  if (run->sigmas[0] <= 0.0f)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "sampler '%s': sigmas[0] must be > 0", name);

  bm_sctx c;
  memset(&c, 0, sizeof c);
  c.run = run;
  c.o = run->opts ? *run->opts : bm_sampler_options_default();
  c.variant = e->variant;
  c.n = run->n;
  c.sig = run->sigmas;
  c.steps = run->steps;
  run->model_calls = run->noise_draws = 0;
  float *scratch = run->scratch, *owned = NULL;
  if (!scratch) {
    if ((uint64_t)run->n > (UINT64_MAX / sizeof(float)) / BM_SAMPLER_SCRATCH_BUFFERS)
      return bm_status_make(BM_ERR_OUT_OF_MEMORY, "sampler '%s': n = %lld is too large", name,
                            (long long)run->n);
    owned = scratch = malloc(sizeof(float) * (size_t)run->n * BM_SAMPLER_SCRATCH_BUFFERS);
    if (!owned)
      return bm_status_make(BM_ERR_OUT_OF_MEMORY, "sampler '%s': no memory for %d buffers of %lld floats",
                            name, BM_SAMPLER_SCRATCH_BUFFERS, (long long)run->n);
  }
  for (int i = 0; i < BM_SAMPLER_SCRATCH_BUFFERS; i++) c.buf[i] = scratch + (size_t)i * run->n;
  bm_status s = e->fn(&c);
  free(owned);
  if (s) return bm_status_wrap(s, "sampler '%s'", name);
  return NULL;
}

/* ---------------------------------------------------------------- helpers */

bm_status bm_sctx_denoise(bm_sctx *c, const float *x, double sigma, float *den, float *uncond) {
  c->run->model_calls++;
  return c->run->denoise(c->run->user, x, sigma, den, uncond);
}

bm_status bm_sctx_noise(bm_sctx *c, double sigma, double sigma_next, float *out) {
  if (!c->run->noise.next)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT,
                          "this sampler is stochastic and needs a noise source (run.noise)");
  c->run->noise_draws++;
  return c->run->noise.next(c->run->noise.user, sigma, sigma_next, out, c->n);
}

void bm_sctx_report(bm_sctx *c, int i, double sigma, double sigma_hat, const float *x,
                    const float *den) {
  if (!c->run->on_step) return;
  bm_sampler_step st;
  memset(&st, 0, sizeof st);
  st.i = i;
  st.sigma = sigma;
  st.sigma_hat = sigma_hat;
  st.x = x;
  st.denoised = den;
  st.n = c->n;
  st.t = st.h = st.error = NAN;
  c->run->on_step(c->run->step_user, &st);
}

void bm_ancestral_step(double from, double to, double eta, double *down, double *up) {
  if (eta == 0.0) {
    *down = to;
    *up = 0.0;
    return;
  }
  double u = eta * sqrt(to * to * (from * from - to * to) / (from * from));
  if (u > to) u = to;
  *up = u;
  *down = sqrt(to * to - u * u);
}

void bm_copy(float *o, const float *x, int64_t n) {
  if (o != x) memmove(o, x, sizeof(float) * (size_t)n);
}
void bm_lc1(float *o, int64_t n, double a, const float *x) {
  for (int64_t i = 0; i < n; i++) o[i] = (float)(a * x[i]);
}
void bm_lc2(float *o, int64_t n, double a, const float *x, double b, const float *y) {
  for (int64_t i = 0; i < n; i++) o[i] = (float)(a * x[i] + b * y[i]);
}
void bm_lc3(float *o, int64_t n, double a, const float *x, double b, const float *y, double c,
            const float *z) {
  for (int64_t i = 0; i < n; i++) o[i] = (float)(a * x[i] + b * y[i] + c * z[i]);
}
void bm_lc4(float *o, int64_t n, double a, const float *x, double b, const float *y, double c,
            const float *z, double d, const float *w) {
  for (int64_t i = 0; i < n; i++) o[i] = (float)(a * x[i] + b * y[i] + c * z[i] + d * w[i]);
}
void bm_lc5(float *o, int64_t n, double a, const float *x, double b, const float *y, double c,
            const float *z, double d, const float *w, double e, const float *v) {
  for (int64_t i = 0; i < n; i++)
    o[i] = (float)(a * x[i] + b * y[i] + c * z[i] + d * w[i] + e * v[i]);
}
