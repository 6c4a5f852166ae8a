/* cuda_check.c - the runtime-only half of test_ops_cuda: runs the cases that
 * `BM_CUDA_EXPORT=DIR test_ops_cuda` wrote (a package, raw inputs and the
 * reference interpreter's outputs per case) and compares. It links only
 * libbmrt, so it runs on a GPU machine that cannot build the compiler
 * (scripts/cuda_device.sh carries it there).
 *
 *   bm_cuda_check DIR      prints one line per case and "N passed, N failed, N skipped"
 *   bm_cuda_check --bench REPS PKG...   times each package (see bench())
 *   bm_cuda_check --llm DIR   the LLM golden suite (see llm_case()): DIR/list.txt
 *                             names cases, each DIR/<name>.bmpk (compiled for CUDA)
 *                             and DIR/<name>.golden.safetensors (transformers')
 *   bm_cuda_check --sd DIR    the Stable Diffusion golden suite (see sd_checks): the
 *                             packages DIR/sd1.bmpk, sd2.bmpk, sd1_64.bmpk (compiled by
 *                             scripts/cuda_device.sh pack) against diffusers' and
 *                             transformers' outputs DIR/<case>.golden.safetensors
 *   bm_cuda_check --llm-bench PKG PREFILL NEW REPS   prefill and greedy decode
 *                             speed of a causal LM package (see llm_bench())
 *
 * DIR/list.txt names the case folders; each has meta.txt:
 *   tol <max relative error>
 *   [ptx]                      also run with BM_CUDA_FORCE_PTX=1
 *   input <dtype> <ndim> <dims...>    (file in<i>.bin, in order)
 *   output <dtype> <ndim> <dims...>   (file ref<i>.bin) */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../runtime/bm_runtime.h"
#include "../runtime/safetensors.h"
#include "dtype_tol.h"

typedef struct tens {
  bm_dtype dt;
  int ndim;
  int64_t shape[8];
  void *data;
  size_t bytes;
} tens;

static void *slurp(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long sz = ftell(f);
  fseek(f, 0, SEEK_SET);
  void *p = malloc(sz > 0 ? (size_t)sz : 1);
  if (p && fread(p, 1, (size_t)sz, f) != (size_t)sz) {
    free(p);
    p = NULL;
  }
  fclose(f);
  *n = (size_t)sz;
  return p;
}

static float f16f(uint16_t h) {
  uint32_t s = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 31, m = h & 0x3ff;
  float v;
  if (e == 0) v = ldexpf((float)m, -24);
  else if (e == 31) v = m ? NAN : INFINITY;
  else v = ldexpf((float)(m | 0x400), (int)e - 25);
  return s ? -v : v;
}

static float elem(const tens *t, int64_t i) {
  const uint8_t *p = t->data;
  switch (t->dt) {
    case BM_DTYPE_F32: { float v; memcpy(&v, p + 4 * i, 4); return v; }
    case BM_DTYPE_F16: { uint16_t h; memcpy(&h, p + 2 * i, 2); return f16f(h); }
    case BM_DTYPE_BF16: { uint16_t h; memcpy(&h, p + 2 * i, 2); uint32_t u = (uint32_t)h << 16; float v; memcpy(&v, &u, 4); return v; }
    case BM_DTYPE_I8: return (float)(int8_t)p[i];
    case BM_DTYPE_I32: { int32_t v; memcpy(&v, p + 4 * i, 4); return (float)v; }
    case BM_DTYPE_I64: { int64_t v; memcpy(&v, p + 8 * i, 8); return (float)v; }
    default: return NAN;
  }
}

static int64_t numel(const tens *t) {
  int64_t n = 1;
  for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
  return n;
}

/* Runs one case; returns 0 ok, 1 failed. */
static int run_case(const char *dir, const char *name, int force_ptx) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s/meta.txt", dir, name);
  FILE *f = fopen(path, "r");
  if (!f) {
    printf("FAIL %-32s cannot read %s\n", name, path);
    return 1;
  }
  double tol = 0;
  int ptx = 0, nin = 0, nout = 0;
  tens in[32], ref[32];
  char word[64];
  while (fscanf(f, "%63s", word) == 1) {
    if (!strcmp(word, "tol")) {
      if (fscanf(f, "%lf", &tol) != 1) break;
    } else if (!strcmp(word, "ptx")) {
      ptx = 1;
    } else if (!strcmp(word, "input") || !strcmp(word, "output")) {
      if (nin == 32 || nout == 32) break;
      tens *t = word[0] == 'i' ? &in[nin++] : &ref[nout++];
      char dt[32];
      if (fscanf(f, "%31s %d", dt, &t->ndim) != 2) break;
      bm_dtype_from_name(dt, &t->dt);
      for (int d = 0; d < t->ndim; d++)
        if (fscanf(f, "%lld", (long long *)&t->shape[d]) != 1) break;
      snprintf(path, sizeof path, "%s/%s/%s%d.bin", dir, name, word[0] == 'i' ? "in" : "ref",
               word[0] == 'i' ? nin - 1 : nout - 1);
      t->data = slurp(path, &t->bytes);
    }
  }
  fclose(f);
  if (force_ptx && !ptx) return -1;
  setenv("BM_CUDA_FORCE_PTX", force_ptx ? "1" : "0", 1);
  snprintf(path, sizeof path, "%s/%s/pkg.bmpk", dir, name);
  bm_package *pkg = NULL;
  bm_session *s = NULL;
  bm_status st = bm_package_open(path, NULL, &pkg);
  if (!st) st = bm_session_create(pkg, NULL, &s);
  for (int i = 0; !st && i < nin; i++) st = bm_session_set_input(s, 0, i, in[i].data, in[i].dt, in[i].ndim, in[i].shape);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  if (!st) st = bm_session_run(s, 0);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double worst = 0;
  for (int i = 0; !st && i < nout; i++) {
    const void *data;
    bm_tensor_info info;
    st = bm_session_get_output(s, 0, i, &data, &info);
    if (st) break;
    tens o = ref[i];
    o.data = (void *)data;
    double maxd = 0, maxr = 1e-30;
    for (int64_t j = 0; j < numel(&ref[i]); j++) {
      double a = elem(&o, j), b = elem(&ref[i], j), d = fabs(a - b);
      if (isnan(d) && !(isnan(a) && isnan(b))) maxd = NAN;
      else if (d > maxd) maxd = d;
      if (fabs(b) > maxr) maxr = fabs(b);
    }
    double e = maxd / maxr;
    if (isnan(e) || e > worst) worst = isnan(worst) ? worst : e;
  }
  int bad;
  char label[300];
  snprintf(label, sizeof label, "%s%s", name, force_ptx ? " (ptx)" : "");
  if (st) {
    printf("FAIL %-36s %s\n", label, bm_status_message(st));
    bm_status_free(st);
    bad = 1;
  } else {
    bad = !(worst <= tol);
    printf("%s %-36s rel err %-10.3g tol %-8.3g first run %.3f ms\n", bad ? "FAIL" : "ok  ", label, worst, tol,
           1e3 * ((double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec)));
  }
  bm_session_destroy(s);
  bm_package_close(pkg);
  for (int i = 0; i < nin; i++) free(in[i].data);
  for (int i = 0; i < nout; i++) free(ref[i].data);
  return bad;
}

