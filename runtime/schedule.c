/* schedule.c - sigma schedules selectable by name (karras, exponential,
 * polyexponential, discrete, sgm_uniform, simple, ddim_uniform, beta,
 * linear_quadratic, align_your_steps, lcm, flow_shift) and the discrete
 * (SD1) model table they sample from. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "sampler.h"

void bm_schedule_sd1_alphas_cumprod(float out[1000]) {
  double a = sqrt(0.00085), b = sqrt(0.012), acc = 1.0;
  for (int i = 0; i < 1000; i++) {
    double s = a + (b - a) * i / 999.0, beta = s * s;
    acc *= 1.0 - beta;
    out[i] = (float)acc;
  }
}

void bm_schedule_sd1_sigmas(float out[1000]) {
  float ac[1000];
  bm_schedule_sd1_alphas_cumprod(ac);
  for (int i = 0; i < 1000; i++) out[i] = (float)sqrt((1.0 - (double)ac[i]) / (double)ac[i]);
}

double bm_schedule_table_sigma(const float *table, int len, double t) {
  if (t < 0) t = 0;
  if (t > len - 1) t = len - 1;
  int lo = (int)floor(t), hi = (int)ceil(t);
  double w = t - lo;
  double ls = (1 - w) * log((double)table[lo]) + w * log((double)table[hi]);
  return exp(ls);
}

double bm_schedule_table_t(const float *table, int len, double sigma) {
  double ls = log(sigma);
  if (ls <= log((double)table[0])) return 0;
  if (ls >= log((double)table[len - 1])) return len - 1;
  int lo = 0;
  while (lo < len - 2 && log((double)table[lo + 1]) <= ls) lo++;
  double l0 = log((double)table[lo]), l1 = log((double)table[lo + 1]);
  double w = (l0 - ls) / (l0 - l1);
  return lo + w;
}

/* ------------------------------------------------------- the schedules */

typedef struct sched_ctx {
  const bm_schedule_params *p;
  const float *tab;
  int len;
  double smin, smax;
} sched_ctx;

static void karras(const sched_ctx *c, int n, float *o) {
  double rho = c->p && c->p->rho > 0 ? c->p->rho : 7.0;
  double a = pow(c->smax, 1 / rho), b = pow(c->smin, 1 / rho);
  for (int i = 0; i < n; i++) {
    double ramp = n > 1 ? (double)i / (n - 1) : 0.0;
    o[i] = (float)pow(a + ramp * (b - a), rho);
  }
}

static void exponential(const sched_ctx *c, int n, float *o) {
  double a = log(c->smax), b = log(c->smin);
  for (int i = 0; i < n; i++) o[i] = (float)exp(a + (n > 1 ? (b - a) * i / (n - 1) : 0));
}

static void polyexponential(const sched_ctx *c, int n, float *o) {
  double rho = c->p && c->p->rho > 0 ? c->p->rho : 1.0;
  for (int i = 0; i < n; i++) {
    double ramp = pow(n > 1 ? 1.0 - (double)i / (n - 1) : 1.0, rho);
    o[i] = (float)exp(ramp * (log(c->smax) - log(c->smin)) + log(c->smin));
  }
}

static void discrete(const sched_ctx *c, int n, float *o) {
  double tmax = c->len - 1;
  for (int i = 0; i < n; i++) {
    double t = n > 1 ? tmax - tmax * i / (n - 1) : tmax;
    o[i] = (float)bm_schedule_table_sigma(c->tab, c->len, t);
  }
}

static void sgm_uniform(const sched_ctx *c, int n, float *o) {
  double t0 = bm_schedule_table_t(c->tab, c->len, c->smax);
  double t1 = bm_schedule_table_t(c->tab, c->len, c->smin);
  for (int i = 0; i < n; i++) o[i] = (float)bm_schedule_table_sigma(c->tab, c->len, t0 + (t1 - t0) * i / n);
}

static void simple(const sched_ctx *c, int n, float *o) {
  double ss = (double)c->len / n;
  for (int i = 0; i < n; i++) o[i] = c->tab[c->len - 1 - (int)(i * ss)];
}

static int ddim_uniform(const sched_ctx *c, int n, float *o) {
  int ss = c->len / n > 1 ? c->len / n : 1;
  int k = (c->len - 1 + ss - 1) / ss; /* x = 1, 1 + ss, ... < len */
  if (k != n) return k;
  for (int i = 0; i < k; i++) o[i] = c->tab[1 + (k - 1 - i) * ss];
  return k;
}

