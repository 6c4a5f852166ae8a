/* samplers_diffusers.c - diffusers-compatible schedulers: each reproduces
 * one diffusers (0.39) scheduler class' set_timesteps, init_noise_sigma,
 * scale_model_input and step in the timestep domain, run as the pipelines'
 * denoising loop. The model callback returns the raw model output. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "samplers_internal.h"
#include "samplers_unipc.h"

#define MAXT 1000
#define MAXS 2048

typedef struct vp_sched {
  int N;
  double t[MAXS];          /* timesteps */
  double sig[MAXS + 1];    /* VE sigmas (float32 values), N + 1 */
  double alpha[MAXS + 1], sigma[MAXS + 1], lam[MAXS + 1];
} vp_sched;

typedef struct ve_sched {
  int N;
  double t[MAXS];
  double sig[MAXS + 1]; /* N + 1, last 0 */
} ve_sched;

typedef struct dctx {
  bm_scheduler_run *run;
  const bm_scheduler_config *cfg;
  int64_t n;
  int T;                    /* num_train_timesteps */
  double ac[MAXT];          /* alphas_cumprod (float32 values) */
  double table[MAXT];       /* ((1 - ac) / ac)^0.5, float32 values */
  float *buf[BM_SAMPLER_SCRATCH_BUFFERS];
  int loop;                 /* loop iterations so far */
  vp_sched vp;              /* the schedule of the VP (alpha, sigma) classes */
  ve_sched ve;              /* the schedule of the Karras-sigma classes */
} dctx;

static double f32(double v) { return (double)(float)v; }

static void dctx_schedule(dctx *c) {
  const bm_scheduler_config *k = c->cfg;
  float b0 = k->beta_linear ? (float)k->beta_start : (float)sqrt(k->beta_start);
  float b1 = k->beta_linear ? (float)k->beta_end : (float)sqrt(k->beta_end);
  float step = (b1 - b0) / (float)(c->T - 1);
  double acc = 1.0;
  int half = c->T / 2;
  for (int i = 0; i < c->T; i++) {
    /* torch.linspace (float32, vectorised with FMA), both halves */
    float v = i < half ? fmaf(step, (float)i, b0) : fmaf(-step, (float)(c->T - 1 - i), b1);
    float beta = k->beta_linear ? v : v * v;
    acc *= (double)(1.0f - beta);
    c->ac[i] = f32(acc);
    float a = (float)c->ac[i];
    c->table[i] = sqrtf((1.0f - a) / a); /* float32, as torch */
  }
}

/* model_in = sample * scale; calls the model at t. */
static bm_status dctx_model(dctx *c, const float *sample, double scale, double t, float *in,
                            float *out) {
  if (scale == 1.0) bm_copy(in, sample, c->n);
  else bm_lc1(in, c->n, scale, sample);
  return c->run->model(c->run->user, in, t, out);
}

static void dctx_report(dctx *c, double t, const float *in, const float *out, const float *prev,
                        const float *pred) {
  if (c->run->on_step) {
    bm_scheduler_step s = {c->loop, t, in, out, prev, pred, c->n};
    c->run->on_step(c->run->step_user, &s);
  }
  c->loop++;
}

static bm_status dctx_noise(dctx *c, float *out) {
  if (!c->run->noise.next)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "this scheduler is stochastic and needs a noise source");
  c->run->noise_draws++;
  return c->run->noise.next(c->run->noise.user, 0, 0, out, c->n);
}

/* "leading" spacing with steps_offset: (arange(N) * (T // N)) + offset, descending. */
static int leading_timesteps(dctx *c, int N, int *ts) {
  int ratio = c->T / N;
  for (int i = 0; i < N; i++) ts[i] = (N - 1 - i) * ratio + c->cfg->steps_offset;
  return ratio;
}

/* "linspace": linspace(0, T - 1, N + 1).round() reversed, without the last (0). */
static void linspace_timesteps_int(dctx *c, int N, int *ts) {
  for (int i = 0; i < N; i++) ts[i] = (int)nearbyint((double)(c->T - 1) * (N - i) / N);
}

/* eps -> x0 at alphas_cumprod a, for the config's prediction type. */
static void to_x0(dctx *c, const float *sample, const float *mo, double a, float *x0, float *eps) {
  double sa = sqrt(a), sb = sqrt(1 - a);
  for (int64_t e = 0; e < c->n; e++) {
    double x = sample[e], m = mo[e], p, q;
    if (c->cfg->prediction == BM_PRED_V) {
      p = sa * x - sb * m;
      q = sa * m + sb * x;
    } else if (c->cfg->prediction == BM_PRED_SAMPLE) {
      p = m;
      q = (x - sa * m) / sb;
    } else { /* float32, as torch */
      p = ((float)x - (float)sb * (float)m) / (float)sa;
      q = m;
    }
    if (x0) x0[e] = (float)p;
    if (eps) eps[e] = (float)q;
  }
}

/* ------------------------------------------------------------------ DDIM */

static bm_status sched_ddim(dctx *c) {
  int N = c->run->steps, ts[MAXS];
  int ratio = leading_timesteps(c, N, ts);
  double final_ac = c->cfg->set_alpha_to_one ? 1.0 : c->ac[0], eta = c->cfg->eta;
  float *x = c->run->latents, *in = c->buf[0], *mo = c->buf[1], *x0 = c->buf[2], *eps = c->buf[3];
  float *nz = c->buf[4];
  for (int i = 0; i < N; i++) {
    int t = ts[i], tp = t - ratio;
    BM_RETURN_IF_ERROR(dctx_model(c, x, 1.0, t, in, mo));
    double a = c->ac[t], ap = tp >= 0 ? c->ac[tp] : final_ac;
    to_x0(c, x, mo, a, x0, eps);
    double var = (1 - ap) / (1 - a) * (1 - a / ap), std = eta * sqrt(var);
    bm_lc2(x, c->n, sqrt(ap), x0, sqrt(1 - ap - std * std), eps);
    if (eta > 0) {
      BM_RETURN_IF_ERROR(dctx_noise(c, nz));
      bm_lc2(x, c->n, 1.0, x, std, nz);
    }
    dctx_report(c, t, in, mo, x, x0);
  }
  return NULL;
}

/* ------------------------------------------------------------------ DDPM */

static bm_status sched_ddpm(dctx *c) {
  int N = c->run->steps, ts[MAXS];
  int ratio = leading_timesteps(c, N, ts);
  float *x = c->run->latents, *in = c->buf[0], *mo = c->buf[1], *x0 = c->buf[2], *nz = c->buf[3];
  for (int i = 0; i < N; i++) {
    int t = ts[i], tp = t - ratio;
    BM_RETURN_IF_ERROR(dctx_model(c, x, 1.0, t, in, mo));
    double a = c->ac[t], ap = tp >= 0 ? c->ac[tp] : 1.0;
    double bt = 1 - a, bp = 1 - ap, cur_a = a / ap, cur_b = 1 - cur_a;
    to_x0(c, x, mo, a, x0, NULL);
    double cx0 = sqrt(ap) * cur_b / bt, cx = sqrt(cur_a) * bp / bt;
    bm_lc2(x, c->n, cx0, x0, cx, x);
    if (t > 0) {
      double var = bp / bt * cur_b;
      if (var < 1e-20) var = 1e-20;
      BM_RETURN_IF_ERROR(dctx_noise(c, nz));
      bm_lc2(x, c->n, 1.0, x, sqrt(var), nz);
    }
    dctx_report(c, t, in, mo, x, x0);
  }
  return NULL;
}

