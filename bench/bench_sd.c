/* bench_sd.c - Stable Diffusion 1.5 on the CPU: seconds per UNet step at
 * 512x512 (64x64 latent, batch 2 for classifier-free guidance) with SD 1.5
 * shapes (block_out_channels 320/640/1280/1280, 2 layers a block, 8 heads,
 * cross-attention 768, transformer depth 1) and generated random weights,
 * the VAE decode time, the peak memory (the package's planned arena +
 * weights, and the process's max RSS), a per-op time breakdown from
 * bm_session_profile, and the GFLOP/s achieved (FLOPs counted from the
 * graph: conv2d, matmul, attention). PyTorch's CPU time for the same step is
 * measured only if `python3 -c "import torch"` works (skipped otherwise).
 *
 *   bench_sd [--threads T] [--repeat R] [--size 512] [-O N] [--no-vae] [--keep FILE.bmpk]
 *
 * Not a test. Compiling the full UNet takes minutes. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "../compiler/compile.h"
#include "../models/models.h"
#include "../models/sd.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int die(const char *what, bm_status s) {
  fprintf(stderr, "bench_sd: %s: %s\n", what, s ? bm_status_message(s) : "failed");
  bm_status_free(s);
  return 1;
}

static const char unet_cfg[] =
    "{\"_class_name\": \"UNet2DConditionModel\", \"act_fn\": \"silu\", \"attention_head_dim\": 8,"
    " \"block_out_channels\": [320, 640, 1280, 1280], \"center_input_sample\": false,"
    " \"cross_attention_dim\": 768, \"down_block_types\": [\"CrossAttnDownBlock2D\", \"CrossAttnDownBlock2D\","
    " \"CrossAttnDownBlock2D\", \"DownBlock2D\"], \"downsample_padding\": 1, \"flip_sin_to_cos\": true,"
    " \"freq_shift\": 0, \"in_channels\": 4, \"layers_per_block\": 2, \"mid_block_scale_factor\": 1,"
    " \"norm_eps\": 1e-05, \"norm_num_groups\": 32, \"out_channels\": 4, \"sample_size\": 64,"
    " \"up_block_types\": [\"UpBlock2D\", \"CrossAttnUpBlock2D\", \"CrossAttnUpBlock2D\", \"CrossAttnUpBlock2D\"]}";
static const char vae_cfg[] =
    "{\"_class_name\": \"AutoencoderKL\", \"act_fn\": \"silu\", \"block_out_channels\": [128, 256, 512, 512],"
    " \"down_block_types\": [\"DownEncoderBlock2D\", \"DownEncoderBlock2D\", \"DownEncoderBlock2D\","
    " \"DownEncoderBlock2D\"], \"in_channels\": 3, \"latent_channels\": 4, \"layers_per_block\": 2,"
    " \"norm_num_groups\": 32, \"out_channels\": 3, \"sample_size\": 512, \"scaling_factor\": 0.18215,"
    " \"up_block_types\": [\"UpDecoderBlock2D\", \"UpDecoderBlock2D\", \"UpDecoderBlock2D\", \"UpDecoderBlock2D\"]}";

/* A dimension's value with every symbol at `batch`. */
static double dimv(bm_dim d, int64_t batch) { return bm_dim_is_static(d) ? (double)d.add : (double)(d.mul * batch + d.add); }

static double numel(const bm_node *n, int64_t batch) {
  double v = 1;
  for (int i = 0; i < n->ndim; i++) v *= dimv(n->shape[i], batch);
  return v;
}

/* FLOPs of the conv2d, matmul and attention nodes of g (multiply-add = 2). */
static void count_flops(const bm_graph *g, int64_t batch, double *conv, double *mm, double *attn) {
  *conv = *mm = *attn = 0;
  for (int i = 0; i < g->nnodes; i++) {
    const bm_node *n = g->nodes[i];
    if (n->op == BM_OP_CONV2D) {
      const bm_node *w = n->in[1];
      *conv += 2 * numel(n, batch) * numel(w, batch) / dimv(w->shape[0], batch);
    } else if (n->op == BM_OP_MATMUL) {
      const bm_node *a = n->in[0];
      double k = dimv(a->shape[a->ndim - (n->a.trans_a ? 2 : 1)], batch);
      *mm += 2 * numel(n, batch) * k;
    } else if (n->op == BM_OP_ATTENTION) {
      const bm_node *q = n->in[0], *k = n->in[1];
      *attn += 4 * numel(q, batch) * dimv(k->shape[k->ndim - 2], batch);
    }
  }
}

typedef struct op_time {
  const char *op;
  double s;
  int n;
} op_time;

static int cmp_op(const void *a, const void *b) {
  double x = ((const op_time *)a)->s, y = ((const op_time *)b)->s;
  return x < y ? 1 : x > y ? -1 : 0;
}

