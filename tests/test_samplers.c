/* test_samplers.c - conformance of the sampler library against the golden
 * trajectories in shared/golden/samplers/{kdiffusion,comfy,diffusers}
 * (replayed with the recorded noise: every model call, every step and
 * x_final to 1e-5 relative), the schedules, and bad-input errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../runtime/safetensors.h"
#include "../runtime/sampler.h"
#include "testutil.h"

#define TOL 1e-5

/* ------------------------------------------------------------ replay */

typedef struct replay {
  const char *name;
  bm_st_file *st;
  int64_t n;
  int cfg;              /* CFG++ toy */
  int cb_x_is_input;    /* ComfyUI quirk: cb_x repeats x_init */
  int ncall, nnoise, nstep;
  double err_call_x, err_call_den, err_call_sigma, err_noise_sigma;
  double err_cb_x, err_cb_den, err_cb_sigma, err_adapt;
  int overflow;
  const float *calls_x, *calls_den, *calls_sigma, *calls_unc;
  int64_t n_calls, n_noise, n_cb;
  const float *noise, *noise_sigmas, *cb_x, *cb_den, *cb_sigma;
  const float *cb_t, *cb_h, *cb_err;
  const int64_t *cb_acc;
} replay;

static const float *tensor(bm_st_file *st, const char *name, int64_t *rows) {
  const bm_st_tensor *t = bm_st_find(st, name);
  if (rows) *rows = 0;
  if (!t) return NULL;
  if (rows) *rows = t->ndim ? t->shape[0] : 1;
  return t->data;
}

static double rel(const float *a, const float *b, int64_t n) { return bm_test_rel_err(a, b, n); }
static double dmax(double a, double b) { return a > b ? a : b; }
static double srel(double a, double b) { return fabs(a - b) / dmax(fabs(b), 1e-30); }

/* The toy denoisers of the goldens, in float32 in the recorded order. */
static void toy(const float *x, float s, float *out, int64_t n, float inner) {
  float c = 1.0f / (1.0f + s * s);
  for (int64_t i = 0; i < n; i++) out[i] = x[i] * c + 0.1f * tanhf(inner * x[i]);
}

static bm_status toy_denoise(void *user, const float *x, double sigma, float *den, float *unc) {
  replay *r = user;
  float s = (float)sigma;
  int k = r->ncall++;
  if (r->cfg) {
    float *cond = malloc(sizeof(float) * (size_t)r->n), *u = malloc(sizeof(float) * (size_t)r->n);
    toy(x, s, cond, r->n, 1.0f);
    toy(x, s, u, r->n, 0.5f);
    for (int64_t i = 0; i < r->n; i++) den[i] = u[i] + (cond[i] - u[i]) * 1.5f;
    if (unc) memcpy(unc, u, sizeof(float) * (size_t)r->n);
    free(cond);
    free(u);
  } else {
    toy(x, s, den, r->n, 1.0f);
    if (unc) return bm_status_make(BM_ERR_INTERNAL, "uncond asked from a non-CFG toy");
  }
  if (k >= r->n_calls) {
    r->overflow = 1;
    return NULL;
  }
  r->err_call_sigma = dmax(r->err_call_sigma, srel(sigma, r->calls_sigma[k]));
  r->err_call_x = dmax(r->err_call_x, rel(x, r->calls_x + k * r->n, r->n));
  r->err_call_den = dmax(r->err_call_den, rel(den, r->calls_den + k * r->n, r->n));
  return NULL;
}

static bm_status replay_noise(void *user, double sigma, double sigma_next, float *out, int64_t n) {
  replay *r = user;
  int k = r->nnoise++;
  if (k >= r->n_noise)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "%s: noise draw %d but only %lld recorded", r->name, k,
                          (long long)r->n_noise);
  memcpy(out, r->noise + k * n, sizeof(float) * (size_t)n);
  if (r->noise_sigmas) {
    r->err_noise_sigma = dmax(r->err_noise_sigma, srel(sigma, r->noise_sigmas[2 * k]));
    r->err_noise_sigma = dmax(r->err_noise_sigma, srel(sigma_next, r->noise_sigmas[2 * k + 1]));
  }
  return NULL;
}