/* ------------------------------------------------------------------ PNDM */

static void pndm_prev(dctx *c, const float *sample, int t, int tp, const float *mo, float *out) {
  double a = c->ac[t], ap = tp >= 0 ? c->ac[tp] : (c->cfg->set_alpha_to_one ? 1.0 : c->ac[0]);
  double bt = 1 - a, bp = 1 - ap;
  double sc = sqrt(ap / a), den = a * sqrt(bp) + sqrt(a * bt * ap);
  bm_lc2(out, c->n, sc, sample, -(ap - a) / den, mo);
}

static bm_status sched_pndm(dctx *c) {
  int N = c->run->steps, base[MAXS] = {0}, ts[MAXS], nts = 0, nprk = 0;
  int ratio = c->T / N;
  for (int i = 0; i < N; i++) base[i] = i * ratio + c->cfg->steps_offset; /* ascending */
  if (c->cfg->skip_prk_steps) {
    /* plms = cat(base[:-1], base[-2:-1], base[-1:]) reversed */
    int tmp[MAXS], k = 0;
    for (int i = 0; i < N - 1; i++) tmp[k++] = base[i];
    if (N >= 2) tmp[k++] = base[N - 2];
    tmp[k++] = base[N - 1];
    for (int i = 0; i < k; i++) ts[nts++] = tmp[k - 1 - i];
  } else {
    if (N < 4) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "pndm with PRK steps needs at least 4 steps, got %d", N);
    int prk[8], r[16], k = 0;
    for (int j = 0; j < 4; j++)
      for (int q = 0; q < 2; q++) prk[2 * j + q] = base[N - 4 + j] + (q ? ratio / 2 : 0);
    for (int j = 0; j < 7; j++) r[k++] = prk[j], r[k++] = prk[j];
    /* [1:-1] reversed */
    for (int j = k - 2; j >= 1; j--) ts[nts++] = r[j];
    nprk = nts;
    for (int i = N - 4; i >= 0; i--) ts[nts++] = base[i];
  }
  float *x = c->run->latents, *in = c->buf[0], *mo = c->buf[1], *cur_sample = c->buf[2];
  float *cur_mo = c->buf[3], *eff = c->buf[4];
  float *ets[4] = {c->buf[5], c->buf[6], c->buf[7], c->buf[8]}, *spare = c->buf[9];
  int nets = 0, counter = 0, have_cur = 0;
  memset(cur_mo, 0, sizeof(float) * (size_t)c->n);
  for (int i = 0; i < nts; i++) {
    int t = ts[i];
    BM_RETURN_IF_ERROR(dctx_model(c, x, 1.0, t, in, mo));
    if (counter < nprk) {
      int diff = (counter % 2) ? 0 : ratio / 2;
      int tp = t - diff, tt = ts[counter / 4 * 4];
      const float *use = mo;
      if (counter % 4 == 0) {
        bm_lc2(cur_mo, c->n, 1.0, cur_mo, 1.0 / 6, mo);
        bm_copy(ets[nets < 4 ? nets : 3], mo, c->n);
        if (nets < 4) nets++;
        bm_copy(cur_sample, x, c->n);
        have_cur = 1;
      } else if (counter % 4 == 1 || counter % 4 == 2) {
        bm_lc2(cur_mo, c->n, 1.0, cur_mo, 1.0 / 3, mo);
      } else {
        bm_lc2(eff, c->n, 1.0, cur_mo, 1.0 / 6, mo);
        memset(cur_mo, 0, sizeof(float) * (size_t)c->n);
        use = eff;
      }
      pndm_prev(c, have_cur ? cur_sample : x, tt, tp, use, x);
    } else {
      int tp = t - ratio, tt = t;
      const float *smp = x;
      if (counter != 1) {
        /* ets = ets[-3:] + [mo] */
        if (nets == 4) {
          float *o = ets[0];
          memmove(ets, ets + 1, sizeof(float *) * 3);
          ets[3] = o;
          nets = 3;
        }
        bm_copy(ets[nets++], mo, c->n);
      } else {
        tp = t;
        tt = t + ratio;
      }
      if (nets == 1 && counter == 0) {
        bm_copy(eff, mo, c->n);
        bm_copy(cur_sample, x, c->n);
      } else if (nets == 1 && counter == 1) {
        bm_lc2(eff, c->n, 0.5, mo, 0.5, ets[0]);
        smp = cur_sample;
      } else if (nets == 2) {
        bm_lc2(eff, c->n, 1.5, ets[1], -0.5, ets[0]);
      } else if (nets == 3) {
        bm_lc3(eff, c->n, 23.0 / 12, ets[2], -16.0 / 12, ets[1], 5.0 / 12, ets[0]);
      } else {
        bm_lc4(eff, c->n, 55.0 / 24, ets[3], -59.0 / 24, ets[2], 37.0 / 24, ets[1], -9.0 / 24, ets[0]);
      }
      pndm_prev(c, smp, tt, tp, eff, spare);
      bm_copy(x, spare, c->n);
    }
    counter++;
    dctx_report(c, t, in, mo, x, NULL);
  }
  return NULL;
}

/* ----------------------------------------------------------------- IPNDM */

static bm_status sched_ipndm(dctx *c) {
  int N = c->run->steps;
  double betas[MAXS + 1], alphas[MAXS + 1], ts[MAXS];
  for (int i = 0; i <= N; i++) {
    double st = i < N ? f32(1.0 - (double)i / N) : 0.0;
    betas[i] = f32(pow(sin(st * M_PI / 2), 2));
    alphas[i] = f32(sqrt(1.0 - betas[i] * betas[i]));
    if (i < N) ts[i] = f32(atan2(betas[i], alphas[i]) / M_PI * 2);
  }
  float *x = c->run->latents, *in = c->buf[0], *mo = c->buf[1], *eff = c->buf[2];
  float *ets[4] = {c->buf[3], c->buf[4], c->buf[5], c->buf[6]};
  int nets = 0;
  for (int i = 0; i < N; i++) {
    BM_RETURN_IF_ERROR(dctx_model(c, x, 1.0, ts[i], in, mo));
    if (nets == 4) {
      float *o = ets[0];
      memmove(ets, ets + 1, sizeof(float *) * 3);
      ets[3] = o;
      nets = 3;
    }
    bm_lc2(ets[nets++], c->n, betas[i], x, alphas[i], mo);
    if (nets == 1) bm_copy(eff, ets[0], c->n);
    else if (nets == 2) bm_lc2(eff, c->n, 1.5, ets[1], -0.5, ets[0]);
    else if (nets == 3) bm_lc3(eff, c->n, 23.0 / 12, ets[2], -16.0 / 12, ets[1], 5.0 / 12, ets[0]);
    else bm_lc4(eff, c->n, 55.0 / 24, ets[3], -59.0 / 24, ets[2], 37.0 / 24, ets[1], -9.0 / 24, ets[0]);
    double al = alphas[i] > 1e-8 ? alphas[i] : 1e-8;
    /* pred = (x - beta eff) / al; x = next_alpha pred + next_beta eff */
    double na = alphas[i + 1], nb = betas[i + 1];
    for (int64_t e = 0; e < c->n; e++) {
      double pred = ((double)x[e] - betas[i] * eff[e]) / al;
      x[e] = (float)(na * pred + nb * eff[e]);
    }
    dctx_report(c, ts[i], in, mo, x, NULL);
  }
  return NULL;
}

