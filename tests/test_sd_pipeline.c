/* test_sd_pipeline.c - the Stable Diffusion pipelines (runtime/sd.h) end to
 * end on tiny models: the golden sd1_unet and vae_kl with a CLIP text
 * encoder cut down from hf/clip_text to the UNet's 32 channels, and the
 * tiny CLIP tokenizer of tests/data/sd_tiny_clip. The package is compiled
 * once (-O1); the pipeline's per-step latents are checked against an
 * independent recomputation (this file runs the compiled functions itself and
 * applies the k-diffusion updates in plain C), fed the noise of the golden
 * sampler runs. Also: initial latents vs torch's draws, CFG batching,
 * img2img's start step and noised latents, inpainting's kept region, a
 * 9-channel v-prediction UNet (generated weights), PNG round trips and
 * malformed files, and request errors. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../compiler/compile.h"
#include "../ir/interp.h"
#include "../models/models.h"
#include "../runtime/image.h"
#include "../runtime/safetensors.h"
#include "../runtime/sd.h"
#include "testutil.h"

enum { W = 16, H = 16, LH = 8, LW = 8, LC = 4, N = LC * LH * LW, TXT = 77, CTX = 32 };

static char *gold(const char *rel) {
  static char buf[4][1024];
  static int k;
  char *b = buf[k++ & 3];
  snprintf(b, sizeof buf[0], "%s/%s", bm_test_shared("golden"), rel);
  return b;
}

static void write_text(const char *path, const char *text) {
  FILE *f = fopen(path, "wb");
  CHECK_MSG(f != NULL, "cannot write %s", path);
  if (!f) return;
  fputs(text, f);
  fclose(f);
}

/* <dir>/text_encoder: hf/clip_text with every 64 cut to 32 and 128 to 64
 * (hidden 32, 4 heads of 8, intermediate 64): the UNet's cross-attention
 * width. Weights are the leading blocks of the golden tensors. */
static bm_status write_text_encoder(const char *dir) {
  char p[1200];
  snprintf(p, sizeof p, "%s/text_encoder", dir);
  mkdir(p, 0755);
  snprintf(p, sizeof p, "%s/text_encoder/config.json", dir);
  write_text(p, "{\"architectures\": [\"CLIPTextModel\"], \"bos_token_id\": 998, \"eos_token_id\": 999, "
                "\"hidden_act\": \"quick_gelu\", \"hidden_size\": 32, \"intermediate_size\": 64, "
                "\"layer_norm_eps\": 1e-05, \"max_position_embeddings\": 77, \"model_type\": \"clip_text_model\", "
                "\"num_attention_heads\": 4, \"num_hidden_layers\": 3, \"pad_token_id\": 1, \"vocab_size\": 1000}");
  bm_st_file *src = NULL;
  snprintf(p, sizeof p, "%s/model.safetensors", gold("hf/clip_text"));
  BM_RETURN_IF_ERROR(bm_st_open(p, &src));
  int n = bm_st_count(src);
  bm_tensor_info *infos = calloc((size_t)n, sizeof *infos);
  const void **datas = calloc((size_t)n, sizeof *datas);
  float **own = calloc((size_t)n, sizeof *own);
  bm_status s = NULL;
  for (int i = 0; i < n && !s; i++) {
    const bm_st_tensor *t = bm_st_tensor_at(src, i);
    infos[i].name = t->name;
    infos[i].dtype = BM_DTYPE_F32;
    infos[i].ndim = t->ndim;
    int64_t cnt = 1;
    for (int d = 0; d < t->ndim; d++) {
      infos[i].shape[d] = t->shape[d] == 64 ? 32 : t->shape[d] == 128 ? 64 : t->shape[d];
      cnt *= infos[i].shape[d];
    }
    own[i] = malloc(sizeof(float) * (size_t)cnt);
    if (t->ndim == 1)
      for (int64_t j = 0; j < cnt; j++) own[i][j] = bm_load_f32(t->data, t->dtype, j);
    else
      for (int64_t r = 0; r < infos[i].shape[0]; r++)
        for (int64_t c = 0; c < infos[i].shape[1]; c++)
          own[i][r * infos[i].shape[1] + c] = bm_load_f32(t->data, t->dtype, r * t->shape[1] + c);
    datas[i] = own[i];
  }
  snprintf(p, sizeof p, "%s/text_encoder/model.safetensors", dir);
  if (!s) s = bm_st_write(p, n, infos, datas, NULL);
  for (int i = 0; i < n; i++) free(own[i]);
  free(own);
  free(infos);
  free(datas);
  bm_st_close(src);
  return s;
}

/* A diffusers folder: model_index.json, scheduler/, tokenizer/, and unet/
 * vae/ (links to the goldens, or a unet config with in_channels 9). */
