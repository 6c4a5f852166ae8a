/* test_sd_golden.c - the Stable Diffusion 1.x/2.x builders (models/clip.c,
 * unet.c, vae.c, sd.c) against diffusers' and transformers' outputs
 * (../shared/golden/diffusers/{sd1_unet,sd2_unet,vae_kl},
 * ../shared/golden/hf/{clip_text,clip_text_proj}), compiled for the CPU and
 * run through the runtime. sd1_unet, clip_text (clip skip 1) and the
 * vae_kl decoder are checked through a whole pipeline folder built by the
 * model registry (compiling each model once keeps the test short); the
 * same weights are then written as one single-file original checkpoint
 * (through the key-mapping table), whose functions must give outputs
 * identical to the folder's.
 *
 * BM_SD_VERBOSE=1 prints every error measured. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "../compiler/compile.h"
#include "../ir/interp.h"
#include "../models/sd.h"
#include "../runtime/safetensors.h"
#include "opcheck.h"
#include "testutil.h"

#define TOL 1e-4

static double noted(const char *what, double e) {
  const char *v = getenv("BM_SD_VERBOSE");
  if (v && *v == '1') fprintf(stderr, "  %-40s rel err %.3g\n", what, e);
  return e;
}

static char *gold_dir(const char *rel) {
  static char buf[4][1024];
  static int k;
  char *b = buf[k++ & 3];
  snprintf(b, sizeof buf[0], "%s", bm_test_shared("golden"));
  strncat(b, "/", sizeof buf[0] - strlen(b) - 1);
  strncat(b, rel, sizeof buf[0] - strlen(b) - 1);
  return b;
}

static char *read_text(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *t = malloc((size_t)n + 1);
  if (t && fread(t, 1, (size_t)n, f) != (size_t)n) {
    free(t);
    t = NULL;
  }
  if (t) t[n] = 0;
  fclose(f);
  return t;
}

/* ------------------------------------------------------------------ a compiled module */

typedef struct compiled {
  bm_package *pkg;
  bm_session *ses;
} compiled;

static bm_status compile_open(bm_module *m, const char *name, const char *extra, compiled *c) {
  memset(c, 0, sizeof *c);
  char pkg[1024];
  snprintf(pkg, sizeof pkg, "%s/%s.bmpk", bm_test_tmpdir(), name);
  bm_compile_options co;
  bm_compile_options_init(&co);
  co.passes.verify_each = true;
  co.extra_json = extra;
  BM_RETURN_IF_ERROR(bm_compile_module(m, &co, pkg));
  BM_RETURN_IF_ERROR(bm_package_open(pkg, NULL, &c->pkg));
  bm_session_options so = {.threads = 2};
  return bm_session_create(c->pkg, &so, &c->ses);
}

static void compiled_close(compiled *c) {
  bm_session_destroy(c->ses);
  bm_package_close(c->pkg);
}

/* One input of a run: data in `dtype` with its shape. */
typedef struct input {
  const char *name;
  const void *data;
  bm_dtype dtype;
  int ndim;
  int64_t shape[4];
} input;

static bm_status run(compiled *c, const char *fn, int nin, const input *in) {
  int f, idx;
  BM_RETURN_IF_ERROR(bm_package_find_function(c->pkg, fn, &f));
  for (int i = 0; i < nin; i++) {
    BM_RETURN_IF_ERROR(bm_function_find_input(c->pkg, f, in[i].name, &idx));
    BM_RETURN_IF_ERROR(bm_session_set_input(c->ses, f, idx, in[i].data, in[i].dtype, in[i].ndim, in[i].shape));
  }
  return bm_session_run(c->ses, f);
}

/* Output `name` of the last run of fn, as a malloc'd f32 copy. */
static float *output(compiled *c, const char *fn, const char *name, int64_t *numel) {
  int f;
  bm_status s = bm_package_find_function(c->pkg, fn, &f);
  for (int i = 0; !s && i < bm_function_output_count(c->pkg, f); i++) {
    bm_tensor_info info;
    const void *data;
    s = bm_session_get_output(c->ses, f, i, &data, &info);
    if (s || strcmp(info.name, name)) continue;
    int64_t n = 1;
    for (int d = 0; d < info.ndim; d++) n *= info.shape[d];
    float *o = malloc(sizeof(float) * (size_t)(n ? n : 1));
    for (int64_t j = 0; o && j < n; j++) o[j] = bm_load_f32(data, info.dtype, j);
    if (numel) *numel = n;
    return o;
  }
  CHECK_OK(s);
  fprintf(stderr, "no output '%s' of '%s'\n", name, fn);
  bm_test_failed_checks++;
  return NULL;
}