/* ------------------------------------ sigma-based multistep (DPM, DEIS, UniPC) */


static double sigma_to_t(const dctx *c, double s) {
  double ls = log(s > 1e-10 ? s : 1e-10);
  int lo = 0;
  for (int i = 0; i < c->T; i++)
    if (ls - log(c->table[i]) >= 0) lo = i;
  if (lo > c->T - 2) lo = c->T - 2;
  double l0 = log(c->table[lo]), l1 = log(c->table[lo + 1]);
  double w = (l0 - ls) / (l0 - l1);
  if (w < 0) w = 0;
  if (w > 1) w = 1;
  return (1 - w) * lo + w * (lo + 1);
}

/* linspace timesteps, table sigmas (or Karras), final sigma. */
static void vp_make(dctx *c, int N, int karras, const char *final_type, vp_sched *v) {
  int ts[MAXS];
  v->N = N;
  linspace_timesteps_int(c, N, ts);
  if (karras) {
    double smin = c->table[0], smax = c->table[c->T - 1], rho = 7.0;
    double a = pow(smin, 1 / rho), b = pow(smax, 1 / rho);
    for (int i = 0; i < N; i++) {
      double ramp = N > 1 ? (double)i / (N - 1) : 0;
      v->sig[i] = f32(pow(b + ramp * (a - b), rho));
      v->t[i] = nearbyint(sigma_to_t(c, v->sig[i]));
    }
  } else {
    for (int i = 0; i < N; i++) {
      v->t[i] = ts[i];
      v->sig[i] = c->table[ts[i]];
    }
  }
  v->sig[N] = (final_type && strcmp(final_type, "sigma_min") == 0) ? c->table[0] : 0.0;
  for (int i = 0; i <= N; i++) {
    v->alpha[i] = 1.0 / sqrt(v->sig[i] * v->sig[i] + 1);
    v->sigma[i] = v->sig[i] * v->alpha[i];
    v->lam[i] = log(v->alpha[i]) - log(v->sigma[i]);
  }
}

/* model output -> data prediction x0 at step i */
static void vp_x0(dctx *c, const vp_sched *v, int i, const float *x, const float *mo, float *x0) {
  double a = v->alpha[i], s = v->sigma[i];
  for (int64_t e = 0; e < c->n; e++) {
    double p;
    if (c->cfg->prediction == BM_PRED_V) p = a * x[e] - s * mo[e];
    else if (c->cfg->prediction == BM_PRED_SAMPLE) p = mo[e];
    else p = (x[e] - s * (double)mo[e]) / a;
    x0[e] = (float)p;
  }
}

static bm_status sched_dpm_multistep(dctx *c) {
  int N = c->run->steps;
  vp_sched *v = &c->vp;
  vp_make(c, N, c->cfg->use_karras_sigmas, c->cfg->final_sigmas_type, v);
  int order = c->cfg->solver_order > 0 ? c->cfg->solver_order : 2;
  if (order > 3) order = 3;
  int sde = c->cfg->algorithm_type && strcmp(c->cfg->algorithm_type, "sde-dpmsolver++") == 0;
  if (c->cfg->algorithm_type && !sde && strcmp(c->cfg->algorithm_type, "dpmsolver++") != 0)
    return bm_status_make(BM_ERR_UNSUPPORTED, "dpmsolver_multistep: algorithm_type '%s' (supported: dpmsolver++, sde-dpmsolver++)",
                          c->cfg->algorithm_type);
  int final_zero = !c->cfg->final_sigmas_type || strcmp(c->cfg->final_sigmas_type, "zero") == 0;
  float *x = c->run->latents, *in = c->buf[0], *mo = c->buf[1], *nz = c->buf[2];
  float *m[3] = {c->buf[3], c->buf[4], c->buf[5]}; /* m[0] newest */
  int lower_nums = 0;
  for (int i = 0; i < N; i++) {
    BM_RETURN_IF_ERROR(dctx_model(c, x, 1.0, v->t[i], in, mo));
    float *o = m[2];
    m[2] = m[1];
    m[1] = m[0];
    m[0] = o;
    vp_x0(c, v, i, x, mo, m[0]);
    int lof = i == N - 1 && (c->cfg->lower_order_final && N < 15 ? 1 : final_zero);
    int los = i == N - 2 && c->cfg->lower_order_final && N < 15;
    if (sde) BM_RETURN_IF_ERROR(dctx_noise(c, nz));
    int ord = (order == 1 || lower_nums < 1 || lof) ? 1 : (order == 2 || lower_nums < 2 || los) ? 2 : 3;
    double at = v->alpha[i + 1], st = v->sigma[i + 1], ss0 = v->sigma[i];
    double h = v->lam[i + 1] - v->lam[i], emh = exp(-h);
    double nk = sde ? st * sqrt(1 - exp(-2 * h)) : 0;
    double cx = sde ? (st == 0 ? 0 : st / ss0 * emh) : (st == 0 ? 0 : st / ss0);
    double k0 = sde ? at * (1 - exp(-2 * h)) : -at * (emh - 1);
    if (ord == 1) {
      for (int64_t e = 0; e < c->n; e++) x[e] = (float)(cx * x[e] + k0 * m[0][e] + (sde ? nk * nz[e] : 0));
    } else if (ord == 2) {
      double h0 = v->lam[i] - v->lam[i - 1], r0 = h0 / h;
      for (int64_t e = 0; e < c->n; e++) {
        double D1 = (1.0 / r0) * ((double)m[0][e] - m[1][e]);
        x[e] = (float)(cx * x[e] + k0 * m[0][e] + 0.5 * k0 * D1 + (sde ? nk * nz[e] : 0));
      }
    } else {
      if (sde) return bm_status_make(BM_ERR_UNSUPPORTED, "sde-dpmsolver++ of order 3");
      double h0 = v->lam[i] - v->lam[i - 1], h1 = v->lam[i - 1] - v->lam[i - 2];
      double r0 = h0 / h, r1 = h1 / h;
      double c1 = at * ((emh - 1.0) / h + 1.0), c2 = at * ((emh - 1.0 + h) / (h * h) - 0.5);
      for (int64_t e = 0; e < c->n; e++) {
        double d10 = (1.0 / r0) * ((double)m[0][e] - m[1][e]), d11 = (1.0 / r1) * ((double)m[1][e] - m[2][e]);
        double D1 = d10 + (r0 / (r0 + r1)) * (d10 - d11), D2 = (1.0 / (r0 + r1)) * (d10 - d11);
        x[e] = (float)(cx * x[e] + k0 * m[0][e] + c1 * D1 - c2 * D2);
      }
    }
    if (lower_nums < order) lower_nums++;
    dctx_report(c, v->t[i], in, mo, x, NULL);
  }
  return NULL;
}

