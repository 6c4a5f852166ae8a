/* samplers_comfy.c - samplers that only ComfyUI's comfy/k_diffusion/
 * sampling.py has: ddpm, lcm, the CFG++ samplers (euler, euler ancestral,
 * DPM++ 2S ancestral, DPM++ 2M), gradient_estimation, er_sde and the SEEDS
 * family (seeds_2, seeds_3, exp_heun_2_x0 (+sde)). Karras-style (EPS)
 * models: alpha = 1, lambda = -log sigma. */
#include <math.h>
#include <string.h>

#include "samplers_internal.h"

/* DDPM ancestral step in the VP parametrisation (generic_step_sampler). */
bm_status bm_sampler_ddpm(bm_sctx *c) {
  float *x = c->run->x, *den = c->buf[0], *nz = c->buf[1];
  for (int i = 0; i < c->steps; i++) {
    double s = c->sig[i], sn = c->sig[i + 1];
    BM_RETURN_IF_ERROR(bm_sctx_denoise(c, x, s, den, NULL));
    bm_sctx_report(c, i, s, s, x, den);
    /* float32 scalars as the reference computes them */
    float fs = (float)s, fsn = (float)sn;
    float ac = 1.0f / (fs * fs + 1.0f), acp = 1.0f / (fsn * fsn + 1.0f), alpha = ac / acp;
    double k0 = sqrt(1.0 / (double)alpha), inv = 1.0 / sqrt(1.0 + s * s);
    double kn = (1.0 - (double)alpha) / sqrt(1.0 - (double)ac);
    double out_scale = sn != 0 ? sqrt(1.0 + sn * sn) : 1.0;
    double kz = 0;
    if (sn > 0) {
      BM_RETURN_IF_ERROR(bm_sctx_noise(c, s, sn, nz));
      kz = sqrt((1.0 - (double)alpha) * (1.0 - (double)acp) / (1.0 - (double)ac));
    }
    for (int64_t e = 0; e < c->n; e++) {
      double eps = ((double)x[e] - den[e]) / s;
      double mu = k0 * ((double)x[e] * inv - kn * eps);
      if (sn > 0) mu += kz * nz[e];
      x[e] = (float)(mu * out_scale);
    }
  }
  return NULL;
}

/* LCM: x = denoised, re-noised to sigma_next (EPS noise scaling). */
bm_status bm_sampler_lcm(bm_sctx *c) {
  float *x = c->run->x, *den = c->buf[0], *nz = c->buf[1];
  double s_noise = bm_opt(c->o.s_noise, 1.0);
  for (int i = 0; i < c->steps; i++) {
    double s = c->sig[i], sn = c->sig[i + 1];
    BM_RETURN_IF_ERROR(bm_sctx_denoise(c, x, s, den, NULL));
    bm_sctx_report(c, i, s, s, x, den);
    bm_copy(x, den, c->n);
    if (sn > 0) {
      BM_RETURN_IF_ERROR(bm_sctx_noise(c, s, sn, nz));
      bm_lc2(x, c->n, 1.0, x, sn * s_noise, nz);
    }
  }
  return NULL;
}

/* Euler ancestral CFG++: the step direction uses the unconditional
 * prediction. variant 1: euler_cfg_pp (eta 0, s_noise 0). */
bm_status bm_sampler_euler_ancestral_cfg_pp(bm_sctx *c) {
  float *x = c->run->x, *den = c->buf[0], *unc = c->buf[1], *nz = c->buf[2];
  double eta = c->variant == 1 ? 0.0 : bm_opt(c->o.eta, 1.0);
  double s_noise = c->variant == 1 ? 0.0 : bm_opt(c->o.s_noise, 1.0);
  for (int i = 0; i < c->steps; i++) {
    double s = c->sig[i], sn = c->sig[i + 1];
    BM_RETURN_IF_ERROR(bm_sctx_denoise(c, x, s, den, unc));
    bm_sctx_report(c, i, s, s, x, den);
    if (sn == 0) {
      bm_copy(x, den, c->n);
      continue;
    }
    double down, up;
    bm_ancestral_step(s, sn, eta, &down, &up);
    /* x = den + down * (x - unc) / s */
    bm_lc3(x, c->n, 1.0, den, down / s, x, -down / s, unc);
    if (eta > 0 && s_noise > 0) {
      BM_RETURN_IF_ERROR(bm_sctx_noise(c, s, sn, nz));
      bm_lc2(x, c->n, 1.0, x, s_noise * up, nz);
    }
  }
  return NULL;
}

