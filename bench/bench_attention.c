/* bench_attention.c - the fused flash-attention kernel against the unfused
 * graph (matmul -> scale [-> causal mask] -> softmax -> matmul, fusion off),
 * both compiled for the CPU and timed through the runtime in the same run.
 *
 *   bench_attention [--case sd|llm|all] [--reps N] [--threads N] [--quick]
 *
 * sd:  self-attention of Stable-Diffusion size, B=2, H=8, S=4096, D=40
 * llm: causal self-attention of LLM size, B=1, H=32, S=1024, D=128
 * --quick divides S by 4 (a smoke run). Prints times, the unfused/fused
 * ratio and the memory the unfused graph needs for its score matrix. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../compiler/compile.h"
#include "../ir/interp.h"

typedef struct bench_case {
  const char *name;
  int64_t b, h, s, d;
  bool causal;
} bench_case;

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* The graph: fused uses the ATTENTION op; unfused spells out the pattern,
 * with an explicit additive causal mask input (1, 1, S, S) when causal. */
static bm_status build(const bench_case *c, bool fused, bm_module **out) {
  *out = NULL;
  bm_module *m = bm_module_create(fused ? "attn_fused" : "attn_unfused");
  if (!m) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "module");
  bm_graph *g = bm_graph_create(m, "main");
  int64_t qs[4] = {c->b, c->h, c->s, c->d}, ms[4] = {1, 1, c->s, c->s};
  bm_node *q = bm_input(g, "q", BM_DTYPE_F32, 4, qs);
  bm_node *k = bm_input(g, "k", BM_DTYPE_F32, 4, qs);
  bm_node *v = bm_input(g, "v", BM_DTYPE_F32, 4, qs);
  bm_node *o;
  if (fused) {
    o = bm_attention(g, q, k, v, NULL, 0.0f, c->causal, 0, 0.0f);
  } else {
    bm_node *s = bm_matmul(g, q, k, false, true); /* (B, H, S, S) */
    s = bm_mul(g, s, bm_scalar(g, 1.0f / sqrtf((float)c->d)));
    if (c->causal) s = bm_add(g, s, bm_input(g, "mask", BM_DTYPE_F32, 4, ms));
    o = bm_matmul(g, bm_softmax(g, s, 3), v, false, false); /* (B, H, S, D) */
  }
  bm_output_add(g, "out", o);
  bm_status st = bm_graph_status(g);
  if (st) {
    st = bm_status_make(bm_status_code(st), "%s", bm_status_message(st));
    bm_module_destroy(m);
    return st;
  }
  *out = m;
  return NULL;
}

typedef struct bench_result {
  double seconds;     /* best of reps */
  uint64_t arena;     /* planned activation arena */
  float checksum;     /* sum of the outputs, to compare the two versions */
} bench_result;