static bm_status sched_dpm_singlestep(dctx *c) {
  int N = c->run->steps;
  vp_sched *v = &c->vp;
  vp_make(c, N, c->cfg->use_karras_sigmas, c->cfg->final_sigmas_type, v);
  int final_zero = !c->cfg->final_sigmas_type || strcmp(c->cfg->final_sigmas_type, "zero") == 0;
  int orders[MAXS];
  for (int i = 0; i < N; i++) orders[i] = (i % 2 == 1) ? 2 : 1;
  if (N % 2 == 1) orders[N - 1] = 1;
  if (final_zero) orders[N - 1] = 1;
  float *x = c->run->latents, *in = c->buf[0], *mo = c->buf[1], *s0 = c->buf[2];
  float *m0 = c->buf[3], *m1 = c->buf[4];
  int have_m1 = 0;
  for (int i = 0; i < N; i++) {
    BM_RETURN_IF_ERROR(dctx_model(c, x, 1.0, v->t[i], in, mo));
    float *tmp = m1;
    m1 = m0;
    m0 = tmp;
    have_m1 = i > 0;
    vp_x0(c, v, i, x, mo, m0);
    int ord = orders[i];
    if (ord == 2 && !have_m1) ord = 1;
    if (ord == 1) bm_copy(s0, x, c->n);
    double at = v->alpha[i + 1], st = v->sigma[i + 1];
    if (ord == 1) {
      double h = v->lam[i + 1] - v->lam[i];
      bm_lc2(x, c->n, st == 0 ? 0 : st / v->sigma[i], s0, -at * (exp(-h) - 1), m0);
    } else {
      double h = v->lam[i + 1] - v->lam[i - 1], h0 = v->lam[i] - v->lam[i - 1], r0 = h0 / h;
      double k = -at * (exp(-h) - 1);
      for (int64_t e = 0; e < c->n; e++) {
        double D1 = (1.0 / r0) * ((double)m0[e] - m1[e]);
        x[e] = (float)((st == 0 ? 0 : st / v->sigma[i - 1]) * s0[e] + k * m1[e] + 0.5 * k * D1);
      }
    }
    dctx_report(c, v->t[i], in, mo, x, NULL);
  }
  return NULL;
}

static double deis_ind(double t, double b, double cc) {
  return t * (-log(cc) + log(t) - 1) / (log(b) - log(cc));
}

static bm_status sched_deis(dctx *c) {
  int N = c->run->steps;
  vp_sched *v = &c->vp;
  vp_make(c, N, c->cfg->use_karras_sigmas, "sigma_min", v);
  int order = c->cfg->solver_order > 0 ? c->cfg->solver_order : 2;
  if (order > 2) return bm_status_make(BM_ERR_UNSUPPORTED, "deis: solver_order %d (supported: 1, 2)", order);
  float *x = c->run->latents, *in = c->buf[0], *mo = c->buf[1], *m0 = c->buf[2], *m1 = c->buf[3];
  int lower_nums = 0;
  for (int i = 0; i < N; i++) {
    BM_RETURN_IF_ERROR(dctx_model(c, x, 1.0, v->t[i], in, mo));
    float *tmp = m1;
    m1 = m0;
    m0 = tmp;
    /* convert to eps through x0, as deis' convert_model_output */
    double a = v->alpha[i], s = v->sigma[i];
    for (int64_t e = 0; e < c->n; e++) {
      double x0 = c->cfg->prediction == BM_PRED_V ? a * x[e] - s * mo[e] : (x[e] - s * (double)mo[e]) / a;
      m0[e] = (float)((x[e] - a * x0) / s);
    }
    int lof = i == N - 1 && c->cfg->lower_order_final && N < 15;
    int ord = (order == 1 || lower_nums < 1 || lof) ? 1 : 2;
    double at = v->alpha[i + 1], st = v->sigma[i + 1];
    if (ord == 1) {
      double h = v->lam[i + 1] - v->lam[i];
      bm_lc2(x, c->n, at / a, x, -(st * (exp(h) - 1.0)), m0);
    } else {
      double rt = st / at, r0 = s / a, r1 = v->sigma[i - 1] / v->alpha[i - 1];
      double c1 = deis_ind(rt, r0, r1) - deis_ind(r0, r0, r1);
      double c2 = deis_ind(rt, r1, r0) - deis_ind(r0, r1, r0);
      for (int64_t e = 0; e < c->n; e++) x[e] = (float)(at * (x[e] / a + c1 * m0[e] + c2 * m1[e]));
    }
    if (lower_nums < order) lower_nums++;
    dctx_report(c, v->t[i], in, mo, x, NULL);
  }
  return NULL;
}

static bm_status sched_unipc(dctx *c) {
  int N = c->run->steps;
  vp_sched *v = &c->vp;
  vp_make(c, N, c->cfg->use_karras_sigmas, c->cfg->final_sigmas_type, v);
  int bh2 = !c->cfg->solver_type || strcmp(c->cfg->solver_type, "bh2") == 0;
  int order = c->cfg->solver_order > 0 ? c->cfg->solver_order : 2;
  bm_unipc u;
  float *bufs[5] = {c->buf[4], c->buf[5], c->buf[6], c->buf[7], c->buf[8]};
  bm_unipc_init(&u, order, bh2, c->cfg->lower_order_final, v->alpha, v->sigma, N, bufs, c->n);
  float *x = c->run->latents, *in = c->buf[0], *mo = c->buf[1], *x0 = c->buf[2], *xn = c->buf[3];
  for (int i = 0; i < N; i++) {
    BM_RETURN_IF_ERROR(dctx_model(c, x, 1.0, v->t[i], in, mo));
    vp_x0(c, v, i, x, mo, x0);
    BM_RETURN_IF_ERROR(bm_unipc_step(&u, i, x0, x, xn));
    bm_copy(x, xn, c->n);
    dctx_report(c, v->t[i], in, mo, x, NULL);
  }
  return NULL;
}

/* ----------------------------------------- sigma-space (Karras) schedulers */