static const char *make_folder(const char *name, bool nine, const char *prediction) {
  static char dirs[2][1024];
  char *dir = dirs[nine ? 1 : 0], p[1200], t[1200];
  snprintf(dir, sizeof dirs[0], "%s/%s", bm_test_tmpdir(), name);
  mkdir(dir, 0755);
  snprintf(p, sizeof p, "%s/model_index.json", dir);
  write_text(p, nine ? "{\"_class_name\": \"StableDiffusionInpaintPipeline\"}" : "{\"_class_name\": \"StableDiffusionPipeline\"}");
  snprintf(p, sizeof p, "%s/scheduler", dir);
  mkdir(p, 0755);
  snprintf(p, sizeof p, "%s/scheduler/scheduler_config.json", dir);
  snprintf(t, sizeof t, "{\"_class_name\": \"EulerDiscreteScheduler\", \"beta_start\": 0.00085, \"beta_end\": 0.012, "
                        "\"beta_schedule\": \"scaled_linear\", \"num_train_timesteps\": 1000, \"steps_offset\": 1, "
                        "\"prediction_type\": \"%s\"}", prediction);
  write_text(p, t);
  CHECK_OK(write_text_encoder(dir));
  const char *links[3][2] = {{"vae", gold("diffusers/vae_kl")}, {"tokenizer", BM_SOURCE_DIR "/tests/data/sd_tiny_clip"},
                             {"unet", gold("diffusers/sd1_unet")}};
  for (int i = 0; i < (nine ? 2 : 3); i++) {
    snprintf(p, sizeof p, "%s/%s", dir, links[i][0]);
    unlink(p);
    CHECK(symlink(links[i][1], p) == 0);
  }
  if (nine) { /* sd1_unet's config with in_channels 9; weights generated */
    snprintf(p, sizeof p, "%s/unet", dir);
    mkdir(p, 0755);
    snprintf(t, sizeof t, "%s/config.json", gold("diffusers/sd1_unet"));
    FILE *f = fopen(t, "rb");
    char cfg[8192];
    size_t len = f ? fread(cfg, 1, sizeof cfg - 1, f) : 0;
    if (f) fclose(f);
    cfg[len] = 0;
    char *at = strstr(cfg, "\"in_channels\": 4");
    CHECK(at != NULL);
    if (at) at[strlen("\"in_channels\": ")] = '9';
    snprintf(p, sizeof p, "%s/unet/config.json", dir);
    write_text(p, cfg);
  }
  return dir;
}

/* Builds and compiles the folder (-O1) and opens the package. */
static bm_package *compile_folder(const char *dir, const char *name, bool random) {
  char *extra = NULL;
  bm_model_options mo = {.width = W, .height = H, .max_batch = 2, .extra_json = &extra, .random_weights = random,
                         .seed = 7};
  bm_module *m = NULL;
  bm_weight_source *src = NULL;
  bm_status s = bm_model_build(dir, &mo, &m, &src);
  CHECK_OK(s);
  if (s) return NULL;
  char pkg[1200];
  snprintf(pkg, sizeof pkg, "%s/%s.bmpk", bm_test_tmpdir(), name);
  bm_compile_options co;
  bm_compile_options_init(&co);
  co.target.opt_level = 1;
  co.extra_json = extra;
  s = bm_compile_module(m, &co, pkg);
  CHECK_OK(s);
  bm_module_destroy(m);
  bm_weight_source_close(src);
  free(extra);
  bm_package *p = NULL;
  if (!s) CHECK_OK(bm_package_open(pkg, NULL, &p));
  return p;
}

static bm_package *g_pkg, *g_pkg9;

/* ------------------------------------------------------------------ the independent reference */

/* The test's own session: text encoder, UNet, VAE encoder runs. */
typedef struct ref {
  bm_session *ses;
  bm_package *pkg;
  float table[1000];
  float emb[2 * TXT * CTX];
  int nine;
  float cond9[(1 + LC) * LH * LW]; /* mask and masked latent of a 9-channel UNet */
} ref;

static int find_out(bm_package *p, int f, const char *name) {
  for (int i = 0; i < bm_function_output_count(p, f); i++) {
    bm_tensor_info t;
    if (!bm_function_output_info(p, f, i, &t) && !strcmp(t.name, name)) return i;
  }
  return -1;
}

static bm_status run_fn(ref *r, const char *fn, int nin, const char *const *names, const void *const *data,
                        const bm_dtype *dt, const int *ndim, const int64_t (*shape)[4], const char *out, float *dst,
                        int64_t n) {
  int f, idx;
  BM_RETURN_IF_ERROR(bm_package_find_function(r->pkg, fn, &f));
  for (int i = 0; i < nin; i++) {
    BM_RETURN_IF_ERROR(bm_function_find_input(r->pkg, f, names[i], &idx));
    BM_RETURN_IF_ERROR(bm_session_set_input(r->ses, f, idx, data[i], dt[i], ndim[i], shape[i]));
  }
  BM_RETURN_IF_ERROR(bm_session_run(r->ses, f));
  const void *o;
  bm_tensor_info info;
  BM_RETURN_IF_ERROR(bm_session_get_output(r->ses, f, find_out(r->pkg, f, out), &o, &info));
  memcpy(dst, o, sizeof(float) * (size_t)n);
  return NULL;
}

/* ids of text with the test's own tokenizer: BOS, tokens, EOS, padded with EOS. */
static void ref_ids(const char *text, int32_t *ids) {
  bm_tokenizer *tok = NULL;
  CHECK_OK(bm_tokenizer_load(BM_SOURCE_DIR "/tests/data/sd_tiny_clip", &tok));
  if (!tok) return;
  size_t n = 0;
  CHECK_OK(bm_tokenizer_encode_padded(tok, text, strlen(text), BM_TOK_ADD_BOS | BM_TOK_ADD_EOS, ids, TXT,
                                      bm_tokenizer_eos(tok), &n));
  bm_tokenizer_free(tok);
}