static void replay_step(void *user, const bm_sampler_step *s) {
  replay *r = user;
  int k = r->nstep++;
  if (k >= r->n_cb) {
    r->overflow = 1;
    return;
  }
  if (!r->cb_x_is_input) r->err_cb_x = dmax(r->err_cb_x, rel(s->x, r->cb_x + k * r->n, r->n));
  r->err_cb_den = dmax(r->err_cb_den, rel(s->denoised, r->cb_den + k * r->n, r->n));
  r->err_cb_sigma = dmax(r->err_cb_sigma, srel(s->sigma, r->cb_sigma[k]));
  if (r->cb_t) {
    r->err_adapt = dmax(r->err_adapt, srel(s->t, r->cb_t[k]));
    r->err_adapt = dmax(r->err_adapt, srel(s->h, r->cb_h[k]));
    r->err_adapt = dmax(r->err_adapt, fabs(s->error - r->cb_err[k]) / dmax(fabs(r->cb_err[k]), 1e-3));
    if (s->n_accept != r->cb_acc[k]) r->err_adapt = 1;
  }
}

static int kdiff_failures = 0;

static void replay_kdiff(const char *dir, const char *file, const char *sampler, int cfg, int quirk) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", bm_test_shared(dir), file);
  replay r;
  memset(&r, 0, sizeof r);
  r.name = file;
  r.cfg = cfg;
  r.cb_x_is_input = quirk;
  CHECK_OK(bm_st_open(path, &r.st));
  if (!r.st) return;
  int64_t nsig = 0;
  const float *sigmas = tensor(r.st, "sigmas", &nsig);
  const float *x_init = tensor(r.st, "x_init", NULL);
  const float *x_final = tensor(r.st, "x_final", NULL);
  r.n = bm_st_find(r.st, "x_init")->numel;
  r.calls_x = tensor(r.st, "calls_x", &r.n_calls);
  r.calls_den = tensor(r.st, "calls_denoised", NULL);
  r.calls_sigma = tensor(r.st, "calls_sigma", NULL);
  r.noise = tensor(r.st, "noise", &r.n_noise);
  r.noise_sigmas = tensor(r.st, "noise_sigmas", NULL);
  r.cb_x = tensor(r.st, "cb_x", &r.n_cb);
  r.cb_den = tensor(r.st, "cb_denoised", NULL);
  r.cb_sigma = tensor(r.st, "cb_sigma", NULL);
  r.cb_t = tensor(r.st, "cb_t", NULL);
  r.cb_h = tensor(r.st, "cb_h", NULL);
  r.cb_err = tensor(r.st, "cb_error", NULL);
  const bm_st_tensor *acc = bm_st_find(r.st, "cb_n_accept");
  r.cb_acc = acc ? acc->data : NULL;
  float *x = malloc(sizeof(float) * (size_t)r.n);
  memcpy(x, x_init, sizeof(float) * (size_t)r.n);
  bm_sampler_run run;
  memset(&run, 0, sizeof run);
  run.denoise = toy_denoise;
  run.user = &r;
  run.x = x;
  run.n = r.n;
  run.sigmas = sigmas;
  run.steps = (int)nsig - 1;
  run.noise.next = replay_noise;
  run.noise.user = &r;
  run.on_step = replay_step;
  run.step_user = &r;
  CHECK_OK(bm_sample(sampler, &run));
  double ef = rel(x, x_final, r.n);
  int ok = ef <= TOL && r.err_call_x <= TOL && r.err_call_den <= TOL && r.err_cb_x <= TOL &&
           r.err_cb_den <= TOL && r.err_call_sigma <= TOL && r.err_cb_sigma <= TOL &&
           r.err_noise_sigma <= TOL && r.err_adapt <= 1e-4 && !r.overflow &&
           r.ncall == r.n_calls && r.nnoise == r.n_noise && r.nstep == r.n_cb;
  if (!ok || getenv("BM_VERBOSE")) {
    fprintf(stderr,
            "%s %-44s final %.2e calls %d/%lld x %.2e den %.2e sig %.2e | noise %d/%lld sig %.2e | "
            "steps %d/%lld x %.2e den %.2e sig %.2e adapt %.2e\n",
            ok ? "ok  " : "FAIL", file, ef, r.ncall, (long long)r.n_calls, r.err_call_x, r.err_call_den,
            r.err_call_sigma, r.nnoise, (long long)r.n_noise, r.err_noise_sigma, r.nstep,
            (long long)r.n_cb, r.err_cb_x, r.err_cb_den, r.err_cb_sigma, r.err_adapt);
  }
  if (!ok) kdiff_failures++;
  CHECK_MSG(ok, "%s/%s does not replay", dir, file);
  free(x);
  bm_st_close(r.st);
}

