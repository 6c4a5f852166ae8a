/* samplers_multistep.c - multistep samplers: iPNDM (+ variable step),
 * DEIS ('tab' coefficients), UniPC (bh1/bh2, also used by the diffusers
 * scheduler), SA-Solver (+ PECE) and res_multistep (+ ancestral, CFG++). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "samplers_internal.h"
#include "samplers_unipc.h"

/* Shifts a history ring of pointers: hist[0] oldest, hist[cap-1] newest. */
static void push_hist(float **hist, int *len, int cap, float **spare) {
  /* the caller has written the new entry into *spare */
  float *nw = *spare;
  if (*len == cap) {
    *spare = hist[0];
    memmove(hist, hist + 1, sizeof(float *) * (size_t)(cap - 1));
    hist[cap - 1] = nw;
  } else {
    *spare = hist[*len];
    hist[(*len)++] = nw;
  }
}

/* iPNDM: Adams-Bashforth on d with fixed coefficients (max_order 4). */
bm_status bm_sampler_ipndm(bm_sctx *c) {
  int max_order = c->o.order > 0 ? c->o.order : 4;
  if (max_order > 4) max_order = 4;
  float *x = c->run->x, *den = c->buf[0], *d = c->buf[1];
  float *hist[3] = {c->buf[2], c->buf[3], c->buf[4]};
  int nh = 0;
  for (int i = 0; i < c->steps; i++) {
    double t = c->sig[i], tn = c->sig[i + 1];
    BM_RETURN_IF_ERROR(bm_sctx_denoise(c, x, t, den, NULL));
    bm_sctx_report(c, i, t, t, x, den);
    for (int64_t e = 0; e < c->n; e++) d[e] = (float)(((double)x[e] - den[e]) / t);
    int order = i + 1 < max_order ? i + 1 : max_order;
    double dt = tn - t;
    float **b = hist + nh; /* b[-1] newest */
    if (tn == 0) bm_copy(x, den, c->n);
    else if (order == 1) bm_lc2(x, c->n, 1.0, x, dt, d);
    else if (order == 2) bm_lc3(x, c->n, 1.0, x, dt * 1.5, d, -dt * 0.5, b[-1]);
    else if (order == 3)
      bm_lc4(x, c->n, 1.0, x, dt * 23 / 12, d, -dt * 16 / 12, b[-1], dt * 5 / 12, b[-2]);
    else
      bm_lc5(x, c->n, 1.0, x, dt * 55 / 24, d, -dt * 59 / 24, b[-1], dt * 37 / 24, b[-2],
             -dt * 9 / 24, b[-3]);
    if (max_order > 1) push_hist(hist, &nh, max_order - 1, &d);
  }
  return NULL;
}

