/* hf_config.c - Hugging Face config.json -> bm_hf_config (see hf_config.h). */
#include "hf_config.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* DIR/config.json, or path itself when it ends in .json. */
static void config_path(const char *path, char *buf, size_t size) {
  size_t n = strlen(path);
  if (n >= 5 && strcmp(path + n - 5, ".json") == 0)
    snprintf(buf, size, "%s", path);
  else
    snprintf(buf, size, "%s/config.json", path);
}

static bm_status read_text(const char *file, char **out) {
  *out = NULL;
  FILE *f = fopen(file, "rb");
  if (!f) return bm_status_make(BM_ERR_NOT_FOUND, "%s: cannot open (no config.json in this folder?)", file);
  if (fseek(f, 0, SEEK_END) != 0) {
    fclose(f);
    return bm_status_make(BM_ERR_IO, "%s: cannot seek", file);
  }
  long n = ftell(f);
  if (n < 0 || n > (64l << 20)) {
    fclose(f);
    return bm_status_make(BM_ERR_CORRUPT, "%s: size %ld is not that of a config", file, n);
  }
  rewind(f);
  char *buf = malloc((size_t)n + 1);
  if (!buf) {
    fclose(f);
    return bm_status_make(BM_ERR_OUT_OF_MEMORY, "%s", file);
  }
  size_t got = fread(buf, 1, (size_t)n, f);
  fclose(f);
  if (got != (size_t)n) {
    free(buf);
    return bm_status_make(BM_ERR_IO, "%s: short read", file);
  }
  buf[n] = 0;
  *out = buf;
  return NULL;
}

static const cJSON *get(const cJSON *o, const char *k) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
  return v && !cJSON_IsNull(v) ? v : NULL;
}

/* Integer field: absent/null -> def; non-integer -> error. */
static bm_status get_int(const cJSON *o, const char *k, int64_t def, const char *what, int64_t *out) {
  const cJSON *v = get(o, k);
  if (!v) {
    *out = def;
    return NULL;
  }
  if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || fabs(v->valuedouble) > 9e15)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "%s: field '%s' must be an integer", what, k);
  *out = (int64_t)v->valuedouble;
  return NULL;
}

static bm_status get_num(const cJSON *o, const char *k, double def, const char *what, double *out) {
  const cJSON *v = get(o, k);
  if (!v) {
    *out = def;
    return NULL;
  }
  if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "%s: field '%s' must be a number", what, k);
  *out = v->valuedouble;
  return NULL;
}

static bool get_bool(const cJSON *o, const char *k, bool def) {
  const cJSON *v = get(o, k);
  return cJSON_IsBool(v) ? cJSON_IsTrue(v) : def;
}

static void get_str(const cJSON *o, const char *k, const char *def, char *buf, size_t size) {
  const cJSON *v = get(o, k);
  snprintf(buf, size, "%s", cJSON_IsString(v) ? v->valuestring : def);
}

/* bos/eos: an integer, a list of integers or null. */
/* A token id: an integer in [0, 2^31). */
static bool is_id(const cJSON *v) {
  double d = v->valuedouble;
  return d == floor(d) && d >= 0 && d < 2147483648.0;
}

static bm_status get_ids(const cJSON *o, const char *k, const char *what, int64_t *ids, int *n) {
  *n = 0;
  const cJSON *v = get(o, k);
  if (!v) return NULL;
  if (cJSON_IsNumber(v)) {
    if (!is_id(v)) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "%s: field '%s' is not a token id", what, k);
    ids[(*n)++] = (int64_t)v->valuedouble;
    return NULL;
  }
  if (!cJSON_IsArray(v))
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "%s: field '%s' must be an integer or a list", what, k);
  const cJSON *e;
  cJSON_ArrayForEach(e, v) {
    if (!cJSON_IsNumber(e) || !is_id(e))
      return bm_status_make(BM_ERR_INVALID_ARGUMENT, "%s: field '%s' holds a non-integer", what, k);
    if (*n < BM_HF_MAX_IDS) ids[(*n)++] = (int64_t)e->valuedouble;
  }
  return NULL;
}