static const char *schedules2[2] = {"karras", "discrete"};

static void test_kdiffusion_goldens(void) {
  static const char *runs[][2] = {
      {"euler", "euler"}, {"euler_ancestral", "euler_ancestral"}, {"heun", "heun"},
      {"dpm_2", "dpm_2"}, {"dpm_2_ancestral", "dpm_2_ancestral"}, {"lms", "lms"},
      {"dpm_fast", "dpm_fast"}, {"dpm_adaptive", "dpm_adaptive"},
      {"dpmpp_2s_ancestral", "dpmpp_2s_ancestral"}, {"dpmpp_sde", "dpmpp_sde"},
      {"dpmpp_2m", "dpmpp_2m"}, {"dpmpp_2m_sde_midpoint", "dpmpp_2m_sde"},
      {"dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun"}, {"dpmpp_3m_sde", "dpmpp_3m_sde"},
  };
  for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++)
    for (int s = 0; s < 2; s++) {
      char file[128];
      snprintf(file, sizeof file, "%s__%s.safetensors", runs[i][0], schedules2[s]);
      replay_kdiff("golden/samplers/kdiffusion", file, runs[i][1], 0, 0);
    }
}

static void test_comfy_goldens(void) {
  static const struct {
    const char *run, *sampler;
    int cfg, quirk;
  } runs[] = {
      {"heunpp2", "heunpp2", 0, 0}, {"ipndm", "ipndm", 0, 1}, {"ipndm_v", "ipndm_v", 0, 1},
      {"deis", "deis", 0, 1}, {"euler_cfg_pp", "euler_cfg_pp", 1, 0},
      {"euler_ancestral_cfg_pp", "euler_ancestral_cfg_pp", 1, 0},
      {"dpmpp_2s_ancestral_cfg_pp", "dpmpp_2s_ancestral_cfg_pp", 1, 0},
      {"dpmpp_2m_cfg_pp", "dpmpp_2m_cfg_pp", 1, 0},
      {"res_multistep_cfg_pp", "res_multistep_cfg_pp", 1, 0},
      {"res_multistep_ancestral_cfg_pp", "res_multistep_ancestral_cfg_pp", 1, 0},
      {"gradient_estimation_cfg_pp", "gradient_estimation_cfg_pp", 1, 0},
      {"res_multistep", "res_multistep", 0, 0},
      {"res_multistep_ancestral", "res_multistep_ancestral", 0, 0},
      {"gradient_estimation", "gradient_estimation", 0, 0}, {"lcm", "lcm", 0, 0},
      {"ddpm", "ddpm", 0, 0}, {"dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun", 0, 0},
      {"er_sde", "er_sde", 0, 0}, {"seeds_2", "seeds_2", 0, 0}, {"seeds_3", "seeds_3", 0, 0},
      {"exp_heun_2_x0", "exp_heun_2_x0", 0, 0}, {"exp_heun_2_x0_sde", "exp_heun_2_x0_sde", 0, 0},
      {"sa_solver", "sa_solver", 0, 0}, {"sa_solver_pece", "sa_solver_pece", 0, 0},
      {"lms", "lms_comfy", 0, 0},
  };
  for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++)
    for (int s = 0; s < 2; s++) {
      char file[128];
      snprintf(file, sizeof file, "%s__%s.safetensors", runs[i].run, schedules2[s]);
      replay_kdiff("golden/samplers/comfy", file, runs[i].sampler, runs[i].cfg, runs[i].quirk);
    }
}

