/* bench_llm.c - LLM inference benchmark: random-weight LLaMA models built by
 * the LLM model builder (models/llm.h, a config.json in a tmp folder plus
 * generated weights), compiled in f32, int8 and int4 (passes/quantize.c):
 * prefill and decode tokens/s, against the machine's memory bandwidth
 * measured in the same run. A "gemv" section times chains of single
 * matmul / qmatmul layers whose weights far exceed the caches.
 *
 *   bench_llm [--threads T] [--model small|tinyllama|all] [--quant f32,int8,int4]
 *             [--prompt P] [--decode N] [--no-gemv] [--gemv-only]
 *
 * Not a test. Decode bandwidth = bytes of weights read per token (every
 * matmul weight once; the embedding table only for one row) x tokens/s. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "../compiler/compile.h"
#include "../models/models.h"

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

static uint64_t splitmix(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static int die(const char *what, bm_status s) {
  fprintf(stderr, "bench_llm: %s: %s\n", what, s ? bm_status_message(s) : "failed");
  bm_status_free(s);
  return 1;
}

/* ------------------------------------------------------------------ memory bandwidth */

typedef struct bw_job {
  const uint64_t *p;
  size_t n;
  uint64_t sum;
} bw_job;

static void *bw_read(void *arg) {
  bw_job *j = arg;
  uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  for (size_t i = 0; i + 8 <= j->n; i += 8) {
    a0 += j->p[i] ^ j->p[i + 4];
    a1 += j->p[i + 1] ^ j->p[i + 5];
    a2 += j->p[i + 2] ^ j->p[i + 6];
    a3 += j->p[i + 3] ^ j->p[i + 7];
  }
  j->sum = a0 + a1 + a2 + a3;
  return NULL;
}

/* Streaming read of a 1 GiB buffer by `threads` threads (each its own
 * contiguous slice); best of `passes` passes, in GB/s (1e9 bytes). */
static double measure_bandwidth(int threads, int passes) {
  size_t bytes = (size_t)1 << 30, n = bytes / 8;
  /* huge pages where the kernel gives them: on this VM a read over 4 KiB
   * anonymous pages is TLB bound (~5.5 GB/s against ~9.4 with huge pages or
   * over a file mapping, which is how the package's weights are read) */
  uint64_t *buf = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (buf == MAP_FAILED) return 0;
  madvise(buf, bytes, MADV_HUGEPAGE);
  for (size_t i = 0; i < n; i++) buf[i] = i * 0x9E3779B97F4A7C15ull;
  double best = 0;
  uint64_t sink = 0;
  for (int rep = 0; rep < passes; rep++) {
    pthread_t th[64];
    bw_job jobs[64];
    int T = threads < 1 ? 1 : threads > 64 ? 64 : threads;
    double t0 = now();
    for (int t = 0; t < T; t++) {
      jobs[t] = (bw_job){buf + n / T * t, n / T, 0};
      pthread_create(&th[t], NULL, bw_read, &jobs[t]);
    }
    for (int t = 0; t < T; t++) {
      pthread_join(th[t], NULL);
      sink += jobs[t].sum;
    }
    double gbs = (double)bytes / (now() - t0) * 1e-9;
    if (gbs > best) best = gbs;
  }
  munmap(buf, bytes);
  if (sink == 42) printf("(sink)\n");
  return best;
}

/* ------------------------------------------------------------------ packages */

typedef struct pkg_run {
  bm_package *pkg;
  bm_session *ses;
  char path[1024];
} pkg_run;

static bm_status open_run(const char *path, int threads, pkg_run *r) {
  snprintf(r->path, sizeof r->path, "%s", path);
  BM_RETURN_IF_ERROR(bm_package_open(path, &(bm_open_options){.flags = BM_OPEN_SKIP_CHECKSUMS}, &r->pkg));
  return bm_session_create(r->pkg, &(bm_session_options){.threads = threads}, &r->ses);
}

static void close_run(pkg_run *r) {
  bm_session_destroy(r->ses);
  bm_package_close(r->pkg);
  remove(r->path);
}

static const char *mode_name(bm_quant_mode q) {
  return q == BM_QUANT_INT8 ? "int8" : q == BM_QUANT_INT4 ? "int4 g32" : "f32";
}