#define TRY(x) BM_RETURN_IF_ERROR(x)

static bm_status parse_rope(const cJSON *root, const char *what, bm_hf_config *c) {
  /* transformers 5: rope_parameters {rope_type, rope_theta, ...};
   * older: rope_theta at the top and rope_scaling {type|rope_type, factor, ...} */
  const cJSON *rp = get(root, "rope_parameters");
  if (rp && !cJSON_IsObject(rp)) rp = NULL; /* per-layer-type dicts are not used by these archs */
  const cJSON *rs = rp ? rp : get(root, "rope_scaling");
  if (rs && !cJSON_IsObject(rs)) rs = NULL;
  double theta_top = 0;
  TRY(get_num(root, "rope_theta", 10000.0, what, &theta_top));
  TRY(get_num(rp ? rp : root, "rope_theta", theta_top, what, &c->rope_theta));
  get_str(rs, "rope_type", "default", c->rope_type, sizeof c->rope_type);
  if (rs && !get(rs, "rope_type")) get_str(rs, "type", "default", c->rope_type, sizeof c->rope_type);
  TRY(get_num(rs, "factor", 1.0, what, &c->rope_factor));
  TRY(get_num(rs, "low_freq_factor", 1.0, what, &c->rope_low_freq_factor));
  TRY(get_num(rs, "high_freq_factor", 4.0, what, &c->rope_high_freq_factor));
  int64_t omp_top = 0;
  TRY(get_int(root, "original_max_position_embeddings", c->max_pos, what, &omp_top));
  TRY(get_int(rs, "original_max_position_embeddings", omp_top, what, &c->rope_orig_max_pos));
  TRY(get_num(rs, "beta_fast", 32.0, what, &c->rope_beta_fast));
  TRY(get_num(rs, "beta_slow", 1.0, what, &c->rope_beta_slow));
  TRY(get_num(rs, "mscale", 1.0, what, &c->rope_mscale));
  TRY(get_num(rs, "mscale_all_dim", 0.0, what, &c->rope_mscale_all_dim));
  double prf_top;
  TRY(get_num(root, "partial_rotary_factor", 1.0, what, &prf_top));
  TRY(get_num(rs, "partial_rotary_factor", prf_top, what, &c->partial_rotary_factor));
  if (c->rope_theta <= 0 || c->rope_factor <= 0 || c->partial_rotary_factor <= 0 ||
      c->partial_rotary_factor > 1)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT,
                          "%s: bad rope settings (theta %g, factor %g, partial_rotary_factor %g)", what,
                          c->rope_theta, c->rope_factor, c->partial_rotary_factor);
  return NULL;
}

static bm_status parse_layers(const cJSON *root, const char *what, bm_hf_config *c) {
  memset(c->layer_sliding, 0, sizeof c->layer_sliding);
  bool is_qwen = !strcmp(c->model_type, "qwen2") || !strcmp(c->model_type, "qwen3");
  if (is_qwen && !get_bool(root, "use_sliding_window", false)) c->sliding_window = 0;
  const cJSON *lt = get(root, "layer_types");
  if (lt) {
    if (!cJSON_IsArray(lt) || cJSON_GetArraySize(lt) != c->layers)
      return bm_status_make(BM_ERR_INVALID_ARGUMENT,
                            "%s: layer_types must be a list of %lld strings", what, (long long)c->layers);
    int l = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, lt) {
      if (!cJSON_IsString(e))
        return bm_status_make(BM_ERR_INVALID_ARGUMENT, "%s: layer_types[%d] is not a string", what, l);
      if (!strcmp(e->valuestring, "sliding_attention"))
        c->layer_sliding[l] = 1;
      else if (strcmp(e->valuestring, "full_attention") != 0)
        return bm_status_make(BM_ERR_UNSUPPORTED, "%s: layer_types[%d] is '%s' (supported: full_attention, sliding_attention)",
                              what, l, e->valuestring);
      l++;
    }
  } else if (!strcmp(c->model_type, "gemma2")) {
    for (int64_t l = 0; l < c->layers; l++) c->layer_sliding[l] = (l % 2) == 0;
  } else if (is_qwen) {
    int64_t mwl;
    TRY(get_int(root, "max_window_layers", c->layers, what, &mwl));
    for (int64_t l = 0; l < c->layers; l++) c->layer_sliding[l] = l >= mwl;
  } else {
    for (int64_t l = 0; l < c->layers; l++) c->layer_sliding[l] = 1;
  }
  if (c->sliding_window <= 0) memset(c->layer_sliding, 0, sizeof c->layer_sliding);
  return NULL;
}