static void ref_open(ref *r, bm_package *pkg, const char *prompt, const char *negative) {
  memset(r, 0, sizeof *r);
  r->pkg = pkg;
  bm_session_options so = {.threads = 2};
  CHECK_OK(bm_session_create(pkg, &so, &r->ses));
  /* SD1's table, computed here in double from the betas */
  double acc = 1;
  for (int i = 0; i < 1000; i++) {
    double s = sqrt(0.00085) + (sqrt(0.012) - sqrt(0.00085)) * i / 999.0;
    acc *= 1 - s * s;
    float ac = (float)acc;
    r->table[i] = (float)sqrt((1 - (double)ac) / ac);
  }
  int32_t ids[2 * TXT];
  ref_ids(negative, ids);
  ref_ids(prompt, ids + TXT);
  const char *names[1] = {"input_ids"};
  const void *data[1] = {ids};
  bm_dtype dt[1] = {BM_DTYPE_I32};
  int nd[1] = {2};
  int64_t sh[1][4] = {{2, TXT}};
  if (r->ses) CHECK_OK(run_fn(r, "text_encoder", 1, names, data, dt, nd, sh, "hidden_states", r->emb, 2 * TXT * CTX));
}

/* t(sigma): log-sigma interpolation in the table (k-diffusion sigma_to_t) */
static double ref_t(const ref *r, double sigma) {
  double ls = log(sigma);
  if (ls <= log(r->table[0])) return 0;
  if (ls >= log(r->table[999])) return 999;
  int lo = 0;
  while (log(r->table[lo + 1]) <= ls) lo++;
  double l0 = log(r->table[lo]), l1 = log(r->table[lo + 1]);
  return lo + (l0 - ls) / (l0 - l1);
}

/* D(x, sigma) with CFG, computed from two batch-1 UNet runs. */
static void ref_denoise(ref *r, const float *x, double sigma, double cfg, bool vpred, float *den) {
  int cin = r->nine ? 9 : 4;
  float in[9 * LH * LW], out[2][N], ts[1] = {(float)ref_t(r, sigma)};
  double c_in = 1 / sqrt(sigma * sigma + 1);
  for (int i = 0; i < N; i++) in[i] = (float)(x[i] * c_in);
  if (r->nine) memcpy(in + N, r->cond9, sizeof r->cond9);
  for (int b = 0; b < 2; b++) {
    const char *names[3] = {"sample", "timestep", "encoder_hidden_states"};
    const void *data[3] = {in, ts, r->emb + b * TXT * CTX};
    bm_dtype dt[3] = {BM_DTYPE_F32, BM_DTYPE_F32, BM_DTYPE_F32};
    int nd[3] = {4, 1, 3};
    int64_t sh[3][4] = {{1, cin, LH, LW}, {1}, {1, TXT, CTX}};
    CHECK_OK(run_fn(r, "unet", 3, names, data, dt, nd, sh, "model_output", out[b], N));
  }
  for (int i = 0; i < N; i++) {
    double d[2];
    for (int b = 0; b < 2; b++)
      d[b] = vpred ? x[i] / (sigma * sigma + 1) - out[b][i] * sigma * c_in : x[i] - sigma * out[b][i];
    den[i] = (float)(d[0] + cfg * (d[1] - d[0]));
  }
}

/* ------------------------------------------------------------------ capture */

typedef struct capture {
  int nsteps;
  float x[64][N];
  double sigma[64];
  float final[N];
  uint8_t rgb[W * H * 3];
  int images;
  uint64_t seed;
} capture;

static void cap_step(void *user, int image, const bm_sampler_step *st) {
  capture *c = user;
  if (image == 0 && st->i < 64) {
    memcpy(c->x[st->i], st->x, sizeof(float) * N);
    c->sigma[st->i] = st->sigma;
    c->nsteps = st->i + 1;
  }
}

static int cap_image(void *user, int image, uint64_t seed, const uint8_t *rgb, const float *latent) {
  capture *c = user;
  if (image == 0) {
    memcpy(c->final, latent, sizeof(float) * N);
    memcpy(c->rgb, rgb, sizeof c->rgb);
    c->seed = seed;
  }
  c->images++;
  return 0;
}

static float *load_gold(const bm_st_file *f, const char *name, int64_t *n) {
  const bm_st_tensor *t = bm_st_find(f, name);
  CHECK_MSG(t != NULL, "golden tensor %s missing", name);
  if (!t) return NULL;
  float *o = malloc(sizeof(float) * (size_t)t->numel);
  for (int64_t i = 0; i < t->numel; i++) o[i] = bm_load_f32(t->data, t->dtype, i);
  if (n) *n = t->numel;
  return o;
}

/* ------------------------------------------------------------------ tests */

static bm_sd *open_sd(bm_package *p) {
  bm_sd *sd = NULL;
  bm_sd_options o = {.threads = 2};
  CHECK_OK(bm_sd_open(p, &o, &sd));
  return sd;
}

static void test_open_info(void) {
  bm_sd *sd = open_sd(g_pkg);
  if (!sd) return;
  const bm_sd_info *in = bm_sd_get_info(sd);
  CHECK(in->width == W && in->height == H && in->latent_w == LW && in->latent_h == LH);
  CHECK(in->latent_channels == LC && in->unet_in_channels == 4 && in->max_batch == 2);
  CHECK(in->text_len == TXT && in->text_hidden == CTX && in->text_vocab == 1000);
  CHECK(in->prediction == BM_PRED_EPSILON && in->has_tokenizer && in->has_vae_encoder);
  CHECK(fabs(in->scaling_factor - 0.18215) < 1e-9);
  float sd1[1000];
  bm_schedule_sd1_sigmas(sd1);
  CHECK(memcmp(sd1, bm_sd_sigma_table(sd), sizeof sd1) == 0);
  bm_sd_close(sd);
}