/* iPNDM with variable step sizes (coefficients from the step ratios). */
bm_status bm_sampler_ipndm_v(bm_sctx *c) {
  int max_order = c->o.order > 0 ? c->o.order : 4;
  if (max_order > 4) max_order = 4;
  const float *ts = c->sig;
  float *x = c->run->x, *den = c->buf[0], *d = c->buf[1];
  float *hist[3] = {c->buf[2], c->buf[3], c->buf[4]};
  int nh = 0;
  for (int i = 0; i < c->steps; i++) {
    double t = ts[i], tn = ts[i + 1];
    BM_RETURN_IF_ERROR(bm_sctx_denoise(c, x, t, den, NULL));
    bm_sctx_report(c, i, t, t, x, den);
    for (int64_t e = 0; e < c->n; e++) d[e] = (float)(((double)x[e] - den[e]) / t);
    int order = i + 1 < max_order ? i + 1 : max_order;
    double hn = tn - t;
    float **b = hist + nh;
    if (tn == 0) {
      bm_copy(x, den, c->n);
    } else if (order == 1) {
      bm_lc2(x, c->n, 1.0, x, hn, d);
    } else if (order == 2) {
      double h1 = t - ts[i - 1];
      double c1 = (2 + hn / h1) / 2, c2 = -(hn / h1) / 2;
      bm_lc3(x, c->n, 1.0, x, hn * c1, d, hn * c2, b[-1]);
    } else if (order == 3) {
      double h1 = t - ts[i - 1], h2 = ts[i - 1] - ts[i - 2];
      double temp = (1 - hn / (3 * (hn + h1)) * (hn * (hn + h1)) / (h1 * (h1 + h2))) / 2;
      double c1 = (2 + hn / h1) / 2 + temp;
      double c2 = -(hn / h1) / 2 - (1 + h1 / h2) * temp;
      double c3 = temp * h1 / h2;
      bm_lc4(x, c->n, 1.0, x, hn * c1, d, hn * c2, b[-1], hn * c3, b[-2]);
    } else {
      double h1 = t - ts[i - 1], h2 = ts[i - 1] - ts[i - 2], h3 = ts[i - 2] - ts[i - 3];
      double temp1 = (1 - hn / (3 * (hn + h1)) * (hn * (hn + h1)) / (h1 * (h1 + h2))) / 2;
      double temp2 = ((1 - hn / (3 * (hn + h1))) / 2 + (1 - hn / (2 * (hn + h1))) * hn / (6 * (hn + h1 + h2))) *
                     (hn * (hn + h1) * (hn + h1 + h2)) / (h1 * (h1 + h2) * (h1 + h2 + h3));
      double q = h1 * (h1 + h2) / (h2 * (h2 + h3));
      double c1 = (2 + hn / h1) / 2 + temp1 + temp2;
      double c2 = -(hn / h1) / 2 - (1 + h1 / h2) * temp1 - (1 + h1 / h2 + q) * temp2;
      double c3 = temp1 * h1 / h2 + (h1 / h2 + q * (1 + h2 / h3)) * temp2;
      double c4 = -temp2 * q * h1 / h2;
      bm_lc5(x, c->n, 1.0, x, hn * c1, d, hn * c2, b[-1], hn * c3, b[-2], hn * c4, b[-3]);
    }
    if (max_order > 1) push_hist(hist, &nh, max_order - 1, &d);
  }
  return NULL;
}

/* ------------------------------------------------------------------ DEIS */

void bm_deis_coeffs(const float *sigmas, int steps, int max_order, double (*coeff)[4]) {
  /* edm2t in float32 as the reference (torch float32 tensors); the
   * integrals below in double. */
  const float eps_s = 1e-3f, smin = 0.002f, smax = 80.0f;
  float beta_d = 2.0f * (logf(smin * smin + 1.0f) / eps_s - logf(smax * smax + 1.0f)) / (eps_s - 1.0f);
  float beta_min = logf(smax * smax + 1.0f) - 0.5f * beta_d;
  double b0 = beta_min, b1 = (double)(beta_d + beta_min);
  double *ts = malloc(sizeof(double) * (size_t)(steps + 1));
  if (!ts) {
    for (int i = 0; i < steps; i++)
      for (int k = 0; k < 4; k++) coeff[i][k] = NAN;
    return;
  }
  for (int i = 0; i <= steps; i++) {
    float s = sigmas[i];
    ts[i] = (sqrtf(beta_min * beta_min + 2.0f * beta_d * logf(s * s + 1.0f)) - beta_min) / beta_d;
  }
  const int N = 10000;
  for (int i = 0; i < steps; i++) {
    for (int k = 0; k < 4; k++) coeff[i][k] = NAN;
    int order = i + 1 < max_order ? i + 1 : max_order;
    if (order == 1) continue;
    double tc = ts[i], tn = ts[i + 1], dtau = (tn - tc) / N;
    double acc[4] = {0, 0, 0, 0};
    for (int q = 0; q < N; q++) {
      double tau = tc + (tn - tc) * q / (N - 1);
      double la = -0.5 * tau * tau * (b1 - b0) - tau * b0, alpha = exp(la);
      double dla = -(tau * (b1 - b0) + b0);
      double integrand = -0.5 * dla / sqrt(alpha * (1 - alpha));
      for (int j = 0; j < order; j++) {
        double poly = 1;
        for (int k = 0; k < order; k++)
          if (k != j) poly *= (tau - ts[i - k]) / (ts[i - j] - ts[i - k]);
        acc[j] += integrand * poly;
      }
    }
    for (int j = 0; j < order; j++) coeff[i][j] = acc[j] * dtau;
  }
  free(ts);
}