/* DEIS coefficients against deis.get_deis_coeff_list (rows 1..steps-2). */
static void test_deis_coeffs(void) {
  bm_st_file *st = NULL;
  char path[512];
  snprintf(path, sizeof path, "%s", bm_test_shared("golden/samplers/comfy/deis__karras.safetensors"));
  CHECK_OK(bm_st_open(path, &st));
  if (!st) return;
  const float *sig = tensor(st, "sigmas", NULL), *ref = tensor(st, "deis_coeffs", NULL);
  double co[10][4], worst = 0;
  bm_deis_coeffs(sig, 10, 3, co);
  for (int i = 1; i < 9; i++)
    for (int j = 0; j < 3; j++)
      if (!isnan(ref[i * 3 + j])) {
        worst = dmax(worst, srel(co[i][j], ref[i * 3 + j]));
        if (getenv("BM_VERBOSE")) fprintf(stderr, "deis[%d][%d] %.9g ref %.9g\n", i, j, co[i][j], ref[i * 3 + j]);
      }
  CHECK_MSG(worst < 1e-5, "deis coefficients differ by %.2e relative", worst);
  bm_st_close(st);
}

/* ----------------------------------------------------------- schedules */

static void test_schedules(void) {
  bm_st_file *st = NULL;
  CHECK_OK(bm_st_open(bm_test_shared("golden/samplers/kdiffusion/schedules.safetensors"), &st));
  if (!st) return;
  float out[11], ac[1000], tab[1000];
  CHECK_OK(bm_schedule_sigmas("karras", NULL, 10, out));
  CHECK(rel(out, tensor(st, "sigmas_karras", NULL), 11) < 1e-6);
  CHECK_OK(bm_schedule_sigmas("discrete", NULL, 10, out));
  CHECK(rel(out, tensor(st, "sigmas_discrete", NULL), 11) < 1e-6);
  bm_schedule_sd1_alphas_cumprod(ac);
  bm_schedule_sd1_sigmas(tab);
  CHECK(rel(ac, tensor(st, "alphas_cumprod", NULL), 1000) < 1e-6);
  CHECK(rel(tab, tensor(st, "discrete_sigma_table", NULL), 1000) < 1e-6);
  /* percent_to_sigma of ComfyUI's SD1 model (sa_solver's tau interval) */
  CHECK(srel(bm_schedule_table_sigma(tab, 1000, 0.8 * 999), 5.092408180236816) < 1e-5);
  CHECK(srel(bm_schedule_table_sigma(tab, 1000, 0.2 * 999), 0.5711888670921326) < 1e-5);
  bm_st_close(st);
  /* every schedule gives steps + 1 descending values ending in 0 */
  for (int i = 0; i < bm_schedule_count(); i++) {
    float s[21];
    const char *nm = bm_schedule_name(i);
    bm_status e = bm_schedule_sigmas(nm, NULL, 20, s);
    CHECK_MSG(e == NULL, "%s: %s", nm, bm_status_message(e));
    bm_status_free(e);
    CHECK_MSG(s[20] == 0.0f, "%s", nm);
    for (int k = 1; k <= 20; k++) CHECK_MSG(s[k] < s[k - 1], "%s: sigma %d not descending", nm, k);
  }
  float a[11];
  CHECK_OK(bm_schedule_sigmas("align_your_steps", NULL, 10, a));
  CHECK(fabsf(a[0] - 14.615f) < 1e-5f && fabsf(a[9] - 0.152f) < 1e-6f && a[10] == 0.0f);
  float a20[21];
  CHECK_OK(bm_schedule_sigmas("align_your_steps", NULL, 20, a20));
  CHECK(fabsf(a20[0] - 14.615f) < 1e-5f && fabsf(a20[2] - 6.475f) < 1e-5f && a20[20] == 0.0f);
  float f[11];
  bm_schedule_params fp = {0};
  fp.shift = 3.0;
  CHECK_OK(bm_schedule_sigmas("flow_shift", &fp, 10, f));
  CHECK(fabsf(f[0] - 1.0f) < 1e-6f);
}

/* ---------------------------------------------------------- bad input */

static bm_status zero_denoiser(void *u, const float *x, double s, float *d, float *unc) {
  (void)u;
  (void)x;
  (void)s;
  memset(d, 0, sizeof(float) * 4);
  if (unc) memset(unc, 0, sizeof(float) * 4);
  return NULL;
}