/* --bench REPS PKG...: for each package (static input shapes), fills the
 * inputs of function 0 with uniform [-1, 1) values once, runs 3 warm-ups,
 * then times REPS runs (each bm_session_run ends with one synchronization)
 * and prints "bench NAME mean_ms best_ms". For bench/cuda_bench.py. */
static int bench(int reps, int npkg, char **pkgs) {
  int bad = 0;
  for (int p = 0; p < npkg; p++) {
    bm_package *pkg = NULL;
    bm_session *s = NULL;
    void *bufs[128] = {0};
    int nin = 0;
    bm_status st = bm_package_open(pkgs[p], NULL, &pkg);
    if (!st) st = bm_session_create(pkg, NULL, &s);
    if (!st) nin = bm_function_input_count(pkg, 0);
    if (!st && nin > 128) st = bm_status_make(BM_ERR_UNSUPPORTED, "%s: %d inputs (128 at most)", pkgs[p], nin);
    uint32_t rng = 12345;
    for (int i = 0; !st && i < nin; i++) {
      bm_tensor_info info;
      st = bm_function_input_info(pkg, 0, i, &info);
      if (st) break;
      int64_t n = 1;
      for (int d = 0; d < info.ndim; d++) n *= info.shape[d];
      int esz = info.dtype == BM_DTYPE_F32 ? 4 : 2;
      if (info.dtype != BM_DTYPE_F32 && info.dtype != BM_DTYPE_F16 && info.dtype != BM_DTYPE_BF16) {
        st = bm_status_make(BM_ERR_UNSUPPORTED, "%s: input %d is %s (f32/f16/bf16 only)", pkgs[p], i,
                            bm_dtype_name(info.dtype));
        break;
      }
      unsigned char *b = bufs[i] = malloc((size_t)(n * esz));
      if (!b) {
        st = bm_status_make(BM_ERR_OUT_OF_MEMORY, "%s: input %d", pkgs[p], i);
        break;
      }
      for (int64_t j = 0; j < n; j++) {
        rng = rng * 1664525u + 1013904223u;
        float v = (float)(rng >> 8) / 8388608.0f - 1.0f;
        uint32_t u;
        memcpy(&u, &v, 4);
        if (info.dtype == BM_DTYPE_F32) {
          memcpy(b + 4 * j, &v, 4);
        } else if (info.dtype == BM_DTYPE_BF16) {
          uint16_t h = (uint16_t)(u >> 16);
          memcpy(b + 2 * j, &h, 2);
        } else { /* |v| < 1: normal f16 or zero (truncating) */
          int e = (int)((u >> 23) & 255) - 127 + 15;
          uint16_t h = (uint16_t)((u >> 16) & 0x8000);
          if (e > 0) h |= (uint16_t)((e << 10) | ((u >> 13) & 0x3ff));
          memcpy(b + 2 * j, &h, 2);
        }
      }
      st = bm_session_set_input(s, 0, i, b, info.dtype, info.ndim, info.shape);
    }
    for (int r = 0; !st && r < 3; r++) st = bm_session_run(s, 0);
    double total = 0, best = 1e30;
    for (int r = 0; !st && r < reps; r++) {
      struct timespec t0, t1;
      clock_gettime(CLOCK_MONOTONIC, &t0);
      st = bm_session_run(s, 0);
      clock_gettime(CLOCK_MONOTONIC, &t1);
      double ms = 1e3 * ((double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
      total += ms;
      if (ms < best) best = ms;
    }
    const char *name = strrchr(pkgs[p], '/') ? strrchr(pkgs[p], '/') + 1 : pkgs[p];
    if (st) {
      printf("bench %s FAIL %s\n", name, bm_status_message(st));
      bm_status_free(st);
      bad = 1;
    } else {
      printf("bench %s %.4f %.4f\n", name, total / reps, best);
    }
    fflush(stdout);
    bm_session_destroy(s);
    bm_package_close(pkg);
    for (int i = 0; i < 128; i++) free(bufs[i]);
  }
  return bad;
}


/* ------------------------------------------------------------------ the LLM golden suite */

/* Runs function `fn` on i32 inputs (ins[i] of rank nd[i], shape sh[i]) and
 * returns its first output converted to f32 in *out (malloc'd). */
static bm_status llm_run(bm_package *pkg, bm_session *s, const char *fn, int nin, int32_t *const *ins,
                         const int *nd, const int64_t (*sh)[2], float **out, int64_t *n_out) {
  int f;
  *out = NULL;
  BM_RETURN_IF_ERROR(bm_package_find_function(pkg, fn, &f));
  for (int i = 0; i < nin; i++) BM_RETURN_IF_ERROR(bm_session_set_input(s, f, i, ins[i], BM_DTYPE_I32, nd[i], sh[i]));
  BM_RETURN_IF_ERROR(bm_session_run(s, f));
  const void *data;
  bm_tensor_info info;
  BM_RETURN_IF_ERROR(bm_session_get_output(s, f, 0, &data, &info));
  tens o = {.dt = info.dtype, .ndim = info.ndim, .data = (void *)data};
  memcpy(o.shape, info.shape, sizeof(int64_t) * (size_t)info.ndim);
  *n_out = numel(&o);
  *out = malloc(sizeof(float) * (size_t)*n_out);
  if (!*out) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "%s: logits", fn);
  for (int64_t i = 0; i < *n_out; i++) (*out)[i] = elem(&o, i);
  return NULL;
}

/* max |a - b| / max |b| over n values (NaN anywhere: NaN) */
static double rel_err(const float *a, const float *b, int64_t n) {
  double md = 0, mb = 1e-30;
  for (int64_t i = 0; i < n; i++) {
    double d = fabs((double)a[i] - (double)b[i]);
    if (isnan(d)) return NAN;
    if (d > md) md = d;
    if (fabs((double)b[i]) > mb) mb = fabs((double)b[i]);
  }
  return md / mb;
}

static int64_t argmax_f(const float *p, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; i++)
    if (p[i] > p[best]) best = i;
  return best;
}

