/* sd.c - the Stable Diffusion pipelines (sd.h): reads an SD package's
 * manifest "extra", loads its CLIP tokenizer, and runs txt2img, img2img and
 * inpainting: text encoding with cond and uncond batched, the UNet wrapped as
 * a Karras denoiser for the sampler library (sampler.h), latent masking or
 * 9-channel conditioning for inpainting, and VAE decoding to RGB pixels. */
#include "sd.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BAD(...) bm_status_make(BM_ERR_INVALID_ARGUMENT, __VA_ARGS__)

/* A function of the package and the indices of the tensors we use. */
typedef struct fn_ref {
  int f;
  int in[3];
  int out[3];
} fn_ref;

struct bm_sd {
  bm_package *pkg;
  bm_session *ses;
  cJSON *extra;
  bm_tokenizer *tok;
  int32_t pad_id;
  bm_sd_info info;
  fn_ref te, unet, dec, enc; /* enc.f < 0 when the package has no vae_encoder */
  float *table;              /* (T) discrete sigma table, ascending */
  int64_t n;                 /* latent elements C*h*w */
  int64_t hw;                /* h*w */
  int64_t pixels;            /* H*W */
  /* buffers, allocated once */
  int32_t *ids;              /* (2, text_len): uncond, cond */
  float *emb;                /* (2, text_len, text_hidden): uncond, cond */
  float *unet_in;            /* (2, Cin, h, w) */
  float *unet_out;           /* (2, C, h, w) */
  float *x, *xm, *noise, *init, *den_u, *den_c; /* (n) */
  float *enc_mean, *enc_std; /* (n) the init image's latent distribution */
  float *mask_lat;           /* (h*w) latent mask, 1 = repaint */
  float *cond_lat;           /* (n) 9-channel UNets: the masked image's latent */
  float *img;                /* (3, H, W) VAE encoder input / decoder staging */
  uint8_t *rgb;              /* (H, W, 3) */
  float *sigmas;             /* (BM_SD_MAX_STEPS + 1) */
  float *scratch;            /* (BM_SAMPLER_SCRATCH_BUFFERS * n) */
  float *brown;              /* (2 * n) Brownian noise scratch */
};

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

const char *bm_sd_mode_name(bm_sd_mode m) {
  switch (m) {
  case BM_SD_TXT2IMG: return "txt2img";
  case BM_SD_IMG2IMG: return "img2img";
  case BM_SD_INPAINT: return "inpaint";
  }
  return "?";
}

bm_sd_request bm_sd_request_default(void) {
  bm_sd_request r;
  memset(&r, 0, sizeof r);
  r.prompt = "";
  r.negative_prompt = "";
  r.steps = 20;
  r.cfg_scale = 7.5;
  r.batch_count = 1;
  r.strength = 0.75;
  return r;
}

/* ------------------------------------------------------------------ sampler names */

/* AUTOMATIC1111's display names of the samplers it shares with bm. */
static const char *const display_names[][2] = {
    {"euler", "Euler"},
    {"euler_ancestral", "Euler a"},
    {"lms", "LMS"},
    {"heun", "Heun"},
    {"dpm_2", "DPM2"},
    {"dpm_2_ancestral", "DPM2 a"},
    {"dpmpp_2s_ancestral", "DPM++ 2S a"},
    {"dpmpp_2m", "DPM++ 2M"},
    {"dpmpp_sde", "DPM++ SDE"},
    {"dpmpp_2m_sde", "DPM++ 2M SDE"},
    {"dpmpp_2m_sde_heun", "DPM++ 2M SDE Heun"},
    {"dpmpp_3m_sde", "DPM++ 3M SDE"},
    {"dpm_fast", "DPM fast"},
    {"dpm_adaptive", "DPM adaptive"},
    {"ddim", "DDIM"},
    {"unipc", "UniPC"},
    {"lcm", "LCM"},
    {"ipndm", "iPNDM"},
    {"ipndm_v", "iPNDM_v"},
    {"deis", "DEIS"},
};

const char *bm_sd_sampler_display_name(const char *sampler) {
  for (size_t i = 0; sampler && i < sizeof display_names / sizeof *display_names; i++)
    if (!strcmp(display_names[i][0], sampler)) return display_names[i][1];
  return sampler;
}

/* Lower case; "dpm++" -> "dpmpp", "cfg++" -> "cfg_pp"; spaces and '-' ->
 * '_'; runs of '_' collapsed. */
static void normalize_name(const char *in, char *out, size_t size) {
  size_t k = 0;
  for (const char *p = in; *p && k + 8 < size; p++) {
    if (!strncasecmp(p, "cfg++", 5)) {
      memcpy(out + k, "cfg_pp", 6);
      k += 6;
      p += 4;
      continue;
    }
    if (p[0] == '+' && p[1] == '+') {
      memcpy(out + k, "pp", 2);
      k += 2;
      p++;
      continue;
    }
    char c = (char)tolower((unsigned char)*p);
    if (c == ' ' || c == '-' || c == '.') c = '_';
    if (c == '_' && (k == 0 || out[k - 1] == '_')) continue;
    out[k++] = c;
  }
  while (k > 0 && out[k - 1] == '_') k--;
  out[k] = 0;
}

/* Splits on '_' into tokens (in place); returns their count. */
static int split_tokens(char *s, char **tok, int max) {
  int n = 0;
  for (char *p = strtok(s, "_"); p && n < max; p = strtok(NULL, "_")) tok[n++] = p;
  return n;
}

/* Joins tokens [a, b) with '_'. */
static void join_tokens(char *const *tok, int a, int b, char *out, size_t size) {
  size_t k = 0;
  out[0] = 0;
  for (int i = a; i < b && k < size; i++) k += (size_t)snprintf(out + k, size - k, "%s%s", i > a ? "_" : "", tok[i]);
}

static bool find_sampler(const char *name, const bm_sampler_info **out) {
  for (int i = 0; i < bm_sampler_count(); i++)
    if (!strcmp(bm_sampler_at(i)->name, name)) {
      *out = bm_sampler_at(i);
      return true;
    }
  return false;
}

