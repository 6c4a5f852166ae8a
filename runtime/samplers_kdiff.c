/* samplers_kdiff.c - the classic Karras-ODE samplers of k-diffusion:
 * euler, euler_ancestral, heun (+ ComfyUI's heunpp2), dpm_2 (+ ancestral)
 * and lms. Each works on d = (x - D(x, sigma)) / sigma. */
#include <math.h>
#include <string.h>

#include "samplers_internal.h"

/* d = (x - den) / sigma */
static void to_d(float *d, const float *x, const float *den, double sigma, int64_t n) {
  for (int64_t i = 0; i < n; i++) d[i] = (float)(((double)x[i] - den[i]) / sigma);
}

/* Karras' churn: raises sigma to sigma_hat and adds matching noise. */
static bm_status churn(bm_sctx *c, int i, float *x, double *sigma_hat) {
  double s = c->sig[i];
  double s_churn = bm_opt(c->o.s_churn, 0.0), tmin = bm_opt(c->o.s_tmin, 0.0);
  double tmax = bm_opt(c->o.s_tmax, INFINITY), s_noise = bm_opt(c->o.s_noise, 1.0);
  double gamma = 0.0;
  if (s_churn > 0 && tmin <= s && s <= tmax) {
    gamma = s_churn / c->steps;
    if (gamma > sqrt(2.0) - 1) gamma = sqrt(2.0) - 1;
  }
  *sigma_hat = s * (gamma + 1);
  if (gamma > 0) {
    float *eps = c->buf[10];
    BM_RETURN_IF_ERROR(bm_sctx_noise(c, s, c->sig[i + 1], eps));
    double k = s_noise * sqrt(*sigma_hat * *sigma_hat - s * s);
    bm_lc2(x, c->n, 1.0, x, k, eps);
  }
  return NULL;
}

/* Euler (Karras Algorithm 2 with Euler steps). */
bm_status bm_sampler_euler(bm_sctx *c) {
  float *x = c->run->x, *den = c->buf[0], *d = c->buf[1];
  for (int i = 0; i < c->steps; i++) {
    double sh;
    BM_RETURN_IF_ERROR(churn(c, i, x, &sh));
    BM_RETURN_IF_ERROR(bm_sctx_denoise(c, x, sh, den, NULL));
    to_d(d, x, den, sh, c->n);
    bm_sctx_report(c, i, c->sig[i], sh, x, den);
    bm_lc2(x, c->n, 1.0, x, c->sig[i + 1] - sh, d);
  }
  return NULL;
}

/* Ancestral Euler: step to sigma_down, add sigma_up noise. */
bm_status bm_sampler_euler_ancestral(bm_sctx *c) {
  float *x = c->run->x, *den = c->buf[0], *d = c->buf[1], *nz = c->buf[2];
  double eta = bm_opt(c->o.eta, 1.0), s_noise = bm_opt(c->o.s_noise, 1.0);
  for (int i = 0; i < c->steps; i++) {
    double s = c->sig[i], sn = c->sig[i + 1], down, up;
    BM_RETURN_IF_ERROR(bm_sctx_denoise(c, x, s, den, NULL));
    bm_ancestral_step(s, sn, eta, &down, &up);
    bm_sctx_report(c, i, s, s, x, den);
    if (down == 0) {
      bm_copy(x, den, c->n);
    } else {
      to_d(d, x, den, s, c->n);
      bm_lc2(x, c->n, 1.0, x, down - s, d);
    }
    if (sn > 0) {
      BM_RETURN_IF_ERROR(bm_sctx_noise(c, s, sn, nz));
      bm_lc2(x, c->n, 1.0, x, s_noise * up, nz);
    }
  }
  return NULL;
}