static bm_status run_one(const bench_case *c, bool fused, int reps, int threads,
                         bench_result *r) {
  memset(r, 0, sizeof *r);
  bm_module *m = NULL;
  BM_RETURN_IF_ERROR(build(c, fused, &m));
  char path[256];
  snprintf(path, sizeof path, "/tmp/bench_attention_%d_%s.bmpk", (int)getpid(),
           fused ? "fused" : "unfused");
  bm_compile_options co;
  bm_compile_options_init(&co);
  co.passes.no_fuse = !fused;
  bm_package *pkg = NULL;
  bm_session *ses = NULL;
  float *data[4] = {NULL, NULL, NULL, NULL};
  int f = 0;
  bm_status s = bm_compile_module(m, &co, path);
  bm_module_destroy(m);
  if (!s) s = bm_package_open(path, NULL, &pkg);
  if (!s) s = bm_package_find_function(pkg, "main", &f);
  bm_session_options so = {.threads = threads};
  if (!s) s = bm_session_create(pkg, &so, &ses);
  /* inputs q, k, v (B, H, S, D) and, unfused causal, mask (1, 1, S, S) */
  int64_t qs[4] = {c->b, c->h, c->s, c->d}, ms[4] = {1, 1, c->s, c->s};
  size_t nq = (size_t)(c->b * c->h * c->s * c->d), nm = (size_t)(c->s * c->s);
  int nin = pkg ? bm_function_input_count(pkg, f) : 0;
  for (int i = 0; i < nin && !s; i++) {
    bool is_mask = i == 3;
    size_t n = is_mask ? nm : nq;
    data[i] = malloc(n * sizeof(float));
    if (!data[i]) {
      s = bm_status_make(BM_ERR_OUT_OF_MEMORY, "input %d: %zu floats", i, n);
      break;
    }
    uint64_t st = 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1);
    for (size_t e = 0; e < n; e++) {
      if (is_mask) {
        data[i][e] = (int64_t)(e % (size_t)c->s) > (int64_t)(e / (size_t)c->s) ? -INFINITY : 0.0f;
      } else {
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        data[i][e] = (float)((st >> 40) & 0xffffff) / 16777216.0f * 2.0f - 1.0f;
      }
    }
    s = bm_session_set_input(ses, f, i, data[i], BM_DTYPE_F32, 4, is_mask ? ms : qs);
  }
  r->seconds = INFINITY;
  for (int rep = 0; rep <= reps && !s; rep++) { /* rep 0 warms up */
    double t0 = now_s();
    s = bm_session_run(ses, f);
    double t = now_s() - t0;
    if (rep > 0 && t < r->seconds) r->seconds = t;
  }
  if (!s) {
    const void *out;
    bm_tensor_info info;
    s = bm_session_get_output(ses, f, 0, &out, &info);
    if (!s) {
      double sum = 0;
      for (size_t e = 0; e < nq; e++) sum += ((const float *)out)[e];
      r->checksum = (float)sum;
    }
    r->arena = bm_package_arena_bytes(pkg);
  }
  for (int i = 0; i < 4; i++) free(data[i]);
  bm_session_destroy(ses);
  bm_package_close(pkg);
  remove(path);
  return s;
}

static int bench(const bench_case *c, int reps, int threads) {
  printf("%s: B=%lld H=%lld S=%lld D=%lld%s\n", c->name, (long long)c->b, (long long)c->h,
         (long long)c->s, (long long)c->d, c->causal ? " causal" : "");
  fflush(stdout);
  /* useful work: Q.K^T and P.V (half of it under a causal mask) */
  double flops = 4.0 * (double)(c->b * c->h) * (double)c->s * (double)c->s * (double)c->d;
  if (c->causal) flops /= 2.0;
  double score_mb = (double)(c->b * c->h * c->s * c->s) * 4.0 / (1 << 20);
  bench_result r[2];
  const char *label[2] = {"fused  ", "unfused"};
  int ok = 0;
  for (int i = 0; i < 2; i++) {
    bm_status s = run_one(c, i == 0, reps, threads, &r[i]);
    if (s) {
      printf("  %s failed: %s\n", label[i], bm_status_message(s));
      bm_status_free(s);
      continue;
    }
    ok |= 1 << i;
    printf("  %s %9.2f ms  %7.1f GFLOP/s  arena %8.1f MiB  checksum %g\n", label[i],
           r[i].seconds * 1e3, flops / r[i].seconds * 1e-9, (double)r[i].arena / (1 << 20),
           r[i].checksum);
    fflush(stdout);
  }
  printf("  the unfused score matrix (B, H, S, S) f32 alone needs %.1f MiB\n", score_mb);
  if (ok == 3) printf("  unfused / fused time: %.2fx\n", r[1].seconds / r[0].seconds);
  return ok == 3 ? 0 : 1;
}

int main(int argc, char **argv) {
  const char *which = "all";
  int reps = 3, threads = 0, quick = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--case") && i + 1 < argc)
      which = argv[++i];
    else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
      reps = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
      threads = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--quick"))
      quick = 1;
    else {
      fprintf(stderr, "usage: %s [--case sd|llm|all] [--reps N] [--threads N] [--quick]\n",
              argv[0]);
      return 2;
    }
  }
  if (reps < 1) reps = 1;
  bench_case cases[2] = {
      {"sd", 2, 8, 4096, 40, false},
      {"llm", 1, 32, 1024, 128, true},
  };
  int rc = 0;
  for (int i = 0; i < 2; i++) {
    if (strcmp(which, "all") && strcmp(which, cases[i].name)) continue;
    if (quick) cases[i].s /= 4;
    rc |= bench(&cases[i], reps, threads);
  }
  return rc;
}