bm_status bm_sd_resolve_sampler(const char *name, const bm_sampler_info **sampler, const char **schedule) {
  if (!sampler) return BAD("bm_sd_resolve_sampler: NULL argument");
  *sampler = NULL;
  if (schedule) *schedule = NULL;
  if (!name || !*name) name = "euler";
  if (find_sampler(name, sampler)) return NULL;
  char norm[128], joined[128];
  normalize_name(name, norm, sizeof norm);
  if (find_sampler(norm, sampler)) return NULL;
  /* display names: "Euler a", "DPM++ 2M" */
  for (size_t i = 0; i < sizeof display_names / sizeof *display_names; i++) {
    char d[64];
    normalize_name(display_names[i][1], d, sizeof d);
    if (!strcmp(d, norm) && find_sampler(display_names[i][0], sampler)) return NULL;
  }
  char *tok[24];
  int n = split_tokens(norm, tok, 24);
  int first = n > 0 && !strcmp(tok[0], "k") ? 1 : 0; /* k_euler_a, k_lms */
  /* a trailing schedule ("karras", "sgm_uniform", ...) and "gpu" */
  const char *sched = NULL;
  if (n > first && !strcmp(tok[n - 1], "gpu")) n--;
  for (int take = 3; take >= 1 && !sched; take--) {
    if (n - take <= first) continue;
    join_tokens(tok, n - take, n, joined, sizeof joined);
    for (int i = 0; i < bm_schedule_count(); i++)
      if (!strcmp(bm_schedule_name(i), joined)) sched = bm_schedule_name(i);
    if (sched) n -= take;
  }
  /* token aliases: a -> ancestral, dpm2 -> dpm_2, midpoint dropped */
  char *fixed[24];
  int m = 0;
  for (int i = first; i < n && m < 22; i++) {
    if (!strcmp(tok[i], "a")) fixed[m++] = "ancestral";
    else if (!strcmp(tok[i], "dpm2")) {
      fixed[m++] = "dpm";
      fixed[m++] = "2";
    } else if (!strcmp(tok[i], "midpoint")) continue;
    else fixed[m++] = tok[i];
  }
  join_tokens(fixed, 0, m, joined, sizeof joined);
  if (find_sampler(joined, sampler)) {
    if (schedule) *schedule = sched;
    return NULL;
  }
  for (size_t i = 0; i < sizeof display_names / sizeof *display_names; i++) {
    char d[64];
    normalize_name(display_names[i][1], d, sizeof d);
    if (!strcmp(d, joined) && find_sampler(display_names[i][0], sampler)) {
      if (schedule) *schedule = sched;
      return NULL;
    }
  }
  const bm_sampler_info *dummy;
  bm_status s = bm_sampler_find(name, &dummy); /* its message lists every sampler */
  if (!s) s = bm_status_make(BM_ERR_NOT_FOUND, "unknown sampler '%s'", name);
  return s;
}

/* ------------------------------------------------------------------ open */

static const cJSON *jget(const cJSON *o, const char *k) {
  return cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, k) : NULL;
}

static double jnum(const cJSON *o, const char *k, double dflt) {
  const cJSON *v = jget(o, k);
  return cJSON_IsNumber(v) ? v->valuedouble : dflt;
}

static const char *jstr(const cJSON *o, const char *k, const char *dflt) {
  const cJSON *v = jget(o, k);
  return cJSON_IsString(v) ? v->valuestring : dflt;
}

/* Output `name` of function f, or -1. */
static int find_output(const bm_package *pkg, int f, const char *name) {
  for (int i = 0; i < bm_function_output_count(pkg, f); i++) {
    bm_tensor_info t;
    bm_status s = bm_function_output_info(pkg, f, i, &t);
    if (!s && !strcmp(t.name, name)) return i;
    bm_status_free(s);
  }
  return -1;
}

/* Function `fn` with the named inputs and outputs (all f32 except
 * input_ids); a missing function says which part of the model is absent. */
static bm_status find_fn(bm_sd *sd, const char *fn, const char *part, int nin, const char *const *ins, int nout,
                         const char *const *outs, fn_ref *r) {
  bm_status s = bm_package_find_function(sd->pkg, fn, &r->f);
  if (s) {
    bm_status_free(s);
    return bm_status_make(BM_ERR_NOT_FOUND, "package '%s' has no function '%s': the checkpoint lacks the %s",
                          bm_package_model_name(sd->pkg), fn, part);
  }
  for (int i = 0; i < nin; i++) {
    s = bm_function_find_input(sd->pkg, r->f, ins[i], &r->in[i]);
    if (s) return bm_status_wrap(s, "function '%s'", fn);
  }
  for (int i = 0; i < nout; i++) {
    r->out[i] = find_output(sd->pkg, r->f, outs[i]);
    if (r->out[i] < 0) return bm_status_make(BM_ERR_INCOMPATIBLE, "function '%s' has no output '%s'", fn, outs[i]);
  }
  return NULL;
}

static bm_status input_info(bm_sd *sd, const fn_ref *r, int k, bm_tensor_info *t) {
  return bm_function_input_info(sd->pkg, r->f, r->in[k], t);
}

/* The model's discrete table from extra.scheduler: betas (scaled_linear or
 * linear), alphas_cumprod in float32, sigma = ((1 - ac) / ac)^0.5. */
static bm_status make_table(bm_sd *sd) {
  const cJSON *sch = jget(sd->extra, "scheduler");
  double b0 = jnum(sch, "beta_start", 0.00085), b1 = jnum(sch, "beta_end", 0.012);
  double T = jnum(sch, "num_train_timesteps", 1000);
  const char *kind = jstr(sch, "beta_schedule", "scaled_linear");
  if (!(T >= 2 && T <= 100000) || T != floor(T) || !(b0 > 0 && b1 > 0 && b0 < 1 && b1 < 1))
    return bm_status_make(BM_ERR_CORRUPT, "manifest extra.scheduler: bad num_train_timesteps %g or betas %g..%g", T,
                          b0, b1);
  bool linear = !strcmp(kind, "linear");
  if (!linear && strcmp(kind, "scaled_linear"))
    return bm_status_make(BM_ERR_UNSUPPORTED, "manifest extra.scheduler.beta_schedule '%s' (scaled_linear or linear)",
                          kind);
  int n = (int)T;
  sd->table = malloc(sizeof(float) * (size_t)n);
  if (!sd->table) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "sigma table");
  double acc = 1.0;
  for (int i = 0; i < n; i++) {
    double beta;
    if (linear) beta = b0 + (b1 - b0) * i / (n - 1);
    else {
      double s = sqrt(b0) + (sqrt(b1) - sqrt(b0)) * i / (n - 1);
      beta = s * s;
    }
    acc *= 1.0 - beta;
    float ac = (float)acc;
    sd->table[i] = (float)sqrt((1.0 - (double)ac) / (double)ac);
  }
  sd->info.n_train_timesteps = n;
  return NULL;
}

/* The CLIP tokenizer: package blobs (extra.tokenizer.file/file2, as bmc
 * embeds them) or the outputs of the "tokenizer" function. */
