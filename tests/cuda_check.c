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
 *
 * DIR/list.txt names the case folders; each has meta.txt:
 *   tol <max relative error>
 *   [ptx]                      also run with BM_CUDA_FORCE_PTX=1
 *   input <dtype> <ndim> <dims...>    (file in<i>.bin, in order)
 *   output <dtype> <ndim> <dims...>   (file ref<i>.bin) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../runtime/bm_runtime.h"
#include "../runtime/safetensors.h"

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
  char label[160];
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
    void *bufs[16] = {0};
    int nin = 0;
    bm_status st = bm_package_open(pkgs[p], NULL, &pkg);
    if (!st) st = bm_session_create(pkg, NULL, &s);
    if (!st) nin = bm_function_input_count(pkg, 0);
    if (!st && nin > 16) st = bm_status_make(BM_ERR_UNSUPPORTED, "%s: %d inputs (16 at most)", pkgs[p], nin);
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
    for (int i = 0; i < 16; i++) free(bufs[i]);
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
 * every step). Prints one line per check; returns the number failed. */
static int llm_case(const char *dir, const char *name, double tol) {
  char path[4096];
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
  snprintf(path, sizeof path, "%s/%s.bmpk", dir, name);
  if (!e) e = bm_package_open(path, NULL, &pkg);
  if (!e) e = bm_session_create(pkg, NULL, &s);
  if (e) {
    printf("FAIL %-14s %s\n", name, bm_status_message(e));
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
    printf("%s %-14s forward        rel err %-10.3g %s\n", err < tol ? "ok  " : "FAIL", name, err,
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
    printf("%s %-14s batch forward  rel err %-10.3g %s\n", err < tol ? "ok  " : "FAIL", name, err,
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
  int tok_ok = tok == greedy[0], steps = 0;
  if (e) printf("FAIL %-14s prefill        %s\n", name, bm_status_message(e));
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
      printf("FAIL %-14s decode step %lld: %s\n", name, (long long)i, bm_status_message(e));
      bm_status_free(e);
      worst = NAN;
      break;
    }
    err = n == V ? rel_err(out, gdec + i * V, V) : INFINITY;
    if (!isnan(worst) && !(err <= worst)) worst = err;
    tok = (int32_t)argmax_f(out, V);
    tok_ok &= tok == greedy[i + 1];
    steps++;
    free(out);
    out = NULL;
  }
  int ok = worst < tol && tok_ok;
  bad += !ok;
  printf("%s %-14s prefill+decode rel err %-10.3g %d steps, greedy ids %s\n", ok ? "ok  " : "FAIL", name, worst,
         steps, tok_ok ? "exact" : "DIFFER");
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
    int b = llm_case(dir, name, 1e-4);
    failed += b;
    passed += 3 - b;
    fflush(stdout);
  }
  fclose(f);
  printf("llm golden on cuda: %d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}

int main(int argc, char **argv) {
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