/* Compares output `name` of fn with golden tensor `gname`. */
static void expect(compiled *c, const char *fn, const char *name, const bm_st_file *gold,
                   const char *gname, const char *what) {
  const bm_st_tensor *t = bm_st_find(gold, gname);
  CHECK_MSG(t != NULL, "golden tensor %s missing", gname);
  int64_t n = 0;
  float *o = output(c, fn, name, &n);
  if (!t || !o) {
    free(o);
    return;
  }
  CHECK_MSG(n == t->numel, "%s: %lld values, golden %lld", what, (long long)n, (long long)t->numel);
  float *ref = malloc(sizeof(float) * (size_t)t->numel);
  for (int64_t j = 0; j < t->numel; j++) ref[j] = bm_load_f32(t->data, t->dtype, j);
  if (n == t->numel) {
    double e = noted(what, bm_test_rel_err(o, ref, n));
    CHECK_MSG(e < TOL, "%s: rel err %g", what, e);
  }
  free(ref);
  free(o);
}

/* A golden input as a typed input (i64 token ids and timesteps are converted). */
typedef struct gin {
  input in;
  void *own;
} gin;

static gin golden_input(const bm_st_file *gold, const char *gname, const char *name, bm_dtype want) {
  gin g = {{.name = name, .dtype = want}, NULL};
  const bm_st_tensor *t = bm_st_find(gold, gname);
  CHECK_MSG(t != NULL, "golden input %s missing", gname);
  if (!t) return g;
  g.in.ndim = t->ndim;
  for (int d = 0; d < t->ndim; d++) g.in.shape[d] = t->shape[d];
  g.own = malloc(bm_dtype_nbytes(want, t->numel) + 1);
  for (int64_t j = 0; j < t->numel; j++) {
    if (want == BM_DTYPE_I32) ((int32_t *)g.own)[j] = (int32_t)bm_load_i64(t->data, t->dtype, j);
    else if (t->dtype == BM_DTYPE_I64) ((float *)g.own)[j] = (float)bm_load_i64(t->data, t->dtype, j);
    else ((float *)g.own)[j] = bm_load_f32(t->data, t->dtype, j);
  }
  g.in.data = g.own;
  return g;
}

static void check_built(const bm_graph *g, const char *what) {
  CHECK_MSG(!bm_graph_status(g), "%s: %s", what, bm_status_message(bm_graph_status(g)));
}

/* ------------------------------------------------------------------ text encoders */

/* final_layer_norm applied to golden x (rows of C) with the checkpoint's weights */
static float *layer_norm_ref(const bm_st_tensor *x, const bm_st_tensor *w, const bm_st_tensor *b, float eps) {
  int64_t C = w->numel, rows = x->numel / C;
  float *o = malloc(sizeof(float) * (size_t)x->numel);
  for (int64_t r = 0; r < rows; r++) {
    double mean = 0, var = 0;
    for (int64_t i = 0; i < C; i++) mean += bm_load_f32(x->data, x->dtype, r * C + i);
    mean /= (double)C;
    for (int64_t i = 0; i < C; i++) {
      double d = bm_load_f32(x->data, x->dtype, r * C + i) - mean;
      var += d * d;
    }
    var /= (double)C;
    for (int64_t i = 0; i < C; i++) {
      double v = (bm_load_f32(x->data, x->dtype, r * C + i) - mean) / sqrt(var + eps);
      o[r * C + i] = (float)(v * bm_load_f32(w->data, w->dtype, i) + bm_load_f32(b->data, b->dtype, i));
    }
  }
  return o;
}