/* seed 42: x at step 0 = torch.randn((1,4,8,8), generator=manual_seed(42)) * sigma_0 */
static void test_initial_latents(void) {
  bm_st_file *rng = NULL;
  char p[1200];
  snprintf(p, sizeof p, "%s/torch_cpu_randn.safetensors", gold("rng"));
  CHECK_OK(bm_st_open(p, &rng));
  bm_sd *sd = open_sd(g_pkg);
  if (!sd || !rng) goto out;
  /* the first 256 of a 512-value draw are the 256-value draw (16-blocks of sequential uniforms) */
  float *g = load_gold(rng, "randn_s42_2x4x8x8", NULL);
  static capture c;
  memset(&c, 0, sizeof c);
  bm_sd_request rq = bm_sd_request_default();
  rq.prompt = "a cat";
  rq.steps = 2;
  rq.seed = 42;
  rq.schedule = "karras";
  rq.on_step = cap_step;
  rq.on_image = cap_image;
  rq.user = &c;
  bm_sd_result res;
  CHECK_OK(bm_sd_generate(sd, &rq, &res));
  int bad = 0;
  for (int i = 0; g && i < N; i++) bad += c.x[0][i] != g[i] * (float)c.sigma[0];
  CHECK_MSG(bad == 0, "%d initial latents differ from torch's draw for seed 42", bad);
  CHECK(fabs(c.sigma[0] - 14.6146) < 1e-3 && res.images == 1 && c.seed == 42);
  free(g);
out:
  bm_sd_close(sd);
  bm_st_close(rng);
}

/* The pipeline's per-step latents vs the reference trajectory: golden
 * noise0 and sigmas of samplers/kdiffusion/<run>, the real UNet, CFG 7.5,
 * Euler (or Euler ancestral with the golden noise bank) in plain C. */
typedef struct bank {
  const float *noise;
  int64_t n, at;
} bank;

static bm_status bank_next(void *user, double s, double sn, float *out, int64_t n) {
  bank *b = user;
  if ((b->at + 1) * n > b->n) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "noise bank exhausted");
  memcpy(out, b->noise + b->at * n, sizeof(float) * (size_t)n);
  b->at++;
  return NULL;
}

static void check_trajectory(const char *run, bool ancestral) {
  char p[1200];
  snprintf(p, sizeof p, "%s/%s.safetensors", gold("samplers/kdiffusion"), run);
  bm_st_file *gf = NULL;
  CHECK_OK(bm_st_open(p, &gf));
  bm_sd *sd = open_sd(g_pkg);
  static ref r;
  ref_open(&r, g_pkg, "a photo of a cat", "blurry");
  int64_t ns = 0, nb = 0;
  float *sig = gf ? load_gold(gf, "sigmas", &ns) : NULL, *noise0 = gf ? load_gold(gf, "noise0", NULL) : NULL;
  float *nbank = ancestral && gf ? load_gold(gf, "noise", &nb) : NULL;
  if (!sd || !sig || !noise0 || !r.ses) goto out;
  int steps = (int)ns - 1;
  static capture c;
  memset(&c, 0, sizeof c);
  bank bk = {nbank, nb, 0};
  bm_noise_source src = {bank_next, &bk};
  bm_sd_request rq = bm_sd_request_default();
  rq.prompt = "a photo of a cat";
  rq.negative_prompt = "blurry";
  rq.steps = steps;
  rq.sampler = ancestral ? "Euler a" : "euler";
  rq.sigmas = sig;
  rq.init_noise = noise0;
  rq.noise = ancestral ? &src : NULL;
  rq.on_step = cap_step;
  rq.on_image = cap_image;
  rq.user = &c;
  bm_sd_result res;
  CHECK_OK(bm_sd_generate(sd, &rq, &res));
  CHECK(res.model_evals == steps && res.unet_calls == steps && c.nsteps == steps);
  CHECK(!strcmp(res.sampler, ancestral ? "euler_ancestral" : "euler") && res.tokens > 5 && res.tokens_negative >= 3);
  /* the reference */
  static float x[N], den[N];
  double worst = 0;
  int64_t drawn = 0;
  for (int i = 0; i < N; i++) x[i] = noise0[i] * sig[0];
  for (int s = 0; s < steps; s++) {
    double e = bm_test_rel_err(c.x[s], x, N);
    if (e > worst) worst = e;
    CHECK_MSG(e < 1e-5, "%s: step %d latents rel err %g", run, s, e);
    ref_denoise(&r, x, sig[s], 7.5, false, den);
    if (!ancestral) {
      for (int i = 0; i < N; i++) {
        float d = (x[i] - den[i]) / sig[s];
        x[i] = x[i] + d * (sig[s + 1] - sig[s]);
      }
    } else { /* k-diffusion sample_euler_ancestral, eta 1 */
      double from = sig[s], to = sig[s + 1];
      double up = sqrt(to * to * (from * from - to * to) / (from * from));
      if (up > to) up = to;
      double down = sqrt(to * to - up * up);
      for (int i = 0; i < N; i++) {
        double d = (x[i] - den[i]) / from;
        x[i] = (float)(x[i] + d * (down - from));
      }
      if (to > 0) {
        for (int i = 0; i < N; i++) x[i] = (float)(x[i] + nbank[drawn * N + i] * up);
        drawn++;
      }
    }
  }
  double e = bm_test_rel_err(c.final, x, N);
  CHECK_MSG(e < 1e-5, "%s: final latents rel err %g", run, e);
  if (ancestral) CHECK(bk.at == drawn);
  if (getenv("BM_SD_VERBOSE")) fprintf(stderr, "  %s: worst step err %g, final %g\n", run, worst, e);
out:
  free(sig);
  free(noise0);
  free(nbank);
  bm_session_destroy(r.ses);
  bm_sd_close(sd);
  bm_st_close(gf);
}