/* Regularised incomplete beta I_x(a, b) by Lentz's continued fraction. */
static double betacf(double a, double b, double x) {
  double qab = a + b, qap = a + 1, qam = a - 1, cc = 1, d = 1 - qab * x / qap;
  if (fabs(d) < 1e-300) d = 1e-300;
  d = 1 / d;
  double h = d;
  for (int m = 1; m < 300; m++) {
    int m2 = 2 * m;
    double aa = m * (b - m) * x / ((qam + m2) * (a + m2));
    d = 1 + aa * d;
    if (fabs(d) < 1e-300) d = 1e-300;
    cc = 1 + aa / cc;
    if (fabs(cc) < 1e-300) cc = 1e-300;
    d = 1 / d;
    h *= d * cc;
    aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
    d = 1 + aa * d;
    if (fabs(d) < 1e-300) d = 1e-300;
    cc = 1 + aa / cc;
    if (fabs(cc) < 1e-300) cc = 1e-300;
    d = 1 / d;
    double del = d * cc;
    h *= del;
    if (fabs(del - 1) < 1e-15) break;
  }
  return h;
}
static double betainc(double a, double b, double x) {
  if (x <= 0) return 0;
  if (x >= 1) return 1;
  double bt = exp(lgamma(a + b) - lgamma(a) - lgamma(b) + a * log(x) + b * log(1 - x));
  if (x < (a + 1) / (a + b + 2)) return bt * betacf(a, b, x) / a;
  return 1 - bt * betacf(b, a, 1 - x) / b;
}
static double beta_ppf(double q, double a, double b) {
  double lo = 0, hi = 1;
  for (int it = 0; it < 200; it++) {
    double mid = 0.5 * (lo + hi);
    if (betainc(a, b, mid) < q) lo = mid;
    else hi = mid;
  }
  return 0.5 * (lo + hi);
}

static int beta_sched(const sched_ctx *c, int n, float *o) {
  double al = c->p && c->p->alpha > 0 ? c->p->alpha : 0.6, be = c->p && c->p->beta > 0 ? c->p->beta : 0.6;
  int total = c->len - 1, k = 0;
  long last = -1;
  for (int i = 0; i < n; i++) {
    double ts = 1.0 - (double)i / n;
    long t = lrint(beta_ppf(ts, al, be) * total);
    if (t != last) o[k++] = c->tab[t];
    last = t;
  }
  return k;
}

static void linear_quadratic(const sched_ctx *c, int n, float *o) {
  if (n == 1) {
    o[0] = (float)c->smax;
    return;
  }
  double thr = 0.025;
  int lin = n / 2;
  double diff = lin - thr * n;
  int quad = n - lin;
  double qc = diff / (lin * (double)quad * quad);
  double lc = thr / lin - 2 * diff / ((double)quad * quad);
  double cst = qc * lin * lin;
  for (int i = 0; i < n; i++) {
    double v = i < lin ? i * thr / lin : qc * i * i + lc * i + cst;
    o[i] = (float)((1.0 - v) * c->smax);
  }
}

/* NVIDIA's Align Your Steps (10 steps + sigma_min), log-linear interpolated
 * to other step counts as ComfyUI's AlignYourStepsScheduler does. */
static const double ays_sd15[11] = {14.615, 6.475, 3.861, 2.697, 1.886, 1.396,
                                    0.963,  0.652, 0.399, 0.152, 0.029};
static const double ays_sdxl[11] = {14.615, 6.315, 3.771, 2.181, 1.342, 0.862,
                                    0.555,  0.380, 0.234, 0.113, 0.029};
static void ays(const sched_ctx *c, int n, float *o) {
  const double *t = (c->p && c->p->ays_model && strcmp(c->p->ays_model, "sdxl") == 0) ? ays_sdxl : ays_sd15;
  if (n == 10) {
    for (int i = 0; i < 10; i++) o[i] = (float)t[i];
    return;
  }
  /* ComfyUI's loglinear_interp: ys = log(ascending table) on xs =
   * linspace(0, 1, 11), resampled on n + 1 points, reversed; the last
   * (sigma_min) is then replaced by 0. */
  int m = n + 1;
  for (int k = 0; k < n; k++) {
    int j = m - 1 - k; /* index into the ascending resampled values */
    double pos = (double)j / (m - 1) * 10;
    int lo = (int)floor(pos);
    if (lo > 9) lo = 9;
    double w = pos - lo;
    double y = (1 - w) * log(t[10 - lo]) + w * log(t[10 - (lo + 1)]);
    o[k] = (float)exp(y);
  }
}

/* diffusers LCMScheduler timesteps (original_inference_steps 50, leading)
 * mapped to the discrete table's sigmas. */
static void lcm(const sched_ctx *c, int n, float *o) {
  int orig = 50, k = c->len / orig;
  int lcm_ts[1000];
  for (int i = 0; i < orig; i++) lcm_ts[i] = (i + 1) * k - 1;
  /* reversed, then skipping */
  for (int i = 0; i < n; i++) {
    int idx = (int)floor((double)i * orig / n);
    int t = lcm_ts[orig - 1 - idx];
    o[i] = c->tab[t];
  }
}

/* SD3/Flux flow matching with shift: t = linspace(1, 1/len, n),
 * sigma = shift t / (1 + (shift - 1) t). */