/* DPM-Solver++(2S) ancestral CFG++ (ComfyUI's version: the second model
 * call contributes only its unconditional prediction, and the guidance
 * vector den - uncond of the first call is added back every step). */
bm_status bm_sampler_dpmpp_2s_ancestral_cfg_pp(bm_sctx *c) {
  float *x = c->run->x, *den = c->buf[0], *unc = c->buf[1], *x2 = c->buf[2];
  float *den2 = c->buf[3], *unc2 = c->buf[4], *nz = c->buf[5], *gv = c->buf[6];
  double eta = bm_opt(c->o.eta, 1.0), s_noise = bm_opt(c->o.s_noise, 1.0);
  for (int i = 0; i < c->steps; i++) {
    double s = c->sig[i], sn = c->sig[i + 1], down, up;
    BM_RETURN_IF_ERROR(bm_sctx_denoise(c, x, s, den, unc));
    bm_lc2(gv, c->n, 1.0, den, -1.0, unc);
    bm_ancestral_step(s, sn, eta, &down, &up);
    bm_sctx_report(c, i, s, s, x, den);
    if (down == 0) {
      bm_lc2(x, c->n, 1.0 + (down - s) / s, x, -(down - s) / s, unc);
    } else {
      double t = -log(s), tn = -log(down), h = tn - t, sm = t + 0.5 * h;
      bm_lc2(x2, c->n, exp(-sm) / s, x, -expm1(-0.5 * h), unc);
      BM_RETURN_IF_ERROR(bm_sctx_denoise(c, x2, exp(-sm), den2, unc2));
      bm_lc2(x, c->n, down / s, x, -expm1(-h), unc2);
    }
    if (sn > 0) {
      BM_RETURN_IF_ERROR(bm_sctx_noise(c, s, sn, nz));
      bm_lc2(x, c->n, 1.0, x, s_noise * up, nz);
    }
    bm_lc2(x, c->n, 1.0, x, 1.0, gv);
  }
  return NULL;
}

/* DPM-Solver++(2M) CFG++. */
bm_status bm_sampler_dpmpp_2m_cfg_pp(bm_sctx *c) {
  float *x = c->run->x, *den = c->buf[0], *unc = c->buf[1], *old_unc = c->buf[2];
  for (int i = 0; i < c->steps; i++) {
    double s = c->sig[i], sn = c->sig[i + 1];
    BM_RETURN_IF_ERROR(bm_sctx_denoise(c, x, s, den, unc));
    bm_sctx_report(c, i, s, s, x, den);
    if (sn == 0) {
      bm_copy(x, den, c->n); /* exp(-h) = 0 */
    } else {
      double h = log(s) - log(sn), eh = exp(-h);
      if (i == 0) {
        bm_lc3(x, c->n, 1.0, den, -eh, unc, eh, x);
      } else {
        double h_last = log(c->sig[i - 1]) - log(s), r = h_last / h;
        double k = -expm1(-h) * (1 / (2 * r));
        /* den - eh unc + k (den - old_unc) + eh x */
        bm_lc4(x, c->n, 1.0 + k, den, -eh, unc, -k, old_unc, eh, x);
      }
    }
    float *tmp = old_unc;
    old_unc = unc;
    unc = tmp;
  }
  return NULL;
}

/* Gradient estimation (ge_gamma 2); variant 1 is the CFG++ version. */
bm_status bm_sampler_gradient_estimation(bm_sctx *c) {
  int cfgpp = c->variant == 1;
  float *x = c->run->x, *den = c->buf[0], *unc = c->buf[1], *d = c->buf[2], *old_d = c->buf[3];
  double gamma = bm_opt(c->o.ge_gamma, 2.0);
  for (int i = 0; i < c->steps; i++) {
    double s = c->sig[i], sn = c->sig[i + 1];
    BM_RETURN_IF_ERROR(bm_sctx_denoise(c, x, s, den, cfgpp ? unc : NULL));
    const float *base = cfgpp ? unc : den;
    for (int64_t e = 0; e < c->n; e++) d[e] = (float)(((double)x[e] - base[e]) / s);
    bm_sctx_report(c, i, s, s, x, den);
    double dt = sn - s;
    if (sn == 0) {
      bm_copy(x, den, c->n);
    } else {
      if (cfgpp) bm_lc2(x, c->n, 1.0, den, sn, d);
      else bm_lc2(x, c->n, 1.0, x, dt, d);
      if (i >= 1) bm_lc3(x, c->n, 1.0, x, (gamma - 1) * dt, d, -(gamma - 1) * dt, old_d);
    }
    float *tmp = old_d;
    old_d = d;
    d = tmp;
  }
  return NULL;
}

