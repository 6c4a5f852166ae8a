/* samplers_dpm.c - DPM-Solver family: dpm_fast and dpm_adaptive (DPM-Solver
 * with eps prediction, fixed and PID-controlled steps), and DPM-Solver++
 * 2S ancestral, SDE, 2M, 2M SDE (midpoint/heun) and 3M SDE in half-logSNR
 * time lambda = -log sigma (alpha = 1 for Karras-style models). */
#include <math.h>
#include <string.h>

#include "samplers_internal.h"

/* --------------------------------------------- DPM-Solver (eps, t = -log s) */

/* DPM-Solver runs in float32 scalar and tensor arithmetic exactly as
 * k-diffusion's torch code does: its adaptive controller divides by the
 * tiny difference of two solutions, so double arithmetic would drift from
 * the reference's step sizes. */

typedef struct dpm_state {
  bm_sctx *c;
  float *eps, *eps_r1, *eps_r2, *u, *den;
  int have_eps, have_r1, have_r2; /* the per-step eps cache */
} dpm_state;

static float sig_of(float t) { return expf(-t); }

/* eps = (x - D(x, sigma(t))) / sigma(t) into out. */
static bm_status dpm_eps(dpm_state *st, const float *x, float t, float *out) {
  float s = sig_of(t);
  BM_RETURN_IF_ERROR(bm_sctx_denoise(st->c, x, s, st->den, NULL));
  int64_t n = st->c->n;
  for (int64_t i = 0; i < n; i++) out[i] = (x[i] - st->den[i]) / s;
  return NULL;
}

static bm_status dpm_ensure_eps(dpm_state *st, const float *x, float t) {
  if (!st->have_eps) {
    BM_RETURN_IF_ERROR(dpm_eps(st, x, t, st->eps));
    st->have_eps = 1;
  }
  return NULL;
}

static bm_status dpm_step1(dpm_state *st, const float *x, float t, float tn, float *out) {
  BM_RETURN_IF_ERROR(dpm_ensure_eps(st, x, t));
  float h = tn - t, a = sig_of(tn) * expm1f(h);
  for (int64_t i = 0; i < st->c->n; i++) out[i] = x[i] - a * st->eps[i];
  return NULL;
}

static bm_status dpm_r1(dpm_state *st, const float *x, float t, float h, float r1) {
  if (st->have_r1) return NULL;
  float rh = (float)r1 * h, s1 = t + rh, a = sig_of(s1) * expm1f(rh);
  for (int64_t i = 0; i < st->c->n; i++) st->u[i] = x[i] - a * st->eps[i];
  BM_RETURN_IF_ERROR(dpm_eps(st, st->u, s1, st->eps_r1));
  st->have_r1 = 1;
  return NULL;
}

static bm_status dpm_step2(dpm_state *st, const float *x, float t, float tn, double r1,
                           float *out) {
  BM_RETURN_IF_ERROR(dpm_ensure_eps(st, x, t));
  float h = tn - t;
  BM_RETURN_IF_ERROR(dpm_r1(st, x, t, h, (float)r1));
  float a = sig_of(tn) * expm1f(h), b = sig_of(tn) / (float)(2 * r1) * expm1f(h);
  for (int64_t i = 0; i < st->c->n; i++)
    out[i] = (x[i] - a * st->eps[i]) - b * (st->eps_r1[i] - st->eps[i]);
  return NULL;
}

static bm_status dpm_step3(dpm_state *st, const float *x, float t, float tn, float *out) {
  const double r1 = 1.0 / 3, r2 = 2.0 / 3;
  int64_t n = st->c->n;
  BM_RETURN_IF_ERROR(dpm_ensure_eps(st, x, t));
  float h = tn - t;
  BM_RETURN_IF_ERROR(dpm_r1(st, x, t, h, (float)r1));
  if (!st->have_r2) {
    float rh = (float)r2 * h, s2 = t + rh;
    float a = sig_of(s2) * expm1f(rh);
    float b = (sig_of(s2) * (float)(r2 / r1)) * (expm1f(rh) / rh - 1.0f);
    for (int64_t i = 0; i < n; i++) st->u[i] = (x[i] - a * st->eps[i]) - b * (st->eps_r1[i] - st->eps[i]);
    BM_RETURN_IF_ERROR(dpm_eps(st, st->u, s2, st->eps_r2));
    st->have_r2 = 1;
  }
  float a = sig_of(tn) * expm1f(h), b = sig_of(tn) / (float)r2 * (expm1f(h) / h - 1.0f);
  for (int64_t i = 0; i < n; i++) out[i] = (x[i] - a * st->eps[i]) - b * (st->eps_r2[i] - st->eps[i]);
  return NULL;
}