static void ve_make(dctx *c, int N, ve_sched *v) {
  v->N = N;
  for (int i = 0; i < N; i++) {
    double t = N > 1 ? (double)(c->T - 1) * (N - 1 - i) / (N - 1) : c->T - 1;
    v->t[i] = f32(t);
    int lo = (int)floor(v->t[i]);
    double w = v->t[i] - lo;
    double s = lo + 1 < c->T ? (1 - w) * c->table[lo] + w * c->table[lo + 1] : c->table[lo];
    v->sig[i] = f32(s);
  }
  v->sig[N] = 0;
}

static double ve_init_sigma(const ve_sched *v) { return v->sig[0]; }

/* scale_model_input of the Karras-style classes, in float32 as torch:
 * sample / (sigma^2 + 1)^0.5, then the model at t. */
static bm_status ve_model(dctx *c, const float *sample, double sigma, double t, float *in, float *out) {
  float s = (float)sigma, d = sqrtf(s * s + 1.0f);
  for (int64_t e = 0; e < c->n; e++) in[e] = sample[e] / d;
  return c->run->model(c->run->user, in, t, out);
}

/* x0 from a Karras-scaled eps / v model output at sigma */
static void ve_x0(dctx *c, const float *x, const float *mo, double sigma, float *x0) {
  for (int64_t e = 0; e < c->n; e++) {
    double p;
    if (c->cfg->prediction == BM_PRED_V)
      p = mo[e] * (-sigma / sqrt(sigma * sigma + 1)) + x[e] / (sigma * sigma + 1);
    else if (c->cfg->prediction == BM_PRED_SAMPLE) p = mo[e];
    else p = (float)x[e] - (float)sigma * mo[e]; /* float32, as torch */
    x0[e] = (float)p;
  }
}

static bm_status sched_euler(dctx *c) {
  ve_sched *v = &c->ve;
  ve_make(c, c->run->steps, v);
  c->run->init_noise_sigma = ve_init_sigma(v);
  float *x = c->run->latents, *in = c->buf[0], *mo = c->buf[1], *x0 = c->buf[2];
  bm_lc1(x, c->n, c->run->init_noise_sigma, x);
  for (int i = 0; i < v->N; i++) {
    double s = v->sig[i];
    BM_RETURN_IF_ERROR(ve_model(c, x, s, v->t[i], in, mo));
    ve_x0(c, x, mo, s, x0);
    float fs = (float)s, dt = (float)v->sig[i + 1] - fs; /* float32 update, as torch */
    for (int64_t e = 0; e < c->n; e++) x[e] = x[e] + (x[e] - x0[e]) / fs * dt;
    dctx_report(c, v->t[i], in, mo, x, x0);
  }
  return NULL;
}

static bm_status sched_euler_ancestral(dctx *c) {
  ve_sched *v = &c->ve;
  ve_make(c, c->run->steps, v);
  c->run->init_noise_sigma = ve_init_sigma(v);
  float *x = c->run->latents, *in = c->buf[0], *mo = c->buf[1], *x0 = c->buf[2], *nz = c->buf[3];
  bm_lc1(x, c->n, c->run->init_noise_sigma, x);
  for (int i = 0; i < v->N; i++) {
    double s = v->sig[i], sn = v->sig[i + 1];
    BM_RETURN_IF_ERROR(ve_model(c, x, s, v->t[i], in, mo));
    ve_x0(c, x, mo, s, x0);
    float fs = (float)s, fn = (float)sn;
    float up = sqrtf(fn * fn * (fs * fs - fn * fn) / (fs * fs)), down = sqrtf(fn * fn - up * up);
    float dt = down - fs;
    BM_RETURN_IF_ERROR(dctx_noise(c, nz));
    for (int64_t e = 0; e < c->n; e++) {
      float p = x[e] + (x[e] - x0[e]) / fs * dt;
      x[e] = p + nz[e] * up;
    }
    dctx_report(c, v->t[i], in, mo, x, x0);
  }
  return NULL;
}

static double lms_coeff_d(int order, const double *t, int i, int j) {
  static const double gx[4] = {0.1834346424956498, 0.5255324099163290, 0.7966664774136267, 0.9602898564975363};
  static const double gw[4] = {0.3626837833783620, 0.3137066458778873, 0.2223810344533745, 0.1012285362903763};
  double a = t[i], b = t[i + 1], mid = 0.5 * (a + b), half = 0.5 * (b - a), sum = 0;
  for (int q = 0; q < 8; q++) {
    double tau = mid + half * (q < 4 ? -gx[q] : gx[q - 4]), prod = 1.0;
    for (int k = 0; k < order; k++)
      if (k != j) prod *= (tau - t[i - k]) / (t[i - j] - t[i - k]);
    sum += gw[q % 4] * prod;
  }
  return sum * half;
}

static bm_status sched_lms(dctx *c) {
  ve_sched *v = &c->ve;
  ve_make(c, c->run->steps, v);
  c->run->init_noise_sigma = ve_init_sigma(v);
  int order = c->cfg->solver_order > 0 ? c->cfg->solver_order : 4;
  if (order > 4) order = 4;
  float *x = c->run->latents, *in = c->buf[0], *mo = c->buf[1], *x0 = c->buf[2];
  float *ds[5] = {c->buf[3], c->buf[4], c->buf[5], c->buf[6], c->buf[7]};
  int nd = 0;
  bm_lc1(x, c->n, c->run->init_noise_sigma, x);
  for (int i = 0; i < v->N; i++) {
    double s = v->sig[i];
    BM_RETURN_IF_ERROR(ve_model(c, x, s, v->t[i], in, mo));
    ve_x0(c, x, mo, s, x0);
    if (nd == order) {
      float *o = ds[0];
      memmove(ds, ds + 1, sizeof(float *) * (size_t)(order - 1));
      ds[order - 1] = o;
      nd--;
    }
    for (int64_t e = 0; e < c->n; e++) ds[nd][e] = (x[e] - x0[e]) / (float)s;
    nd++;
    int cur = i + 1 < order ? i + 1 : order;
    double co[4];
    for (int j = 0; j < cur; j++) co[j] = lms_coeff_d(cur, v->sig, i, j);
    for (int64_t e = 0; e < c->n; e++) { /* python sum() of float32 tensors */
      float acc = 0.0f;
      for (int j = 0; j < cur; j++) acc = acc + (float)co[j] * ds[nd - 1 - j][e];
      x[e] = x[e] + acc;
    }
    dctx_report(c, v->t[i], in, mo, x, x0);
  }
  return NULL;
}