/* Heun (Karras Algorithm 2); Euler on the step to sigma 0. */
bm_status bm_sampler_heun(bm_sctx *c) {
  float *x = c->run->x, *den = c->buf[0], *d = c->buf[1], *x2 = c->buf[2], *d2 = c->buf[3];
  for (int i = 0; i < c->steps; i++) {
    double sh, sn = c->sig[i + 1];
    BM_RETURN_IF_ERROR(churn(c, i, x, &sh));
    BM_RETURN_IF_ERROR(bm_sctx_denoise(c, x, sh, den, NULL));
    to_d(d, x, den, sh, c->n);
    bm_sctx_report(c, i, c->sig[i], sh, x, den);
    double dt = sn - sh;
    if (sn == 0) {
      bm_lc2(x, c->n, 1.0, x, dt, d);
    } else {
      bm_lc2(x2, c->n, 1.0, x, dt, d);
      BM_RETURN_IF_ERROR(bm_sctx_denoise(c, x2, sn, den, NULL));
      to_d(d2, x2, den, sn, c->n);
      bm_lc3(x, c->n, 1.0, x, dt / 2, d, dt / 2, d2);
    }
  }
  return NULL;
}

/* Heun++ (ComfyUI heunpp2): three-point weighted slopes near the start. */
bm_status bm_sampler_heunpp2(bm_sctx *c) {
  float *x = c->run->x, *den = c->buf[0], *d = c->buf[1], *x2 = c->buf[2], *d2 = c->buf[3];
  float *x3 = c->buf[4], *d3 = c->buf[5];
  double s_end = c->sig[c->steps], s0 = c->sig[0];
  for (int i = 0; i < c->steps; i++) {
    double sh, sn = c->sig[i + 1];
    BM_RETURN_IF_ERROR(churn(c, i, x, &sh));
    BM_RETURN_IF_ERROR(bm_sctx_denoise(c, x, sh, den, NULL));
    to_d(d, x, den, sh, c->n);
    bm_sctx_report(c, i, c->sig[i], sh, x, den);
    double dt = sn - sh;
    if (sn == s_end) {
      bm_lc2(x, c->n, 1.0, x, dt, d);
    } else if (c->sig[i + 2] == s_end) {
      bm_lc2(x2, c->n, 1.0, x, dt, d);
      BM_RETURN_IF_ERROR(bm_sctx_denoise(c, x2, sn, den, NULL));
      to_d(d2, x2, den, sn, c->n);
      double w2 = sn / (2 * s0), w1 = 1 - w2;
      bm_lc3(x, c->n, 1.0, x, dt * w1, d, dt * w2, d2);
    } else {
      double sn2 = c->sig[i + 2];
      bm_lc2(x2, c->n, 1.0, x, dt, d);
      BM_RETURN_IF_ERROR(bm_sctx_denoise(c, x2, sn, den, NULL));
      to_d(d2, x2, den, sn, c->n);
      bm_lc2(x3, c->n, 1.0, x2, sn2 - sn, d2);
      BM_RETURN_IF_ERROR(bm_sctx_denoise(c, x3, sn2, den, NULL));
      to_d(d3, x3, den, sn2, c->n);
      double w = 3 * s0, w2 = sn / w, w3 = sn2 / w, w1 = 1 - w2 - w3;
      bm_lc4(x, c->n, 1.0, x, dt * w1, d, dt * w2, d2, dt * w3, d3);
    }
  }
  return NULL;
}

/* DPM-2: midpoint at the log-mean sigma; Euler to sigma 0. */
bm_status bm_sampler_dpm_2(bm_sctx *c) {
  float *x = c->run->x, *den = c->buf[0], *d = c->buf[1], *x2 = c->buf[2], *d2 = c->buf[3];
  for (int i = 0; i < c->steps; i++) {
    double sh, sn = c->sig[i + 1];
    BM_RETURN_IF_ERROR(churn(c, i, x, &sh));
    BM_RETURN_IF_ERROR(bm_sctx_denoise(c, x, sh, den, NULL));
    to_d(d, x, den, sh, c->n);
    bm_sctx_report(c, i, c->sig[i], sh, x, den);
    if (sn == 0) {
      bm_lc2(x, c->n, 1.0, x, sn - sh, d);
    } else {
      double mid = exp(0.5 * (log(sh) + log(sn)));
      bm_lc2(x2, c->n, 1.0, x, mid - sh, d);
      BM_RETURN_IF_ERROR(bm_sctx_denoise(c, x2, mid, den, NULL));
      to_d(d2, x2, den, mid, c->n);
      bm_lc2(x, c->n, 1.0, x, sn - sh, d2);
    }
  }
  return NULL;
}