/* ------------------------------------------------------------------ gemv: chains of layers */

/* y = W_L(...W_1(x)) with L layers (dim x dim) and x (M, dim), M a symbol
 * up to 16; weights: f32 or random q (i8 / i4 g32) with scales that keep the
 * activations' scale. Prints one row per M of Ms. */
static int bench_chain(bm_quant_mode mode, int64_t dim, int layers, const int64_t *Ms, int nM, int threads,
                       double bw, const char *tmp) {
  bm_module *m = bm_module_create("chain");
  bm_graph *g = bm_graph_create(m, "main");
  int msym = bm_sym_declare(g, "m", 16);
  bm_node *x = bm_input(g, "x", BM_DTYPE_F32, 2, (int64_t[]){BM_SYM(msym), dim});
  uint64_t seed = 1;
  double bytes = 0;
  int64_t G = mode == BM_QUANT_INT4 ? dim / 32 : 1;
  for (int l = 0; l < layers; l++) {
    char name[64];
    snprintf(name, sizeof name, "w%d", l);
    if (mode == BM_QUANT_NONE) {
      float *w = bm_arena_alloc(m->arena, sizeof(float) * (size_t)(dim * dim));
      if (!w) return die("alloc", NULL);
      float a = sqrtf(3.0f / (float)dim);
      for (int64_t i = 0; i < dim * dim; i++) w[i] = a * ((float)(splitmix(&seed) >> 40) / 8388608.0f - 1.0f);
      x = bm_matmul(g, x, bm_weight(g, name, BM_DTYPE_F32, 2, (int64_t[]){dim, dim}, w, sizeof(float) * (size_t)(dim * dim)),
                    false, true);
      bytes += 4.0 * (double)(dim * dim);
    } else {
      bm_dtype qt = mode == BM_QUANT_INT8 ? BM_DTYPE_I8 : BM_DTYPE_I4;
      size_t qb = bm_dtype_nbytes(qt, dim * dim);
      uint64_t *q = bm_arena_alloc(m->arena, (qb + 7) & ~(size_t)7);
      float *s = bm_arena_alloc(m->arena, sizeof(float) * (size_t)(dim * G));
      if (!q || !s) return die("alloc", NULL);
      for (size_t i = 0; i < (qb + 7) / 8; i++) q[i] = splitmix(&seed);
      /* uniform bytes have std ~74, uniform nibbles ~4.6 */
      float sv = 1.0f / ((qt == BM_DTYPE_I8 ? 74.0f : 4.6f) * sqrtf((float)dim));
      for (int64_t i = 0; i < dim * G; i++) s[i] = sv;
      char sn[64];
      snprintf(sn, sizeof sn, "s%d", l);
      x = bm_qmatmul(g, x, bm_weight(g, name, qt, 2, (int64_t[]){dim, dim}, q, qb),
                     bm_weight(g, sn, BM_DTYPE_F32, 2, (int64_t[]){dim, G}, s, sizeof(float) * (size_t)(dim * G)));
      bytes += (double)qb + 4.0 * (double)(dim * G);
    }
  }
  bm_output_add(g, "y", x);
  if (bm_graph_status(g)) return die("build chain", bm_status_make(BM_ERR_INTERNAL, "%s", bm_status_message(bm_graph_status(g))));
  char path[512];
  snprintf(path, sizeof path, "%s/chain.bmpk", tmp);
  bm_compile_options co;
  bm_compile_options_init(&co);
  bm_status st = bm_compile_module(m, &co, path);
  bm_module_destroy(m);
  if (st) return die("compile chain", st);
  pkg_run r;
  st = open_run(path, threads, &r);
  float *xin = calloc((size_t)(16 * dim), sizeof(float));
  for (int64_t i = 0; i < 16 * dim; i++) xin[i] = (float)((i * 7919) % 17) / 8.0f - 1.0f;
  for (int mi = 0; mi < nM && !st; mi++) {
    int64_t M = Ms[mi];
    st = bm_session_set_input(r.ses, 0, 0, xin, BM_DTYPE_F32, 2, (int64_t[]){M, dim});
    enum { REPS = 7 };
    double t[REPS];
    for (int i = -1; i < REPS && !st; i++) {
      double t0 = now();
      st = bm_session_run(r.ses, 0);
      if (i >= 0) t[i] = now() - t0;
    }
    if (st) break;
    double secs = median(t, REPS), gbs = bytes / secs * 1e-9;
    double bw_now = measure_bandwidth(threads, 3), bwb = bw_now > bw ? bw_now : bw;
    printf("| %s | %d | %lld | %.2f | %.1f | %.1f | %.0f%% | %.1f |\n", mode_name(mode), layers, (long long)M, secs * 1e3,
           gbs, bw_now, 100 * gbs / bwb, 2.0 * (double)M * (double)(dim * dim) * layers / secs * 1e-9);
    fflush(stdout);
  }
  free(xin);
  close_run(&r);
  if (st) return die("run chain", st);
  return 0;
}