/* DEIS (max_order 3, 'tab'): Adams-type steps with exponential-integrator
 * coefficients integrated numerically in the VP time of the schedule. */
bm_status bm_sampler_deis(bm_sctx *c) {
  int max_order = c->o.order > 0 ? c->o.order : 3;
  if (max_order > 4) max_order = 4;
  double(*co)[4] = malloc(sizeof(double[4]) * (size_t)c->steps);
  if (!co) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "deis: coefficients");
  bm_deis_coeffs(c->sig, c->steps, max_order, co);
  float *x = c->run->x, *den = c->buf[0], *d = c->buf[1];
  float *hist[3] = {c->buf[2], c->buf[3], c->buf[4]};
  int nh = 0;
  bm_status st = NULL;
  for (int i = 0; i < c->steps; i++) {
    double t = c->sig[i], tn = c->sig[i + 1];
    if ((st = bm_sctx_denoise(c, x, t, den, NULL))) break;
    bm_sctx_report(c, i, t, t, x, den);
    for (int64_t e = 0; e < c->n; e++) d[e] = (float)(((double)x[e] - den[e]) / t);
    int order = i + 1 < max_order ? i + 1 : max_order;
    if (tn <= 0) order = 1;
    float **b = hist + nh;
    if (order == 1) bm_lc2(x, c->n, 1.0, x, tn - t, d);
    else if (order == 2) bm_lc3(x, c->n, 1.0, x, co[i][0], d, co[i][1], b[-1]);
    else if (order == 3) bm_lc4(x, c->n, 1.0, x, co[i][0], d, co[i][1], b[-1], co[i][2], b[-2]);
    else
      bm_lc5(x, c->n, 1.0, x, co[i][0], d, co[i][1], b[-1], co[i][2], b[-2], co[i][3], b[-3]);
    if (max_order > 1) push_hist(hist, &nh, max_order - 1, &d);
  }
  free(co);
  return st;
}

/* ----------------------------------------------------------------- UniPC */

/* Solves the k x k system A y = b (k <= 8) by Gaussian elimination with
 * partial pivoting; A is row-major and destroyed. */
static int solve_small(double *A, double *b, int k) {
  for (int col = 0; col < k; col++) {
    int piv = col;
    for (int r = col + 1; r < k; r++)
      if (fabs(A[r * k + col]) > fabs(A[piv * k + col])) piv = r;
    if (A[piv * k + col] == 0) return -1;
    if (piv != col) {
      for (int j = 0; j < k; j++) {
        double t = A[col * k + j];
        A[col * k + j] = A[piv * k + j];
        A[piv * k + j] = t;
      }
      double t = b[col];
      b[col] = b[piv];
      b[piv] = t;
    }
    for (int r = col + 1; r < k; r++) {
      double f = A[r * k + col] / A[col * k + col];
      for (int j = col; j < k; j++) A[r * k + j] -= f * A[col * k + j];
      b[r] -= f * b[col];
    }
  }
  for (int r = k - 1; r >= 0; r--) {
    double s = b[r];
    for (int j = r + 1; j < k; j++) s -= A[r * k + j] * b[j];
    b[r] = s / A[r * k + r];
  }
  return 0;
}

static double uni_lambda(const bm_unipc *u, int i) { return log(u->alpha[i]) - log(u->sigma[i]); }