/* Ancestral DPM-2. */
bm_status bm_sampler_dpm_2_ancestral(bm_sctx *c) {
  float *x = c->run->x, *den = c->buf[0], *d = c->buf[1], *x2 = c->buf[2], *d2 = c->buf[3];
  float *nz = c->buf[4];
  double eta = bm_opt(c->o.eta, 1.0), s_noise = bm_opt(c->o.s_noise, 1.0);
  for (int i = 0; i < c->steps; i++) {
    double s = c->sig[i], sn = c->sig[i + 1], down, up;
    BM_RETURN_IF_ERROR(bm_sctx_denoise(c, x, s, den, NULL));
    bm_ancestral_step(s, sn, eta, &down, &up);
    bm_sctx_report(c, i, s, s, x, den);
    to_d(d, x, den, s, c->n);
    if (down == 0) {
      bm_lc2(x, c->n, 1.0, x, down - s, d);
    } else {
      double mid = exp(0.5 * (log(s) + log(down)));
      bm_lc2(x2, c->n, 1.0, x, mid - s, d);
      BM_RETURN_IF_ERROR(bm_sctx_denoise(c, x2, mid, den, NULL));
      to_d(d2, x2, den, mid, c->n);
      bm_lc2(x, c->n, 1.0, x, down - s, d2);
      BM_RETURN_IF_ERROR(bm_sctx_noise(c, s, sn, nz));
      bm_lc2(x, c->n, 1.0, x, s_noise * up, nz);
    }
  }
  return NULL;
}

/* Integral over [t[i], t[i+1]] of the j-th Lagrange basis polynomial through
 * t[i], t[i-1], ..., t[i-order+1] (exact: 8-point Gauss-Legendre). */
static double lms_coeff(int order, const float *t, int i, int j) {
  static const double gx[4] = {0.1834346424956498, 0.5255324099163290, 0.7966664774136267,
                               0.9602898564975363};
  static const double gw[4] = {0.3626837833783620, 0.3137066458778873, 0.2223810344533745,
                               0.1012285362903763};
  double a = t[i], b = t[i + 1], mid = 0.5 * (a + b), half = 0.5 * (b - a), sum = 0;
  for (int q = 0; q < 8; q++) {
    double tau = mid + half * (q < 4 ? -gx[q] : gx[q - 4]);
    double w = gw[q % 4], prod = 1.0;
    for (int k = 0; k < order; k++)
      if (k != j) prod *= (tau - t[i - k]) / ((double)t[i - j] - t[i - k]);
    sum += w * prod;
  }
  return sum * half;
}

/* Linear multistep (order 4) on d. variant 1 (ComfyUI): the step to sigma 0
 * returns denoised instead of an LMS step. */
bm_status bm_sampler_lms(bm_sctx *c) {
  int order = c->o.order > 0 ? c->o.order : 4;
  if (order > 8) order = 8;
  float *x = c->run->x, *den = c->buf[0];
  float *ds[8];
  for (int k = 0; k < order; k++) ds[k] = c->buf[1 + k];
  int nd = 0;
  for (int i = 0; i < c->steps; i++) {
    double s = c->sig[i];
    BM_RETURN_IF_ERROR(bm_sctx_denoise(c, x, s, den, NULL));
    if (nd == order) { /* drop the oldest: rotate the ring */
      float *old = ds[0];
      memmove(ds, ds + 1, sizeof(float *) * (size_t)(order - 1));
      ds[order - 1] = old;
      nd--;
    }
    to_d(ds[nd], x, den, s, c->n);
    nd++;
    bm_sctx_report(c, i, s, s, x, den);
    if (c->variant == 1 && c->sig[i + 1] == 0) {
      bm_copy(x, den, c->n);
      continue;
    }
    int cur = i + 1 < order ? i + 1 : order;
    double co[8];
    for (int j = 0; j < cur; j++) co[j] = lms_coeff(cur, c->sig, i, j);
    for (int64_t e = 0; e < c->n; e++) {
      double acc = x[e];
      for (int j = 0; j < cur; j++) acc += co[j] * ds[nd - 1 - j][e];
      x[e] = (float)acc;
    }
  }
  return NULL;
}