static void check_clip(const char *name, int clip_skip) {
  const char *dir = gold_dir(name);
  char path[1200];
  snprintf(path, sizeof path, "%s/config.json", dir);
  char *cfg = read_text(path);
  CHECK_MSG(cfg != NULL, "%s missing", path);
  bm_sd_clip_config cc;
  bm_status s = cfg ? bm_sd_clip_config_parse(cfg, path, &cc) : NULL;
  free(cfg);
  CHECK_OK(s);
  bm_weight_source *src = NULL;
  CHECK_OK(bm_weight_source_open(dir, &src));
  snprintf(path, sizeof path, "%s/golden.safetensors", dir);
  bm_st_file *gold = NULL;
  CHECK_OK(bm_st_open(path, &gold));
  if (!src || !gold || !cfg) goto out;
  bm_module *m = bm_module_create("clip");
  bm_graph *g = bm_graph_create(m, "text_encoder");
  bm_sd_src w = {src, "", NULL, BM_DTYPE_F32};
  bm_sd_clip_build(g, &w, &cc, bm_sym_declare(g, "batch", 2), clip_skip);
  check_built(g, name);
  compiled c = {0};
  char pkg[64];
  snprintf(pkg, sizeof pkg, "%s_skip%d", name + 3, clip_skip);
  if (!bm_graph_status(g)) CHECK_OK(compile_open(m, pkg, NULL, &c));
  if (c.ses) {
    gin ids = golden_input(gold, "input_ids", "input_ids", BM_DTYPE_I32);
    CHECK_OK(run(&c, "text_encoder", 1, &ids.in));
    char what[128];
    snprintf(what, sizeof what, "%s penultimate", name);
    expect(&c, "text_encoder", "penultimate", gold, "penultimate_hidden_state", what);
    if (clip_skip == 1) {
      snprintf(what, sizeof what, "%s last_hidden_state", name);
      expect(&c, "text_encoder", "hidden_states", gold, "last_hidden_state", what);
    } else {
      /* clip skip 2: final_layer_norm(hidden_states[-2]) */
      const char *tm = bm_weight_source_find(src, "text_model.final_layer_norm.weight") ? "text_model." : "";
      char wn[96], bn[96];
      snprintf(wn, sizeof wn, "%sfinal_layer_norm.weight", tm);
      snprintf(bn, sizeof bn, "%sfinal_layer_norm.bias", tm);
      const bm_st_tensor *pen = bm_st_find(gold, "penultimate_hidden_state");
      float *ref = layer_norm_ref(pen, bm_weight_source_find(src, wn), bm_weight_source_find(src, bn), cc.eps);
      int64_t n = 0;
      float *o = output(&c, "text_encoder", "hidden_states", &n);
      if (o && n == pen->numel) {
        snprintf(what, sizeof what, "%s clip skip 2", name);
        double e = noted(what, bm_test_rel_err(o, ref, n));
        CHECK_MSG(e < TOL, "%s: rel err %g", what, e);
      }
      free(o);
      free(ref);
    }
    if (bm_st_find(gold, "pooler_output")) {
      snprintf(what, sizeof what, "%s pooled", name);
      expect(&c, "text_encoder", "pooled", gold, "pooler_output", what);
    }
    if (bm_st_find(gold, "text_embeds")) {
      snprintf(what, sizeof what, "%s text_embeds", name);
      expect(&c, "text_encoder", "text_embeds", gold, "text_embeds", what);
    }
    free(ids.own);
  }
  compiled_close(&c);
  bm_module_destroy(m);
out:
  bm_st_close(gold);
  bm_weight_source_close(src);
}

/* clip_text with clip skip 1 and sd1_unet are checked in the pipeline test */
static void test_clip_text_skip2(void) { check_clip("hf/clip_text", 2); }
static void test_clip_text_proj(void) { check_clip("hf/clip_text_proj", 1); }

/* ------------------------------------------------------------------ UNet and VAE */

static void check_unet(const char *name) {
  const char *dir = gold_dir(name);
  char path[1200];
  snprintf(path, sizeof path, "%s/config.json", dir);
  char *cfg = read_text(path);
  CHECK_MSG(cfg != NULL, "%s missing", path);
  bm_sd_unet_config uc;
  bm_status s = cfg ? bm_sd_unet_config_parse(cfg, path, &uc) : NULL;
  free(cfg);
  CHECK_OK(s);
  bm_weight_source *src = NULL;
  CHECK_OK(bm_weight_source_open(dir, &src));
  snprintf(path, sizeof path, "%s/golden.safetensors", dir);
  bm_st_file *gold = NULL;
  CHECK_OK(bm_st_open(path, &gold));
  if (!src || !gold || !cfg) goto out;
  bm_module *m = bm_module_create("unet");
  bm_graph *g = bm_graph_create(m, "unet");
  bm_sd_src w = {src, "", NULL, BM_DTYPE_F32};
  bm_sd_unet_build(g, &w, &uc, bm_sym_declare(g, "batch", 2), 16, 16, 77);
  check_built(g, name);
  compiled c = {0};
  if (!bm_graph_status(g)) CHECK_OK(compile_open(m, name + 10, NULL, &c));
  if (c.ses) {
    gin in[3] = {golden_input(gold, "sample", "sample", BM_DTYPE_F32),
                 golden_input(gold, "timestep", "timestep", BM_DTYPE_F32),
                 golden_input(gold, "encoder_hidden_states", "encoder_hidden_states", BM_DTYPE_F32)};
    input ins[3] = {in[0].in, in[1].in, in[2].in};
    CHECK_OK(run(&c, "unet", 3, ins));
    expect(&c, "unet", "model_output", gold, "out_sample", name);
    for (int i = 0; i < 3; i++) free(in[i].own);
  }
  compiled_close(&c);
  bm_module_destroy(m);
out:
  bm_st_close(gold);
  bm_weight_source_close(src);
}

static void test_sd2_unet(void) { check_unet("diffusers/sd2_unet"); }