/* R (order x order, rows rks^p) and b of UniPC's bh update. */
static void uni_rb(const bm_unipc *u, double hh, const double *rks, int order, double *R,
                   double *b) {
  double h_phi_1 = expm1(hh), h_phi_k = h_phi_1 / hh - 1, fact = 1;
  double B_h = u->bh2 ? expm1(hh) : hh;
  for (int i = 1; i <= order; i++) {
    for (int j = 0; j < order; j++) R[(i - 1) * order + j] = pow(rks[j], i - 1);
    b[i - 1] = h_phi_k * fact / B_h;
    fact *= i + 1;
    h_phi_k = h_phi_k / hh - 1 / fact;
  }
}

void bm_unipc_init(bm_unipc *u, int solver_order, int bh2, int lower_order_final,
                   const double *alpha, const double *sigma, int nsteps, float **bufs, int64_t n) {
  memset(u, 0, sizeof *u);
  u->solver_order = solver_order > 3 ? 3 : solver_order;
  u->bh2 = bh2;
  u->lower_order_final = lower_order_final;
  u->alpha = alpha;
  u->sigma = sigma;
  u->nsteps = nsteps;
  u->n = n;
  for (int k = 0; k < 3; k++) u->hist[k] = bufs[k];
  u->spare = bufs[3];
  u->last_sample = bufs[4];
}

/* Corrector (uni_c) then predictor (uni_p) for step i; x0 is the model's
 * data prediction at sample (in place: sample becomes the corrected one,
 * out gets the next sample). */
bm_status bm_unipc_step(bm_unipc *u, int i, const float *x0, float *sample, float *out) {
  int64_t n = u->n;
  int have_last = u->have_last;
  if (i > 0 && have_last) {
    /* corrector with the previous order; m0 = newest history entry */
    int order = u->this_order;
    const float *m0 = u->hist[u->nhist - 1];
    double lt = uni_lambda(u, i), ls0 = uni_lambda(u, i - 1), h = lt - ls0, hh = -h;
    double rks[4], R[16], b[4];
    for (int k = 1; k < order; k++) rks[k - 1] = (uni_lambda(u, i - (k + 1)) - ls0) / h;
    rks[order - 1] = 1.0;
    uni_rb(u, hh, rks, order, R, b);
    double rhos[4];
    if (order == 1) rhos[0] = 0.5;
    else {
      memcpy(rhos, b, sizeof(double) * (size_t)order);
      if (solve_small(R, rhos, order)) return bm_status_make(BM_ERR_INTERNAL, "unipc: singular corrector system");
    }
    double B_h = u->bh2 ? expm1(hh) : hh, h_phi_1 = expm1(hh);
    double a_t = u->alpha[i], s_t = u->sigma[i], s_s0 = u->sigma[i - 1];
    for (int64_t e = 0; e < n; e++) {
      double corr = 0;
      for (int k = 1; k < order; k++) {
        const float *mi = u->hist[u->nhist - 1 - k];
        corr += rhos[k - 1] * ((double)mi[e] - m0[e]) / rks[k - 1];
      }
      double xt_ = s_t / s_s0 * u->last_sample[e] - a_t * h_phi_1 * m0[e];
      sample[e] = (float)(xt_ - a_t * B_h * (corr + rhos[order - 1] * ((double)x0[e] - m0[e])));
    }
  }
  /* history: append x0 */
  bm_copy(u->spare, x0, n);
  if (u->nhist == u->solver_order) {
    float *old = u->hist[0];
    memmove(u->hist, u->hist + 1, sizeof(float *) * (size_t)(u->solver_order - 1));
    u->hist[u->solver_order - 1] = u->spare;
    u->spare = old;
  } else {
    float *t = u->hist[u->nhist];
    u->hist[u->nhist++] = u->spare;
    u->spare = t;
  }
  int order = u->solver_order;
  if (u->lower_order_final && u->nsteps - i < order) order = u->nsteps - i;
  if (order > u->lower_order_nums + 1) order = u->lower_order_nums + 1;
  u->this_order = order;
  bm_copy(u->last_sample, sample, n);
  u->have_last = 1;
  /* predictor */
  const float *m0 = u->hist[u->nhist - 1];
  double lt = uni_lambda(u, i + 1), ls0 = uni_lambda(u, i), h = lt - ls0, hh = -h;
  double a_t = u->alpha[i + 1], s_t = u->sigma[i + 1], s_s0 = u->sigma[i];
  double h_phi_1 = expm1(hh), B_h = u->bh2 ? expm1(hh) : hh;
  double rks[4], R[16], b[4], rhos[4] = {0};
  for (int k = 1; k < order; k++) rks[k - 1] = (uni_lambda(u, i - k) - ls0) / h;
  rks[order - 1] = 1.0;
  if (order >= 2) {
    uni_rb(u, hh, rks, order, R, b);
    if (order == 2) rhos[0] = 0.5;
    else {
      /* R[:-1, :-1] rhos = b[:-1] */
      double R2[16];
      int m = order - 1;
      for (int r = 0; r < m; r++)
        for (int j = 0; j < m; j++) R2[r * m + j] = R[r * order + j];
      memcpy(rhos, b, sizeof(double) * (size_t)m);
      if (solve_small(R2, rhos, m)) return bm_status_make(BM_ERR_INTERNAL, "unipc: singular predictor system");
    }
  }
  for (int64_t e = 0; e < n; e++) {
    double v = (s_t == 0 ? 0.0 : s_t / s_s0 * sample[e]) - a_t * h_phi_1 * m0[e];
    if (order >= 2) {
      double pred = 0;
      for (int k = 1; k < order; k++) {
        const float *mi = u->hist[u->nhist - 1 - k];
        pred += rhos[k - 1] * ((double)mi[e] - m0[e]) / rks[k - 1];
      }
      v -= a_t * B_h * pred;
    }
    out[e] = (float)v;
  }
  if (u->lower_order_nums < u->solver_order) u->lower_order_nums++;
  return NULL;
}

