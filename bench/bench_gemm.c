/* bench_gemm.c - f32 GEMM benchmark: a one-matmul graph compiled by bm and
 * run through the runtime, against cblas_sgemm (OpenBLAS) on the same data
 * in the same process, 1 and 2 threads. Prints GFLOP/s and the ratio.
 *
 *   bench_gemm [--reps N] [--threads T] [--quick] [--shape MxKxN[t]]
 *
 * Not a test: needs OpenBLAS (built only when CMake finds it). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../compiler/compile.h"

#ifdef BM_HAVE_OPENBLAS
#include <cblas.h>
void openblas_set_num_threads(int);
#endif

typedef struct shape {
  int64_t m, k, n;
  bool tb; /* weight stored (N, K) as in nn.Linear */
} shape;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void fill(float *p, int64_t n, uint64_t seed) {
  for (int64_t i = 0; i < n; i++) {
    seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
    p[i] = (float)((seed >> 40) & 0xffff) / 32768.0f - 1.0f;
  }
}

/* Compiles y = x @ w (or x @ w^T) into a package; w is bound as a weight. */
static bm_status build_package(const shape *s, const float *w, const char *path) {
  bm_module *m = bm_module_create("gemm");
  if (!m) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "module");
  bm_graph *g = bm_graph_create(m, "main");
  int64_t sx[2] = {s->m, s->k};
  int64_t sw[2] = {s->tb ? s->n : s->k, s->tb ? s->k : s->n};
  bm_node *x = bm_input(g, "x", BM_DTYPE_F32, 2, sx);
  bm_node *wn = bm_weight(g, "w", BM_DTYPE_F32, 2, sw, w, sizeof(float) * (size_t)(s->k * s->n));
  bm_output_add(g, "y", bm_matmul(g, x, wn, false, s->tb));
  bm_compile_options co;
  bm_compile_options_init(&co);
  bm_status st = bm_graph_status(g) ? bm_status_make(BM_ERR_INTERNAL, "%s", bm_status_message(bm_graph_status(g)))
                                    : bm_compile_module(m, &co, path);
  bm_module_destroy(m);
  return st;
}