static bm_status load_tokenizer(bm_sd *sd) {
  const cJSON *t = jget(sd->extra, "tokenizer");
  if (!cJSON_IsObject(t)) return NULL;
  const void *d1 = NULL, *d2 = NULL;
  size_t n1 = 0, n2 = 0;
  const char *name = "tokenizer";
  const cJSON *file = jget(t, "file"), *file2 = jget(t, "file2"), *fn = jget(t, "function");
  if (cJSON_IsString(file)) {
    name = file->valuestring;
    BM_RETURN_IF_ERROR(bm_package_blob(sd->pkg, file->valuestring, &d1, &n1));
    if (cJSON_IsString(file2)) BM_RETURN_IF_ERROR(bm_package_blob(sd->pkg, file2->valuestring, &d2, &n2));
  } else if (cJSON_IsString(fn)) {
    int f;
    BM_RETURN_IF_ERROR(bm_package_find_function(sd->pkg, fn->valuestring, &f));
    BM_RETURN_IF_ERROR(bm_session_run(sd->ses, f));
    int iv = find_output(sd->pkg, f, "vocab.json"), im = find_output(sd->pkg, f, "merges.txt");
    if (iv < 0 || im < 0)
      return bm_status_make(BM_ERR_CORRUPT, "function '%s' lacks the vocab.json / merges.txt outputs", fn->valuestring);
    bm_tensor_info a, b;
    BM_RETURN_IF_ERROR(bm_session_get_output(sd->ses, f, iv, &d1, &a));
    BM_RETURN_IF_ERROR(bm_session_get_output(sd->ses, f, im, &d2, &b));
    if (a.dtype != BM_DTYPE_I8 || b.dtype != BM_DTYPE_I8 || a.ndim != 1 || b.ndim != 1)
      return bm_status_make(BM_ERR_CORRUPT, "function '%s': tokenizer files are not i8 byte tensors", fn->valuestring);
    n1 = (size_t)a.shape[0];
    n2 = (size_t)b.shape[0];
  } else {
    return NULL;
  }
  bm_status s = bm_tokenizer_load_memory(d2 ? BM_TOK_FORMAT_CLIP_VOCAB_MERGES : BM_TOK_FORMAT_AUTO, d1, n1, d2, n2,
                                         name, &sd->tok);
  if (s) return bm_status_wrap(s, "the package's tokenizer");
  const char *pad = jstr(t, "pad", NULL);
  sd->pad_id = bm_tokenizer_eos(sd->tok);
  if (pad) {
    int32_t id = bm_tokenizer_find(sd->tok, pad, strlen(pad));
    if (id < 0 && !strcmp(pad, "!")) id = bm_tokenizer_find(sd->tok, "!</w>", 5);
    if (id < 0 && !strcmp(pad, "!")) id = 0; /* OpenCLIP pads with id 0 ("!") */
    if (id >= 0) sd->pad_id = id;
  }
  sd->info.has_tokenizer = true;
  return NULL;
}

static size_t at_least_1(int64_t n) { return n > 0 ? (size_t)n : 1; }

#define ALLOC(p, count)                                                                      \
  do {                                                                                       \
    (p) = calloc(at_least_1(count), sizeof *(p));                                            \
    if (!(p)) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "pipeline buffer %s", #p);          \
  } while (0)