/* UniPC in sigma space (alpha = 1, sigma = the schedule): variant 1 bh1,
 * 2 bh2; solver order 3 with lower order at the end. */
bm_status bm_sampler_unipc(bm_sctx *c) {
  double *al = malloc(sizeof(double) * 2 * (size_t)(c->steps + 1));
  if (!al) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "unipc: schedule");
  double *sg = al + c->steps + 1;
  for (int i = 0; i <= c->steps; i++) {
    al[i] = 1.0;
    sg[i] = c->sig[i];
  }
  bm_unipc u;
  float *bufs[5] = {c->buf[2], c->buf[3], c->buf[4], c->buf[5], c->buf[6]};
  int order = c->o.order > 0 ? c->o.order : 3;
  bm_unipc_init(&u, order, c->variant == 2, 1, al, sg, c->steps, bufs, c->n);
  float *x = c->run->x, *den = c->buf[0], *xn = c->buf[1];
  bm_status st = NULL;
  for (int i = 0; i < c->steps; i++) {
    if ((st = bm_sctx_denoise(c, x, c->sig[i], den, NULL))) break;
    if ((st = bm_unipc_step(&u, i, den, x, xn))) break;
    bm_sctx_report(c, i, c->sig[i], c->sig[i], x, den);
    bm_copy(x, xn, c->n);
  }
  free(al);
  return st;
}

/* ------------------------------------------------------------- SA-Solver */