static void dpm_range(bm_sctx *c, double *smin, double *smax) {
  *smax = c->sig[0];
  *smin = INFINITY;
  for (int i = 0; i <= c->steps; i++)
    if (c->sig[i] > 0 && c->sig[i] < *smin) *smin = c->sig[i];
}

static void dpm_init(dpm_state *st, bm_sctx *c) {
  memset(st, 0, sizeof *st);
  st->c = c;
  st->eps = c->buf[0];
  st->eps_r1 = c->buf[1];
  st->eps_r2 = c->buf[2];
  st->u = c->buf[3];
  st->den = c->buf[4];
}

/* Ancestral adjustment: the step goes to tn_ and noise of scale su is
 * added afterwards (eta 0: tn_ = tn, su = 0). */
static void dpm_eta_step(float t, float tn, float t_end, double eta, float *tn_, float *su) {
  if (eta == 0) {
    *tn_ = tn;
    *su = 0;
    return;
  }
  double sd, up;
  bm_ancestral_step(sig_of(t), sig_of(tn), eta, &sd, &up);
  float tt = -logf((float)sd);
  *tn_ = tt < t_end ? tt : t_end;
  *su = sqrtf(sig_of(tn) * sig_of(tn) - sig_of(*tn_) * sig_of(*tn_));
}

static void dpm_denoised(bm_sctx *c, const float *x, const float *eps, float t, float *den) {
  float s = sig_of(t);
  for (int64_t i = 0; i < c->n; i++) den[i] = x[i] - s * eps[i];
}

/* DPM-Solver-Fast: nfe = steps model calls in order-3 steps on a uniform
 * grid of t = -log sigma between sigma_max and sigma_min. */
bm_status bm_sampler_dpm_fast(bm_sctx *c) {
  double smin, smax;
  dpm_range(c, &smin, &smax);
  float t_start = -logf((float)smax), t_end = -logf((float)smin);
  double eta = bm_opt(c->o.eta, 0.0), s_noise = bm_opt(c->o.s_noise, 1.0);
  int nfe = c->steps, m = nfe / 3 + 1;
  int orders[256], no = 0;
  if (m > 250) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "dpm_fast: at most 747 steps");
  if (nfe % 3 == 0) {
    for (int k = 0; k < m - 2; k++) orders[no++] = 3;
    orders[no++] = 2;
    orders[no++] = 1;
  } else {
    for (int k = 0; k < m - 1; k++) orders[no++] = 3;
    orders[no++] = nfe % 3;
  }
  /* torch.linspace(t_start, t_end, m + 1) in float32 */
  float ts[256], step = (t_end - t_start) / (float)m;
  for (int i = 0; i <= m; i++)
    ts[i] = i < (m + 1) / 2 ? fmaf(step, (float)i, t_start) : fmaf(-step, (float)(m - i), t_end);
  float *x = c->run->x, *xo = c->buf[5], *nz = c->buf[6], *den = c->buf[7];
  dpm_state st;
  dpm_init(&st, c);
  for (int i = 0; i < no; i++) {
    float t = ts[i], tn = ts[i + 1], tn_, su;
    dpm_eta_step(t, tn, t_end, eta, &tn_, &su);
    st.have_eps = st.have_r1 = st.have_r2 = 0;
    BM_RETURN_IF_ERROR(dpm_ensure_eps(&st, x, t));
    dpm_denoised(c, x, st.eps, t, den);
    bm_sctx_report(c, i, sig_of(t), sig_of(t), x, den);
    if (orders[i] == 1) BM_RETURN_IF_ERROR(dpm_step1(&st, x, t, tn_, xo));
    else if (orders[i] == 2) BM_RETURN_IF_ERROR(dpm_step2(&st, x, t, tn_, 0.5, xo));
    else BM_RETURN_IF_ERROR(dpm_step3(&st, x, t, tn_, xo));
    BM_RETURN_IF_ERROR(bm_sctx_noise(c, sig_of(t), sig_of(tn), nz));
    float k = (float)(su * s_noise);
    for (int64_t e = 0; e < c->n; e++) x[e] = xo[e] + k * nz[e];
  }
  return NULL;
}

/* DPM-Solver-12/23 with a PID step size controller (k-diffusion's
 * PIDStepSizeController): error = RMS((x_low - x_high) / delta) with
 * delta = max(atol, rtol * max(|x_low|, |x_prev|)); a step is accepted when
 * the limited factor 1 + atan(f - 1) >= accept_safety; h *= factor always. */