/* the encoder at 64x64 (the decoder is checked in the pipeline test) */
static void test_vae_kl_encode(void) {
  const char *dir = gold_dir("diffusers/vae_kl");
  char path[1200];
  snprintf(path, sizeof path, "%s/config.json", dir);
  char *cfg = read_text(path);
  CHECK_MSG(cfg != NULL, "%s missing", path);
  bm_sd_vae_config vc;
  bm_status s = cfg ? bm_sd_vae_config_parse(cfg, path, &vc) : NULL;
  free(cfg);
  CHECK_OK(s);
  bm_weight_source *src = NULL;
  CHECK_OK(bm_weight_source_open(dir, &src));
  snprintf(path, sizeof path, "%s/golden.safetensors", dir);
  bm_st_file *gold = NULL;
  CHECK_OK(bm_st_open(path, &gold));
  if (!src || !gold || !cfg) goto out;
  bm_module *m = bm_module_create("vae");
  bm_sd_src w = {src, "", NULL, BM_DTYPE_F32};
  bm_graph *ge = bm_graph_create(m, "vae_encoder");
  bm_sd_vae_encoder_build(ge, &w, &vc, 64, 64);
  check_built(ge, "vae_encoder");
  compiled c = {0};
  if (!bm_graph_status(ge)) CHECK_OK(compile_open(m, "vae_kl", NULL, &c));
  if (c.ses) {
    gin img = golden_input(gold, "image", "image", BM_DTYPE_F32);
    CHECK_OK(run(&c, "vae_encoder", 1, &img.in));
    expect(&c, "vae_encoder", "mean", gold, "out_latent_mean", "vae_kl encode mean");
    expect(&c, "vae_encoder", "logvar", gold, "out_latent_logvar", "vae_kl encode logvar");
    expect(&c, "vae_encoder", "std", gold, "out_latent_std", "vae_kl encode std");
    free(img.own);
  }
  compiled_close(&c);
  bm_module_destroy(m);
out:
  bm_st_close(gold);
  bm_weight_source_close(src);
}

/* ------------------------------------------------------------------ a pipeline folder and its single file */

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "wb");
  CHECK(f != NULL);
  if (!f) return;
  fputs(text, f);
  fclose(f);
}

/* tmp/sd_pipe: model_index.json, scheduler/, and links to the goldens */
static const char *make_pipeline_folder(void) {
  static char dir[1024];
  char p[1200];
  snprintf(dir, sizeof dir, "%s/sd_pipe", bm_test_tmpdir());
  mkdir(dir, 0755);
  snprintf(p, sizeof p, "%s/model_index.json", dir);
  write_file(p, "{\"_class_name\": \"StableDiffusionPipeline\", \"_diffusers_version\": \"0.39.0\"}");
  snprintf(p, sizeof p, "%s/scheduler", dir);
  mkdir(p, 0755);
  snprintf(p, sizeof p, "%s/scheduler/scheduler_config.json", dir);
  write_file(p, "{\"_class_name\": \"PNDMScheduler\", \"beta_start\": 0.00085, \"beta_end\": 0.012, "
                "\"beta_schedule\": \"scaled_linear\", \"num_train_timesteps\": 1000, "
                "\"steps_offset\": 1, \"prediction_type\": \"epsilon\", \"skip_prk_steps\": true}");
  const char *links[4][2] = {{"unet", "diffusers/sd1_unet"}, {"vae", "diffusers/vae_kl"},
                             {"text_encoder", "hf/clip_text"}, {"tokenizer", NULL}};
  for (int i = 0; i < 4; i++) {
    snprintf(p, sizeof p, "%s/%s", dir, links[i][0]);
    const char *target = links[i][1] ? gold_dir(links[i][1]) : bm_test_shared("tokenizers/clip");
    char t[1024];
    snprintf(t, sizeof t, "%s", target);
    unlink(p);
    CHECK(symlink(t, p) == 0);
  }
  return dir;
}

/* Writes the pipeline's diffusers weights as one original checkpoint
 * (model.diffusion_model.*, first_stage_model.*, cond_stage_model.*),
 * mapping every name with the key table. */
static bm_status write_single_file(const char *path, const bm_sd_keys *keys) {
  static const char *const parts[3][2] = {{"unet/", "diffusers/sd1_unet/diffusion_pytorch_model.safetensors"},
                                          {"vae/", "diffusers/vae_kl/diffusion_pytorch_model.safetensors"},
                                          {"text_encoder/", "hf/clip_text/model.safetensors"}};
  bm_st_file *f[3] = {0};
  bm_status s = NULL;
  int total = 0;
  for (int i = 0; i < 3 && !s; i++) {
    s = bm_st_open(gold_dir(parts[i][1]), &f[i]);
    if (!s) total += bm_st_count(f[i]);
  }
  bm_tensor_info *infos = calloc((size_t)total + 1, sizeof *infos);
  const void **datas = calloc((size_t)total + 1, sizeof *datas);
  char (*names)[256] = calloc((size_t)total + 1, sizeof *names);
  int n = 0;
  for (int i = 0; i < 3 && !s; i++) {
    for (int j = 0; j < bm_st_count(f[i]) && !s; j++) {
      const bm_st_tensor *t = bm_st_tensor_at(f[i], j);
      char full[300];
      /* the real text encoder layout has "text_model." */
      snprintf(full, sizeof full, "%s%s%s", parts[i][0], i == 2 ? "text_model." : "", t->name);
      int part;
      bool c11;
      if (!bm_sd_map_key(keys, full, names[n], sizeof names[n], &part, &c11)) {
        s = bm_status_make(BM_ERR_NOT_FOUND, "no key rule for %s", full);
        break;
      }
      infos[n].name = names[n];
      infos[n].dtype = t->dtype;
      infos[n].ndim = t->ndim;
      for (int d = 0; d < t->ndim; d++) infos[n].shape[d] = t->shape[d];
      if (c11) {
        infos[n].shape[infos[n].ndim++] = 1;
        infos[n].shape[infos[n].ndim++] = 1;
      }
      datas[n++] = t->data;
    }
  }
  if (!s) s = bm_st_write(path, n, infos, datas, NULL);
  for (int i = 0; i < 3; i++) bm_st_close(f[i]);
  free(infos);
  free(datas);
  free(names);
  return s;
}