int bm_sa_b_coeffs(double alpha_t, const double *lam, int k, double ls, double lt, double tau,
                   double *b) {
  double tau_mul = 1 + tau * tau, h = lt - ls, pt[4], e[4], V[16];
  for (int p = 0; p < k; p++) pt[p] = pow(lt, p) - pow(ls, p) * exp(-tau_mul * h);
  for (int i = 0; i < k; i++) {
    e[i] = 0;
    for (int j = 0; j <= i; j++) {
      double lc = lgamma(i + 1.0) - lgamma(j + 1.0);
      if (tau > 0) lc -= (i - j) * log(tau_mul);
      double m = exp(lc) * (((i - j) % 2 == 0) ? 1.0 : -1.0);
      e[i] += m * pt[j];
    }
  }
  for (int p = 0; p < k; p++)
    for (int j = 0; j < k; j++) V[p * k + j] = pow(lam[j], p);
  if (solve_small(V, e, k)) return -1;
  for (int j = 0; j < k; j++) b[j] = alpha_t * e[j];
  return 0;
}

/* SA-Solver (predictor order 3, corrector order 4); variant 1: PECE. tau
 * is 1 where percent_to_sigma(0.2) >= sigma_next >= percent_to_sigma(0.8). */
bm_status bm_sampler_sa_solver(bm_sctx *c) {
  int pece = c->variant == 1;
  const int p_order = 3, c_order = 4, max_used = 4;
  double s_noise = bm_opt(c->o.s_noise, 1.0);
  float table[1000];
  const float *ms = c->o.model_sigmas;
  int mlen = c->o.model_sigmas_len;
  if (!ms) {
    bm_schedule_sd1_sigmas(table);
    ms = table;
    mlen = 1000;
  }
  double start_sigma = bm_schedule_table_sigma(ms, mlen, (1.0 - 0.2) * (mlen - 1));
  double end_sigma = bm_schedule_table_sigma(ms, mlen, (1.0 - 0.8) * (mlen - 1));
  int steps = c->steps;
  double *lam = malloc(sizeof(double) * (size_t)(steps + 1));
  if (!lam) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "sa_solver: lambdas");
  for (int i = 0; i <= steps; i++) lam[i] = -log((double)c->sig[i]);
  float *xp = c->run->x, *x = c->buf[0], *nz = c->buf[1], *spare = c->buf[2];
  float *plist[4] = {c->buf[3], c->buf[4], c->buf[5], c->buf[6]};
  int np = 0;
  double h = 0, tau_t = 0;
  int lower_to_end = c->sig[steps] == 0;
  int have_noise = 0;
  bm_copy(x, xp, c->n);
  bm_status st = NULL;
  for (int i = 0; i < steps && !st; i++) {
    double s = c->sig[i], sn = c->sig[i + 1];
    float *den = spare;
    if ((st = bm_sctx_denoise(c, xp, s, den, NULL))) break;
    bm_sctx_report(c, i, s, s, xp, den);
    /* pred_list.append(den), keep the last max_used */
    if (np == max_used) {
      spare = plist[0];
      memmove(plist, plist + 1, sizeof(float *) * (max_used - 1));
      plist[max_used - 1] = den;
    } else {
      spare = plist[np];
      plist[np++] = den;
    }
    int pu = p_order < np ? p_order : np;
    int cu = (i == 0 || (sn == 0 && !pece)) ? 0 : (c_order < np ? c_order : np);
    if (lower_to_end) {
      if (pu > steps - 1 - i) pu = steps - 1 - i;
      if (cu > steps - i) cu = steps - i;
    }
    if (cu == 0) {
      bm_copy(x, xp, c->n);
    } else {
      double b[4];
      if (bm_sa_b_coeffs(1.0, lam + i - cu + 1, cu, lam[i - 1], lam[i], tau_t, b)) {
        st = bm_status_make(BM_ERR_INTERNAL, "sa_solver: singular corrector system at step %d", i);
        break;
      }
      double a = s / c->sig[i - 1] * exp(-(tau_t * tau_t) * h);
      int add_noise = tau_t > 0 && s_noise > 0 && have_noise;
      for (int64_t e = 0; e < c->n; e++) {
        double acc = a * x[e];
        for (int k = 0; k < cu; k++) acc += b[k] * plist[np - cu + k][e];
        if (add_noise) acc += nz[e];
        x[e] = (float)acc;
      }
      if (pece) {
        if ((st = bm_sctx_denoise(c, x, s, plist[np - 1], NULL))) break;
      }
    }
    if (sn == 0) {
      bm_copy(xp, plist[np - 1], c->n);
    } else {
      tau_t = (start_sigma >= sn && sn >= end_sigma) ? 1.0 : 0.0;
      double b[4];
      if (bm_sa_b_coeffs(1.0, lam + i - pu + 1, pu, lam[i], lam[i + 1], tau_t, b)) {
        st = bm_status_make(BM_ERR_INTERNAL, "sa_solver: singular predictor system at step %d", i);
        break;
      }
      h = lam[i + 1] - lam[i];
      double a = sn / s * exp(-(tau_t * tau_t) * h);
      int add_noise = tau_t > 0 && s_noise > 0;
      if (add_noise) {
        if ((st = bm_sctx_noise(c, s, sn, nz))) break;
        bm_lc1(nz, c->n, sn * sqrt(-expm1(-2 * tau_t * tau_t * h)) * s_noise, nz);
        have_noise = 1;
      }
      for (int64_t e = 0; e < c->n; e++) {
        double acc = a * x[e];
        for (int k = 0; k < pu; k++) acc += b[k] * plist[np - pu + k][e];
        if (add_noise) acc += nz[e];
        xp[e] = (float)acc;
      }
    }
  }
  free(lam);
  return st;
}