bm_status bm_sampler_dpm_adaptive(bm_sctx *c) {
  double smin, smax;
  dpm_range(c, &smin, &smax);
  float t_start = -logf((float)smax), t_end = -logf((float)smin);
  int order = c->o.order > 0 ? c->o.order : 3;
  if (order != 2 && order != 3)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "dpm_adaptive: order must be 2 or 3, got %d", order);
  float rtol = (float)bm_opt(c->o.rtol, 0.05), atol = (float)bm_opt(c->o.atol, 0.0078);
  double h = fabs(bm_opt(c->o.h_init, 0.05));
  double pc = bm_opt(c->o.pcoeff, 0.0), ic = bm_opt(c->o.icoeff, 1.0), dc = bm_opt(c->o.dcoeff, 0.0);
  double safety = bm_opt(c->o.accept_safety, 0.81);
  double eta = bm_opt(c->o.eta, 0.0), s_noise = bm_opt(c->o.s_noise, 1.0);
  double pid_order = eta != 0 ? 1.5 : order;
  double b1 = (pc + ic + dc) / pid_order, b2 = -(pc + 2 * dc) / pid_order, b3 = dc / pid_order;
  double errs[3] = {0, 0, 0};
  int have_errs = 0;
  float *x = c->run->x, *xl = c->buf[5], *xh = c->buf[6], *xprev = c->buf[7], *nz = c->buf[8];
  float *den = c->buf[9];
  bm_copy(xprev, x, c->n);
  dpm_state st;
  dpm_init(&st, c);
  float s = t_start, stop = t_end - 1e-5f;
  int n_accept = 0, attempts = 0;
  while (s < stop) {
    if (attempts > 100000) return bm_status_make(BM_ERR_INTERNAL, "dpm_adaptive: no convergence after 100000 attempts");
    float tt = s + (float)h, t = tt < t_end ? tt : t_end, t_, su;
    dpm_eta_step(s, t, t_end, eta, &t_, &su);
    st.have_eps = st.have_r1 = st.have_r2 = 0;
    BM_RETURN_IF_ERROR(dpm_ensure_eps(&st, x, s));
    dpm_denoised(c, x, st.eps, s, den);
    if (order == 2) {
      BM_RETURN_IF_ERROR(dpm_step1(&st, x, s, t_, xl));
      BM_RETURN_IF_ERROR(dpm_step2(&st, x, s, t_, 0.5, xh));
    } else {
      BM_RETURN_IF_ERROR(dpm_step2(&st, x, s, t_, 1.0 / 3, xl));
      BM_RETURN_IF_ERROR(dpm_step3(&st, x, s, t_, xh));
    }
    double sum = 0;
    for (int64_t e = 0; e < c->n; e++) {
      float m = fabsf(xl[e]), mp = fabsf(xprev[e]);
      float delta = rtol * (m > mp ? m : mp);
      if (delta < atol) delta = atol;
      float q = (xl[e] - xh[e]) / delta;
      sum += (double)q * q;
    }
    float error = (float)sqrt(sum) / (float)sqrt((double)c->n);
    /* PID controller (double, as the reference's Python floats) */
    double inv = 1.0 / ((double)error + 1e-8);
    if (!have_errs) {
      errs[0] = errs[1] = errs[2] = inv;
      have_errs = 1;
    }
    errs[0] = inv;
    double factor = pow(errs[0], b1) * pow(errs[1], b2) * pow(errs[2], b3);
    factor = 1 + atan(factor - 1);
    int accept = factor >= safety;
    if (accept) {
      errs[2] = errs[1];
      errs[1] = errs[0];
    }
    h *= factor;
    if (accept) {
      bm_copy(xprev, xl, c->n);
      BM_RETURN_IF_ERROR(bm_sctx_noise(c, sig_of(s), sig_of(t), nz));
      float k = (float)(su * s_noise);
      for (int64_t e = 0; e < c->n; e++) x[e] = xh[e] + k * nz[e];
      s = t;
      n_accept++;
    }
    attempts++;
    if (c->run->on_step) {
      bm_sampler_step r;
      memset(&r, 0, sizeof r);
      r.i = attempts - 1;
      r.sigma = r.sigma_hat = sig_of(s);
      r.x = x;
      r.denoised = den;
      r.n = c->n;
      r.t = s;
      r.h = h;
      r.error = error;
      r.n_accept = n_accept;
      c->run->on_step(c->run->step_user, &r);
    }
  }
  return NULL;
}

/* ------------------------------------------------------------ DPM-Solver++ */