/* Runs text_encoder, unet and vae_decoder on the goldens' inputs; returns
 * their outputs (malloc'd) and checks them against the goldens. */
typedef struct pipe_out {
  float *hidden, *sample, *image;
  int64_t nh, ns, ni;
} pipe_out;

static void run_pipeline(compiled *c, const char *what, pipe_out *po) {
  memset(po, 0, sizeof *po);
  bm_st_file *gc = NULL, *gu = NULL, *gv = NULL;
  char p[1200];
  snprintf(p, sizeof p, "%s/golden.safetensors", gold_dir("hf/clip_text"));
  CHECK_OK(bm_st_open(p, &gc));
  snprintf(p, sizeof p, "%s/golden.safetensors", gold_dir("diffusers/sd1_unet"));
  CHECK_OK(bm_st_open(p, &gu));
  snprintf(p, sizeof p, "%s/golden.safetensors", gold_dir("diffusers/vae_kl"));
  CHECK_OK(bm_st_open(p, &gv));
  if (gc && gu && gv) {
    char w[128];
    gin ids = golden_input(gc, "input_ids", "input_ids", BM_DTYPE_I32);
    CHECK_OK(run(c, "text_encoder", 1, &ids.in));
    snprintf(w, sizeof w, "%s text_encoder (clip_text)", what);
    expect(c, "text_encoder", "hidden_states", gc, "last_hidden_state", w);
    snprintf(w, sizeof w, "%s text_encoder pooled", what);
    expect(c, "text_encoder", "pooled", gc, "pooler_output", w);
    snprintf(w, sizeof w, "%s text_encoder penultimate", what);
    expect(c, "text_encoder", "penultimate", gc, "penultimate_hidden_state", w);
    po->hidden = output(c, "text_encoder", "hidden_states", &po->nh);
    gin in[3] = {golden_input(gu, "sample", "sample", BM_DTYPE_F32),
                 golden_input(gu, "timestep", "timestep", BM_DTYPE_F32),
                 golden_input(gu, "encoder_hidden_states", "encoder_hidden_states", BM_DTYPE_F32)};
    input ins[3] = {in[0].in, in[1].in, in[2].in};
    CHECK_OK(run(c, "unet", 3, ins));
    snprintf(w, sizeof w, "%s unet (sd1_unet)", what);
    expect(c, "unet", "model_output", gu, "out_sample", w);
    po->sample = output(c, "unet", "model_output", &po->ns);
    gin lat = golden_input(gv, "latent", "latent", BM_DTYPE_F32);
    CHECK_OK(run(c, "vae_decoder", 1, &lat.in));
    snprintf(w, sizeof w, "%s vae_decoder (vae_kl decode)", what);
    expect(c, "vae_decoder", "image", gv, "out_decoded", w);
    po->image = output(c, "vae_decoder", "image", &po->ni);
    free(ids.own);
    free(lat.own);
    for (int i = 0; i < 3; i++) free(in[i].own);
  }
  bm_st_close(gc);
  bm_st_close(gu);
  bm_st_close(gv);
}

static void pipe_out_free(pipe_out *po) {
  free(po->hidden);
  free(po->sample);
  free(po->image);
}