static int32_t *ids_of(const bm_st_tensor *t) {
  int32_t *p = malloc(sizeof(int32_t) * (size_t)(t->numel ? t->numel : 1));
  for (int64_t i = 0; p && i < t->numel; i++) {
    int64_t v = 0;
    if (t->elem_bytes == 8) memcpy(&v, (const char *)t->data + 8 * i, 8);
    else { int32_t w; memcpy(&w, (const char *)t->data + 4 * i, 4); v = w; }
    p[i] = (int32_t)v;
  }
  return p;
}

/* One LLM case, as tests/test_llm_golden.c does on the CPU: forward of the
 * prompt and of the two-row batch against transformers' logits, then
 * prefill + greedy decoding through the KV cache (token ids exact, logits of
 * every step). `entry` is a golden name (DIR/<name>.bmpk, f32, bound 1e-4)
 * or <name>:bf16 / <name>:f16 (DIR/<name>.<dtype>.bmpk, built with bmc
 * --dtype): then test_dtype's bounds (dtype_tol.h): logits within
 * BM_AMP_GOLD units of roundoff, greedy ids exact at the steps whose golden
 * top-2 margin exceeds twice that (at least 2 such steps), and for routed
 * experts one step allowed up to 0.5 (rounding may move a router logit
 * across the top-k boundary). Prints one line per check; returns the number
 * failed. */