static void test_bad_input(void) {
  const bm_sampler_info *info;
  CHECK_ERR(bm_sampler_find("eulr", &info), BM_ERR_NOT_FOUND, "unknown sampler 'eulr'");
  CHECK_ERR(bm_sampler_find("eulr", &info), BM_ERR_NOT_FOUND, "dpmpp_2m_sde");
  float s[3];
  CHECK_ERR(bm_schedule_sigmas("karas", NULL, 2, s), BM_ERR_NOT_FOUND, "valid schedules: karras");
  CHECK_ERR(bm_schedule_sigmas("karras", NULL, 0, s), BM_ERR_INVALID_ARGUMENT, "steps");
  float x[4] = {1, 2, 3, 4}, sig[3] = {2.0f, 1.0f, 0.0f}, bad[3] = {1.0f, 2.0f, 0.0f};
  bm_sampler_run r;
  memset(&r, 0, sizeof r);
  r.denoise = zero_denoiser;
  r.x = x;
  r.n = 4;
  r.sigmas = sig;
  r.steps = 1;
  CHECK_ERR(bm_sample("unipc", &r), BM_ERR_INVALID_ARGUMENT, "at least 3 steps");
  CHECK_ERR(bm_sample("nope", &r), BM_ERR_NOT_FOUND, "valid samplers");
  r.steps = 2;
  r.sigmas = bad;
  CHECK_ERR(bm_sample("euler", &r), BM_ERR_INVALID_ARGUMENT, "must decrease");
  r.sigmas = sig;
  CHECK_ERR(bm_sample("euler_ancestral", &r), BM_ERR_INVALID_ARGUMENT, "noise source");
  CHECK_OK(bm_sample("euler", &r));
  CHECK(x[0] == 0.0f);
  const bm_scheduler_info *si;
  CHECK_ERR(bm_scheduler_find("dmp", &si), BM_ERR_NOT_FOUND, "valid schedulers");
  /* the registry is complete and every entry is runnable by name */
  for (int i = 0; i < bm_sampler_count(); i++) {
    const bm_sampler_info *e = bm_sampler_at(i);
    CHECK_OK(bm_sampler_find(e->name, &info));
    CHECK(e->reference && e->calls && e->min_steps >= 1);
  }
}

/* Every sampler runs end to end with the Brownian and the torch noise. */
static bm_status toy_any(void *u, const float *x, double s, float *d, float *unc) {
  int64_t n = *(int64_t *)u;
  toy(x, (float)s, d, n, 1.0f);
  if (unc) toy(x, (float)s, unc, n, 0.5f);
  return NULL;
}

static void test_all_samplers_run(void) {
  int64_t n = 64;
  float sig[21], x[64], scratch[128];
  CHECK_OK(bm_schedule_sigmas("karras", NULL, 20, sig));
  for (int i = 0; i < bm_sampler_count(); i++) {
    const bm_sampler_info *e = bm_sampler_at(i);
    for (int k = 0; k < 64; k++) x[k] = sig[0] * sinf((float)k);
    bm_noise_brownian bn;
    CHECK_OK(bm_noise_brownian_init(&bn, 7, sig[19], sig[0], scratch, n));
    bm_sampler_run r;
    memset(&r, 0, sizeof r);
    r.denoise = toy_any;
    r.user = &n;
    r.x = x;
    r.n = n;
    r.sigmas = sig;
    r.steps = 20;
    r.noise = bm_noise_brownian_source(&bn);
    bm_status st = bm_sample(e->name, &r);
    CHECK_MSG(st == NULL, "%s: %s", e->name, bm_status_message(st));
    bm_status_free(st);
    int finite = 1;
    for (int k = 0; k < 64; k++) finite &= isfinite(x[k]) && fabsf(x[k]) < 10;
    CHECK_MSG(finite, "%s produced a non-finite or huge result", e->name);
    /* res_multistep and dpm_fast/dpm_adaptive (eta 0) draw noise and scale
     * it by 0, as the references do; the others must not draw at all. */
    if (e->deterministic && !strstr(e->name, "res_multistep") && strncmp(e->name, "dpm_", 4) != 0)
      CHECK_MSG(r.noise_draws == 0, "%s drew noise", e->name);
  }
}