static void test_trajectory_euler(void) { check_trajectory("euler__karras", false); }
static void test_trajectory_euler_ancestral(void) { check_trajectory("euler_ancestral__discrete", true); }

/* one batch-2 UNet call per step == two batch-1 calls */
static void test_cfg_batching(void) {
  bm_sd *sd = open_sd(g_pkg);
  if (!sd) return;
  static capture a, b;
  memset(&a, 0, sizeof a);
  memset(&b, 0, sizeof b);
  bm_sd_request rq = bm_sd_request_default();
  rq.prompt = "a red car";
  rq.negative_prompt = "ugly";
  rq.steps = 4;
  rq.seed = 5;
  rq.sampler = "dpmpp_2m";
  rq.schedule = "karras";
  rq.on_image = cap_image;
  rq.user = &a;
  bm_sd_result ra, rb;
  CHECK_OK(bm_sd_generate(sd, &rq, &ra));
  rq.cfg_separate = true;
  rq.user = &b;
  CHECK_OK(bm_sd_generate(sd, &rq, &rb));
  CHECK(ra.unet_calls == 4 && rb.unet_calls == 8 && ra.model_evals == 4 && rb.model_evals == 4);
  double e = bm_test_rel_err(a.final, b.final, N);
  CHECK_MSG(e < 1e-5, "batched vs separate CFG: rel err %g", e);
  /* cfg 1: no uncond branch, one batch-1 run per step */
  rq.cfg_separate = false;
  rq.cfg_scale = 1.0;
  CHECK_OK(bm_sd_generate(sd, &rq, &rb));
  CHECK(rb.unet_calls == 4);
  bm_sd_close(sd);
}

/* latent of the init image: (mean + std * e) * scaling, e the generator's first draw */
static void ref_init_latent(ref *r, const uint8_t *rgb, uint64_t seed, float *init, float *noise) {
  static float img[3 * W * H], mean[N], std[N], e[N];
  for (int i = 0; i < W * H; i++)
    for (int c = 0; c < 3; c++) img[c * W * H + i] = rgb[i * 3 + c] / 127.5f - 1.0f;
  const char *names[1] = {"image"};
  const void *data[1] = {img};
  bm_dtype dt[1] = {BM_DTYPE_F32};
  int nd[1] = {4};
  int64_t sh[1][4] = {{1, 3, H, W}};
  CHECK_OK(run_fn(r, "vae_encoder", 1, names, data, dt, nd, sh, "mean", mean, N));
  CHECK_OK(run_fn(r, "vae_encoder", 1, names, data, dt, nd, sh, "std", std, N));
  bm_torch_rng g;
  memset(&g, 0, sizeof g);
  bm_torch_rng_seed(&g, seed);
  bm_torch_randn(&g, e, N);
  bm_torch_randn(&g, noise, N);
  for (int i = 0; i < N; i++) init[i] = (float)((mean[i] + std[i] * e[i]) * 0.18215);
}

static void make_rgb(uint8_t *rgb) {
  for (int y = 0; y < H; y++)
    for (int x = 0; x < W; x++) {
      uint8_t *p = rgb + (y * W + x) * 3;
      p[0] = (uint8_t)(x * 16);
      p[1] = (uint8_t)(y * 16);
      p[2] = (uint8_t)((x + y) * 8);
    }
}

static void test_img2img_start(void) {
  bm_sd *sd = open_sd(g_pkg);
  static ref r;
  ref_open(&r, g_pkg, "a dog", "");
  if (!sd || !r.ses) goto out;
  static uint8_t rgb[W * H * 3];
  make_rgb(rgb);
  static capture c;
  memset(&c, 0, sizeof c);
  bm_sd_request rq = bm_sd_request_default();
  rq.mode = BM_SD_IMG2IMG;
  rq.prompt = "a dog";
  rq.steps = 10;
  rq.strength = 0.55; /* int(10 * 0.55) = 5 steps: the schedule from index 5 */
  rq.seed = 9;
  rq.init_rgb = rgb;
  rq.on_step = cap_step;
  rq.on_image = cap_image;
  rq.user = &c;
  bm_sd_result res;
  CHECK_OK(bm_sd_generate(sd, &rq, &res));
  CHECK(res.start_step == 5 && res.steps == 5 && c.nsteps == 5 && res.model_evals == 5);
  float full[11];
  bm_schedule_params sp = {.model_sigmas = bm_sd_sigma_table(sd), .model_sigmas_len = 1000};
  CHECK_OK(bm_schedule_sigmas("discrete", &sp, 10, full));
  CHECK_MSG(c.sigma[0] == full[5], "img2img starts at sigma %g, expected %g", c.sigma[0], full[5]);
  static float init[N], noise[N], want[N];
  ref_init_latent(&r, rgb, 9, init, noise);
  for (int i = 0; i < N; i++) want[i] = init[i] + noise[i] * full[5];
  double e = bm_test_rel_err(c.x[0], want, N);
  CHECK_MSG(e < 1e-5, "img2img noised latents rel err %g", e);
out:
  bm_session_destroy(r.ses);
  bm_sd_close(sd);
}