/* DPM-Solver++(2S) ancestral. */
bm_status bm_sampler_dpmpp_2s_ancestral(bm_sctx *c) {
  float *x = c->run->x, *den = c->buf[0], *x2 = c->buf[1], *nz = c->buf[2];
  double eta = bm_opt(c->o.eta, 1.0), s_noise = bm_opt(c->o.s_noise, 1.0);
  for (int i = 0; i < c->steps; i++) {
    double s = c->sig[i], sn = c->sig[i + 1], down, up;
    BM_RETURN_IF_ERROR(bm_sctx_denoise(c, x, s, den, NULL));
    bm_ancestral_step(s, sn, eta, &down, &up);
    bm_sctx_report(c, i, s, s, x, den);
    if (down == 0) {
      /* Euler: x + (x - den) / s * (0 - s) */
      bm_lc2(x, c->n, 1.0 + (down - s) / s, x, -(down - s) / s, den);
    } else {
      double t = -log(s), tn = -log(down), h = tn - t, sm = t + 0.5 * h;
      bm_lc2(x2, c->n, exp(-sm) / s, x, -expm1(-0.5 * h), den);
      BM_RETURN_IF_ERROR(bm_sctx_denoise(c, x2, exp(-sm), den, NULL));
      bm_lc2(x, c->n, down / s, x, -expm1(-h), den);
    }
    if (sn > 0) {
      BM_RETURN_IF_ERROR(bm_sctx_noise(c, s, sn, nz));
      bm_lc2(x, c->n, 1.0, x, s_noise * up, nz);
    }
  }
  return NULL;
}

/* DPM-Solver++ (stochastic, 2 stages with r = 1/2, two noise draws). */
bm_status bm_sampler_dpmpp_sde(bm_sctx *c) {
  float *x = c->run->x, *den = c->buf[0], *x2 = c->buf[1], *den2 = c->buf[2], *nz = c->buf[3];
  double eta = bm_opt(c->o.eta, 1.0), s_noise = bm_opt(c->o.s_noise, 1.0), r = bm_opt(c->o.r, 0.5);
  double fac = 1 / (2 * r);
  for (int i = 0; i < c->steps; i++) {
    double s = c->sig[i], sn = c->sig[i + 1];
    BM_RETURN_IF_ERROR(bm_sctx_denoise(c, x, s, den, NULL));
    bm_sctx_report(c, i, s, s, x, den);
    if (sn == 0) {
      bm_copy(x, den, c->n);
      continue;
    }
    double ls = -log(s), lt = -log(sn), h = lt - ls, ls1 = ls + r * h, s1 = exp(-ls1);
    double sd, su;
    bm_ancestral_step(s, s1, eta, &sd, &su);
    double h_ = -log(sd) - ls;
    bm_lc2(x2, c->n, exp(-h_), x, -expm1(-h_), den);
    if (eta > 0 && s_noise > 0) {
      BM_RETURN_IF_ERROR(bm_sctx_noise(c, s, s1, nz));
      bm_lc2(x2, c->n, 1.0, x2, s_noise * su, nz);
    }
    BM_RETURN_IF_ERROR(bm_sctx_denoise(c, x2, s1, den2, NULL));
    bm_ancestral_step(s, sn, eta, &sd, &su);
    h_ = -log(sd) - ls;
    double k = -expm1(-h_);
    bm_lc3(x, c->n, exp(-h_), x, k * (1 - fac), den, k * fac, den2);
    if (eta > 0 && s_noise > 0) {
      BM_RETURN_IF_ERROR(bm_sctx_noise(c, s, sn, nz));
      bm_lc2(x, c->n, 1.0, x, s_noise * su, nz);
    }
  }
  return NULL;
}

/* DPM-Solver++(2M). */
bm_status bm_sampler_dpmpp_2m(bm_sctx *c) {
  float *x = c->run->x, *den = c->buf[0], *old = c->buf[1];
  for (int i = 0; i < c->steps; i++) {
    double s = c->sig[i], sn = c->sig[i + 1];
    BM_RETURN_IF_ERROR(bm_sctx_denoise(c, x, s, den, NULL));
    bm_sctx_report(c, i, s, s, x, den);
    if (sn == 0) {
      bm_copy(x, den, c->n); /* (0 / s) x - (-1) den */
    } else {
      double t = -log(s), tn = -log(sn), h = tn - t, k = -expm1(-h);
      if (i == 0) {
        bm_lc2(x, c->n, sn / s, x, k, den);
      } else {
        double r = (t + log(c->sig[i - 1])) / h;
        bm_lc3(x, c->n, sn / s, x, k * (1 + 1 / (2 * r)), den, -k / (2 * r), old);
      }
    }
    float *tmp = old;
    old = den;
    den = tmp;
  }
  return NULL;
}