/* Brownian noise: N(0,1) per draw and additive increments. */
static void test_brownian(void) {
  enum { N = 4096 };
  static float scratch[2 * N], a[N], b[N], ab[N];
  bm_noise_brownian bn;
  CHECK_OK(bm_noise_brownian_init(&bn, 42, 0.03, 14.6, scratch, N));
  CHECK_OK(bm_noise_brownian_increment(&bn, 1.0, 2.0, a));
  CHECK_OK(bm_noise_brownian_increment(&bn, 2.0, 3.0, b));
  CHECK_OK(bm_noise_brownian_increment(&bn, 1.0, 3.0, ab));
  double worst = 0, var = 0;
  for (int i = 0; i < N; i++) {
    worst = dmax(worst, fabs((double)a[i] + b[i] - ab[i]));
    var += (double)ab[i] * ab[i];
  }
  var /= N;
  CHECK(worst < 1e-5);
  CHECK_MSG(fabs(var - 2.0) < 0.2, "variance %g", var);
  bm_noise_source src = bm_noise_brownian_source(&bn);
  CHECK_OK(src.next(src.user, 3.0, 1.0, a, N));
  double v = 0;
  for (int i = 0; i < N; i++) v += (double)a[i] * a[i];
  CHECK_MSG(fabs(v / N - 1.0) < 0.1, "unit variance %g", v / N);
  for (int i = 0; i < N; i++) CHECK(fabsf(a[i] + ab[i] / sqrtf(2.0f)) < 1e-4f);
}

/* --------------------------------------------------- diffusers family */

typedef struct dreplay {
  const char *name;
  int64_t n;
  int ncall, nnoise;
  int64_t n_loop, n_noise;
  const float *model_in, *model_t, *model_out, *prev, *pred, *noise;
  double e_in, e_t, e_out, e_prev, e_pred;
} dreplay;

static bm_status d_model(void *user, const float *in, double t, float *out) {
  dreplay *r = user;
  float tf = (float)t;
  for (int64_t i = 0; i < r->n; i++) out[i] = (in[i] * tf) / (tf + 1.0f);
  return NULL;
}

static bm_status d_noise(void *user, double s, double sn, float *out, int64_t n) {
  dreplay *r = user;
  int k = r->nnoise++;
  if (k >= r->n_noise)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "%s: noise draw %d, %lld recorded", r->name, k,
                          (long long)r->n_noise);
  memcpy(out, r->noise + k * n, sizeof(float) * (size_t)n);
  return NULL;
}

static void d_step(void *user, const bm_scheduler_step *s) {
  dreplay *r = user;
  int k = r->ncall++;
  if (k >= r->n_loop) return;
  r->e_in = dmax(r->e_in, rel(s->model_in, r->model_in + k * r->n, r->n));
  r->e_t = dmax(r->e_t, srel(s->t, r->model_t[k]));
  r->e_out = dmax(r->e_out, rel(s->model_out, r->model_out + k * r->n, r->n));
  r->e_prev = dmax(r->e_prev, rel(s->prev_sample, r->prev + k * r->n, r->n));
  if (r->pred && s->pred_original)
    r->e_pred = dmax(r->e_pred, rel(s->pred_original, r->pred + k * r->n, r->n));
  if (getenv("BM_VERBOSE_STEPS"))
    fprintf(stderr, "  %s[%d] t %g in %.2e out %.2e prev %.2e pred %.2e\n", r->name, k, s->t,
            rel(s->model_in, r->model_in + k * r->n, r->n), rel(s->model_out, r->model_out + k * r->n, r->n),
            rel(s->prev_sample, r->prev + k * r->n, r->n),
            r->pred && s->pred_original ? rel(s->pred_original, r->pred + k * r->n, r->n) : 0.0);
}

static int diffusers_failures = 0;