static void print_profile(bm_session *s, int f, double flops_conv, double flops_mm, double flops_attn) {
  const bm_kernel_profile *p;
  int n;
  bm_status st = bm_session_profile(s, f, &p, &n);
  if (st) {
    die("profile", st);
    return;
  }
  op_time ops[64];
  int nops = 0;
  double total = 0;
  for (int i = 0; i < n; i++) {
    const char *op = p[i].op ? p[i].op : "?";
    int k = 0;
    while (k < nops && strcmp(ops[k].op, op)) k++;
    if (k == nops && nops < 64) ops[nops++] = (op_time){op, 0, 0};
    if (k < 64) {
      ops[k].s += p[i].seconds;
      ops[k].n++;
    }
    total += p[i].seconds;
  }
  qsort(ops, (size_t)nops, sizeof *ops, cmp_op);
  printf("  per-op time of one step (kernels: %d, %.3f s in kernels):\n", n, total);
  printf("    %-14s %6s %10s %6s %10s\n", "op", "kernels", "seconds", "%", "GFLOP/s");
  for (int k = 0; k < nops; k++) {
    double fl = !strcmp(ops[k].op, "conv2d") ? flops_conv : !strcmp(ops[k].op, "matmul") ? flops_mm
                : !strcmp(ops[k].op, "attention") ? flops_attn : 0;
    char gf[32] = "";
    if (fl > 0 && ops[k].s > 0) snprintf(gf, sizeof gf, "%.1f", fl / ops[k].s * 1e-9);
    printf("    %-14s %6d %10.4f %5.1f%% %10s\n", ops[k].op, ops[k].n, ops[k].s, 100 * ops[k].s / total, gf);
  }
}

static void fill(float *p, int64_t n, uint64_t seed, float scale) {
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  for (int64_t i = 0; i < n; i++) {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    p[i] = scale * ((float)(s >> 40) / 8388608.0f - 1.0f);
  }
}