/* latent masking keeps the unmasked region equal to the init latent */
static void test_inpaint_latent_mask(void) {
  bm_sd *sd = open_sd(g_pkg);
  static ref r;
  ref_open(&r, g_pkg, "x", "");
  if (!sd || !r.ses) goto out;
  static uint8_t rgb[W * H * 3], mask[W * H];
  make_rgb(rgb);
  for (int y = 0; y < H; y++)
    for (int x = 0; x < W; x++) mask[y * W + x] = x < W / 2 ? 255 : 0; /* repaint the left half */
  static capture c;
  memset(&c, 0, sizeof c);
  bm_sd_request rq = bm_sd_request_default();
  rq.mode = BM_SD_INPAINT;
  rq.prompt = "a tree";
  rq.steps = 6;
  rq.strength = 1.0;
  rq.seed = 3;
  rq.sampler = "euler_a";
  rq.init_rgb = rgb;
  rq.mask = mask;
  rq.on_image = cap_image;
  rq.user = &c;
  bm_sd_result res;
  CHECK_OK(bm_sd_generate(sd, &rq, &res));
  static float init[N], noise[N];
  ref_init_latent(&r, rgb, 3, init, noise);
  int kept_bad = 0, changed = 0;
  for (int i = 0; i < N; i++) {
    int x = i % LW;
    if (x >= LW / 2) kept_bad += c.final[i] != init[i];
    else changed += fabsf(c.final[i] - init[i]) > 1e-3f;
  }
  CHECK_MSG(kept_bad == 0, "%d latents of the kept region differ from the init latent", kept_bad);
  CHECK_MSG(changed > N / 4, "only %d latents of the repainted region changed", changed);
  /* the image is the same when the pipeline runs again */
  static capture c2;
  memset(&c2, 0, sizeof c2);
  rq.user = &c2;
  CHECK_OK(bm_sd_generate(sd, &rq, &res));
  CHECK(memcmp(c.rgb, c2.rgb, sizeof c.rgb) == 0);
out:
  bm_session_destroy(r.ses);
  bm_sd_close(sd);
}

/* 9-channel inpainting UNet (generated weights, v-prediction): runs, is
 * deterministic, and a txt2img step matches the reference with the
 * (mask 1, gray image latent) conditioning. */
static void test_inpaint_9ch_vpred(void) {
  if (!g_pkg9) return;
  bm_sd *sd = open_sd(g_pkg9);
  static ref r;
  ref_open(&r, g_pkg9, "a house", "");
  if (!sd || !r.ses) goto out;
  const bm_sd_info *in = bm_sd_get_info(sd);
  CHECK(in->unet_in_channels == 9 && in->prediction == BM_PRED_V);
  static uint8_t rgb[W * H * 3], mask[W * H];
  make_rgb(rgb);
  for (int i = 0; i < W * H; i++) mask[i] = (i % W) < W / 2 ? 255 : 0;
  static capture a, b, c;
  memset(&a, 0, sizeof a);
  memset(&b, 0, sizeof b);
  memset(&c, 0, sizeof c);
  bm_sd_request rq = bm_sd_request_default();
  rq.mode = BM_SD_INPAINT;
  rq.prompt = "a house";
  rq.steps = 4;
  rq.seed = 11;
  rq.init_rgb = rgb;
  rq.mask = mask;
  rq.strength = 1.0;
  rq.on_image = cap_image;
  rq.user = &a;
  bm_sd_result res;
  CHECK_OK(bm_sd_generate(sd, &rq, &res));
  rq.user = &b;
  CHECK_OK(bm_sd_generate(sd, &rq, &res));
  int finite = 1;
  for (int i = 0; i < N; i++) finite &= isfinite(a.final[i]);
  CHECK(finite && memcmp(a.final, b.final, sizeof a.final) == 0 && memcmp(a.rgb, b.rgb, sizeof a.rgb) == 0);
  rq.seed = 12;
  rq.user = &c;
  CHECK_OK(bm_sd_generate(sd, &rq, &res));
  CHECK(memcmp(a.final, c.final, sizeof a.final) != 0);

  /* txt2img, 1 Euler step: x1 = x0 + (x0 - D(x0)) / s0 * (s1 - s0) */
  r.nine = 1;
  static float zeros_img[3 * W * H], mean[N];
  const char *names[1] = {"image"};
  const void *data[1] = {zeros_img};
  bm_dtype dt[1] = {BM_DTYPE_F32};
  int nd[1] = {4};
  int64_t sh[1][4] = {{1, 3, H, W}};
  CHECK_OK(run_fn(&r, "vae_encoder", 1, names, data, dt, nd, sh, "mean", mean, N));
  for (int i = 0; i < LH * LW; i++) r.cond9[i] = 1.0f;
  for (int i = 0; i < N; i++) r.cond9[LH * LW + i] = (float)(mean[i] * 0.18215);
  static capture t;
  memset(&t, 0, sizeof t);
  bm_sd_request rt = bm_sd_request_default();
  rt.prompt = "a house";
  rt.steps = 2;
  rt.seed = 4;
  rt.on_step = cap_step;
  rt.on_image = cap_image;
  rt.user = &t;
  CHECK_OK(bm_sd_generate(sd, &rt, &res));
  static float den[N], x1[N];
  ref_denoise(&r, t.x[0], t.sigma[0], 7.5, true, den);
  for (int i = 0; i < N; i++) x1[i] = t.x[0][i] + (t.x[0][i] - den[i]) / (float)t.sigma[0] * (float)(t.sigma[1] - t.sigma[0]);
  double e = bm_test_rel_err(t.x[1], x1, N);
  CHECK_MSG(e < 1e-5, "v-prediction 9-channel step: rel err %g", e);
out:
  bm_session_destroy(r.ses);
  bm_sd_close(sd);
}