static bm_status sched_heun(dctx *c) {
  ve_sched *v = &c->ve;
  ve_make(c, c->run->steps, v);
  c->run->init_noise_sigma = ve_init_sigma(v);
  float *x = c->run->latents, *in = c->buf[0], *mo = c->buf[1], *x0 = c->buf[2];
  float *d1 = c->buf[3], *s0 = c->buf[4];
  bm_lc1(x, c->n, c->run->init_noise_sigma, x);
  for (int k = 0; k < v->N; k++) {
    double s = v->sig[k], sn = v->sig[k + 1];
    BM_RETURN_IF_ERROR(ve_model(c, x, s, v->t[k], in, mo));
    ve_x0(c, x, mo, s, x0);
    float fdt = (float)sn - (float)s;
    for (int64_t e = 0; e < c->n; e++) d1[e] = (x[e] - x0[e]) / (float)s;
    bm_copy(s0, x, c->n);
    for (int64_t e = 0; e < c->n; e++) x[e] = s0[e] + d1[e] * fdt;
    dctx_report(c, v->t[k], in, mo, x, x0);
    if (sn == 0) break;
    BM_RETURN_IF_ERROR(ve_model(c, x, sn, v->t[k + 1], in, mo));
    ve_x0(c, x, mo, sn, x0);
    for (int64_t e = 0; e < c->n; e++) {
      float d2 = (x[e] - x0[e]) / (float)sn;
      x[e] = s0[e] + (d1[e] + d2) / 2.0f * fdt;
    }
    dctx_report(c, v->t[k + 1], in, mo, x, x0);
  }
  return NULL;
}

/* t of a sigma in float32, as diffusers' numpy _sigma_to_t on a float32 table. */
static double sigma_to_t_f(const dctx *c, float s) {
  float ls = logf(s > 1e-10f ? s : 1e-10f);
  int lo = 0;
  for (int i = 0; i < c->T; i++)
    if (ls - logf((float)c->table[i]) >= 0) lo = i;
  if (lo > c->T - 2) lo = c->T - 2;
  float l0 = logf((float)c->table[lo]), l1 = logf((float)c->table[lo + 1]);
  float w = (l0 - ls) / (l0 - l1);
  if (w < 0) w = 0;
  if (w > 1) w = 1;
  return (float)((1.0 - (double)w) * lo + (double)w * (lo + 1));
}

/* torch.lerp(a, b, 0.5) then exp, in float32 */
static float lerp_exp(float la, float lb) { return expf(lb - (lb - la) * 0.5f); }

/* KDPM2 (+ ancestral): first order to the log-midpoint sigma, then the
 * slope there from the start (float32 arithmetic as torch). */
static bm_status sched_kdpm2_common(dctx *c, int ancestral) {
  ve_sched *v = &c->ve;
  ve_make(c, c->run->steps, v);
  c->run->init_noise_sigma = ve_init_sigma(v);
  int N = v->N;
  float up[MAXS + 1], down[MAXS + 1], mid[MAXS + 1];
  for (int k = 0; k <= N; k++) {
    float s = (float)v->sig[k], sn = k < N ? (float)v->sig[k + 1] : 0.0f;
    if (ancestral) {
      up[k] = s > 0 ? sqrtf(sn * sn * (s * s - sn * sn) / (s * s)) : 0.0f;
      down[k] = k < N ? sqrtf(sn * sn - up[k] * up[k]) : 0.0f;
      mid[k] = (k >= N - 1) ? 0.0f : lerp_exp(logf(s), logf(down[k]));
    } else {
      mid[k] = (k < N && sn > 0) ? lerp_exp(logf(sn), logf(s)) : 0.0f; /* interpol of k + 1 */
    }
  }
  float *x = c->run->latents, *in = c->buf[0], *mo = c->buf[1], *x0 = c->buf[2];
  float *s0 = c->buf[3], *nz = c->buf[4];
  bm_lc1(x, c->n, c->run->init_noise_sigma, x);
  for (int k = 0; k < N; k++) {
    float s = (float)v->sig[k], sn = (float)v->sig[k + 1], si = mid[k];
    BM_RETURN_IF_ERROR(ve_model(c, x, s, v->t[k], in, mo));
    ve_x0(c, x, mo, s, x0);
    bm_copy(s0, x, c->n);
    float dt = si - s;
    for (int64_t e = 0; e < c->n; e++) x[e] = x[e] + (x[e] - x0[e]) / s * dt;
    dctx_report(c, v->t[k], in, mo, x, x0);
    if (k == N - 1) break;
    double ti = sigma_to_t_f(c, si);
    BM_RETURN_IF_ERROR(ve_model(c, x, si, ti, in, mo));
    ve_x0(c, x, mo, si, x0);
    float dt2 = (ancestral ? down[k] : sn) - s;
    if (ancestral) BM_RETURN_IF_ERROR(dctx_noise(c, nz));
    for (int64_t e = 0; e < c->n; e++) {
      float d = (x[e] - x0[e]) / si;
      float val = s0[e] + d * dt2;
      if (ancestral) val = val + nz[e] * up[k];
      x[e] = val;
    }
    dctx_report(c, ti, in, mo, x, x0);
  }
  return NULL;
}
static bm_status sched_kdpm2(dctx *c) { return sched_kdpm2_common(c, 0); }
static bm_status sched_kdpm2_ancestral(dctx *c) { return sched_kdpm2_common(c, 1); }

/* ------------------------------------------------------------------- LCM */

static bm_status sched_lcm(dctx *c) {
  int N = c->run->steps, orig = c->cfg->original_inference_steps > 0 ? c->cfg->original_inference_steps : 50;
  if (N > orig)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "lcm: %d steps > original_inference_steps %d", N, orig);
  int k = c->T / orig, ts[MAXS];
  for (int i = 0; i < N; i++) {
    int idx = (int)floor((double)i * orig / N);
    ts[i] = (orig - idx) * k - 1;
  }
  double scaling = c->cfg->timestep_scaling > 0 ? c->cfg->timestep_scaling : 10.0;
  double final_ac = c->cfg->set_alpha_to_one ? 1.0 : c->ac[0];
  float *x = c->run->latents, *in = c->buf[0], *mo = c->buf[1], *x0 = c->buf[2], *den = c->buf[3];
  float *nz = c->buf[4];
  for (int i = 0; i < N; i++) {
    int t = ts[i], tp = i + 1 < N ? ts[i + 1] : t;
    BM_RETURN_IF_ERROR(dctx_model(c, x, 1.0, t, in, mo));
    double a = c->ac[t], ap = tp >= 0 ? c->ac[tp] : final_ac;
    double st = t * scaling, cskip = 0.25 / (st * st + 0.25), cout = st / sqrt(st * st + 0.25);
    to_x0(c, x, mo, a, x0, NULL);
    for (int64_t e = 0; e < c->n; e++) den[e] = (float)cout * x0[e] + (float)cskip * x[e];
    if (i != N - 1) {
      BM_RETURN_IF_ERROR(dctx_noise(c, nz));
      bm_lc2(x, c->n, sqrt(ap), den, sqrt(1 - ap), nz);
    } else {
      bm_copy(x, den, c->n);
    }
    dctx_report(c, t, in, mo, x, den);
  }
  return NULL;
}

/* ----------------------------------------------------- FlowMatch Euler */