int main(int argc, char **argv) {
  int threads = 0, repeat = 3, size = 512, opt = 3, vae = 1;
  const char *keep = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--repeat") && i + 1 < argc) repeat = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--size") && i + 1 < argc) size = atoi(argv[++i]);
    else if (!strcmp(argv[i], "-O") && i + 1 < argc) opt = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--no-vae")) vae = 0;
    else if (!strcmp(argv[i], "--keep") && i + 1 < argc) keep = argv[++i];
    else {
      fprintf(stderr, "usage: bench_sd [--threads T] [--repeat R] [--size 512] [-O N] [--no-vae] [--keep FILE.bmpk]\n");
      return 2;
    }
  }
  if (size % 64 || size < 64 || repeat < 1) return die("arguments", bm_status_make(BM_ERR_INVALID_ARGUMENT, "--size must be a multiple of 64"));
  const int64_t lat = size / 8;
  bm_sd_unet_config uc;
  bm_sd_vae_config vc;
  bm_status s = bm_sd_unet_config_parse(unet_cfg, "sd15 unet", &uc);
  if (!s) s = bm_sd_vae_config_parse(vae_cfg, "sd15 vae", &vc);
  if (s) return die("config", s);
  bm_weight_source *src = NULL;
  if ((s = bm_weight_source_generated(1, &src))) return die("weights", s);
  double t0 = now();
  bm_module *m = bm_module_create("sd15_bench");
  bm_graph *gu = bm_graph_create(m, "unet");
  bm_sd_src wu = {src, "unet/", NULL, BM_DTYPE_F32}, wv = {src, "vae/", NULL, BM_DTYPE_F32};
  bm_sd_unet_build(gu, &wu, &uc, bm_sym_declare(gu, "batch", 2), lat, lat, 77);
  if (bm_graph_status(gu)) return die("unet", bm_status_make(BM_ERR_INTERNAL, "%s", bm_status_message(bm_graph_status(gu))));
  bm_graph *gd = NULL;
  if (vae) {
    gd = bm_graph_create(m, "vae_decoder");
    bm_sd_vae_decoder_build(gd, &wv, &vc, lat, lat);
    if (bm_graph_status(gd)) return die("vae", bm_status_make(BM_ERR_INTERNAL, "%s", bm_status_message(bm_graph_status(gd))));
  }
  double uconv, umm, uattn, dconv = 0, dmm = 0, dattn = 0;
  count_flops(gu, 2, &uconv, &umm, &uattn);
  if (gd) count_flops(gd, 1, &dconv, &dmm, &dattn);
  double build_s = now() - t0;
  char path[512];
  if (keep) snprintf(path, sizeof path, "%s", keep);
  else snprintf(path, sizeof path, "/tmp/bench_sd_%d.bmpk", (int)getpid());
  bm_compile_options co;
  bm_compile_options_init(&co);
  co.target.opt_level = opt;
  t0 = now();
  s = bm_compile_module(m, &co, path);
  double compile_s = now() - t0;
  bm_module_destroy(m);
  bm_weight_source_close(src);
  if (s) return die("compile", s);
  bm_package *pkg;
  bm_open_options oo = {.flags = BM_OPEN_SKIP_CHECKSUMS};
  if ((s = bm_package_open(path, &oo, &pkg))) return die("open", s);
  if (!keep) unlink(path);
  bm_session *ses;
  bm_session_options so = {.threads = threads, .profile = 1};
  if ((s = bm_session_create(pkg, &so, &ses))) return die("session", s);
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
  printf("SD 1.5 UNet + VAE decoder, %dx%d (latent %lldx%lld), f32, random weights\n", size, size, (long long)lat,
         (long long)lat);
  printf("  threads %d of %ld CPUs, -O%d; graph build %.1f s, compile %.1f s\n", threads ? threads : (int)ncpu, ncpu,
         opt, build_s, compile_s);

  /* UNet: batch 2 (uncond + cond) */
  int fu;
  bm_package_find_function(pkg, "unet", &fu);
  const int64_t ns = 2 * 4 * lat * lat, nc = 2 * 77 * 768;
  float *sample = malloc(sizeof(float) * (size_t)ns), *ctx = malloc(sizeof(float) * (size_t)nc), ts[2] = {500, 500};
  fill(sample, ns, 1, 1.0f);
  fill(ctx, nc, 2, 1.0f);
  int64_t s4[4] = {2, 4, lat, lat}, s1[1] = {2}, s3[3] = {2, 77, 768};
  int idx;
  bm_function_find_input(pkg, fu, "sample", &idx);
  s = bm_session_set_input(ses, fu, idx, sample, BM_DTYPE_F32, 4, s4);
  bm_function_find_input(pkg, fu, "timestep", &idx);
  if (!s) s = bm_session_set_input(ses, fu, idx, ts, BM_DTYPE_F32, 1, s1);
  bm_function_find_input(pkg, fu, "encoder_hidden_states", &idx);
  if (!s) s = bm_session_set_input(ses, fu, idx, ctx, BM_DTYPE_F32, 3, s3);
  if (!s) s = bm_session_run(ses, fu); /* warm-up */
  if (s) return die("unet run", s);
  double best = 1e30, sum = 0;
  for (int r = 0; r < repeat; r++) {
    t0 = now();
    if ((s = bm_session_run(ses, fu))) return die("unet run", s);
    double dt = now() - t0;
    sum += dt;
    if (dt < best) best = dt;
  }
  double uflops = uconv + umm + uattn;
  printf("UNet step (batch 2): %.3f s mean, %.3f s best of %d; %.1f GFLOP (conv %.1f, matmul %.1f, attention %.1f) "
         "-> %.1f GFLOP/s\n", sum / repeat, best, repeat, uflops * 1e-9, uconv * 1e-9, umm * 1e-9, uattn * 1e-9,
         uflops / best * 1e-9);
  print_profile(ses, fu, uconv, umm, uattn);

  if (vae) {
    int fd;
    bm_package_find_function(pkg, "vae_decoder", &fd);
    int64_t sl[4] = {1, 4, lat, lat};
    bm_function_find_input(pkg, fd, "latent", &idx);
    s = bm_session_set_input(ses, fd, idx, sample, BM_DTYPE_F32, 4, sl);
    if (!s) s = bm_session_run(ses, fd);
    if (s) return die("vae run", s);
    best = 1e30;
    for (int r = 0; r < (repeat < 2 ? repeat : 2); r++) {
      t0 = now();
      if ((s = bm_session_run(ses, fd))) return die("vae run", s);
      double dt = now() - t0;
      if (dt < best) best = dt;
    }
    double df = dconv + dmm + dattn;
    printf("VAE decode (1 image): %.3f s; %.1f GFLOP -> %.1f GFLOP/s\n", best, df * 1e-9, df / best * 1e-9);
    print_profile(ses, fd, dconv, dmm, dattn);
  }
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  printf("memory: weights %.2f GiB + planned arena %.2f GiB = %.2f GiB; process max RSS %.2f GiB\n",
         bm_package_weight_bytes(pkg) / 1073741824.0, bm_package_arena_bytes(pkg) / 1073741824.0,
         (bm_package_weight_bytes(pkg) + bm_package_arena_bytes(pkg)) / 1073741824.0, ru.ru_maxrss / 1048576.0);
  if (system("python3 -c 'import torch' >/dev/null 2>&1") == 0)
    printf("PyTorch is importable: run bench/README.md's torch snippet for the same step (not automated)\n");
  else
    printf("PyTorch CPU: skipped (torch is not importable)\n");
  free(sample);
  free(ctx);
  bm_session_destroy(ses);
  bm_package_close(pkg);
  return 0;
}