static int llm_case(const char *dir, const char *entry) {
  char path[4096], name[256];
  const char *colon = strchr(entry, ':');
  const char *dtype = colon ? colon + 1 : NULL;
  snprintf(name, sizeof name, "%.*s", colon ? (int)(colon - entry) : (int)strlen(entry), entry);
  const bool half = dtype != NULL;
  const double tol = !half ? 1e-4 : BM_AMP_GOLD * (!strcmp(dtype, "f16") ? BM_U_F16 : BM_U_BF16);
  const bool moe = half && (!strcmp(name, "mixtral") || !strcmp(name, "deepseek_v2"));
  int over = 0, greedy_checked = 0;
  int bad = 0;
  bm_st_file *st = NULL;
  bm_package *pkg = NULL;
  bm_session *s = NULL;
  const bm_st_tensor *ids, *lg, *gr, *dl, *bi, *bl;
  int32_t *pid = NULL, *greedy = NULL, *bid = NULL, *pos = NULL;
  float *out = NULL, *glog = NULL, *gdec = NULL, *gbat = NULL;
  snprintf(path, sizeof path, "%s/%s.golden.safetensors", dir, name);
  bm_status e = bm_st_open(path, &st);
  if (!e) e = bm_st_get(st, "input_ids", &ids);
  if (!e) e = bm_st_get(st, "logits", &lg);
  if (!e) e = bm_st_get(st, "greedy_ids", &gr);
  if (!e) e = bm_st_get(st, "decode_logits", &dl);
  if (!e) e = bm_st_get(st, "batch_input_ids", &bi);
  if (!e) e = bm_st_get(st, "batch_logits", &bl);
  if (half) snprintf(path, sizeof path, "%s/%s.%s.bmpk", dir, name, dtype);
  else snprintf(path, sizeof path, "%s/%s.bmpk", dir, name);
  if (!e) e = bm_package_open(path, NULL, &pkg);
  if (!e) e = bm_session_create(pkg, NULL, &s);
  if (e) {
    printf("FAIL %-14s %s\n", entry, bm_status_message(e));
    bm_status_free(e);
    bm_session_destroy(s);
    bm_package_close(pkg);
    bm_st_close(st);
    return 1;
  }
  int64_t P = ids->shape[1], N = gr->shape[1], BP = bi->shape[1], V = lg->shape[2], n;
  pid = ids_of(ids), greedy = ids_of(gr), bid = ids_of(bi);
  /* the golden logits may be unaligned in the mapping: copy them */
  glog = malloc(lg->nbytes), gdec = malloc(dl->nbytes), gbat = malloc(bl->nbytes);
  memcpy(glog, lg->data, lg->nbytes);
  memcpy(gdec, dl->data, dl->nbytes);
  memcpy(gbat, bl->data, bl->nbytes);
  pos = malloc(sizeof(int32_t) * (size_t)(2 * (BP > P ? BP : P) + 2));
  double err;
  /* 1. forward of the prompt (1, P), positions 0..P-1 */
  for (int64_t i = 0; i < P; i++) pos[i] = (int32_t)i;
  {
    int32_t *in[2] = {pid, pos};
    int nd[2] = {2, 2};
    int64_t sh[2][2] = {{1, P}, {1, P}};
    e = llm_run(pkg, s, "forward", 2, in, nd, (const int64_t(*)[2])sh, &out, &n);
    err = e ? NAN : n == P * V ? rel_err(out, glog, P * V) : INFINITY;
    bad += !(err < tol);
    printf("%s %-14s forward        rel err %-10.3g %s\n", err < tol ? "ok  " : "FAIL", entry, err,
           e ? bm_status_message(e) : "");
    bm_status_free(e);
    free(out);
  }
  /* 2. forward of the batch (2, BP) */
  for (int64_t i = 0; i < 2 * BP; i++) pos[i] = (int32_t)(i % BP);
  {
    int32_t *in[2] = {bid, pos};
    int nd[2] = {2, 2};
    int64_t sh[2][2] = {{2, BP}, {2, BP}};
    e = llm_run(pkg, s, "forward", 2, in, nd, (const int64_t(*)[2])sh, &out, &n);
    err = e ? NAN : n == 2 * BP * V ? rel_err(out, gbat, 2 * BP * V) : INFINITY;
    bad += !(err < tol);
    printf("%s %-14s batch forward  rel err %-10.3g %s\n", err < tol ? "ok  " : "FAIL", entry, err,
           e ? bm_status_message(e) : "");
    bm_status_free(e);
    free(out);
  }
  /* 3. prefill (logits of the last position), then greedy decoding */
  for (int64_t i = 0; i < P; i++) pos[i] = (int32_t)i;
  int32_t start[1] = {0}, len[1] = {(int32_t)P}, last[1] = {(int32_t)P - 1};
  {
    int32_t *in[5] = {pid, pos, start, len, last};
    int nd[5] = {2, 2, 1, 1, 1};
    int64_t sh[5][2] = {{1, P}, {1, P}, {1, 0}, {1, 0}, {1, 0}};
    e = llm_run(pkg, s, "prefill", 5, in, nd, (const int64_t(*)[2])sh, &out, &n);
  }
  err = e ? NAN : n == V ? rel_err(out, glog + (P - 1) * V, V) : INFINITY;
  int32_t tok = e || n != V ? -1 : (int32_t)argmax_f(out, V);
  double worst = err;
  int tok_ok = 1, steps = 0;
  /* a greedy token counts where rounding cannot swap the golden's top two */
#define GREEDY_CHECK(gl, got, want)                                        \
  do {                                                                     \
    if (!half || bm_top2_margin((gl), V) > 2 * tol) {                      \
      tok_ok &= (got) == (want);                                           \
      greedy_checked++;                                                    \
    }                                                                      \
  } while (0)
  if (!e && n == V) GREEDY_CHECK(glog + (P - 1) * V, tok, greedy[0]);
  else tok_ok = 0;
  if (e) printf("FAIL %-14s prefill        %s\n", entry, bm_status_message(e));
  bm_status_free(e);
  e = NULL;
  free(out);
  out = NULL;
  for (int64_t i = 0; i + 1 < N && tok >= 0 && !e; i++) {
    int32_t t[1] = {greedy[i]}, p[1] = {(int32_t)(P + i)}, l[1] = {(int32_t)(P + i + 1)};
    int32_t *in[4] = {t, p, p, l};
    int nd[4] = {2, 2, 1, 1};
    int64_t sh[4][2] = {{1, 1}, {1, 1}, {1, 0}, {1, 0}};
    e = llm_run(pkg, s, "decode", 4, in, nd, (const int64_t(*)[2])sh, &out, &n);
    if (e) {
      printf("FAIL %-14s decode step %lld: %s\n", entry, (long long)i, bm_status_message(e));
      bm_status_free(e);
      worst = NAN;
      break;
    }
    err = n == V ? rel_err(out, gdec + i * V, V) : INFINITY;
    if (moe && err >= tol && err < 0.5 && over++ == 0) err = 0; /* the one router flip allowed */
    if (!isnan(worst) && !(err <= worst)) worst = err;
    tok = (int32_t)argmax_f(out, V);
    { /* the device argmax the generator uses agrees with the host's */
      int fdec = -1;
      int32_t dt = -1;
      bm_status e2 = bm_package_find_function(pkg, "decode", &fdec);
      if (!e2) e2 = bm_session_output_argmax(s, fdec, 0, &dt, 1);
      if (e2 || dt != tok) {
        printf("FAIL %-14s decode step %lld: device argmax %d, host %d %s\n", entry, (long long)i, dt, tok,
               e2 ? bm_status_message(e2) : "");
        tok_ok = 0;
      }
      bm_status_free(e2);
    }
    if (n == V) GREEDY_CHECK(gdec + i * V, tok, greedy[i + 1]);
    steps++;
    free(out);
    out = NULL;
  }
#undef GREEDY_CHECK
  int ok = worst < tol && tok_ok && greedy_checked >= (half ? 2 : steps + 1);
  bad += !ok;
  printf("%s %-14s prefill+decode rel err %-10.3g tol %-8.3g %d steps, greedy ids %s (%d checked)\n", ok ? "ok  " : "FAIL",
         entry, worst, tol, steps, tok_ok ? "exact" : "DIFFER", greedy_checked);
  free(pid);
  free(greedy);
  free(bid);
  free(pos);
  free(glog);
  free(gdec);
  free(gbat);
  bm_session_destroy(s);
  bm_package_close(pkg);
  bm_st_close(st);
  return bad;
}