bm_status bm_hf_config_parse(const char *json, const char *what, bm_hf_config *c) {
  memset(c, 0, sizeof *c);
  cJSON *root = cJSON_Parse(json);
  if (!root || !cJSON_IsObject(root)) {
    cJSON_Delete(root);
    return bm_status_make(BM_ERR_CORRUPT, "%s: not a JSON object", what);
  }
  bm_status s = NULL;
#define P(x)            \
  do {                  \
    if ((s = (x))) goto done; \
  } while (0)
  get_str(root, "model_type", "", c->model_type, sizeof c->model_type);
  const cJSON *archs = get(root, "architectures");
  const cJSON *a0 = cJSON_IsArray(archs) ? cJSON_GetArrayItem(archs, 0) : NULL;
  snprintf(c->architecture, sizeof c->architecture, "%s", cJSON_IsString(a0) ? a0->valuestring : "");
  bool gemma = !strcmp(c->model_type, "gemma2");

  P(get_int(root, "vocab_size", 0, what, &c->vocab));
  P(get_int(root, "hidden_size", 0, what, &c->hidden));
  P(get_int(root, "num_hidden_layers", 0, what, &c->layers));
  P(get_int(root, "num_attention_heads", 0, what, &c->heads));
  P(get_int(root, "num_key_value_heads", c->heads, what, &c->kv_heads));
  P(get_int(root, "head_dim", c->heads > 0 ? c->hidden / c->heads : 0, what, &c->head_dim));
  P(get_int(root, "intermediate_size", 0, what, &c->intermediate));
  P(get_int(root, "max_position_embeddings", 2048, what, &c->max_pos));
  P(get_num(root, "rms_norm_eps", 1e-6, what, &c->eps));
  get_str(root, gemma && get(root, "hidden_activation") ? "hidden_activation" : "hidden_act",
          gemma ? "gelu_pytorch_tanh" : "silu", c->hidden_act, sizeof c->hidden_act);
  P(parse_rope(root, what, c));

  P(get_int(root, "sliding_window", 0, what, &c->sliding_window));
  P(get_num(root, "attn_logit_softcapping", 0.0, what, &c->attn_softcap));
  P(get_num(root, "final_logit_softcapping", 0.0, what, &c->final_softcap));
  P(get_num(root, "query_pre_attn_scalar", 0.0, what, &c->query_pre_attn_scalar));
  c->attention_bias = get_bool(root, "attention_bias", false);
  c->mlp_bias = get_bool(root, "mlp_bias", false);
  c->tie_word_embeddings = get_bool(root, "tie_word_embeddings", gemma);

  int64_t nloc;
  P(get_int(root, "num_local_experts", 0, what, &nloc));
  P(get_int(root, "n_routed_experts", nloc, what, &c->n_experts));
  P(get_int(root, "num_experts_per_tok", 0, what, &c->experts_per_tok));
  P(get_int(root, "moe_intermediate_size", c->intermediate, what, &c->moe_intermediate));
  P(get_int(root, "n_shared_experts", 0, what, &c->n_shared_experts));
  P(get_int(root, "first_k_dense_replace", 0, what, &c->first_k_dense_replace));
  P(get_int(root, "n_group", 1, what, &c->n_group));
  P(get_int(root, "topk_group", 1, what, &c->topk_group));
  c->norm_topk_prob = get_bool(root, "norm_topk_prob", false);
  P(get_num(root, "routed_scaling_factor", 1.0, what, &c->routed_scaling_factor));
  get_str(root, "topk_method", "greedy", c->topk_method, sizeof c->topk_method);

  P(get_int(root, "q_lora_rank", 0, what, &c->q_lora_rank));
  P(get_int(root, "kv_lora_rank", 0, what, &c->kv_lora_rank));
  P(get_int(root, "qk_nope_head_dim", 0, what, &c->qk_nope_head_dim));
  P(get_int(root, "qk_rope_head_dim", 0, what, &c->qk_rope_head_dim));
  P(get_int(root, "v_head_dim", 0, what, &c->v_head_dim));

  P(get_ids(root, "bos_token_id", what, c->bos_ids, &c->nbos));
  P(get_ids(root, "eos_token_id", what, c->eos_ids, &c->neos));
  P(get_int(root, "pad_token_id", -1, what, &c->pad_id));

  if (c->vocab <= 0 || c->hidden <= 0 || c->layers <= 0 || c->heads <= 0 || c->kv_heads <= 0 ||
      c->head_dim <= 0 || c->intermediate <= 0 || c->eps <= 0) {
    s = bm_status_make(BM_ERR_INVALID_ARGUMENT,
                       "%s: vocab_size (%lld), hidden_size (%lld), num_hidden_layers (%lld), "
                       "num_attention_heads (%lld), num_key_value_heads (%lld), head_dim (%lld), "
                       "intermediate_size (%lld) and rms_norm_eps (%g) must be positive",
                       what, (long long)c->vocab, (long long)c->hidden, (long long)c->layers,
                       (long long)c->heads, (long long)c->kv_heads, (long long)c->head_dim,
                       (long long)c->intermediate, c->eps);
    goto done;
  }
  if (c->layers > BM_HF_MAX_LAYERS) {
    s = bm_status_make(BM_ERR_UNSUPPORTED, "%s: %lld layers, at most %d supported", what,
                       (long long)c->layers, BM_HF_MAX_LAYERS);
    goto done;
  }
  if (c->heads % c->kv_heads != 0) {
    s = bm_status_make(BM_ERR_INVALID_ARGUMENT,
                       "%s: num_attention_heads %lld is not a multiple of num_key_value_heads %lld",
                       what, (long long)c->heads, (long long)c->kv_heads);
    goto done;
  }
  P(parse_layers(root, what, c));
#undef P
done:
  cJSON_Delete(root);
  return s;
}