/* ------------------------------------------------------------------ PNG */

static void test_png_round_trip(void) {
  char p[1200];
  snprintf(p, sizeof p, "%s/rt.png", bm_test_tmpdir());
  static uint8_t rgb[W * H * 3];
  make_rgb(rgb);
  const char *params = "a cat\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: 42, "
                       "Size: 16x16, Model: sd15";
  CHECK_OK(bm_image_write_png(p, rgb, W, H, 3, params));
  bm_image img;
  CHECK_OK(bm_image_read_png(p, &img));
  CHECK(img.width == W && img.height == H && img.channels == 3 && img.pixels &&
        memcmp(img.pixels, rgb, sizeof rgb) == 0);
  CHECK(img.parameters && !strcmp(img.parameters, params));
  CHECK_OK(bm_image_check_size(&img, W, H, "--init-img"));
  CHECK_ERR(bm_image_check_size(&img, 512, 512, "--init-img"), BM_ERR_INVALID_ARGUMENT, "16x16 but the model was compiled for 512x512");
  uint8_t c[3];
  bm_image_rgb(&img, 3, 2, c);
  CHECK(c[0] == 48 && c[1] == 32 && c[2] == 40);
  bm_image_free(&img);
  /* gray and RGBA */
  uint8_t gray[4 * 3] = {0, 50, 100, 150, 200, 250, 1, 2, 3, 4, 5, 6}, rgba[2 * 2 * 4];
  for (int i = 0; i < 16; i++) rgba[i] = (uint8_t)(i * 13);
  CHECK_OK(bm_image_write_png(p, gray, 4, 3, 1, NULL));
  CHECK_OK(bm_image_read_png(p, &img));
  CHECK(img.channels == 1 && img.width == 4 && img.height == 3 && !memcmp(img.pixels, gray, 12) && !img.parameters);
  CHECK(bm_image_gray(&img, 1, 0) == 50);
  bm_image_free(&img);
  CHECK_OK(bm_image_write_png(p, rgba, 2, 2, 4, "x"));
  CHECK_OK(bm_image_read_png(p, &img));
  CHECK(img.channels == 4 && !memcmp(img.pixels, rgba, 16) && img.parameters && !strcmp(img.parameters, "x"));
  bm_image_free(&img);
  CHECK_ERR(bm_image_write_png(p, rgba, 2, 2, 2, NULL), BM_ERR_INVALID_ARGUMENT, "2 channels");
}

static void test_png_malformed(void) {
  char p[1200];
  snprintf(p, sizeof p, "%s/ok.png", bm_test_tmpdir());
  static uint8_t rgb[W * H * 3];
  make_rgb(rgb);
  CHECK_OK(bm_image_write_png(p, rgb, W, H, 3, "params"));
  FILE *f = fopen(p, "rb");
  static uint8_t buf[65536];
  size_t n = f ? fread(buf, 1, sizeof buf, f) : 0;
  if (f) fclose(f);
  CHECK(n > 60);
  bm_image img;
  CHECK_ERR(bm_image_read_png_memory("hello world, not a png", 22, "junk.png", &img), BM_ERR_CORRUPT, "junk.png: not a PNG");
  CHECK_ERR(bm_image_read_png_memory(buf, 7, "short.png", &img), BM_ERR_CORRUPT, "short.png");
  for (size_t cut = 8; cut < n; cut += n / 7) /* truncated anywhere */
    CHECK_ERR(bm_image_read_png_memory(buf, cut, "cut.png", &img), BM_ERR_CORRUPT, "cut.png");
  static uint8_t bad[65536];
  memcpy(bad, buf, n);
  bad[n - 20] ^= 0x55; /* inside IDAT: a CRC or zlib error */
  CHECK_ERR(bm_image_read_png_memory(bad, n, "crc.png", &img), BM_ERR_CORRUPT, "crc.png");
  memcpy(bad, buf, n);
  bad[16] = 0x7f; /* width 2^31 + ...: out of range */
  CHECK_ERR(bm_image_read_png_memory(bad, n, "wide.png", &img), BM_ERR_CORRUPT, "wide.png");
  CHECK(img.pixels == NULL);
  CHECK_ERR(bm_image_read_png("/nonexistent/x.png", &img), BM_ERR_IO, "/nonexistent/x.png");
  /* the pipeline's size check names both sizes */
  CHECK_OK(bm_image_read_png_memory(buf, n, "ok.png", &img));
  CHECK_ERR(bm_image_check_size(&img, 24, 16, "--mask"), BM_ERR_INVALID_ARGUMENT, "--mask is 16x16");
  bm_image_free(&img);
}

/* ------------------------------------------------------------------ errors and names */