/* DPM-Solver++(2M) SDE; variant 0 midpoint, 1 heun. */
bm_status bm_sampler_dpmpp_2m_sde(bm_sctx *c) {
  float *x = c->run->x, *den = c->buf[0], *old = c->buf[1], *nz = c->buf[2];
  double eta = bm_opt(c->o.eta, 1.0), s_noise = bm_opt(c->o.s_noise, 1.0);
  int have_old = 0;
  double h = 0, h_last = 0;
  for (int i = 0; i < c->steps; i++) {
    double s = c->sig[i], sn = c->sig[i + 1];
    BM_RETURN_IF_ERROR(bm_sctx_denoise(c, x, s, den, NULL));
    bm_sctx_report(c, i, s, s, x, den);
    if (sn == 0) {
      bm_copy(x, den, c->n);
    } else {
      h = log(s) - log(sn);
      double h_eta = h * (eta + 1), k = -expm1(-h_eta);
      if (!have_old) {
        bm_lc2(x, c->n, sn / s * exp(-h * eta), x, k, den);
      } else {
        double r = h_last / h, q;
        if (c->variant == 1) q = (k / (-h_eta) + 1) * (1 / r);
        else q = 0.5 * k * (1 / r);
        bm_lc3(x, c->n, sn / s * exp(-h * eta), x, k + q, den, -q, old);
      }
      if (eta > 0 && s_noise > 0) {
        BM_RETURN_IF_ERROR(bm_sctx_noise(c, s, sn, nz));
        bm_lc2(x, c->n, 1.0, x, sn * sqrt(-expm1(-2 * h * eta)) * s_noise, nz);
      }
    }
    float *tmp = old;
    old = den;
    den = tmp;
    have_old = 1;
    h_last = h;
  }
  return NULL;
}

/* DPM-Solver++(3M) SDE. */
bm_status bm_sampler_dpmpp_3m_sde(bm_sctx *c) {
  float *x = c->run->x, *den = c->buf[0], *d1 = c->buf[1], *d2 = c->buf[2], *nz = c->buf[3];
  double eta = bm_opt(c->o.eta, 1.0), s_noise = bm_opt(c->o.s_noise, 1.0);
  int nhist = 0; /* how many of d1, d2 (denoised history) and h_1, h_2 are set */
  double h = 0, h_1 = 0, h_2 = 0;
  for (int i = 0; i < c->steps; i++) {
    double s = c->sig[i], sn = c->sig[i + 1];
    BM_RETURN_IF_ERROR(bm_sctx_denoise(c, x, s, den, NULL));
    bm_sctx_report(c, i, s, s, x, den);
    if (sn == 0) {
      bm_copy(x, den, c->n);
    } else {
      h = log(s) - log(sn);
      double h_eta = h * (eta + 1), k = -expm1(-h_eta);
      double a = sn / s * exp(-h * eta);
      if (nhist >= 2) {
        double r0 = h_1 / h, r1 = h_2 / h;
        double phi2 = expm1(-h_eta) / h_eta + 1, phi3 = phi2 / h_eta - 0.5;
        /* d1_0 = (den - d1)/r0, d1_1 = (d1 - d2)/r1,
         * D1 = d1_0 + (d1_0 - d1_1) r0/(r0+r1), D2 = (d1_0 - d1_1)/(r0+r1) */
        for (int64_t e = 0; e < c->n; e++) {
          double d10 = ((double)den[e] - d1[e]) / r0, d11 = ((double)d1[e] - d2[e]) / r1;
          double D1 = d10 + (d10 - d11) * r0 / (r0 + r1), D2 = (d10 - d11) / (r0 + r1);
          x[e] = (float)(a * x[e] + k * den[e] + phi2 * D1 - phi3 * D2);
        }
      } else if (nhist == 1) {
        double r = h_1 / h, phi2 = expm1(-h_eta) / h_eta + 1;
        bm_lc3(x, c->n, a, x, k + phi2 / r, den, -phi2 / r, d1);
      } else {
        bm_lc2(x, c->n, a, x, k, den);
      }
      if (eta > 0 && s_noise > 0) {
        BM_RETURN_IF_ERROR(bm_sctx_noise(c, s, sn, nz));
        bm_lc2(x, c->n, 1.0, x, sn * sqrt(-expm1(-2 * h * eta)) * s_noise, nz);
      }
    }
    float *tmp = d2;
    d2 = d1;
    d1 = den;
    den = tmp;
    h_2 = h_1;
    h_1 = h;
    if (nhist < 2) nhist++;
  }
  return NULL;
}