bm_status bm_hf_config_load(const char *path, bm_hf_config *out) {
  char file[4096];
  config_path(path, file, sizeof file);
  char *text;
  BM_RETURN_IF_ERROR(read_text(file, &text));
  bm_status s = bm_hf_config_parse(text, file, out);
  free(text);
  return s;
}

bm_status bm_hf_config_peek(const char *path, char *model_type, size_t mt_size, char *arch,
                            size_t arch_size) {
  if (mt_size) model_type[0] = 0;
  if (arch_size) arch[0] = 0;
  char file[4096];
  config_path(path, file, sizeof file);
  struct stat st;
  if (stat(file, &st) != 0 || !S_ISREG(st.st_mode))
    return bm_status_make(BM_ERR_NOT_FOUND, "%s: not found", file);
  char *text;
  BM_RETURN_IF_ERROR(read_text(file, &text));
  cJSON *root = cJSON_Parse(text);
  free(text);
  if (!root || !cJSON_IsObject(root)) {
    cJSON_Delete(root);
    return bm_status_make(BM_ERR_CORRUPT, "%s: not a JSON object", file);
  }
  get_str(root, "model_type", "", model_type, mt_size);
  const cJSON *archs = get(root, "architectures");
  const cJSON *a0 = cJSON_IsArray(archs) ? cJSON_GetArrayItem(archs, 0) : NULL;
  snprintf(arch, arch_size, "%s", cJSON_IsString(a0) ? a0->valuestring : "");
  cJSON_Delete(root);
  return NULL;
}