static double er_scaler(double x) { return x * (exp(pow(x, 0.3)) + 10.0); }

/* ER-SDE-Solver-3 (VP, default noise scaler, 200-point integrals). */
bm_status bm_sampler_er_sde(bm_sctx *c) {
  float *x = c->run->x, *den = c->buf[0], *old = c->buf[1], *dd = c->buf[2], *old_dd = c->buf[3];
  float *nz = c->buf[4];
  double s_noise = bm_opt(c->o.s_noise, 1.0);
  const int np = 200;
  for (int i = 0; i < c->steps; i++) {
    double s = c->sig[i], sn = c->sig[i + 1];
    BM_RETURN_IF_ERROR(bm_sctx_denoise(c, x, s, den, NULL));
    bm_sctx_report(c, i, s, s, x, den);
    int stage = i + 1 < 3 ? i + 1 : 3;
    if (sn == 0) {
      bm_copy(x, den, c->n);
    } else {
      double ls = s, lt = sn; /* er_lambda = sigma / alpha = sigma */
      double r = er_scaler(lt) / er_scaler(ls);
      bm_lc2(x, c->n, r, x, 1 - r, den);
      if (stage >= 2) {
        double dt = lt - ls, step = -dt / np, S = 0, Su = 0;
        for (int k = 0; k < np; k++) {
          double pos = lt + k * step, sc = er_scaler(pos);
          S += 1 / sc;
          Su += (pos - ls) / sc;
        }
        S *= step;
        Su *= step;
        double inv = 1.0 / (ls - c->sig[i - 1]);
        for (int64_t e = 0; e < c->n; e++) dd[e] = (float)(((double)den[e] - old[e]) * inv);
        bm_lc2(x, c->n, 1.0, x, dt + S * er_scaler(lt), dd);
        if (stage >= 3) {
          double q = (dt * dt / 2 + Su * er_scaler(lt)) / ((ls - c->sig[i - 2]) / 2);
          bm_lc3(x, c->n, 1.0, x, q, dd, -q, old_dd);
        }
        float *tmp = old_dd;
        old_dd = dd;
        dd = tmp;
      }
      if (s_noise > 0) {
        double v = lt * lt - ls * ls * r * r;
        double k = v > 0 ? sqrt(v) : 0.0;
        BM_RETURN_IF_ERROR(bm_sctx_noise(c, s, sn, nz));
        bm_lc2(x, c->n, 1.0, x, s_noise * k, nz);
      }
    }
    bm_copy(old, den, c->n);
  }
  return NULL;
}

static double phi1(double h) { return expm1(h); }
static double phi2(double h) { return (expm1(h) - h) / h; }

/* SEEDS-2. variant 0: seeds_2 (eta 1, r 1/2, phi_1); 1: exp_heun_2_x0
 * (eta 0, r 1, phi_2); 2: exp_heun_2_x0_sde (eta 1, r 1, phi_2). */