static bm_status sched_flow_match_euler(dctx *c) {
  int N = c->run->steps;
  double shift = c->cfg->shift > 0 ? c->cfg->shift : 1.0, T = c->T;
  double smin_train = f32(shift * (1.0 / T) / (1 + (shift - 1) * (1.0 / T))), smax = 1.0;
  double sig[MAXS + 1], ts[MAXS];
  for (int i = 0; i < N; i++) {
    double t = N > 1 ? smax * T + (smin_train * T - smax * T) * i / (N - 1) : smax * T;
    double s = t / T;
    s = shift * s / (1 + (shift - 1) * s);
    sig[i] = f32(s);
    ts[i] = f32(s * T);
  }
  sig[N] = 0;
  float *x = c->run->latents, *in = c->buf[0], *mo = c->buf[1];
  for (int i = 0; i < N; i++) {
    BM_RETURN_IF_ERROR(dctx_model(c, x, 1.0, ts[i], in, mo));
    bm_lc2(x, c->n, 1.0, x, sig[i + 1] - sig[i], mo);
    dctx_report(c, ts[i], in, mo, x, NULL);
  }
  return NULL;
}


/* ------------------------------------------------------------- SA-Solver */

/* integral over [a, b] of exp(x (1 + tau^2)) x^p dx (p <= 3), as diffusers. */
static double sa_exp_pos(int p, double a, double b, double tau) {
  double k = 1 + tau * tau, e = k * b, s = k * a, r = exp(-(e - s));
  switch (p) {
  case 0: return exp(e) * (1 - r) / k;
  case 1: return exp(e) * ((e - 1) - (s - 1) * r) / (k * k);
  case 2: return exp(e) * ((e * e - 2 * e + 2) - (s * s - 2 * s + 2) * r) / (k * k * k);
  default:
    return exp(e) * ((e * e * e - 3 * e * e + 6 * e - 6) - (s * s * s - 3 * s * s + 6 * s - 6) * r) / (k * k * k * k);
  }
}

/* coefficient i = integral of the i-th Lagrange basis (through lam[0..k-1])
 * times exp(x (1 + tau^2)) over [a, b]. */
static void sa_coeffs(int k, double a, double b, const double *lam, double tau, double *co) {
  for (int i = 0; i < k; i++) {
    /* polynomial prod_{j != i} (x - lam[j]) / (lam[i] - lam[j]), expanded */
    double poly[4] = {1, 0, 0, 0}, den = 1; /* poly[d] = coefficient of x^d */
    int deg = 0;
    for (int j = 0; j < k; j++) {
      if (j == i) continue;
      double np[4] = {0, 0, 0, 0};
      for (int d = 0; d <= deg; d++) {
        np[d + 1] += poly[d];
        np[d] -= lam[j] * poly[d];
      }
      deg++;
      memcpy(poly, np, sizeof np);
      den *= lam[i] - lam[j];
    }
    double acc = 0;
    for (int d = 0; d <= deg; d++) acc += poly[d] / den * sa_exp_pos(d, a, b, tau);
    co[i] = acc;
  }
}

static double sa_tau(double t) { return (t >= 200 && t <= 800) ? 1.0 : 0.0; }

static bm_status sched_sasolver(dctx *c) {
  int N = c->run->steps;
  vp_sched *v = &c->vp;
  vp_make(c, N, c->cfg->use_karras_sigmas, "sigma_min", v);
  int po = c->cfg->predictor_order > 0 ? c->cfg->predictor_order : 2;
  int co_ord = c->cfg->corrector_order > 0 ? c->cfg->corrector_order : 2;
  if (po > 3 || co_ord > 3)
    return bm_status_make(BM_ERR_UNSUPPORTED, "sasolver: orders up to 3 (got predictor %d, corrector %d)", po, co_ord);
  int hist = po > co_ord - 1 ? po : co_ord - 1;
  float *x = c->run->latents, *in = c->buf[0], *mo = c->buf[1], *x0 = c->buf[2];
  float *last = c->buf[3], *nz = c->buf[4], *last_nz = c->buf[5], *tmp = c->buf[6];
  float *m[3] = {c->buf[7], c->buf[8], c->buf[9]}; /* m[0] newest */
  int nm = 0, lower_nums = 0, this_p = 0, this_c = 0, have_last = 0;
  double prev_t = 0;
  for (int i = 0; i < N; i++) {
    BM_RETURN_IF_ERROR(dctx_model(c, x, 1.0, v->t[i], in, mo));
    vp_x0(c, v, i, x, mo, x0);
    if (i > 0 && have_last) {
      /* corrector from last sample to step i with this_c points: x0 and history */
      double tau = sa_tau(prev_t), lt = v->lam[i], ls0 = v->lam[i - 1], h = lt - ls0;
      double lam[4], cf[4];
      for (int k = 0; k < this_c; k++) lam[k] = v->lam[i - k];
      sa_coeffs(this_c, ls0, lt, lam, tau, cf);
      double k2 = 1 + tau * tau;
      if (this_c == 2) {
        double add = exp(k2 * lt) * (h / 2 - (h * k2 - 1 + exp(k2 * (-h))) / (k2 * k2 * h));
        cf[0] += add;
        cf[1] -= add;
      }
      double st = v->sigma[i], ss0 = v->sigma[i - 1], g = k2 * st * exp(-(tau * tau) * lt);
      double ax = exp(-(tau * tau) * h) * (st / ss0), kn = st * sqrt(1 - exp(-2 * tau * tau * h));
      for (int64_t e = 0; e < c->n; e++) {
        double acc = ax * last[e] + kn * last_nz[e] + g * cf[0] * x0[e];
        for (int k = 1; k < this_c; k++) acc += g * cf[k] * m[k - 1][e];
        x[e] = (float)acc;
      }
    }
    /* history push */
    float *o = m[hist - 1];
    for (int k = hist - 1; k > 0; k--) m[k] = m[k - 1];
    m[0] = o;
    bm_copy(m[0], x0, c->n);
    if (nm < hist) nm++;
    BM_RETURN_IF_ERROR(dctx_noise(c, nz));
    int tp = c->cfg->lower_order_final ? (po < N - i ? po : N - i) : po;
    int tc = c->cfg->lower_order_final ? (co_ord < N - i + 1 ? co_ord : N - i + 1) : co_ord;
    this_p = tp < lower_nums + 1 ? tp : lower_nums + 1;
    this_c = tc < lower_nums + 2 ? tc : lower_nums + 2;
    bm_copy(last, x, c->n);
    bm_copy(last_nz, nz, c->n);
    have_last = 1;
    /* predictor from step i to i + 1 */
    double tau = sa_tau(v->t[i]), lt = v->lam[i + 1], ls0 = v->lam[i], h = lt - ls0;
    double lam[4], cf[4];
    for (int k = 0; k < this_p; k++) lam[k] = v->lam[i - k];
    sa_coeffs(this_p, ls0, lt, lam, tau, cf);
    double k2 = 1 + tau * tau;
    if (this_p == 2) {
      double add = exp(k2 * lt) * (h * h / 2 - (h * k2 - 1 + exp(k2 * (-h))) / (k2 * k2)) / (ls0 - v->lam[i - 1]);
      cf[0] += add;
      cf[1] -= add;
    }
    double st = v->sigma[i + 1], ss0 = v->sigma[i], g = k2 * st * exp(-(tau * tau) * lt);
    double ax = exp(-(tau * tau) * h) * (st / ss0), kn = st * sqrt(1 - exp(-2 * tau * tau * h));
    for (int64_t e = 0; e < c->n; e++) {
      double acc = ax * x[e] + kn * nz[e];
      for (int k = 0; k < this_p; k++) acc += g * cf[k] * m[k][e];
      tmp[e] = (float)acc;
    }
    bm_copy(x, tmp, c->n);
    if (lower_nums < hist) lower_nums++;
    prev_t = v->t[i];
    dctx_report(c, v->t[i], in, mo, x, NULL);
  }
  return NULL;
}