static void test_pipeline_and_single_file(void) {
  const char *dir = make_pipeline_folder();
  /* 1. the diffusers folder through the registry */
  char *extra = NULL;
  bm_model_options mo = {.width = 32, .height = 32, .max_batch = 2, .extra_json = &extra};
  bm_module *m = NULL;
  bm_weight_source *src = NULL;
  bm_status s = bm_model_build(dir, &mo, &m, &src);
  CHECK_OK(s);
  if (!m) return;
  CHECK(strcmp(m->name, "sd") == 0);
  const char *fns[5] = {"text_encoder", "unet", "vae_decoder", "vae_encoder", "tokenizer"};
  for (int i = 0; i < 5; i++) CHECK_MSG(bm_module_find_graph(m, fns[i]) != NULL, "no function %s", fns[i]);
  cJSON *ej = cJSON_Parse(extra ? extra : "");
  CHECK_MSG(ej != NULL, "extra json does not parse");
  const cJSON *sf = cJSON_GetObjectItemCaseSensitive(ej, "scaling_factor");
  CHECK(cJSON_IsNumber(sf) && fabs(sf->valuedouble - 0.18215) < 1e-9);
  const cJSON *pt = cJSON_GetObjectItemCaseSensitive(ej, "prediction_type");
  CHECK(cJSON_IsString(pt) && !strcmp(pt->valuestring, "epsilon"));
  const cJSON *sch = cJSON_GetObjectItemCaseSensitive(ej, "scheduler");
  CHECK(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(sch, "beta_end")));
  const cJSON *tok = cJSON_GetObjectItemCaseSensitive(ej, "tokenizer");
  CHECK(cJSON_IsObject(tok) && cJSON_IsString(cJSON_GetObjectItemCaseSensitive(tok, "pad")) &&
        !strcmp(cJSON_GetObjectItemCaseSensitive(tok, "pad")->valuestring, "<|endoftext|>"));
  cJSON_Delete(ej);
  compiled c = {0};
  CHECK_OK(compile_open(m, "sd_pipe", extra, &c));
  pipe_out a = {0};
  if (c.ses) {
    run_pipeline(&c, "folder", &a);
    /* the tokenizer files come back byte for byte */
    int64_t n = 0;
    CHECK_OK(run(&c, "tokenizer", 0, NULL));
    float *v = output(&c, "tokenizer", "vocab.json", &n);
    char vp[1200];
    snprintf(vp, sizeof vp, "%s/tokenizer/vocab.json", dir);
    char *vt = read_text(vp);
    CHECK(v && vt && n == (int64_t)strlen(vt) && v[0] == (float)(int8_t)vt[0] &&
          v[n - 1] == (float)(int8_t)vt[n - 1]);
    free(v);
    free(vt);
  }
  compiled_close(&c);
  bm_module_destroy(m);
  bm_weight_source_close(src);
  free(extra);
  extra = NULL;

  /* 2. the same weights as one original checkpoint, configs from the folder:
   * every function gives identical outputs (reference interpreter, same
   * random inputs) */
  bm_sd_keys keys = {.unet_layers = 2, .unet_up_attn = 2, .vae_blocks = 2};
  char ck[1200];
  snprintf(ck, sizeof ck, "%s/sd_single.safetensors", bm_test_tmpdir());
  CHECK_OK(write_single_file(ck, &keys));
  bm_st_file *st = NULL;
  CHECK_OK(bm_st_open(ck, &st));
  if (st) {
    /* spot checks of the original layout */
    CHECK(bm_st_find(st, "model.diffusion_model.input_blocks.1.0.in_layers.2.weight"));
    CHECK(bm_st_find(st, "model.diffusion_model.input_blocks.3.0.op.weight"));
    CHECK(bm_st_find(st, "model.diffusion_model.output_blocks.2.1.conv.weight"));
    CHECK(bm_st_find(st, "model.diffusion_model.output_blocks.5.1.proj_in.weight"));
    CHECK(bm_st_find(st, "first_stage_model.decoder.up.1.block.2.conv1.weight"));
    CHECK(bm_st_find(st, "first_stage_model.decoder.up.0.block.0.nin_shortcut.weight"));
    const bm_st_tensor *q = bm_st_find(st, "first_stage_model.encoder.mid.attn_1.q.weight");
    CHECK(q && q->ndim == 4 && q->shape[2] == 1 && q->shape[3] == 1);
    CHECK(bm_st_find(st, "cond_stage_model.transformer.text_model.final_layer_norm.weight"));
    bm_st_close(st);
  }
  bm_model_options mf = {.width = 32, .height = 32, .max_batch = 2};
  bm_module *mfold = NULL;
  bm_weight_source *sfold = NULL;
  CHECK_OK(bm_model_build(dir, &mf, &mfold, &sfold));
  mo.sd_config = dir;
  s = bm_model_build(ck, &mo, &m, &src);
  CHECK_OK(s);
  if (m && mfold) {
    cJSON *ej2 = cJSON_Parse(extra ? extra : "");
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(ej2, "source");
    CHECK(cJSON_IsString(so) && !strcmp(so->valuestring, "single-file"));
    cJSON_Delete(ej2);
    for (int f = 0; f < 4; f++) {
      bm_graph *ga = bm_module_find_graph(mfold, fns[f]), *gb = bm_module_find_graph(m, fns[f]);
      CHECK(ga && gb);
      if (!ga || !gb) continue;
      CHECK_MSG(ga->nnodes == gb->nnodes, "%s: %d vs %d nodes", fns[f], ga->nnodes, gb->nnodes);
      bm_tensor in[4] = {0}, oa[4] = {0}, ob[4] = {0};
      CHECK_OK(bm_opcheck_random_inputs(ga, NULL, 11 + (uint64_t)f, in));
      CHECK_OK(bm_interp_run(ga, in, oa));
      CHECK_OK(bm_interp_run(gb, in, ob));
      for (int o = 0; o < ga->noutputs && o < 4; o++) {
        CHECK_MSG(oa[o].data && ob[o].data && bm_tensor_nbytes(&oa[o]) == bm_tensor_nbytes(&ob[o]) &&
                      memcmp(oa[o].data, ob[o].data, bm_tensor_nbytes(&oa[o])) == 0,
                  "single file: %s output %s differs from the folder's", fns[f], ga->outputs[o].name);
        bm_tensor_free(&oa[o]);
        bm_tensor_free(&ob[o]);
      }
      for (int i = 0; i < ga->ninputs && i < 4; i++) bm_tensor_free(&in[i]);
    }
  }
  bm_module_destroy(m);
  bm_weight_source_close(src);
  bm_module_destroy(mfold);
  bm_weight_source_close(sfold);
  free(extra);
  pipe_out_free(&a);

  /* 3. without configs: shapes alone say what the checkpoint holds, but
   * the test models' head counts are not SD's defaults: the build must
   * still succeed and produce every function */
  bm_model_options mo2 = {.width = 32, .height = 32};
  s = bm_model_build(ck, &mo2, &m, &src);
  CHECK_OK(s);
  if (m) {
    for (int i = 0; i < 4; i++) CHECK(bm_module_find_graph(m, fns[i]) != NULL);
    bm_module_destroy(m);
    bm_weight_source_close(src);
  }
}