static bm_status sd_open(bm_sd *sd, const bm_sd_options *o) {
  const char *man = bm_package_manifest_json(sd->pkg);
  cJSON *root = cJSON_Parse(man ? man : "");
  if (!root) return bm_status_make(BM_ERR_CORRUPT, "manifest does not parse");
  const cJSON *ex = jget(root, "extra");
  sd->extra = ex ? cJSON_DetachItemViaPointer(root, (cJSON *)ex) : NULL;
  cJSON_Delete(root);
  const char *fam = jstr(sd->extra, "family", NULL);
  if (!fam || strcmp(fam, "stable-diffusion"))
    return bm_status_make(BM_ERR_INCOMPATIBLE,
                          "package '%s' is not a Stable Diffusion model (manifest extra.family is %s; compile a "
                          "diffusers folder or an SD checkpoint with bmc)",
                          bm_package_model_name(sd->pkg), fam ? fam : "missing");
  bm_sd_info *in = &sd->info;
  in->version = jstr(sd->extra, "version", "sd1");
  in->model_name = bm_package_model_name(sd->pkg);

  static const char *const te_in[] = {"input_ids"}, *const te_out[] = {"hidden_states"};
  static const char *const un_in[] = {"sample", "timestep", "encoder_hidden_states"}, *const un_out[] = {"model_output"};
  static const char *const de_in[] = {"latent"}, *const de_out[] = {"image"};
  static const char *const en_in[] = {"image"}, *const en_out[] = {"mean", "std"};
  BM_RETURN_IF_ERROR(find_fn(sd, "text_encoder", "text encoder (cond_stage_model / text_encoder/)", 1, te_in, 1, te_out, &sd->te));
  BM_RETURN_IF_ERROR(find_fn(sd, "unet", "UNet (model.diffusion_model / unet/)", 3, un_in, 1, un_out, &sd->unet));
  BM_RETURN_IF_ERROR(find_fn(sd, "vae_decoder", "VAE (first_stage_model / vae/)", 1, de_in, 1, de_out, &sd->dec));
  int f;
  bm_status s = bm_package_find_function(sd->pkg, "vae_encoder", &f);
  sd->enc.f = -1;
  if (!s) BM_RETURN_IF_ERROR(find_fn(sd, "vae_encoder", "VAE encoder", 1, en_in, 2, en_out, &sd->enc));
  bm_status_free(s);
  in->has_vae_encoder = sd->enc.f >= 0;

  bm_tensor_info ids, sample, ctx, lat, img;
  BM_RETURN_IF_ERROR(input_info(sd, &sd->te, 0, &ids));
  BM_RETURN_IF_ERROR(input_info(sd, &sd->unet, 0, &sample));
  BM_RETURN_IF_ERROR(input_info(sd, &sd->unet, 2, &ctx));
  BM_RETURN_IF_ERROR(input_info(sd, &sd->dec, 0, &lat));
  BM_RETURN_IF_ERROR(bm_function_output_info(sd->pkg, sd->dec.f, sd->dec.out[0], &img));
  if (ids.dtype != BM_DTYPE_I32 || ids.ndim != 2 || sample.ndim != 4 || sample.dtype != BM_DTYPE_F32 ||
      ctx.ndim != 3 || lat.ndim != 4 || img.ndim != 4 || img.shape[1] != 3)
    return bm_status_make(BM_ERR_INCOMPATIBLE, "package '%s': the SD functions do not have the expected inputs "
                                               "(docs/models_sd.md)", in->model_name);
  in->text_len = (int)ids.shape[1];
  in->text_hidden = (int)ctx.shape[2];
  in->unet_in_channels = (int)sample.shape[1];
  in->latent_channels = (int)lat.shape[1];
  in->latent_h = (int)lat.shape[2];
  in->latent_w = (int)lat.shape[3];
  in->height = (int)img.shape[2];
  in->width = (int)img.shape[3];
  in->max_batch = (int)(sample.shape[0] < ids.shape[0] ? sample.shape[0] : ids.shape[0]);
  if (sample.shape[2] != in->latent_h || sample.shape[3] != in->latent_w || ctx.shape[1] != in->text_len ||
      (in->unet_in_channels != in->latent_channels && in->unet_in_channels != 2 * in->latent_channels + 1))
    return bm_status_make(BM_ERR_INCOMPATIBLE,
                          "package '%s': UNet sample (%d, %lld, %lld) does not fit the VAE latent (%d, %d, %d)",
                          in->model_name, in->unet_in_channels, (long long)sample.shape[2], (long long)sample.shape[3],
                          in->latent_channels, in->latent_h, in->latent_w);
  in->text_vocab = (int)jnum(sd->extra, "text_vocab_size", 0);
  in->clip_skip = (int)jnum(sd->extra, "clip_skip", 1);
  in->scaling_factor = jnum(sd->extra, "scaling_factor", 0.18215);
  in->shift_factor = jnum(sd->extra, "shift_factor", 0);
  if (!(in->scaling_factor > 0)) return bm_status_make(BM_ERR_CORRUPT, "manifest extra.scaling_factor must be > 0");
  const char *pt = jstr(sd->extra, "prediction_type", "epsilon");
  if (!strcmp(pt, "epsilon")) in->prediction = BM_PRED_EPSILON;
  else if (!strcmp(pt, "v_prediction")) in->prediction = BM_PRED_V;
  else return bm_status_make(BM_ERR_UNSUPPORTED, "prediction_type '%s' (epsilon or v_prediction)", pt);
  BM_RETURN_IF_ERROR(make_table(sd));

  bm_session_options so = {.threads = o ? o->threads : 0, .profile = o ? o->profile : 0};
  BM_RETURN_IF_ERROR(bm_session_create(sd->pkg, &so, &sd->ses));
  if (!(o && o->no_tokenizer)) BM_RETURN_IF_ERROR(load_tokenizer(sd));

  sd->hw = (int64_t)in->latent_h * in->latent_w;
  sd->n = sd->hw * in->latent_channels;
  sd->pixels = (int64_t)in->width * in->height;
  int64_t L = in->text_len;
  ALLOC(sd->ids, 2 * L);
  ALLOC(sd->emb, 2 * L * in->text_hidden);
  ALLOC(sd->unet_in, 2 * sd->hw * in->unet_in_channels);
  ALLOC(sd->unet_out, 2 * sd->n);
  ALLOC(sd->x, sd->n);
  ALLOC(sd->xm, sd->n);
  ALLOC(sd->noise, sd->n);
  ALLOC(sd->init, sd->n);
  ALLOC(sd->den_u, sd->n);
  ALLOC(sd->den_c, sd->n);
  ALLOC(sd->enc_mean, sd->n);
  ALLOC(sd->enc_std, sd->n);
  ALLOC(sd->mask_lat, sd->hw);
  ALLOC(sd->cond_lat, sd->n);
  ALLOC(sd->img, 3 * sd->pixels);
  ALLOC(sd->rgb, 3 * sd->pixels);
  ALLOC(sd->sigmas, BM_SD_MAX_STEPS + 1);
  ALLOC(sd->scratch, BM_SAMPLER_SCRATCH_BUFFERS * sd->n);
  ALLOC(sd->brown, 2 * sd->n);
  return NULL;
}

bm_status bm_sd_open(bm_package *pkg, const bm_sd_options *o, bm_sd **out) {
  if (!out) return BAD("bm_sd_open: out is NULL");
  *out = NULL;
  if (!pkg) return BAD("bm_sd_open: package is NULL");
  bm_sd *sd = calloc(1, sizeof *sd);
  if (!sd) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "pipeline");
  sd->pkg = pkg;
  bm_status s = sd_open(sd, o);
  if (s) {
    bm_sd_close(sd);
    return s;
  }
  *out = sd;
  return NULL;
}

void bm_sd_close(bm_sd *sd) {
  if (!sd) return;
  float *bufs[] = {sd->emb, sd->unet_in, sd->unet_out, sd->x, sd->xm, sd->noise, sd->init, sd->den_u, sd->den_c,
                   sd->enc_mean, sd->enc_std, sd->mask_lat, sd->cond_lat, sd->img, sd->sigmas, sd->scratch,
                   sd->brown, sd->table};
  for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) free(bufs[i]);
  free(sd->ids);
  free(sd->rgb);
  bm_session_destroy(sd->ses);
  bm_tokenizer_free(sd->tok);
  cJSON_Delete(sd->extra);
  free(sd);
}

const bm_sd_info *bm_sd_get_info(const bm_sd *sd) { return sd ? &sd->info : NULL; }
const bm_tokenizer *bm_sd_tokenizer(const bm_sd *sd) { return sd ? sd->tok : NULL; }
bm_session *bm_sd_session(bm_sd *sd) { return sd ? sd->ses : NULL; }
const float *bm_sd_sigma_table(const bm_sd *sd) { return sd ? sd->table : NULL; }

/* ------------------------------------------------------------------ checks */

typedef struct plan {
  const bm_sampler_info *sampler;
  const char *schedule;
  int steps;      /* sampler steps run per image */
  int start;      /* index of the first sigma of the full schedule */
  bool cfg;       /* run the uncond branch */
  bool nine;      /* 9-channel UNet */
} plan;