static void test_sampler_names(void) {
  const bm_sampler_info *s;
  const char *sch;
  struct { const char *in, *name, *sched; } cases[] = {
      {"euler_a", "euler_ancestral", NULL},       {"Euler a", "euler_ancestral", NULL},
      {"k_euler_a", "euler_ancestral", NULL},     {"DPM++ 2M Karras", "dpmpp_2m", "karras"},
      {"dpm++ 2m", "dpmpp_2m", NULL},             {"DPM++ SDE Karras", "dpmpp_sde", "karras"},
      {"dpm2_a", "dpm_2_ancestral", NULL},        {"DPM2 a Karras", "dpm_2_ancestral", "karras"},
      {"dpmpp_2s_a", "dpmpp_2s_ancestral", NULL}, {"DPM++ 2M SDE Exponential", "dpmpp_2m_sde", "exponential"},
      {"euler_a_cfg++", "euler_ancestral_cfg_pp", NULL}, {"UniPC", "unipc", NULL},
      {"dpmpp_2m_sde_gpu", "dpmpp_2m_sde", NULL}, {"lms", "lms", NULL},
      {"DPM adaptive", "dpm_adaptive", NULL},     {"Heun", "heun", NULL},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    bm_status st = bm_sd_resolve_sampler(cases[i].in, &s, &sch);
    CHECK_MSG(!st && !strcmp(s->name, cases[i].name) &&
                  ((!sch && !cases[i].sched) || (sch && cases[i].sched && !strcmp(sch, cases[i].sched))),
              "sampler '%s' -> %s / %s", cases[i].in, st ? bm_status_message(st) : s->name, sch ? sch : "-");
    bm_status_free(st);
  }
  CHECK_ERR(bm_sd_resolve_sampler("eulerx", &s, &sch), BM_ERR_NOT_FOUND, "dpmpp_2m_sde_heun");
  CHECK(!strcmp(bm_sd_sampler_display_name("euler_ancestral"), "Euler a"));
  /* every registry name resolves to itself */
  for (int i = 0; i < bm_sampler_count(); i++) {
    bm_status st = bm_sd_resolve_sampler(bm_sampler_at(i)->name, &s, &sch);
    CHECK(!st && s == bm_sampler_at(i));
    bm_status_free(st);
  }
}

static void test_request_errors(void) {
  bm_sd *sd = open_sd(g_pkg);
  if (!sd) return;
  bm_sd_request rq = bm_sd_request_default();
  rq.prompt = "x";
  rq.sampler = "nope";
  CHECK_ERR(bm_sd_check_request(sd, &rq), BM_ERR_NOT_FOUND, "unknown sampler 'nope'");
  rq.sampler = "euler";
  rq.schedule = "nope";
  CHECK_ERR(bm_sd_check_request(sd, &rq), BM_ERR_NOT_FOUND, "karras");
  rq.schedule = NULL;
  rq.steps = 0;
  CHECK_ERR(bm_sd_check_request(sd, &rq), BM_ERR_INVALID_ARGUMENT, "steps");
  rq.steps = 2;
  rq.sampler = "unipc";
  CHECK_ERR(bm_sd_check_request(sd, &rq), BM_ERR_INVALID_ARGUMENT, "at least 3 steps");
  rq.sampler = "euler";
  rq.batch_count = 0;
  CHECK_ERR(bm_sd_check_request(sd, &rq), BM_ERR_INVALID_ARGUMENT, "batch count");
  rq.batch_count = 1;
  rq.mode = BM_SD_IMG2IMG;
  CHECK_ERR(bm_sd_check_request(sd, &rq), BM_ERR_INVALID_ARGUMENT, "init image");
  static uint8_t rgb[W * H * 3];
  rq.init_rgb = rgb;
  rq.steps = 10;
  rq.strength = 0.05;
  CHECK_ERR(bm_sd_check_request(sd, &rq), BM_ERR_INVALID_ARGUMENT, "runs no step");
  rq.strength = 1.5;
  CHECK_ERR(bm_sd_check_request(sd, &rq), BM_ERR_INVALID_ARGUMENT, "strength");
  rq.strength = 0.5;
  CHECK_OK(bm_sd_check_request(sd, &rq));
  rq.mode = BM_SD_INPAINT;
  CHECK_ERR(bm_sd_check_request(sd, &rq), BM_ERR_INVALID_ARGUMENT, "mask");
  /* token ids beyond the text encoder's vocabulary */
  rq = bm_sd_request_default();
  static int32_t ids[TXT];
  for (int i = 0; i < TXT; i++) ids[i] = 49407;
  rq.prompt_ids = ids;
  rq.steps = 1;
  bm_sd_result res;
  CHECK_ERR(bm_sd_generate(sd, &rq, &res), BM_ERR_INVALID_ARGUMENT, "outside the text encoder's vocabulary");
  /* parameters text */
  rq = bm_sd_request_default();
  rq.prompt = "a cat";
  rq.negative_prompt = "dog";
  rq.sampler = "euler_ancestral";
  rq.schedule = "karras";
  rq.seed = 42;
  char buf[512];
  bm_sd_format_parameters(sd, &rq, NULL, 1, buf, sizeof buf);
  CHECK_MSG(strstr(buf, "a cat\nNegative prompt: dog\nSteps: 20, Sampler: Euler a, Schedule type: Karras, CFG scale: "
                        "7.5, Seed: 43, Size: 16x16") != NULL, "parameters: %s", buf);
  bm_sd_close(sd);
}

int main(void) {
  g_pkg = compile_folder(make_folder("sdp_pipe", false, "epsilon"), "sdp_pipe", false);
  g_pkg9 = compile_folder(make_folder("sdp_inpaint9", true, "v_prediction"), "sdp_inpaint9", true);
  RUN(test_png_round_trip);
  RUN(test_png_malformed);
  RUN(test_sampler_names);
  if (g_pkg) {
    RUN(test_open_info);
    RUN(test_initial_latents);
    RUN(test_trajectory_euler);
    RUN(test_trajectory_euler_ancestral);
    RUN(test_cfg_batching);
    RUN(test_img2img_start);
    RUN(test_inpaint_latent_mask);
    RUN(test_request_errors);
  }
  RUN(test_inpaint_9ch_vpred);
  bm_package_close(g_pkg);
  bm_package_close(g_pkg9);
  return bm_test_finish();
}