/* ------------------------------------------------------------------ errors */

static void test_key_table(void) {
  bm_sd_keys k = {.unet_layers = 2, .unet_up_attn = 0xe, .vae_blocks = 4};
  char out[256];
  int part;
  bool c11;
  CHECK(bm_sd_map_key(&k, "unet/down_blocks.2.attentions.1.transformer_blocks.0.attn1.to_q.weight", out, sizeof out, &part, &c11));
  CHECK(!strcmp(out, "model.diffusion_model.input_blocks.8.1.transformer_blocks.0.attn1.to_q.weight"));
  CHECK(bm_sd_map_key(&k, "unet/up_blocks.1.upsamplers.0.conv.weight", out, sizeof out, &part, &c11));
  CHECK(!strcmp(out, "model.diffusion_model.output_blocks.5.2.conv.weight"));
  CHECK(bm_sd_map_key(&k, "unet/up_blocks.0.upsamplers.0.conv.bias", out, sizeof out, &part, &c11));
  CHECK(!strcmp(out, "model.diffusion_model.output_blocks.2.1.conv.bias"));
  CHECK(bm_sd_map_key(&k, "unet/down_blocks.3.resnets.1.time_emb_proj.weight", out, sizeof out, &part, &c11));
  CHECK(!strcmp(out, "model.diffusion_model.input_blocks.11.0.emb_layers.1.weight"));
  CHECK(bm_sd_map_key(&k, "vae/decoder.up_blocks.0.resnets.2.norm1.bias", out, sizeof out, &part, &c11));
  CHECK(!strcmp(out, "first_stage_model.decoder.up.3.block.2.norm1.bias"));
  CHECK(bm_sd_map_key(&k, "vae/decoder.mid_block.attentions.0.to_out.0.weight", out, sizeof out, &part, &c11));
  CHECK(!strcmp(out, "first_stage_model.decoder.mid.attn_1.proj_out.weight") && c11);
  k.openclip = true;
  CHECK(bm_sd_map_key(&k, "text_encoder/text_model.encoder.layers.22.self_attn.k_proj.bias", out, sizeof out, &part, &c11));
  CHECK(!strcmp(out, "cond_stage_model.model.transformer.resblocks.22.attn.in_proj_bias") && part == 1);
  CHECK(bm_sd_map_key(&k, "text_encoder/text_model.embeddings.position_embedding.weight", out, sizeof out, &part, &c11));
  CHECK(!strcmp(out, "cond_stage_model.model.positional_embedding"));
  CHECK(!bm_sd_map_key(&k, "controlnet/foo", out, sizeof out, &part, &c11));
}