bm_status bm_sampler_seeds_2(bm_sctx *c) {
  float *x = c->run->x, *den = c->buf[0], *x2 = c->buf[1], *den2 = c->buf[2], *nz = c->buf[3];
  float *sde = c->buf[4];
  double eta = c->variant == 1 ? 0.0 : bm_opt(c->o.eta, 1.0);
  double s_noise = c->variant == 1 ? 0.0 : bm_opt(c->o.s_noise, 1.0);
  double r = c->variant == 0 ? bm_opt(c->o.r, 0.5) : 1.0;
  int use_phi2 = c->variant != 0;
  int inject = eta > 0 && s_noise > 0;
  double fac = 1 / (2 * r);
  for (int i = 0; i < c->steps; i++) {
    double s = c->sig[i], sn = c->sig[i + 1];
    BM_RETURN_IF_ERROR(bm_sctx_denoise(c, x, s, den, NULL));
    bm_sctx_report(c, i, s, s, x, den);
    if (sn == 0) {
      bm_copy(x, den, c->n);
      continue;
    }
    double ls = -log(s), lt = -log(sn), h = lt - ls, h_eta = h * (eta + 1);
    double ls1 = ls + r * (lt - ls), s1 = exp(-ls1);
    bm_lc2(x2, c->n, s1 / s * exp(-r * h * eta), x, -phi1(-r * h_eta), den);
    if (inject) {
      BM_RETURN_IF_ERROR(bm_sctx_noise(c, s, s1, nz));
      bm_lc1(sde, c->n, sqrt(-expm1(-2 * r * h * eta)), nz);
      bm_lc2(x2, c->n, 1.0, x2, s1 * s_noise, sde);
    }
    BM_RETURN_IF_ERROR(bm_sctx_denoise(c, x2, s1, den2, NULL));
    double a = sn / s * exp(-h * eta);
    if (!use_phi2) {
      double k = -phi1(-h_eta);
      bm_lc3(x, c->n, a, x, k * (1 - fac), den, k * fac, den2);
    } else {
      double b2 = phi2(-h_eta) / r, b1 = phi1(-h_eta) - b2;
      bm_lc3(x, c->n, a, x, -b1, den, -b2, den2);
    }
    if (inject) {
      double seg = (r - 1) * h * eta;
      BM_RETURN_IF_ERROR(bm_sctx_noise(c, s1, sn, nz));
      bm_lc2(sde, c->n, exp(seg), sde, sqrt(-expm1(2 * seg)), nz);
      bm_lc2(x, c->n, 1.0, x, sn * s_noise, sde);
    }
  }
  return NULL;
}

/* SEEDS-3 (r_1 = 1/3, r_2 = 2/3). */
bm_status bm_sampler_seeds_3(bm_sctx *c) {
  float *x = c->run->x, *den = c->buf[0], *x2 = c->buf[1], *den2 = c->buf[2], *nz = c->buf[3];
  float *sde = c->buf[4], *den3 = c->buf[5];
  double eta = bm_opt(c->o.eta, 1.0), s_noise = bm_opt(c->o.s_noise, 1.0);
  const double r1 = 1.0 / 3, r2 = 2.0 / 3;
  int inject = eta > 0 && s_noise > 0;
  for (int i = 0; i < c->steps; i++) {
    double s = c->sig[i], sn = c->sig[i + 1];
    BM_RETURN_IF_ERROR(bm_sctx_denoise(c, x, s, den, NULL));
    bm_sctx_report(c, i, s, s, x, den);
    if (sn == 0) {
      bm_copy(x, den, c->n);
      continue;
    }
    double ls = -log(s), lt = -log(sn), h = lt - ls, h_eta = h * (eta + 1);
    double s1 = exp(-(ls + r1 * (lt - ls))), s2 = exp(-(ls + r2 * (lt - ls)));
    bm_lc2(x2, c->n, s1 / s * exp(-r1 * h * eta), x, -phi1(-r1 * h_eta), den);
    if (inject) {
      BM_RETURN_IF_ERROR(bm_sctx_noise(c, s, s1, nz));
      bm_lc1(sde, c->n, sqrt(-expm1(-2 * r1 * h * eta)), nz);
      bm_lc2(x2, c->n, 1.0, x2, s1 * s_noise, sde);
    }
    BM_RETURN_IF_ERROR(bm_sctx_denoise(c, x2, s1, den2, NULL));
    double a32 = r2 / r1 * phi2(-r2 * h_eta), a31 = phi1(-r2 * h_eta) - a32;
    bm_lc3(x2, c->n, s2 / s * exp(-r2 * h * eta), x, -a31, den, -a32, den2);
    if (inject) {
      double seg = (r1 - r2) * h * eta;
      BM_RETURN_IF_ERROR(bm_sctx_noise(c, s1, s2, nz));
      bm_lc2(sde, c->n, exp(seg), sde, sqrt(-expm1(2 * seg)), nz);
      bm_lc2(x2, c->n, 1.0, x2, s2 * s_noise, sde);
    }
    BM_RETURN_IF_ERROR(bm_sctx_denoise(c, x2, s2, den3, NULL));
    double b3 = phi2(-h_eta) / r2, b1 = phi1(-h_eta) - b3;
    bm_lc3(x, c->n, sn / s * exp(-h * eta), x, -b1, den, -b3, den3);
    if (inject) {
      double seg = (r2 - 1) * h * eta;
      BM_RETURN_IF_ERROR(bm_sctx_noise(c, s2, sn, nz));
      bm_lc2(sde, c->n, exp(seg), sde, sqrt(-expm1(2 * seg)), nz);
      bm_lc2(x, c->n, 1.0, x, sn * s_noise, sde);
    }
  }
  return NULL;
}