/* Validates rq and fills p; sd->sigmas receives the full schedule. */
static bm_status make_plan(bm_sd *sd, const bm_sd_request *rq, plan *p) {
  memset(p, 0, sizeof *p);
  const bm_sd_info *in = &sd->info;
  if (rq->mode != BM_SD_TXT2IMG && rq->mode != BM_SD_IMG2IMG && rq->mode != BM_SD_INPAINT)
    return BAD("unknown pipeline mode %d", (int)rq->mode);
  const char *sched_hint = NULL;
  BM_RETURN_IF_ERROR(bm_sd_resolve_sampler(rq->sampler, &p->sampler, &sched_hint));
  p->schedule = rq->schedule ? rq->schedule : sched_hint ? sched_hint : "discrete";
  if (rq->steps < 1 || rq->steps > BM_SD_MAX_STEPS)
    return BAD("steps must be in 1..%d, got %d", BM_SD_MAX_STEPS, rq->steps);
  if (rq->steps < p->sampler->min_steps)
    return BAD("sampler '%s' needs at least %d steps, got %d", p->sampler->name, p->sampler->min_steps, rq->steps);
  if (!(rq->cfg_scale >= 0 && rq->cfg_scale <= 1000)) return BAD("cfg scale must be in 0..1000, got %g", rq->cfg_scale);
  if (rq->batch_count < 1 || rq->batch_count > BM_SD_MAX_BATCH_COUNT)
    return BAD("batch count must be in 1..%d, got %d", BM_SD_MAX_BATCH_COUNT, rq->batch_count);
  if (rq->sigmas) {
    for (int i = 0; i <= rq->steps; i++) {
      if (!(rq->sigmas[i] >= 0) || (i && rq->sigmas[i] > rq->sigmas[i - 1]))
        return BAD("request sigmas: sigma[%d] = %g is negative or not descending", i, rq->sigmas[i]);
      sd->sigmas[i] = rq->sigmas[i];
    }
  } else {
    bm_schedule_params sp;
    memset(&sp, 0, sizeof sp);
    sp.model_sigmas = sd->table;
    sp.model_sigmas_len = in->n_train_timesteps;
    BM_RETURN_IF_ERROR(bm_schedule_sigmas(p->schedule, &sp, rq->steps, sd->sigmas));
  }
  p->steps = rq->steps;
  if (rq->mode != BM_SD_TXT2IMG) {
    if (!rq->init_rgb) return BAD("%s needs an init image", bm_sd_mode_name(rq->mode));
    if (!in->has_vae_encoder)
      return bm_status_make(BM_ERR_NOT_FOUND, "%s needs the VAE encoder, which package '%s' lacks",
                            bm_sd_mode_name(rq->mode), in->model_name);
    if (!(rq->strength > 0 && rq->strength <= 1)) return BAD("strength must be in (0, 1], got %g", rq->strength);
    int t_enc = (int)(rq->steps * rq->strength); /* diffusers: int(num_inference_steps * strength) */
    if (t_enc > rq->steps) t_enc = rq->steps;
    if (t_enc < 1)
      return BAD("strength %g with %d steps runs no step (int(steps * strength) = 0): raise --strength or --steps",
                 rq->strength, rq->steps);
    if (t_enc < p->sampler->min_steps)
      return BAD("strength %g leaves %d of %d steps; sampler '%s' needs at least %d", rq->strength, t_enc, rq->steps,
                 p->sampler->name, p->sampler->min_steps);
    p->start = rq->steps - t_enc;
    p->steps = t_enc;
  }
  if (rq->mode == BM_SD_INPAINT && !rq->mask) return BAD("inpaint needs a mask");
  p->nine = in->unet_in_channels != in->latent_channels;
  if (p->nine && !in->has_vae_encoder)
    return bm_status_make(BM_ERR_NOT_FOUND, "the 9-channel inpainting UNet needs the VAE encoder, which package '%s' lacks",
                          in->model_name);
  p->cfg = rq->cfg_scale != 1.0 || p->sampler->cfg_pp;
  if (!rq->prompt_ids && !sd->tok)
    return bm_status_make(BM_ERR_NOT_FOUND, "package '%s' embeds no tokenizer: recompile it with bmc --tokenizer "
                                            "PATH (the CLIP vocab.json + merges.txt folder)", in->model_name);
  return NULL;
}

bm_status bm_sd_check_request(bm_sd *sd, const bm_sd_request *rq) {
  if (!sd || !rq) return BAD("bm_sd_check_request: NULL argument");
  plan p;
  return make_plan(sd, rq, &p);
}

/* ------------------------------------------------------------------ model runs */

/* text_len ids for `text`: BOS + tokens + EOS, truncated (EOS kept last) and
 * padded. *count receives the untruncated length. */
static bm_status tokenize(bm_sd *sd, const char *text, const int32_t *given, int32_t *ids, int *count) {
  int L = sd->info.text_len;
  if (given) {
    memcpy(ids, given, sizeof(int32_t) * (size_t)L);
    *count = L;
  } else {
    int32_t *v = NULL;
    size_t n = 0;
    BM_RETURN_IF_ERROR(bm_tokenizer_encode_alloc(sd->tok, text ? text : "", text ? strlen(text) : 0,
                                                 BM_TOK_ADD_BOS | BM_TOK_ADD_EOS, &v, &n));
    *count = (int)n;
    size_t k = n < (size_t)L ? n : (size_t)L;
    memcpy(ids, v, sizeof(int32_t) * k);
    if (n > (size_t)L) ids[L - 1] = bm_tokenizer_eos(sd->tok);
    for (size_t i = k; i < (size_t)L; i++) ids[i] = sd->pad_id;
    free(v);
  }
  for (int i = 0; i < L; i++)
    if (ids[i] < 0 || (sd->info.text_vocab > 0 && ids[i] >= sd->info.text_vocab))
      return BAD("token id %d is outside the text encoder's vocabulary [0, %d): a tokenizer that does not belong "
                 "to this model?", ids[i], sd->info.text_vocab);
  return NULL;
}

static bm_status copy_output(bm_sd *sd, const fn_ref *r, int k, float *dst, int64_t want) {
  const void *data;
  bm_tensor_info t;
  BM_RETURN_IF_ERROR(bm_session_get_output(sd->ses, r->f, r->out[k], &data, &t));
  int64_t n = 1;
  for (int d = 0; d < t.ndim; d++) n *= t.shape[d];
  if (t.dtype != BM_DTYPE_F32 || n != want)
    return bm_status_make(BM_ERR_INTERNAL, "output '%s' has %lld %s values, expected %lld f32", t.name, (long long)n,
                          bm_dtype_name(t.dtype), (long long)want);
  memcpy(dst, data, sizeof(float) * (size_t)n);
  return NULL;
}

/* sd->emb (2, L, C) = text_encoder(uncond ids, cond ids): one batch-2 call
 * (two calls when the package's batch bound is 1). */