static int bench_gemv(int threads, double bw, const char *tmp) {
  printf("\n## gemv: chains of 4096 x 4096 layers, 1 GiB of weights (beyond the caches), x (M, 4096)\n");
  printf("| weights | layers | M | ms per pass | weight GB/s | stream GB/s after | of stream bw | GFLOP/s |\n|---|---:|---:|---:|---:|---:|---:|---:|\n");
  bm_quant_mode modes[3] = {BM_QUANT_NONE, BM_QUANT_INT8, BM_QUANT_INT4};
  int layers[3] = {16, 64, 128}; /* 1 GiB of f32 / i8 / i4 */
  int64_t Ms[3] = {1, 4, 16};
  for (int q = 0; q < 3; q++)
    if (bench_chain(modes[q], 4096, layers[q], Ms, 3, threads, bw, tmp)) return 1;
  return 0;
}

/* ------------------------------------------------------------------ LLaMA models */

typedef struct llm_cfg {
  const char *name;
  int64_t dim, layers, heads, kv_heads, ffn, vocab;
} llm_cfg;

static int write_config(const char *dir, const llm_cfg *c) {
  char path[1200];
  snprintf(path, sizeof path, "%s/config.json", dir);
  FILE *f = fopen(path, "w");
  if (!f) return 1;
  fprintf(f,
          "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"hidden_size\": %lld,\n"
          " \"num_hidden_layers\": %lld, \"num_attention_heads\": %lld, \"num_key_value_heads\": %lld,\n"
          " \"intermediate_size\": %lld, \"vocab_size\": %lld, \"max_position_embeddings\": 2048,\n"
          " \"rms_norm_eps\": 1e-05, \"rope_theta\": 10000.0, \"hidden_act\": \"silu\",\n"
          " \"tie_word_embeddings\": false, \"bos_token_id\": 1, \"eos_token_id\": 2}\n",
          (long long)c->dim, (long long)c->layers, (long long)c->heads, (long long)c->kv_heads, (long long)c->ffn,
          (long long)c->vocab);
  return fclose(f) != 0;
}

/* Bytes of weights one decode step reads: every WEIGHT of the decode
 * function, except that a gather table (the embeddings) counts one row. */
static double decode_weight_bytes(const bm_module *m) {
  const bm_graph *g = bm_module_find_graph(m, "decode");
  if (!g) return 0;
  double total = 0;
  for (int i = 0; i < g->nnodes; i++) {
    const bm_node *w = g->nodes[i];
    if (w->op != BM_OP_WEIGHT && w->op != BM_OP_CONST) continue;
    bool gathered = false;
    for (int j = 0; j < g->nnodes; j++)
      if (g->nodes[j]->op == BM_OP_GATHER && g->nodes[j]->in[0] == w) gathered = true;
    int64_t rows = w->ndim > 0 && bm_dim_is_static(w->shape[0]) && w->shape[0].add > 0 ? w->shape[0].add : 1;
    total += gathered ? (double)w->data_size / (double)rows : (double)w->data_size;
  }
  return total;
}