static int bench_one(const shape *s, int threads, int reps) {
  int64_t M = s->m, K = s->k, N = s->n;
  float *x = malloc(sizeof(float) * (size_t)(M * K));
  float *w = malloc(sizeof(float) * (size_t)(K * N));
  float *yb = malloc(sizeof(float) * (size_t)(M * N));
  if (!x || !w || !yb) return 1;
  fill(x, M * K, 1);
  fill(w, K * N, 2);
  char path[256];
  snprintf(path, sizeof path, "/tmp/bench_gemm_%d.bmpk", (int)getpid());
  bm_status st = build_package(s, w, path);
  bm_package *pkg = NULL;
  bm_session *ses = NULL;
  int f = 0;
  if (!st) st = bm_package_open(path, &(bm_open_options){.flags = BM_OPEN_SKIP_CHECKSUMS}, &pkg);
  if (!st) st = bm_package_find_function(pkg, "main", &f);
  if (!st) st = bm_session_create(pkg, &(bm_session_options){.threads = threads}, &ses);
  int64_t sx[2] = {M, K};
  if (!st) st = bm_session_set_input(ses, f, 0, x, BM_DTYPE_F32, 2, sx);
  if (st) {
    fprintf(stderr, "bench_gemm: %s\n", bm_status_message(st));
    return 1;
  }
  double flops = 2.0 * (double)M * (double)N * (double)K;
  /* Blocks of repetitions per library, with a pause between blocks: both
   * thread pools spin for a while after a call, and on a small machine a
   * spinning pool steals the cores of the other library's next call. The
   * rounds spread slow background load over both. */
  enum { ROUNDS = 3 };
  int nsamp = ROUNDS * reps;
  double *tb = malloc(sizeof(double) * (size_t)nsamp), *to = malloc(sizeof(double) * (size_t)nsamp);
  const void *yo = NULL;
  bm_tensor_info info;
#ifdef BM_HAVE_OPENBLAS
  openblas_set_num_threads(threads);
#endif
  for (int round = 0; round < ROUNDS; round++) {
    usleep(300000);
    for (int r = -1; r < reps; r++) { /* r = -1: warm-up */
      double t0 = now();
      st = bm_session_run(ses, f);
      double t1 = now();
      if (st) {
        fprintf(stderr, "bench_gemm: run: %s\n", bm_status_message(st));
        return 1;
      }
      if (r >= 0) tb[round * reps + r] = t1 - t0;
    }
#ifdef BM_HAVE_OPENBLAS
    usleep(300000);
    for (int r = -1; r < reps; r++) {
      double t0 = now();
      cblas_sgemm(CblasRowMajor, CblasNoTrans, s->tb ? CblasTrans : CblasNoTrans, (int)M, (int)N,
                  (int)K, 1.0f, x, (int)K, w, s->tb ? (int)K : (int)N, 0.0f, yb, (int)N);
      double t1 = now();
      if (r >= 0) to[round * reps + r] = t1 - t0;
    }
#endif
  }
  st = bm_session_get_output(ses, f, 0, &yo, &info);
  if (st) {
    fprintf(stderr, "bench_gemm: %s\n", bm_status_message(st));
    return 1;
  }
#ifdef BM_HAVE_OPENBLAS
  double maxd = 0, maxr = 0;
  for (int64_t i = 0; i < M * N; i++) {
    double d = fabs((double)((const float *)yo)[i] - yb[i]);
    if (d > maxd) maxd = d;
    if (fabs(yb[i]) > maxr) maxr = fabs(yb[i]);
  }
  double rel = maxd / (maxr > 0 ? maxr : 1);
  double gb = flops / median(tb, nsamp) * 1e-9, go = flops / median(to, nsamp) * 1e-9;
  printf("%5lld x %5lld x %5lld %-3s thr %d | bm %8.1f GFLOP/s | openblas %8.1f GFLOP/s | ratio %5.2f | rel err %.1e%s\n",
         (long long)M, (long long)K, (long long)N, s->tb ? "NT" : "NN", threads, gb, go, gb / go, rel,
         rel > 1e-4 ? "  MISMATCH" : "");
#else
  printf("%5lld x %5lld x %5lld %s thr %d | bm %8.1f GFLOP/s (no OpenBLAS)\n", (long long)M,
         (long long)K, (long long)N, s->tb ? "NT" : "NN", threads, flops / median(tb, nsamp) * 1e-9);
#endif
  fflush(stdout);
  bm_session_destroy(ses);
  bm_package_close(pkg);
  remove(path);
  free(tb);
  free(to);
  free(x);
  free(w);
  free(yb);
  return 0;
}

int main(int argc, char **argv) {
  shape all[] = {
      {256, 256, 256, false},    {512, 512, 512, false},    {1024, 1024, 1024, false},
      {1536, 1536, 1536, false}, {2048, 2048, 2048, false}, {1, 4096, 4096, false},
      {1, 4096, 4096, true},     {128, 4096, 11008, false}, {128, 4096, 11008, true},
  };
  int nshapes = (int)(sizeof all / sizeof all[0]);
  int reps = 7, only_threads = 0;
  shape custom;
  bool have_custom = false;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
      reps = atoi(argv[++i]);
    } else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
      only_threads = atoi(argv[++i]);
    } else if (!strcmp(argv[i], "--quick")) {
      nshapes = 3;
    } else if (!strcmp(argv[i], "--shape") && i + 1 < argc) {
      long long m, k, n;
      char t = 0;
      if (sscanf(argv[++i], "%lldx%lldx%lld%c", &m, &k, &n, &t) < 3) {
        fprintf(stderr, "bench_gemm: --shape MxKxN[t]\n");
        return 2;
      }
      custom = (shape){m, k, n, t == 't'};
      have_custom = true;
    } else {
      fprintf(stderr, "usage: bench_gemm [--reps N] [--threads T] [--quick] [--shape MxKxN[t]]\n");
      return 2;
    }
  }
  if (reps < 1) reps = 1;
  shape *list = have_custom ? &custom : all;
  if (have_custom) nshapes = 1;
  for (int t = 1; t <= 2; t++) {
    if (only_threads && t != only_threads) continue;
    for (int i = 0; i < nshapes; i++)
      if (bench_one(&list[i], t, reps)) return 1;
  }
  return 0;
}