static void test_errors(void) {
  bm_sd_unet_config uc;
  CHECK_ERR(bm_sd_unet_config_parse("{\"block_out_channels\": [32], \"down_block_types\": [\"AttnDownBlock2D\"], "
                                    "\"up_block_types\": [\"UpBlock2D\"]}", "cfg", &uc),
            BM_ERR_UNSUPPORTED, "AttnDownBlock2D");
  CHECK_ERR(bm_sd_unet_config_parse("{\"block_out_channels\": [32], \"down_block_types\": [\"DownBlock2D\"], "
                                    "\"up_block_types\": [\"UpBlock2D\"], \"addition_embed_type\": \"text_time\"}", "cfg", &uc),
            BM_ERR_UNSUPPORTED, "addition_embed_type");
  bm_sd_clip_config cc;
  CHECK_ERR(bm_sd_clip_config_parse("{\"hidden_act\": \"relu\"}", "te", &cc), BM_ERR_UNSUPPORTED, "relu");
  CHECK_ERR(bm_sd_clip_config_parse("[1]", "te", &cc), BM_ERR_CORRUPT, "te");
  /* a single file without one weight: the error names both keys */
  bm_sd_keys keys = {.unet_layers = 2, .unet_up_attn = 2, .vae_blocks = 2};
  char ck[1200];
  snprintf(ck, sizeof ck, "%s/sd_single.safetensors", bm_test_tmpdir());
  struct stat sb;
  if (stat(ck, &sb) != 0) CHECK_OK(write_single_file(ck, &keys));
  bm_weight_source *src = NULL;
  CHECK_OK(bm_weight_source_open(ck, &src));
  if (!src) return;
  bm_module *m = bm_module_create("x");
  bm_graph *g = bm_graph_create(m, "g");
  bm_sd_src w = {src, "vae/", &keys, BM_DTYPE_F32};
  int64_t shape[2] = {64, 64};
  CHECK(bm_sd_weight(g, &w, BM_DTYPE_F32, 2, shape, "decoder.mid_block.attentions.0.to_q.weight") != NULL);
  CHECK(bm_sd_weight(g, &w, BM_DTYPE_F32, 2, shape, "decoder.mid_block.attentions.0.to_x.weight") == NULL);
  bm_status s = bm_graph_status(g);
  CHECK(s && strstr(bm_status_message(s), "first_stage_model.decoder.mid.attn_1.to_x.weight") &&
        strstr(bm_status_message(s), "vae/decoder.mid_block.attentions.0.to_x.weight"));
  bm_module_destroy(m);
  bm_weight_source_close(src);
}

/* f16 matmul/conv weights (norms, biases, embeddings stay f32): the text
 * encoder on the reference interpreter stays within f16 rounding of
 * transformers' f32 output. */
static void test_f16_weights(void) {
  const char *dir = make_pipeline_folder();
  bm_model_options mo = {.width = 32, .height = 32, .max_batch = 2, .weight_dtype = BM_DTYPE_F16};
  bm_module *m = NULL;
  bm_weight_source *src = NULL;
  CHECK_OK(bm_model_build(dir, &mo, &m, &src));
  if (!m) return;
  int f16 = 0, f32_conv = 0;
  bm_graph *gu = bm_module_find_graph(m, "unet");
  for (int i = 0; gu && i < gu->nnodes; i++) {
    const bm_node *n = gu->nodes[i];
    if (n->op == BM_OP_CONV2D && n->in[1]->dtype == BM_DTYPE_F16) f16++;
    if (n->op == BM_OP_CONV2D && n->in[1]->dtype != BM_DTYPE_F16) f32_conv++;
    if (n->op == BM_OP_GROUP_NORM) CHECK(n->in[1]->dtype == BM_DTYPE_F32);
  }
  CHECK(f16 > 0 && f32_conv == 0);
  bm_st_file *gc = NULL;
  char p[1200];
  snprintf(p, sizeof p, "%s/golden.safetensors", gold_dir("hf/clip_text"));
  CHECK_OK(bm_st_open(p, &gc));
  bm_graph *gt = bm_module_find_graph(m, "text_encoder");
  if (gc && gt) {
    gin ids = golden_input(gc, "input_ids", "input_ids", BM_DTYPE_I32);
    bm_tensor in[1] = {{.dtype = BM_DTYPE_I32, .ndim = 2, .shape = {ids.in.shape[0], ids.in.shape[1]}, .data = ids.own}};
    bm_tensor out[4] = {0};
    CHECK_OK(bm_interp_run(gt, in, out));
    const bm_st_tensor *ref = bm_st_find(gc, "last_hidden_state");
    if (out[0].data && ref && bm_tensor_numel(&out[0]) == ref->numel) {
      float *r = malloc(sizeof(float) * (size_t)ref->numel);
      for (int64_t j = 0; j < ref->numel; j++) r[j] = bm_load_f32(ref->data, ref->dtype, j);
      double e = noted("f16 weights text_encoder (interp)", bm_test_rel_err(out[0].data, r, ref->numel));
      CHECK_MSG(e < 1e-2, "f16 weights: rel err %g", e);
      free(r);
    }
    for (int i = 0; i < gt->noutputs && i < 4; i++) bm_tensor_free(&out[i]);
    free(ids.own);
  }
  bm_st_close(gc);
  bm_module_destroy(m);
  bm_weight_source_close(src);
}

int main(void) {
  RUN(test_key_table);
  RUN(test_clip_text_skip2);
  RUN(test_clip_text_proj);
  RUN(test_sd2_unet);
  RUN(test_vae_kl_encode);
  RUN(test_pipeline_and_single_file); /* clip_text, sd1_unet, vae_kl decode */
  RUN(test_f16_weights);
  RUN(test_errors);
  return bm_test_finish();
}