static void replay_diffusers(const char *run, const char *sched, bm_scheduler_config *cfg) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s.safetensors", bm_test_shared("golden/samplers/diffusers"), run);
  bm_st_file *st = NULL;
  CHECK_OK(bm_st_open(path, &st));
  if (!st) return;
  dreplay r;
  memset(&r, 0, sizeof r);
  r.name = run;
  r.n = bm_st_find(st, "x_init")->numel;
  r.model_in = tensor(st, "model_in", &r.n_loop);
  r.model_t = tensor(st, "model_t", NULL);
  r.model_out = tensor(st, "model_out", NULL);
  r.prev = tensor(st, "prev_sample", NULL);
  r.pred = tensor(st, "pred_original_sample", NULL);
  r.noise = tensor(st, "noise", &r.n_noise);
  if (!r.noise) r.n_noise = 0;
  float *x = malloc(sizeof(float) * (size_t)r.n);
  memcpy(x, tensor(st, "x_init", NULL), sizeof(float) * (size_t)r.n);
  bm_scheduler_run sr;
  memset(&sr, 0, sizeof sr);
  sr.model = d_model;
  sr.user = &r;
  sr.latents = x;
  sr.n = r.n;
  sr.steps = 10;
  sr.config = cfg;
  sr.noise.next = d_noise;
  sr.noise.user = &r;
  sr.on_step = d_step;
  sr.step_user = &r;
  bm_status s = bm_scheduler_run_loop(sched, &sr);
  CHECK_MSG(s == NULL, "%s: %s", run, bm_status_message(s));
  bm_status_free(s);
  double ef = rel(x, tensor(st, "x_final", NULL), r.n);
  int ok = ef <= TOL && r.e_in <= TOL && r.e_t <= TOL && r.e_out <= TOL && r.e_prev <= TOL &&
           r.e_pred <= TOL && r.ncall == r.n_loop && r.nnoise == r.n_noise;
  if (!ok || getenv("BM_VERBOSE"))
    fprintf(stderr, "%s %-18s final %.2e loop %d/%lld in %.2e t %.2e out %.2e prev %.2e pred %.2e noise %d/%lld\n",
            ok ? "ok  " : "FAIL", run, ef, r.ncall, (long long)r.n_loop, r.e_in, r.e_t, r.e_out, r.e_prev,
            r.e_pred, r.nnoise, (long long)r.n_noise);
  if (!ok) diffusers_failures++;
  CHECK_MSG(ok, "diffusers/%s does not replay", run);
  free(x);
  bm_st_close(st);
}

static void test_diffusers_goldens(void) {
  bm_scheduler_config c;
#define RUN_D(run, sched, ...)            \
  do {                                    \
    bm_scheduler_config_sd1(&c);          \
    __VA_ARGS__;                          \
    replay_diffusers(run, sched, &c);     \
  } while (0)
  RUN_D("ddim", "ddim", (void)0);
  RUN_D("ddim_eta1", "ddim", c.eta = 1.0);
  RUN_D("ddpm", "ddpm", (void)0);
  RUN_D("pndm", "pndm", (void)0);
  RUN_D("pndm_prk", "pndm", c.skip_prk_steps = 0);
  RUN_D("ipndm", "ipndm", (void)0);
  RUN_D("deis", "deis", (void)0);
  RUN_D("unipc_bh1", "unipc", c.solver_type = "bh1"; c.final_sigmas_type = "sigma_min");
  RUN_D("unipc_bh2", "unipc", c.solver_type = "bh2");
  RUN_D("dpmpp_2m", "dpmsolver_multistep", (void)0);
  RUN_D("dpmpp_3m", "dpmsolver_multistep", c.solver_order = 3);
  RUN_D("dpmpp_2m_karras", "dpmsolver_multistep", c.use_karras_sigmas = 1);
  RUN_D("dpmpp_2m_sde", "dpmsolver_multistep", c.algorithm_type = "sde-dpmsolver++");
  RUN_D("dpm_single", "dpmsolver_singlestep", (void)0);
  RUN_D("lms", "lms", (void)0);
  RUN_D("euler", "euler", (void)0);
  RUN_D("euler_v", "euler", c.prediction = BM_PRED_V);
  RUN_D("euler_ancestral", "euler_ancestral", (void)0);
  RUN_D("heun", "heun", (void)0);
  RUN_D("kdpm2", "kdpm2", (void)0);
  RUN_D("kdpm2_ancestral", "kdpm2_ancestral", (void)0);
  RUN_D("sasolver", "sasolver", (void)0);
  RUN_D("lcm", "lcm", (void)0);
  RUN_D("flow_match_euler", "flow_match_euler", c.shift = 3.0; c.prediction = BM_PRED_FLOW);
#undef RUN_D
}

static void report(void) {
  fprintf(stderr, "golden runs not replaying: k-diffusion/comfy %d, diffusers %d\n", kdiff_failures,
          diffusers_failures);
}

int main(void) {
  RUN(test_schedules);
  RUN(test_bad_input);
  RUN(test_brownian);
  RUN(test_deis_coeffs);
  RUN(test_kdiffusion_goldens);
  RUN(test_comfy_goldens);
  RUN(test_diffusers_goldens);
  RUN(test_all_samplers_run);
  report();
  return bm_test_finish();
}