/* ---------------------------------------------------------- res_multistep */

/* RES second-order multistep (arXiv 2308.02157). variant bit 0: CFG++,
 * bit 1: ancestral (eta 1; otherwise eta 0, noise still drawn and scaled
 * by 0 as the reference does). */
bm_status bm_sampler_res_multistep(bm_sctx *c) {
  int cfgpp = c->variant & 1, anc = (c->variant & 2) != 0;
  double eta = anc ? bm_opt(c->o.eta, 1.0) : 0.0, s_noise = bm_opt(c->o.s_noise, 1.0);
  float *x = c->run->x, *den = c->buf[0], *unc = c->buf[1], *old = c->buf[2], *nz = c->buf[3];
  int have_old = 0;
  double old_sd = 0;
  for (int i = 0; i < c->steps; i++) {
    double s = c->sig[i], sn = c->sig[i + 1], sd, su;
    BM_RETURN_IF_ERROR(bm_sctx_denoise(c, x, s, den, cfgpp ? unc : NULL));
    bm_ancestral_step(s, sn, eta, &sd, &su);
    bm_sctx_report(c, i, s, s, x, den);
    if (sd == 0 || !have_old) {
      if (cfgpp) bm_lc3(x, c->n, 1.0, den, sd / s, x, -sd / s, unc);
      else bm_lc2(x, c->n, 1.0 + (sd - s) / s, x, -(sd - s) / s, den);
    } else {
      double t = -log(s), t_old = -log(old_sd), t_next = -log(sd), t_prev = -log(c->sig[i - 1]);
      double h = t_next - t, c2 = (t_prev - t_old) / h;
      double p1 = expm1(-h) / (-h), p2 = (p1 - 1.0) / (-h);
      double b1 = p1 - p2 / c2, b2 = p2 / c2;
      if (isnan(b1)) b1 = 0;
      if (isnan(b2)) b2 = 0;
      if (cfgpp) /* x + (den - unc), then the RES step on unc */
        bm_lc4(x, c->n, exp(-h), x, exp(-h), den, -exp(-h) + h * b1, unc, h * b2, old);
      else
        bm_lc3(x, c->n, exp(-h), x, h * b1, den, h * b2, old);
    }
    if (sn > 0) {
      BM_RETURN_IF_ERROR(bm_sctx_noise(c, s, sn, nz));
      bm_lc2(x, c->n, 1.0, x, s_noise * su, nz);
    }
    bm_copy(old, cfgpp ? unc : den, c->n);
    have_old = 1;
    old_sd = sd;
  }
  return NULL;
}