/* -------------------------------------------------------------- registry */

typedef bm_status (*sched_fn)(dctx *c);
typedef struct sched_entry {
  bm_scheduler_info info;
  sched_fn fn;
} sched_entry;

static const sched_entry scheds[] = {
    {{"ddim", "DDIMScheduler", "1", 0, 1}, sched_ddim},
    {{"ddpm", "DDPMScheduler (fixed_small)", "1", 0, 1}, sched_ddpm},
    {{"pndm", "PNDMScheduler (PLMS; PRK with skip_prk_steps 0)", "1 (+1 on the 2nd step)", 1, 1}, sched_pndm},
    {{"ipndm", "IPNDMScheduler", "1", 1, 1}, sched_ipndm},
    {{"deis", "DEISMultistepScheduler (logrho, order 2)", "1", 1, 1}, sched_deis},
    {{"unipc", "UniPCMultistepScheduler (bh1/bh2)", "1", 1, 1}, sched_unipc},
    {{"dpmsolver_multistep", "DPMSolverMultistepScheduler (dpmsolver++ 2M/3M, sde-dpmsolver++)", "1", 1, 1},
     sched_dpm_multistep},
    {{"dpmsolver_singlestep", "DPMSolverSinglestepScheduler (dpmsolver++ order 2)", "1", 1, 1},
     sched_dpm_singlestep},
    {{"lms", "LMSDiscreteScheduler (order 4)", "1", 1, 1}, sched_lms},
    {{"euler", "EulerDiscreteScheduler", "1", 1, 1}, sched_euler},
    {{"euler_ancestral", "EulerAncestralDiscreteScheduler", "1", 0, 1}, sched_euler_ancestral},
    {{"heun", "HeunDiscreteScheduler", "2 (1 on the last step)", 1, 1}, sched_heun},
    {{"kdpm2", "KDPM2DiscreteScheduler", "2 (1 on the last step)", 1, 1}, sched_kdpm2},
    {{"kdpm2_ancestral", "KDPM2AncestralDiscreteScheduler", "2 (1 on the last step)", 0, 1},
     sched_kdpm2_ancestral},
    {{"sasolver", "SASolverScheduler (data prediction, predictor/corrector 2)", "1", 0, 1}, sched_sasolver},
    {{"lcm", "LCMScheduler", "1", 0, 1}, sched_lcm},
    {{"flow_match_euler", "FlowMatchEulerDiscreteScheduler", "1", 1, 1}, sched_flow_match_euler},
};
#define NSCHEDS ((int)(sizeof scheds / sizeof scheds[0]))

int bm_scheduler_count(void) { return NSCHEDS; }
const bm_scheduler_info *bm_scheduler_at(int i) { return i >= 0 && i < NSCHEDS ? &scheds[i].info : NULL; }

bm_status bm_scheduler_find(const char *name, const bm_scheduler_info **out) {
  *out = NULL;
  for (int i = 0; name && i < NSCHEDS; i++)
    if (strcmp(scheds[i].info.name, name) == 0) {
      *out = &scheds[i].info;
      return NULL;
    }
  char list[600];
  size_t len = 0;
  list[0] = 0;
  for (int i = 0; i < NSCHEDS; i++)
    len += (size_t)snprintf(list + len, sizeof list - len, "%s%s", i ? ", " : "", scheds[i].info.name);
  return bm_status_make(BM_ERR_NOT_FOUND, "unknown scheduler '%s'; valid schedulers: %s", name ? name : "(null)", list);
}

void bm_scheduler_config_sd1(bm_scheduler_config *c) {
  memset(c, 0, sizeof *c);
  c->num_train_timesteps = 1000;
  c->beta_start = 0.00085;
  c->beta_end = 0.012;
  c->steps_offset = 1;
  c->prediction = BM_PRED_EPSILON;
  c->skip_prk_steps = 1;
  c->solver_order = 0;
  c->lower_order_final = 1;
  c->original_inference_steps = 50;
  c->timestep_scaling = 10.0;
  c->shift = 1.0;
}

bm_status bm_scheduler_run_loop(const char *name, bm_scheduler_run *run) {
  const bm_scheduler_info *info;
  BM_RETURN_IF_ERROR(bm_scheduler_find(name, &info));
  const sched_entry *e = NULL;
  for (int i = 0; i < NSCHEDS; i++)
    if (&scheds[i].info == info) e = &scheds[i];
  if (!run || !run->model || !run->latents || !run->config || run->n <= 0)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "scheduler '%s': run needs model, latents, config and n > 0", name);
  if (run->steps < 1 || run->steps > 1000)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "scheduler '%s': steps must be in 1..1000, got %d", name, run->steps);
  int T = run->config->num_train_timesteps;
  if (T < 2 || T > MAXT || run->steps > T)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "scheduler '%s': num_train_timesteps %d (need 2..%d and >= steps)",
                          name, T, MAXT);
  dctx *c = calloc(1, sizeof *c);
  if (!c) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "scheduler '%s'", name);
  c->run = run;
  c->cfg = run->config;
  c->n = run->n;
  c->T = T;
  dctx_schedule(c);
  run->noise_draws = 0;
  run->init_noise_sigma = 1.0;
  float *scratch = run->scratch, *owned = NULL;
  if (!scratch) owned = scratch = malloc(sizeof(float) * (size_t)run->n * BM_SAMPLER_SCRATCH_BUFFERS);
  if (!scratch) {
    free(c);
    return bm_status_make(BM_ERR_OUT_OF_MEMORY, "scheduler '%s': scratch", name);
  }
  for (int i = 0; i < BM_SAMPLER_SCRATCH_BUFFERS; i++) c->buf[i] = scratch + (size_t)i * run->n;
  bm_status s = e->fn(c);
  run->loop_len = c->loop;
  free(owned);
  free(c);
  if (s) return bm_status_wrap(s, "scheduler '%s'", name);
  return NULL;
}