static int bench_model(const llm_cfg *c, bm_quant_mode mode, int threads, int prompt, int ndecode, double bw,
                       const char *tmp) {
  char dir[600];
  snprintf(dir, sizeof dir, "%s/%s", tmp, c->name);
  char cmd[700];
  snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
  if (system(cmd) != 0 || write_config(dir, c)) return die("config.json", NULL);
  const bm_model_def *def = bm_model_find("hf");
  if (!def) return die("model 'hf' not registered", NULL);
  double t0 = now();
  bm_weight_source *src = NULL;
  bm_status st = bm_weight_source_generated(1, &src);
  bm_module *m = bm_module_create("llama");
  bm_model_options mo = {.path = dir, .max_batch = 1, .max_ctx = prompt + ndecode + 8, .max_seq = prompt};
  if (!st) st = def->build(m, src, &mo);
  for (int i = 0; !st && i < m->ngraphs; i++)
    if (bm_graph_status(m->graphs[i])) st = bm_status_make(BM_ERR_INTERNAL, "%s", bm_status_message(bm_graph_status(m->graphs[i])));
  if (st) return die("build", st);
  double t_build = now() - t0;
  char path[700];
  snprintf(path, sizeof path, "%s/%s.bmpk", tmp, c->name);
  bm_compile_options co;
  bm_compile_options_init(&co);
  co.passes.quant = mode;
  co.passes.quant_group = 32;
  t0 = now();
  st = bm_compile_module(m, &co, path);
  double t_compile = now() - t0;
  double wbytes = decode_weight_bytes(m);
  bm_module_destroy(m);
  bm_weight_source_close(src);
  if (st) return die("compile", st);

  pkg_run r;
  st = open_run(path, threads, &r);
  int fp = 0, fd = 0;
  if (!st) st = bm_package_find_function(r.pkg, "prefill", &fp);
  if (!st) st = bm_package_find_function(r.pkg, "decode", &fd);
  if (st) return die("open", st);
  double pkg_bytes = (double)bm_package_weight_bytes(r.pkg);
  int32_t *ids = malloc(sizeof(int32_t) * (size_t)prompt), *pos = malloc(sizeof(int32_t) * (size_t)prompt);
  uint64_t seed = 5;
  for (int i = 0; i < prompt; i++) ids[i] = (int32_t)(splitmix(&seed) % (uint64_t)c->vocab), pos[i] = i;
  int32_t start0[1] = {0}, len0[1] = {prompt}, last0[1] = {prompt - 1};
  int64_t sp[2] = {1, prompt}, s1[1] = {1};
  /* prefill: 1 warm-up + 3 timed (each rewrites the cache from 0) */
  double tp[3];
  for (int i = -1; i < 3 && !st; i++) {
    st = bm_session_set_input(r.ses, fp, 0, ids, BM_DTYPE_I32, 2, sp);
    if (!st) st = bm_session_set_input(r.ses, fp, 1, pos, BM_DTYPE_I32, 2, sp);
    if (!st) st = bm_session_set_input(r.ses, fp, 2, start0, BM_DTYPE_I32, 1, s1);
    if (!st) st = bm_session_set_input(r.ses, fp, 3, len0, BM_DTYPE_I32, 1, s1);
    if (!st) st = bm_session_set_input(r.ses, fp, 4, last0, BM_DTYPE_I32, 1, s1); /* logits of the last token */
    double a = now();
    if (!st) st = bm_session_run(r.ses, fp);
    if (i >= 0) tp[i] = now() - a;
  }
  /* decode: greedy-free (a fixed pseudo-random token per step) through the cache */
  double *td = malloc(sizeof(double) * (size_t)(ndecode + 1));
  int nd = 0;
  for (int i = 0; i <= ndecode && !st; i++) {
    int32_t tok[1] = {(int32_t)(splitmix(&seed) % (uint64_t)c->vocab)}, p[1] = {prompt + i}, len[1] = {prompt + i + 1};
    int64_t sh[2] = {1, 1};
    st = bm_session_set_input(r.ses, fd, 0, tok, BM_DTYPE_I32, 2, sh);
    if (!st) st = bm_session_set_input(r.ses, fd, 1, p, BM_DTYPE_I32, 2, sh);
    if (!st) st = bm_session_set_input(r.ses, fd, 2, p, BM_DTYPE_I32, 1, s1);
    if (!st) st = bm_session_set_input(r.ses, fd, 3, len, BM_DTYPE_I32, 1, s1);
    double a = now();
    if (!st) st = bm_session_run(r.ses, fd);
    if (i > 0) td[nd++] = now() - a; /* step 0 is the warm-up */
  }
  close_run(&r);
  free(ids), free(pos);
  if (st) {
    free(td);
    return die("run", st);
  }
  double tpm = median(tp, 3), tdm = median(td, nd);
  double dec_tps = 1.0 / tdm, implied = wbytes * dec_tps * 1e-9;
  /* the bandwidth again, right after the run: other load on the machine
   * moves it; the fraction is against the best of both */
  double bw_now = measure_bandwidth(threads, 3), bwb = bw_now > bw ? bw_now : bw;
  printf("| %s | %s | %.0f MB | %.1f + %.1f | %.1f | %.2f | %.1f | %.1f | %.0f%% |\n", c->name, mode_name(mode),
         pkg_bytes * 1e-6, t_build, t_compile, (double)prompt / tpm, dec_tps, implied, bw_now, 100 * implied / bwb);
  fflush(stdout);
  free(td);
  return 0;
}