static int llm_suite(const char *dir) {
  char path[4096], name[256];
  snprintf(path, sizeof path, "%s/list.txt", dir);
  FILE *f = fopen(path, "r");
  if (!f) {
    fprintf(stderr, "bm_cuda_check: cannot read %s\n", path);
    return 1;
  }
  int passed = 0, failed = 0;
  while (fscanf(f, "%255s", name) == 1) {
    int b = llm_case(dir, name);
    failed += b;
    passed += 3 - b;
    fflush(stdout);
  }
  fclose(f);
  printf("llm golden on cuda: %d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}

/* ------------------------------------------------------------------ LLM speed */

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return 1e3 * (double)t.tv_sec + 1e-6 * (double)t.tv_nsec;
}

/* One run of prefill (n_ids tokens at positions start..start+n-1, logits of
 * the last) or decode (one token) at batch 1; *logits borrows the output. */
static bm_status lm_step(bm_session *s, int f, int is_prefill, const int32_t *ids, int64_t n, int32_t start,
                         int32_t *pos_buf, const float **logits) {
  for (int64_t i = 0; i < n; i++) pos_buf[i] = start + (int32_t)i;
  int32_t st[1] = {start}, len[1] = {start + (int32_t)n}, last[1] = {(int32_t)n - 1};
  int64_t sh2[2] = {1, n}, sh1[1] = {1};
  BM_RETURN_IF_ERROR(bm_session_set_input(s, f, 0, ids, BM_DTYPE_I32, 2, sh2));
  BM_RETURN_IF_ERROR(bm_session_set_input(s, f, 1, pos_buf, BM_DTYPE_I32, 2, sh2));
  BM_RETURN_IF_ERROR(bm_session_set_input(s, f, 2, st, BM_DTYPE_I32, 1, sh1));
  BM_RETURN_IF_ERROR(bm_session_set_input(s, f, 3, len, BM_DTYPE_I32, 1, sh1));
  if (is_prefill) BM_RETURN_IF_ERROR(bm_session_set_input(s, f, 4, last, BM_DTYPE_I32, 1, sh1));
  BM_RETURN_IF_ERROR(bm_session_run(s, f));
  if (!logits) return NULL; /* the caller reads the output itself */
  bm_tensor_info info;
  const void *d;
  BM_RETURN_IF_ERROR(bm_session_get_output(s, f, 0, &d, &info));
  if (info.dtype != BM_DTYPE_F32) return bm_status_make(BM_ERR_UNSUPPORTED, "logits are %s, not f32", bm_dtype_name(info.dtype));
  *logits = d;
  return NULL;
}

/* Checks that function f's inputs are input_ids, positions, start, kv_len
 * [, last] in that order (the order lm_step sets them). */
static bm_status lm_check_inputs(const bm_package *pkg, int f, int is_prefill) {
  static const char *const names[] = {"input_ids", "positions", "start", "kv_len", "last"};
  int n = is_prefill ? 5 : 4;
  if (bm_function_input_count(pkg, f) != n)
    return bm_status_make(BM_ERR_INCOMPATIBLE, "%s has %d inputs, expected %d", is_prefill ? "prefill" : "decode",
                          bm_function_input_count(pkg, f), n);
  for (int i = 0; i < n; i++) {
    int at;
    BM_RETURN_IF_ERROR(bm_function_find_input(pkg, f, names[i], &at));
    if (at != i) return bm_status_make(BM_ERR_INCOMPATIBLE, "input '%s' is #%d, expected #%d", names[i], at, i);
  }
  return NULL;
}

/* --llm-bench PKG PREFILL NEW REPS: a causal LM package at batch 1.
 * Prefill: REPS runs of PREFILL tokens from position 0 (1 warm-up first),
 * best and mean ms. Decode: an 8-token prompt, then NEW greedy steps, each
 * a decode run and the argmax of its logits (as the generator does: on the
 * device, bm_session_output_argmax; BM_BENCH_HOST_ARGMAX=1: the logits
 * copied to the host and an argmax there); a warm-up pass of 4 steps first.
 * Prints
 *   llm-bench open <session create ms>
 *   llm-bench prefill <tokens> best_ms <ms> mean_ms <ms>
 *   llm-bench decode <tokens> total_ms <ms> tok_s <tokens/s>
 *   llm-bench decode_fn ms <ms per run of the decode function alone>
 *   llm-bench digest <hex> ids <first 16 greedy ids>
 * The digest (FNV-1a over every decode step's logits bits) is identical
 * between two runs that compute the same thing (BM_CUDA_GRAPHS=0 vs 1). */
static int llm_bench(const char *path, int64_t P, int64_t N, int reps) {
  bm_package *pkg = NULL;
  bm_session *s = NULL;
  int fp = -1, fd = -1;
  int32_t *ids = NULL, *pos = NULL;
  bm_tensor_info oi;
  const float *lg = NULL;
  double t0 = now_ms();
  bm_open_options oo = {.flags = BM_OPEN_SKIP_CHECKSUMS};
  bm_status e = bm_package_open(path, &oo, &pkg);
  if (!e) e = bm_package_find_function(pkg, "prefill", &fp);
  if (!e) e = bm_package_find_function(pkg, "decode", &fd);
  if (!e) e = lm_check_inputs(pkg, fp, 1);
  if (!e) e = lm_check_inputs(pkg, fd, 0);
  if (!e) e = bm_function_output_info(pkg, fd, 0, &oi);
  if (!e) e = bm_session_create(pkg, NULL, &s);
  if (e) goto done;
  printf("llm-bench open %.1f\n", now_ms() - t0);
  int64_t V = oi.shape[oi.ndim - 1];
  ids = malloc(sizeof *ids * (size_t)(P + N + 16));
  pos = malloc(sizeof *pos * (size_t)(P + N + 16));
  if (!ids || !pos) {
    e = bm_status_make(BM_ERR_OUT_OF_MEMORY, "llm-bench: %lld ids", (long long)P);
    goto done;
  }
  for (int64_t i = 0; i < P + N + 16; i++) ids[i] = (int32_t)((i * 7919 + 13) % V);
  /* prefill */
  double best = 1e30, sum = 0;
  for (int r = -1; r < reps && !e; r++) {
    double a = now_ms();
    e = lm_step(s, fp, 1, ids, P, 0, pos, &lg);
    double ms = now_ms() - a;
    if (r < 0) continue;
    sum += ms;
    if (ms < best) best = ms;
  }
  if (e) goto done;
  printf("llm-bench prefill %lld best_ms %.3f mean_ms %.3f\n", (long long)P, best, sum / reps);
  fflush(stdout);
  /* decode: 8-token prompt, then greedy steps (warm-up pass of 4, then N) */
  uint64_t h = 1469598103934665603ull;
  int32_t toks[16];
  double total = 0;
  int host_argmax = getenv("BM_BENCH_HOST_ARGMAX") && atoi(getenv("BM_BENCH_HOST_ARGMAX")) > 0;
  for (int pass = 0; pass < 2 && !e; pass++) {
    int64_t steps = pass ? N : 4;
    e = lm_step(s, fp, 1, ids, 8, 0, pos, &lg);
    int32_t t = e ? 0 : (int32_t)argmax_f(lg, V);
    /* timed: the decode run with its input copies and the argmax (with the
     * logits copy on the host path); the digest (a byte-wise hash of 0.5 MB
     * of logits per step, fetched for it on the device path) is not */
    for (int64_t i = 0; i < steps && !e; i++) {
      double a = now_ms();
      if (pass && i < 16) toks[i] = t;
      if (host_argmax) {
        e = lm_step(s, fd, 0, &t, 1, (int32_t)(8 + i), pos, &lg);
        if (!e) t = (int32_t)argmax_f(lg, V);
      } else {
        e = lm_step(s, fd, 0, &t, 1, (int32_t)(8 + i), pos, NULL);
        if (!e) e = bm_session_output_argmax(s, fd, 0, &t, 1);
      }
      if (pass) total += now_ms() - a;
      if (!e && pass && !host_argmax) {
        bm_tensor_info info;
        const void *d;
        e = bm_session_get_output(s, fd, 0, &d, &info);
        lg = d;
        if (!e && (int32_t)argmax_f(lg, V) != t)
          e = bm_status_make(BM_ERR_INTERNAL, "step %lld: the device argmax %d differs from the host's %d", (long long)i, t,
                             (int32_t)argmax_f(lg, V));
      }
      if (!e && pass) {
        const unsigned char *b = (const unsigned char *)lg;
        for (int64_t j = 0; j < 4 * V; j++) h = (h ^ b[j]) * 1099511628211ull;
      }
    }
  }
  if (e) goto done;
  printf("llm-bench decode %lld total_ms %.3f tok_s %.2f\n", (long long)N, total, 1e3 * (double)N / total);
  { /* the decode function alone: runs on the last step's inputs, nothing copied */
    double a = now_ms();
    for (int i = 0; i < 32 && !e; i++) e = bm_session_run(s, fd);
    if (!e) printf("llm-bench decode_fn ms %.3f\n", (now_ms() - a) / 32);
  }
  if (e) goto done;
  printf("llm-bench digest %016llx ids", (unsigned long long)h);
  for (int64_t i = 0; i < N && i < 16; i++) printf(" %d", toks[i]);
  printf("\n");
done:;
  int rc = e ? 1 : 0;
  if (e) printf("llm-bench FAIL %s: %s\n", path, bm_status_message(e));
  bm_status_free(e);
  free(ids);
  free(pos);
  bm_session_destroy(s);
  bm_package_close(pkg);
  return rc;
}

/* ------------------------------------------------------------------ the Stable Diffusion golden suite */

/* One function of an SD package run on a golden's inputs, its outputs
 * compared with the golden's (tests/test_sd_golden.c's checks, tolerance 1e-4
 * max abs error / max abs golden). Packages (scripts/cuda_device.sh pack):
 *   sd1     pipeline folder unet=sd1_unet, vae=vae_kl, text_encoder=clip_text,
 *           32x32 (16x16 latents), clip skip 1
 *   sd2     unet=sd2_unet, vae=vae_kl, text_encoder=clip_text_proj, 32x32
 *   sd1_64  as sd1 at 64x64 with clip skip 2 (vae_encoder takes the golden's
 *           64x64 image; the text encoder's hidden_states = final_layer_norm of
 *           hidden_states[-2])
 *   sd1_f16 as sd1 compiled with --dtype f16 (weights and activations; the
 *           function inputs and outputs stay f32): the UNet and the VAE
 *           decoder, bounded as test_dtype bounds them on the CPU and as the
 *           LLM goldens in f16 are here, BM_AMP_GOLD units of f16 roundoff
 *           (max abs error / max abs golden)
 * A golden name "ln:T" is final_layer_norm(T) computed here with
 * DIR/clip_text.model.safetensors' [text_model.]final_layer_norm (eps 1e-5), as
 * test_sd_golden's clip skip 2 check does. */
typedef struct sd_check {
  const char *pkg, *fn, *golden, *what;
  const char *in[3][2];  /* {function input, golden tensor}; converted to the declared dtype */
  const char *out[4][2]; /* {function output, golden tensor} */
  bool f16;              /* the package computes in f16: the f16 bound instead of 1e-4 */
} sd_check;

static const sd_check sd_checks[] = {
    {"sd1", "text_encoder", "clip_text", "clip_text (clip skip 1)", {{"input_ids", "input_ids"}},
     {{"hidden_states", "last_hidden_state"}, {"pooled", "pooler_output"}, {"penultimate", "penultimate_hidden_state"}}},
    {"sd1", "unet", "sd1_unet", "sd1_unet",
     {{"sample", "sample"}, {"timestep", "timestep"}, {"encoder_hidden_states", "encoder_hidden_states"}},
     {{"model_output", "out_sample"}}},
    {"sd1", "vae_decoder", "vae_kl", "vae_kl decode", {{"latent", "latent"}}, {{"image", "out_decoded"}}},
    {"sd2", "text_encoder", "clip_text_proj", "clip_text_proj", {{"input_ids", "input_ids"}},
     {{"hidden_states", "last_hidden_state"}, {"penultimate", "penultimate_hidden_state"}, {"text_embeds", "text_embeds"}}},
    {"sd2", "unet", "sd2_unet", "sd2_unet",
     {{"sample", "sample"}, {"timestep", "timestep"}, {"encoder_hidden_states", "encoder_hidden_states"}},
     {{"model_output", "out_sample"}}},
    {"sd1_64", "vae_encoder", "vae_kl", "vae_kl encode", {{"image", "image"}},
     {{"mean", "out_latent_mean"}, {"logvar", "out_latent_logvar"}, {"std", "out_latent_std"}}},
    {"sd1_64", "text_encoder", "clip_text", "clip_text (clip skip 2)", {{"input_ids", "input_ids"}},
     {{"penultimate", "penultimate_hidden_state"}, {"hidden_states", "ln:penultimate_hidden_state"}}},
    {"sd1_f16", "unet", "sd1_unet", "sd1_unet f16",
     {{"sample", "sample"}, {"timestep", "timestep"}, {"encoder_hidden_states", "encoder_hidden_states"}},
     {{"model_output", "out_sample"}}, true},
    {"sd1_f16", "vae_decoder", "vae_kl", "vae_kl decode f16", {{"latent", "latent"}}, {{"image", "out_decoded"}}, true},
};

/* t as f32 (malloc'd), or NULL; i64/i32 converted. */
static float *st_f32(const bm_st_tensor *t) {
  float *o = malloc(sizeof(float) * (size_t)(t->numel ? t->numel : 1));
  tens v = {.dt = t->dtype, .data = (void *)t->data};
  for (int64_t i = 0; o && i < t->numel; i++) o[i] = elem(&v, i);
  return o;
}

/* final_layer_norm of the rows of x (C = w's length), in double. */
static float *sd_layer_norm(const bm_st_tensor *x, const bm_st_tensor *w, const bm_st_tensor *b, double eps) {
  int64_t C = w->numel, rows = C ? x->numel / C : 0;
  float *xs = st_f32(x), *ws = st_f32(w), *bs = st_f32(b), *o = malloc(sizeof(float) * (size_t)(x->numel + 1));
  for (int64_t r = 0; xs && ws && bs && o && r < rows; r++) {
    double mean = 0, var = 0;
    for (int64_t i = 0; i < C; i++) mean += xs[r * C + i];
    mean /= (double)C;
    for (int64_t i = 0; i < C; i++) var += (xs[r * C + i] - mean) * (xs[r * C + i] - mean);
    var /= (double)C;
    for (int64_t i = 0; i < C; i++) o[r * C + i] = (float)((xs[r * C + i] - mean) / sqrt(var + eps) * ws[i] + bs[i]);
  }
  free(xs);
  free(ws);
  free(bs);
  return o;
}

/* Runs one check; prints a line per output; returns the number failed. */
static int sd_case(const char *dir, const sd_check *c, double tol) {
  char path[4096];
  bm_st_file *gold = NULL, *clip = NULL;
  bm_package *pkg = NULL;
  bm_session *s = NULL;
  void *bufs[3] = {0};
  int f = 0, bad = 0, nout = 0;
  while (nout < 4 && c->out[nout][0]) nout++;
  snprintf(path, sizeof path, "%s/%s.golden.safetensors", dir, c->golden);
  bm_status e = bm_st_open(path, &gold);
  snprintf(path, sizeof path, "%s/%s.bmpk", dir, c->pkg);
  if (!e) e = bm_package_open(path, NULL, &pkg);
  if (!e) e = bm_session_create(pkg, NULL, &s);
  if (!e) e = bm_package_find_function(pkg, c->fn, &f);
  for (int i = 0; !e && i < 3 && c->in[i][0]; i++) {
    const bm_st_tensor *t;
    bm_tensor_info info;
    int idx;
    e = bm_st_get(gold, c->in[i][1], &t);
    if (!e) e = bm_function_find_input(pkg, f, c->in[i][0], &idx);
    if (!e) e = bm_function_input_info(pkg, f, idx, &info);
    if (e) break;
    float *v = st_f32(t);
    if (!v) {
      e = bm_status_make(BM_ERR_OUT_OF_MEMORY, "%s: input %s", c->what, c->in[i][0]);
      break;
    }
    if (info.dtype == BM_DTYPE_I32) { /* token ids */
      int32_t *ids = malloc(sizeof(int32_t) * (size_t)(t->numel ? t->numel : 1));
      for (int64_t j = 0; ids && j < t->numel; j++) ids[j] = (int32_t)v[j];
      free(v);
      bufs[i] = ids;
    } else if (info.dtype == BM_DTYPE_F32) {
      bufs[i] = v;
    } else {
      free(v);
      e = bm_status_make(BM_ERR_UNSUPPORTED, "%s: input %s is %s (f32 or i32 expected)", c->what, c->in[i][0],
                         bm_dtype_name(info.dtype));
      break;
    }
    if (!bufs[i]) e = bm_status_make(BM_ERR_OUT_OF_MEMORY, "%s: input %s", c->what, c->in[i][0]);
    if (!e) e = bm_session_set_input(s, f, idx, bufs[i], info.dtype, t->ndim, t->shape);
  }
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  if (!e) e = bm_session_run(s, f);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double ms = 1e3 * ((double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
  if (e) {
    printf("FAIL %-28s %s.%s: %s\n", c->what, c->pkg, c->fn, bm_status_message(e));
    bm_status_free(e);
    bad = nout;
    goto done;
  }
  for (int k = 0; k < nout; k++) {
    const char *gname = c->out[k][1];
    int ln = !strncmp(gname, "ln:", 3);
    const bm_st_tensor *g = NULL, *w = NULL, *b = NULL;
    float *ref = NULL, *got = NULL;
    int64_t n = 0;
    e = bm_st_get(gold, ln ? gname + 3 : gname, &g);
    if (!e && ln && !clip) {
      snprintf(path, sizeof path, "%s/clip_text.model.safetensors", dir);
      e = bm_st_open(path, &clip);
    }
    if (!e && ln) { /* transformers saves CLIPTextModel with or without the text_model. prefix */
      const char *tm = bm_st_find(clip, "text_model.final_layer_norm.weight") ? "text_model." : "";
      char wn[64], bn[64];
      snprintf(wn, sizeof wn, "%sfinal_layer_norm.weight", tm);
      snprintf(bn, sizeof bn, "%sfinal_layer_norm.bias", tm);
      e = bm_st_get(clip, wn, &w);
      if (!e) e = bm_st_get(clip, bn, &b);
    }
    if (!e) ref = ln ? sd_layer_norm(g, w, b, 1e-5) : st_f32(g);
    for (int i = 0; !e && i < bm_function_output_count(pkg, f); i++) {
      const void *data;
      bm_tensor_info info;
      e = bm_session_get_output(s, f, i, &data, &info);
      if (e || strcmp(info.name, c->out[k][0])) continue;
      tens o = {.dt = info.dtype, .ndim = info.ndim, .data = (void *)data};
      memcpy(o.shape, info.shape, sizeof(int64_t) * (size_t)info.ndim);
      n = numel(&o);
      got = malloc(sizeof(float) * (size_t)(n ? n : 1));
      for (int64_t j = 0; got && j < n; j++) got[j] = elem(&o, j);
    }
    double err = NAN;
    if (!e && !got) e = bm_status_make(BM_ERR_NOT_FOUND, "%s.%s has no output '%s'", c->pkg, c->fn, c->out[k][0]);
    else if (!e && n != g->numel)
      e = bm_status_make(BM_ERR_INVALID_ARGUMENT, "%s: %lld values, golden %s has %lld", c->out[k][0],
                         (long long)n, gname, (long long)g->numel);
    else if (!e && ref) err = rel_err(got, ref, n);
    int ok = !e && err < tol;
    bad += !ok;
    char label[96];
    snprintf(label, sizeof label, "%s %s", c->what, c->out[k][0]);
    printf("%s %-40s rel err %-10.3g tol %-8.3g %s.%s first run %.3f ms %s\n", ok ? "ok  " : "FAIL", label, err,
           tol, c->pkg, c->fn, ms, e ? bm_status_message(e) : "");
    bm_status_free(e);
    e = NULL;
    free(ref);
    free(got);
  }
done:
  for (int i = 0; i < 3; i++) free(bufs[i]);
  bm_session_destroy(s);
  bm_package_close(pkg);
  bm_st_close(gold);
  bm_st_close(clip);
  return bad;
}

static int sd_suite(const char *dir) {
  int passed = 0, failed = 0;
  for (size_t i = 0; i < sizeof sd_checks / sizeof sd_checks[0]; i++) {
    int nout = 0;
    while (nout < 4 && sd_checks[i].out[nout][0]) nout++;
    int b = sd_case(dir, &sd_checks[i], sd_checks[i].f16 ? BM_AMP_GOLD * BM_U_F16 : 1e-4);
    failed += b;
    passed += nout - b;
    fflush(stdout);
  }
  printf("sd golden: %d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}

int main(int argc, char **argv) {
  if (argc == 3 && !strcmp(argv[1], "--sd")) return sd_suite(argv[2]);
  if (argc == 6 && !strcmp(argv[1], "--llm-bench"))
    return llm_bench(argv[2], atoll(argv[3]) > 0 ? atoll(argv[3]) : 1, atoll(argv[4]) > 0 ? atoll(argv[4]) : 1,
                     atoi(argv[5]) > 0 ? atoi(argv[5]) : 1);
  if (argc == 3 && !strcmp(argv[1], "--llm")) return llm_suite(argv[2]);
  if (argc >= 3 && !strcmp(argv[1], "--bench")) {
    int reps = atoi(argv[2]);
    return bench(reps > 0 ? reps : 20, argc - 3, argv + 3);
  }
  if (argc != 2) {
    fprintf(stderr, "usage: bm_cuda_check DIR (written by BM_CUDA_EXPORT=DIR test_ops_cuda)\n");
    return 2;
  }
  bm_status pr = bm_device_probe(BM_DEVICE_CUDA);
  char path[4096];
  snprintf(path, sizeof path, "%s/list.txt", argv[1]);
  FILE *f = fopen(path, "r");
  if (!f) {
    fprintf(stderr, "bm_cuda_check: cannot read %s\n", path);
    return 1;
  }
  int passed = 0, failed = 0, skipped = 0;
  char name[256];
  while (fscanf(f, "%255s", name) == 1) {
    if (pr) {
      skipped++;
      continue;
    }
    for (int ptx = 0; ptx < 2; ptx++) {
      int r = run_case(argv[1], name, ptx);
      if (r == 0) passed++;
      else if (r > 0) failed++;
    }
  }
  fclose(f);
  if (pr) {
    printf("bm_cuda_check: skipped (%s)\n", bm_status_message(pr));
    bm_status_free(pr);
  }
  printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
  return failed ? 1 : 0;
}