static void flow_shift(const sched_ctx *c, int n, float *o) {
  double shift = c->p && c->p->shift > 0 ? c->p->shift : 3.0;
  for (int i = 0; i < n; i++) {
    double t = n > 1 ? 1.0 - (1.0 - 1.0 / 1000) * i / (n - 1) : 1.0;
    o[i] = (float)(shift * t / (1 + (shift - 1) * t));
  }
}

typedef struct sched_entry {
  const char *name, *reference;
} sched_entry;

static const sched_entry scheds[] = {
    {"karras", "k-diffusion get_sigmas_karras (rho 7)"},
    {"exponential", "k-diffusion get_sigmas_exponential"},
    {"polyexponential", "k-diffusion get_sigmas_polyexponential (rho 1)"},
    {"discrete", "k-diffusion DiscreteSchedule.get_sigmas (model table at linspace(T-1, 0, n))"},
    {"normal", "ComfyUI 'normal' (= discrete)"},
    {"sgm_uniform", "ComfyUI sgm_uniform"},
    {"simple", "ComfyUI simple_scheduler"},
    {"ddim_uniform", "ComfyUI ddim_scheduler"},
    {"beta", "ComfyUI beta_scheduler (alpha = beta = 0.6)"},
    {"linear_quadratic", "ComfyUI linear_quadratic_schedule (threshold 0.025)"},
    {"align_your_steps", "NVIDIA Align Your Steps (SD1.5 / SDXL tables, log-linear interpolation)"},
    {"lcm", "diffusers LCMScheduler timesteps (50 original steps) as sigmas"},
    {"flow_shift", "diffusers FlowMatchEulerDiscreteScheduler sigmas with shift (3.0)"},
};
#define NSCHED ((int)(sizeof scheds / sizeof scheds[0]))

int bm_schedule_count(void) { return NSCHED; }
const char *bm_schedule_name(int i) { return i >= 0 && i < NSCHED ? scheds[i].name : NULL; }
const char *bm_schedule_reference(int i) { return i >= 0 && i < NSCHED ? scheds[i].reference : NULL; }

bm_status bm_schedule_sigmas(const char *name, const bm_schedule_params *p, int steps, float *out) {
  int which = -1;
  for (int i = 0; name && i < NSCHED; i++)
    if (strcmp(scheds[i].name, name) == 0) which = i;
  if (which < 0) {
    char list[600];
    size_t len = 0;
    list[0] = 0;
    for (int i = 0; i < NSCHED; i++)
      len += (size_t)snprintf(list + len, sizeof list - len, "%s%s", i ? ", " : "", scheds[i].name);
    return bm_status_make(BM_ERR_NOT_FOUND, "unknown schedule '%s'; valid schedules: %s",
                          name ? name : "(null)", list);
  }
  if (steps < 1 || steps > 10000)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "schedule '%s': steps must be in 1..10000, got %d",
                          name, steps);
  float sd1[1000];
  sched_ctx c = {p, NULL, 0, 0, 0};
  if (p && p->model_sigmas) {
    if (p->model_sigmas_len < 2)
      return bm_status_make(BM_ERR_INVALID_ARGUMENT, "schedule '%s': model_sigmas_len %d < 2", name,
                            p->model_sigmas_len);
    c.tab = p->model_sigmas;
    c.len = p->model_sigmas_len;
  } else {
    bm_schedule_sd1_sigmas(sd1);
    c.tab = sd1;
    c.len = 1000;
  }
  c.smin = p && p->sigma_min > 0 ? p->sigma_min : (p && p->model_sigmas ? c.tab[0] : 0.0292);
  c.smax = p && p->sigma_max > 0 ? p->sigma_max : (p && p->model_sigmas ? c.tab[c.len - 1] : 14.6146);
  const char *nm = scheds[which].name;
  int count = steps;
  if (!strcmp(nm, "karras")) karras(&c, steps, out);
  else if (!strcmp(nm, "exponential")) exponential(&c, steps, out);
  else if (!strcmp(nm, "polyexponential")) polyexponential(&c, steps, out);
  else if (!strcmp(nm, "discrete") || !strcmp(nm, "normal")) discrete(&c, steps, out);
  else if (!strcmp(nm, "sgm_uniform")) sgm_uniform(&c, steps, out);
  else if (!strcmp(nm, "simple")) simple(&c, steps, out);
  else if (!strcmp(nm, "ddim_uniform")) count = ddim_uniform(&c, steps, out);
  else if (!strcmp(nm, "beta")) count = beta_sched(&c, steps, out);
  else if (!strcmp(nm, "linear_quadratic")) linear_quadratic(&c, steps, out);
  else if (!strcmp(nm, "align_your_steps")) ays(&c, steps, out);
  else if (!strcmp(nm, "lcm")) lcm(&c, steps, out);
  else flow_shift(&c, steps, out);
  if (count != steps)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT,
                          "schedule '%s' gives %d distinct sigmas for %d steps (the table has %d entries)",
                          name, count, steps, c.len);
  out[steps] = 0.0f;
  return NULL;
}