int main(int argc, char **argv) {
  int threads = 2, prompt = 128, ndecode = 16;
  bool gemv = true, models = true, want_small = true, want_tiny = true;
  bool want_mode[3] = {true, true, true};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--threads") && v) threads = atoi(argv[++i]);
    else if (!strcmp(a, "--prompt") && v) prompt = atoi(argv[++i]);
    else if (!strcmp(a, "--decode") && v) ndecode = atoi(argv[++i]);
    else if (!strcmp(a, "--no-gemv")) gemv = false;
    else if (!strcmp(a, "--gemv-only")) models = false;
    else if (!strcmp(a, "--model") && v) {
      i++;
      want_small = !strcmp(v, "small") || !strcmp(v, "all");
      want_tiny = !strcmp(v, "tinyllama") || !strcmp(v, "all");
    } else if (!strcmp(a, "--quant") && v) {
      i++;
      want_mode[0] = strstr(v, "f32") != NULL;
      want_mode[1] = strstr(v, "int8") != NULL;
      want_mode[2] = strstr(v, "int4") != NULL;
    } else {
      fprintf(stderr,
              "usage: bench_llm [--threads T] [--model small|tinyllama|all] [--quant f32,int8,int4]\n"
              "                 [--prompt P] [--decode N] [--no-gemv] [--gemv-only]\n");
      return 2;
    }
  }
  if (threads < 1 || prompt < 1 || ndecode < 1) return 2;
  char tmp[] = "/tmp/bench_llm.XXXXXX";
  if (!mkdtemp(tmp)) return die("mkdtemp", NULL);
  double bw = measure_bandwidth(threads, 5);
  printf("memory bandwidth (streaming read of 1 GiB, %d threads, best of 5): %.1f GB/s\n", threads, bw);
  fflush(stdout);
  int rc = 0;
  if (gemv) rc |= bench_gemv(threads, bw, tmp);
  if (models && !rc) {
    printf("\n## LLaMA, random weights, batch 1, prompt %d, %d decode steps, %d threads\n", prompt, ndecode, threads);
    printf("| model | weights | package weights | build + compile s | prefill tok/s | decode tok/s | decode weight GB/s | stream GB/s after | of stream bw |\n");
    printf("|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
    llm_cfg cfgs[2] = {{"llama-110m", 768, 12, 12, 12, 2048, 32000}, {"tinyllama-1.1b", 2048, 22, 32, 4, 5632, 32000}};
    bm_quant_mode modes[3] = {BM_QUANT_NONE, BM_QUANT_INT8, BM_QUANT_INT4};
    for (int ci = 0; ci < 2 && !rc; ci++) {
      if ((ci == 0 && !want_small) || (ci == 1 && !want_tiny)) continue;
      for (int q = 0; q < 3 && !rc; q++)
        if (want_mode[q]) rc |= bench_model(&cfgs[ci], modes[q], threads, prompt, ndecode, bw, tmp);
    }
  }
  snprintf(tmp + strlen(tmp), 1, "%s", "");
  char cmd[256];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
  if (system(cmd) != 0) fprintf(stderr, "bench_llm: could not remove %s\n", tmp);
  return rc;
}