static bm_status encode_text(bm_sd *sd) {
  const int64_t L = sd->info.text_len, C = sd->info.text_hidden;
  if (sd->info.max_batch >= 2) {
    int64_t shape[2] = {2, L};
    BM_RETURN_IF_ERROR(bm_session_set_input(sd->ses, sd->te.f, sd->te.in[0], sd->ids, BM_DTYPE_I32, 2, shape));
    BM_RETURN_IF_ERROR(bm_session_run(sd->ses, sd->te.f));
    return copy_output(sd, &sd->te, 0, sd->emb, 2 * L * C);
  }
  for (int r = 0; r < 2; r++) {
    int64_t shape[2] = {1, L};
    BM_RETURN_IF_ERROR(bm_session_set_input(sd->ses, sd->te.f, sd->te.in[0], sd->ids + r * L, BM_DTYPE_I32, 2, shape));
    BM_RETURN_IF_ERROR(bm_session_run(sd->ses, sd->te.f));
    BM_RETURN_IF_ERROR(copy_output(sd, &sd->te, 0, sd->emb + r * L * C, L * C));
  }
  return NULL;
}

/* unet_out[0..B) = unet(unet_in rows [row0, row0 + B), t, emb rows [ctx0, ctx0 + B)) */
static bm_status unet_run(bm_sd *sd, int row0, int B, int ctx0, double t) {
  const bm_sd_info *in = &sd->info;
  int64_t rows = sd->hw * in->unet_in_channels, ctxn = (int64_t)in->text_len * in->text_hidden;
  int64_t s4[4] = {B, in->unet_in_channels, in->latent_h, in->latent_w}, s1[1] = {B},
          s3[3] = {B, in->text_len, in->text_hidden};
  float ts[2] = {(float)t, (float)t};
  BM_RETURN_IF_ERROR(bm_session_set_input(sd->ses, sd->unet.f, sd->unet.in[0], sd->unet_in + row0 * rows, BM_DTYPE_F32, 4, s4));
  BM_RETURN_IF_ERROR(bm_session_set_input(sd->ses, sd->unet.f, sd->unet.in[1], ts, BM_DTYPE_F32, 1, s1));
  BM_RETURN_IF_ERROR(bm_session_set_input(sd->ses, sd->unet.f, sd->unet.in[2], sd->emb + ctx0 * ctxn, BM_DTYPE_F32, 3, s3));
  BM_RETURN_IF_ERROR(bm_session_run(sd->ses, sd->unet.f));
  return copy_output(sd, &sd->unet, 0, sd->unet_out + row0 * sd->n, B * sd->n);
}

/* The state of one image's sampling, the denoiser's user data. */
typedef struct gen_ctx {
  bm_sd *sd;
  const bm_sd_request *rq;
  const plan *p;
  bool latent_mask;    /* regular UNet inpainting */
  int image, evals, unet_calls;
  double t0;
  bm_sd_result *res;
} gen_ctx;

/* D(x, sigma) of the UNet with classifier-free guidance (sampler.h's
 * bm_denoiser_fn). */
static bm_status denoise(void *user, const float *x, double sigma, float *den, float *uncond) {
  gen_ctx *g = user;
  bm_sd *sd = g->sd;
  const bm_sd_info *in = &sd->info;
  const int64_t n = sd->n, hw = sd->hw;
  const int C = in->latent_channels;
  const float *xin = x;
  if (g->latent_mask) { /* the kept region follows the init latent at this noise level */
    for (int64_t i = 0; i < n; i++) {
      float m = sd->mask_lat[i % hw];
      sd->xm[i] = m * x[i] + (1 - m) * (sd->init[i] + sd->noise[i] * (float)sigma);
    }
    xin = sd->xm;
  }
  const double c_in = 1.0 / sqrt(sigma * sigma + 1.0);
  const double t = bm_schedule_table_t(sd->table, in->n_train_timesteps, sigma);
  const int rows = g->p->cfg ? 2 : 1;
  const int64_t row_n = hw * in->unet_in_channels;
  for (int r = 0; r < rows; r++) {
    float *u = sd->unet_in + r * row_n;
    for (int64_t i = 0; i < n; i++) u[i] = (float)(xin[i] * c_in);
    if (g->p->nine) {
      memcpy(u + n, sd->mask_lat, sizeof(float) * (size_t)hw);
      memcpy(u + n + hw, sd->cond_lat, sizeof(float) * (size_t)n);
    }
  }
  /* row 0: uncond (ctx 0), row 1: cond (ctx 1); without CFG one cond row */
  if (!g->p->cfg) {
    BM_RETURN_IF_ERROR(unet_run(sd, 0, 1, 1, t));
    g->unet_calls++;
  } else if (in->max_batch >= 2 && !g->rq->cfg_separate) {
    BM_RETURN_IF_ERROR(unet_run(sd, 0, 2, 0, t));
    g->unet_calls++;
  } else {
    BM_RETURN_IF_ERROR(unet_run(sd, 0, 1, 0, t));
    BM_RETURN_IF_ERROR(unet_run(sd, 1, 1, 1, t));
    g->unet_calls += 2;
  }
  g->evals++;
  /* model output -> denoised: epsilon D = x - sigma eps; v D = x c_skip + v c_out */
  const double c_skip = 1.0 / (sigma * sigma + 1.0), c_out = -sigma * c_in;
  float *outs[2] = {g->p->cfg ? sd->den_u : sd->den_c, sd->den_c};
  for (int r = 0; r < rows; r++) {
    const float *o = sd->unet_out + r * n;
    float *d = outs[r];
    if (in->prediction == BM_PRED_V)
      for (int64_t i = 0; i < n; i++) d[i] = (float)(xin[i] * c_skip + o[i] * c_out);
    else
      for (int64_t i = 0; i < n; i++) d[i] = (float)(xin[i] - sigma * o[i]);
  }
  if (g->p->cfg) {
    const float s = (float)g->rq->cfg_scale;
    for (int64_t i = 0; i < n; i++) den[i] = sd->den_u[i] + (sd->den_c[i] - sd->den_u[i]) * s;
    if (uncond) memcpy(uncond, sd->den_u, sizeof(float) * (size_t)n);
  } else {
    memcpy(den, sd->den_c, sizeof(float) * (size_t)n);
    if (uncond) memcpy(uncond, sd->den_c, sizeof(float) * (size_t)n);
  }
  if (g->latent_mask) {
    for (int64_t i = 0; i < n; i++) {
      float m = sd->mask_lat[i % hw];
      den[i] = m * den[i] + (1 - m) * sd->init[i];
      if (uncond) uncond[i] = m * uncond[i] + (1 - m) * sd->init[i];
    }
  }
  (void)C;
  return NULL;
}

static void progress(gen_ctx *g, int step, bool done) {
  if (!g->rq->on_progress) return;
  bm_sd_progress pr = {.image = g->image, .images = g->rq->batch_count, .step = step, .steps = g->p->steps,
                       .model_evals = g->evals, .unet_calls = g->unet_calls, .seconds = now_seconds() - g->t0,
                       .done = done};
  g->rq->on_progress(g->rq->user, &pr);
}

static void on_sampler_step(void *user, const bm_sampler_step *st) {
  gen_ctx *g = user;
  if (g->rq->on_step) g->rq->on_step(g->rq->user, g->image, st);
  progress(g, st->i + 1 < g->p->steps ? st->i + 1 : g->p->steps, false);
}

/* sd->img (3, H, W) in [-1, 1] from (H, W, 3) pixels; with mask (H, W),
 * pixels whose mask is >= 0.5 become 0 (diffusers' masked image). */
static void pixels_to_image(bm_sd *sd, const uint8_t *rgb, const uint8_t *mask) {
  const int64_t P = sd->pixels;
  for (int64_t i = 0; i < P; i++)
    for (int c = 0; c < 3; c++) {
      float v = rgb ? (float)rgb[i * 3 + c] / 127.5f - 1.0f : 0.0f;
      if (mask && mask[i] >= 128) v = 0.0f;
      sd->img[c * P + i] = v;
    }
}

/* vae_encoder(sd->img): mean and std (1, C, h, w) into the given buffers. */
static bm_status encode_image(bm_sd *sd, float *mean, float *std) {
  const bm_sd_info *in = &sd->info;
  int64_t shape[4] = {1, 3, in->height, in->width};
  BM_RETURN_IF_ERROR(bm_session_set_input(sd->ses, sd->enc.f, sd->enc.in[0], sd->img, BM_DTYPE_F32, 4, shape));
  BM_RETURN_IF_ERROR(bm_session_run(sd->ses, sd->enc.f));
  BM_RETURN_IF_ERROR(copy_output(sd, &sd->enc, 0, mean, sd->n));
  if (std) BM_RETURN_IF_ERROR(copy_output(sd, &sd->enc, 1, std, sd->n));
  return NULL;
}

/* The latent mask (h, w): the mean of each f x f pixel block / 255. */
static void make_latent_mask(bm_sd *sd, const uint8_t *mask) {
  const bm_sd_info *in = &sd->info;
  int fy = in->height / in->latent_h, fx = in->width / in->latent_w;
  for (int y = 0; y < in->latent_h; y++)
    for (int x = 0; x < in->latent_w; x++) {
      double acc = 0;
      for (int dy = 0; dy < fy; dy++)
        for (int dx = 0; dx < fx; dx++) acc += mask[(size_t)(y * fy + dy) * in->width + (size_t)(x * fx + dx)];
      sd->mask_lat[y * in->latent_w + x] = (float)(acc / (255.0 * fy * fx));
    }
}

/* Latent x -> RGB pixels in sd->rgb through vae_decoder. */
static bm_status decode(bm_sd *sd, const float *x) {
  const bm_sd_info *in = &sd->info;
  const float inv = (float)(1.0 / in->scaling_factor), shift = (float)in->shift_factor;
  for (int64_t i = 0; i < sd->n; i++) sd->xm[i] = x[i] * inv + shift;
  int64_t shape[4] = {1, in->latent_channels, in->latent_h, in->latent_w};
  BM_RETURN_IF_ERROR(bm_session_set_input(sd->ses, sd->dec.f, sd->dec.in[0], sd->xm, BM_DTYPE_F32, 4, shape));
  BM_RETURN_IF_ERROR(bm_session_run(sd->ses, sd->dec.f));
  BM_RETURN_IF_ERROR(copy_output(sd, &sd->dec, 0, sd->img, 3 * sd->pixels));
  const int64_t P = sd->pixels;
  for (int64_t i = 0; i < P; i++)
    for (int c = 0; c < 3; c++) {
      float v = (sd->img[c * P + i] * 0.5f + 0.5f) * 255.0f; /* diffusers: (x / 2 + 0.5).clamp(0, 1) * 255, round */
      v = v != v ? 0.0f : v < 0 ? 0.0f : v > 255 ? 255.0f : v;
      sd->rgb[i * 3 + c] = (uint8_t)lrintf(v);
    }
  return NULL;
}

static bool is_brownian(const char *sampler) {
  return !strncmp(sampler, "dpmpp_", 6) && strstr(sampler, "sde") != NULL;
}

/* Samples and decodes image k. */
static bm_status one_image(bm_sd *sd, const bm_sd_request *rq, const plan *p, int k, bm_sd_result *res, bool *stop) {
  const bm_sd_info *in = &sd->info;
  const int64_t n = sd->n;
  const uint64_t seed = rq->seed + (uint64_t)k;
  bm_noise_torch gen;
  bm_noise_torch_init(&gen, seed); /* torch.Generator().manual_seed(seed) */
  if (rq->mode != BM_SD_TXT2IMG) {
    /* latent_dist.sample(generator): mean + std * randn, then scaling */
    bm_torch_randn(&gen.rng, sd->noise, n);
    for (int64_t i = 0; i < n; i++)
      sd->init[i] = (float)((sd->enc_mean[i] + sd->enc_std[i] * sd->noise[i] - in->shift_factor) * in->scaling_factor);
  } else {
    memset(sd->init, 0, sizeof(float) * (size_t)n);
  }
  if (rq->init_noise && k == 0) memcpy(sd->noise, rq->init_noise, sizeof(float) * (size_t)n);
  else bm_torch_randn(&gen.rng, sd->noise, n);
  const float *sig = sd->sigmas + p->start;
  for (int64_t i = 0; i < n; i++) sd->x[i] = sd->init[i] + sd->noise[i] * sig[0];

  bm_noise_source ns = bm_noise_torch_source(&gen);
  bm_noise_brownian br;
  if (rq->noise) {
    ns = *rq->noise;
  } else if (is_brownian(p->sampler->name)) {
    double lo = 0, hi = sig[0];
    for (int i = 0; i <= p->steps; i++)
      if (sig[i] > 0 && (lo == 0 || sig[i] < lo)) lo = sig[i];
    if (lo > 0 && hi > lo) {
      BM_RETURN_IF_ERROR(bm_noise_brownian_init(&br, seed, lo, hi, sd->brown, n));
      ns = bm_noise_brownian_source(&br);
    }
  }
  bm_sampler_options so = rq->sampler_opts ? *rq->sampler_opts : bm_sampler_options_default();
  if (!so.model_sigmas) {
    so.model_sigmas = sd->table;
    so.model_sigmas_len = in->n_train_timesteps;
  }
  gen_ctx g = {.sd = sd, .rq = rq, .p = p, .latent_mask = rq->mode == BM_SD_INPAINT && !p->nine, .image = k,
               .t0 = now_seconds(), .res = res};
  bm_sampler_run run;
  memset(&run, 0, sizeof run);
  run.denoise = denoise;
  run.user = &g;
  run.x = sd->x;
  run.n = n;
  run.sigmas = sig;
  run.steps = p->steps;
  run.noise = ns;
  run.on_step = on_sampler_step;
  run.step_user = &g;
  run.opts = &so;
  run.scratch = sd->scratch;
  progress(&g, 0, false);
  double t0 = now_seconds();
  bm_status s = bm_sample(p->sampler->name, &run);
  res->sample_seconds += now_seconds() - t0;
  res->model_evals += g.evals;
  res->unet_calls += g.unet_calls;
  if (s) return bm_status_wrap(s, "image %d (seed %llu), sampler %s", k, (unsigned long long)seed, p->sampler->name);
  if (g.latent_mask)
    for (int64_t i = 0; i < n; i++) {
      float m = sd->mask_lat[i % sd->hw];
      sd->x[i] = m * sd->x[i] + (1 - m) * sd->init[i];
    }
  progress(&g, p->steps, true);
  t0 = now_seconds();
  BM_RETURN_IF_ERROR(decode(sd, sd->x));
  res->vae_seconds += now_seconds() - t0;
  res->images++;
  if (rq->on_image && rq->on_image(rq->user, k, seed, sd->rgb, sd->x)) *stop = true;
  return NULL;
}

static bm_status generate(bm_sd *sd, const bm_sd_request *rq, bm_sd_result *res) {
  plan p;
  BM_RETURN_IF_ERROR(make_plan(sd, rq, &p));
  res->sampler = p.sampler->name;
  res->schedule = rq->sigmas ? "custom" : p.schedule;
  res->steps = p.steps;
  res->start_step = p.start;
  const int L = sd->info.text_len;
  double t0 = now_seconds();
  BM_RETURN_IF_ERROR(tokenize(sd, rq->negative_prompt, rq->negative_ids, sd->ids, &res->tokens_negative));
  BM_RETURN_IF_ERROR(tokenize(sd, rq->prompt, rq->prompt_ids, sd->ids + L, &res->tokens));
  BM_RETURN_IF_ERROR(encode_text(sd));
  res->text_seconds = now_seconds() - t0;
  t0 = now_seconds();
  if (rq->mode != BM_SD_TXT2IMG) {
    pixels_to_image(sd, rq->init_rgb, NULL);
    BM_RETURN_IF_ERROR(encode_image(sd, sd->enc_mean, sd->enc_std));
  }
  if (rq->mode == BM_SD_INPAINT) make_latent_mask(sd, rq->mask);
  else
    for (int64_t i = 0; i < sd->hw; i++) sd->mask_lat[i] = 1.0f;
  if (p.nine) { /* the masked image's latent (mean), or a gray image's without a mask */
    pixels_to_image(sd, rq->mode == BM_SD_INPAINT ? rq->init_rgb : NULL, rq->mode == BM_SD_INPAINT ? rq->mask : NULL);
    BM_RETURN_IF_ERROR(encode_image(sd, sd->cond_lat, NULL));
    for (int64_t i = 0; i < sd->n; i++)
      sd->cond_lat[i] = (float)((sd->cond_lat[i] - sd->info.shift_factor) * sd->info.scaling_factor);
  }
  res->vae_seconds += now_seconds() - t0;
  bool stop = false;
  for (int k = 0; k < rq->batch_count && !stop; k++) BM_RETURN_IF_ERROR(one_image(sd, rq, &p, k, res, &stop));
  return NULL;
}

bm_status bm_sd_generate(bm_sd *sd, const bm_sd_request *rq, bm_sd_result *res) {
  if (res) memset(res, 0, sizeof *res);
  if (!sd || !rq || !res) return BAD("bm_sd_generate: NULL argument");
  double t0 = now_seconds();
  bm_status s = generate(sd, rq, res);
  res->total_seconds = now_seconds() - t0;
  return s;
}

/* ------------------------------------------------------------------ output */

void bm_sd_progress_stderr(void *user, const bm_sd_progress *p) {
  (void)user;
  static int tty = -1;
  if (tty < 0) tty = isatty(2);
  if (!tty && !p->done) return;
  const int W = 24;
  int fill = p->steps > 0 ? p->step * W / p->steps : W;
  char bar[32];
  for (int i = 0; i < W; i++) bar[i] = i < fill ? '#' : '-';
  bar[W] = 0;
  double per = p->step > 0 ? p->seconds / p->step : 0;
  fprintf(stderr, "%simage %d/%d [%s] %d/%d steps, %d model evals (%d UNet runs), %.2f s/step, %.1f s%s",
          tty ? "\r" : "", p->image + 1, p->images, bar, p->step, p->steps, p->model_evals, p->unet_calls, per,
          p->seconds, p->done ? "\n" : "");
  fflush(stderr);
}

static const char *schedule_display(const char *s, char *buf, size_t size) {
  snprintf(buf, size, "%s", s);
  for (char *q = buf; *q; q++) *q = *q == '_' ? ' ' : *q;
  if (buf[0]) buf[0] = (char)toupper((unsigned char)buf[0]);
  return buf;
}

void bm_sd_format_parameters(const bm_sd *sd, const bm_sd_request *rq, const bm_sd_result *res, int image, char *out,
                             size_t size) {
  if (!out || !size) return;
  out[0] = 0;
  if (!sd || !rq) return;
  const bm_sd_info *in = &sd->info;
  const char *sampler = res && res->sampler ? res->sampler : rq->sampler ? rq->sampler : "euler";
  const char *sched = res && res->schedule ? res->schedule : rq->schedule ? rq->schedule : "discrete";
  char sb[64];
  size_t k = 0;
#define PUT(...) k += (size_t)snprintf(out + k, k < size ? size - k : 0, __VA_ARGS__)
  PUT("%s", rq->prompt ? rq->prompt : "");
  if (rq->negative_prompt && *rq->negative_prompt) PUT("\nNegative prompt: %s", rq->negative_prompt);
  PUT("\nSteps: %d, Sampler: %s, Schedule type: %s, CFG scale: %g, Seed: %llu, Size: %dx%d, Model: %s", rq->steps,
      bm_sd_sampler_display_name(sampler), schedule_display(sched, sb, sizeof sb), rq->cfg_scale,
      (unsigned long long)(rq->seed + (uint64_t)image), in->width, in->height, in->model_name ? in->model_name : "?");
  if (rq->mode != BM_SD_TXT2IMG) PUT(", Denoising strength: %g", rq->strength);
  if (in->clip_skip > 1) PUT(", Clip skip: %d", in->clip_skip);
  PUT(", Version: bm %s", bm_runtime_version());
#undef PUT
  if (k >= size) out[size - 1] = 0;
}
