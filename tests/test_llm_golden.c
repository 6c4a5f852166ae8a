/* test_llm_golden.c - every Hugging Face LLM family against transformers'
 * outputs (../shared/golden/hf/<case>): the full forward pass, a batch of
 * two prompts, prefill + greedy decoding through the KV cache (token ids
 * exact, logits of every step), a two-row batch through prefill and
 * decode; and the errors for an unknown architecture and a missing weight.
 *
 * The package is compiled for the CPU; BM_LLM_INTERP=1 runs the same
 * checks on the reference interpreter instead (for debugging a builder). */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "../models/hf_config.h"
#include "../models/llm.h"
#include "../runtime/safetensors.h"
#include "opcheck.h"
#include "testutil.h"

#define TOL 1e-4

/* BM_LLM_VERBOSE=1 prints every error measured */
static double noted(const char *name, const char *what, long long step, double e) {
  const char *v = getenv("BM_LLM_VERBOSE");
  if (v && *v == '1') fprintf(stderr, "  %-12s %-22s %3lld  rel err %.3g\n", name, what, step, e);
  return e;
}

/* ------------------------------------------------------------------ a runner: compiled or interpreted */

typedef struct runner {
  bm_module *m;           /* interpreter: the built module */
  bm_interp_states *states;
  bm_package *pkg;        /* compiled */
  bm_session *ses;
} runner;

enum { MAX_IN = 5 };

/* Runs function `fn` on i32 inputs (ins[i], shapes (nd[i], shapes[i]));
 * the logits come back in *out (malloc'd f32) with their shape. */
static bm_status run_fn(runner *r, const char *fn, int nin, int32_t *const *ins, const int *nd,
                        const int64_t (*shapes)[2], float **out, int64_t *oshape) {
  *out = NULL;
  if (r->m) {
    bm_graph *g = bm_module_find_graph(r->m, fn);
    if (!g) return bm_status_make(BM_ERR_NOT_FOUND, "no function '%s'", fn);
    bm_tensor in[MAX_IN] = {0}, o[1] = {0};
    for (int i = 0; i < nin; i++) {
      in[i].dtype = BM_DTYPE_I32;
      in[i].ndim = nd[i];
      memcpy(in[i].shape, shapes[i], sizeof shapes[i]);
      in[i].data = ins[i];
    }
    BM_RETURN_IF_ERROR(bm_interp_run_states(g, in, o, r->states));
    int64_t n = bm_tensor_numel(&o[0]);
    memcpy(oshape, o[0].shape, 3 * sizeof(int64_t));
    *out = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; *out && i < n; i++) (*out)[i] = bm_load_f32(o[0].data, o[0].dtype, i);
    bm_tensor_free(&o[0]);
    return NULL;
  }
  int f;
  BM_RETURN_IF_ERROR(bm_package_find_function(r->pkg, fn, &f));
  for (int i = 0; i < nin; i++)
    BM_RETURN_IF_ERROR(bm_session_set_input(r->ses, f, i, ins[i], BM_DTYPE_I32, nd[i], shapes[i]));
  BM_RETURN_IF_ERROR(bm_session_run(r->ses, f));
  const void *data;
  bm_tensor_info info;
  BM_RETURN_IF_ERROR(bm_session_get_output(r->ses, f, 0, &data, &info));
  int64_t n = 1;
  for (int d = 0; d < info.ndim; d++) n *= info.shape[d];
  memcpy(oshape, info.shape, 3 * sizeof(int64_t));
  *out = malloc(sizeof(float) * (size_t)n);
  for (int64_t i = 0; *out && i < n; i++) (*out)[i] = bm_load_f32(data, info.dtype, i);
  return NULL;
}

/* forward(ids (B, S)) with positions 0..S-1 */
static bm_status forward(runner *r, const int32_t *ids, int64_t B, int64_t S, float **out) {
  int32_t *pos = malloc(sizeof(int32_t) * (size_t)(B * S));
  for (int64_t i = 0; i < B * S; i++) pos[i] = (int32_t)(i % S);
  int32_t *ins[2] = {(int32_t *)ids, pos};
  int nd[2] = {2, 2};
  int64_t sh[2][2] = {{B, S}, {B, S}}, os[3];
  bm_status s = run_fn(r, "forward", 2, ins, nd, (const int64_t(*)[2])sh, out, os);
  free(pos);
  return s;
}

/* prefill/decode of ids (B, S) written at start[b], positions start[b] + i;
 * prefill's logits are those of position last[b] of each row (B, 1, V) */
static bm_status cached(runner *r, const char *fn, const int32_t *ids, int64_t B, int64_t S,
                        const int32_t *start, const int32_t *last, float **out) {
  int32_t *pos = malloc(sizeof(int32_t) * (size_t)(B * S));
  int32_t len[8];
  for (int64_t b = 0; b < B; b++) {
    for (int64_t i = 0; i < S; i++) pos[b * S + i] = start[b] + (int32_t)i;
    len[b] = start[b] + (int32_t)S;
  }
  int32_t *ins[5] = {(int32_t *)ids, pos, (int32_t *)start, len, (int32_t *)last};
  int nd[5] = {2, 2, 1, 1, 1};
  int64_t sh[5][2] = {{B, S}, {B, S}, {B, 0}, {B, 0}, {B, 0}}, os[3];
  bm_status s = run_fn(r, fn, last ? 5 : 4, ins, nd, (const int64_t(*)[2])sh, out, os);
  if (!s && (os[0] != B || os[1] != (last ? 1 : S)))
    s = bm_status_make(BM_ERR_INTERNAL, "%s: logits (%lld, %lld, ...), expected (%lld, %lld, ...)", fn,
                       (long long)os[0], (long long)os[1], (long long)B, (long long)(last ? 1 : S));
  free(pos);
  return s;
}

/* ------------------------------------------------------------------ goldens */



/* ------------------------------------------------------------------ one case */

static void check_case(const char *name) {
  char dir[1024];
  snprintf(dir, sizeof dir, "%s", bm_test_shared("golden/hf"));
  strncat(dir, "/", sizeof dir - strlen(dir) - 1);
  strncat(dir, name, sizeof dir - strlen(dir) - 1);
  bm_test_llm_golden G;
  bm_status s = bm_test_llm_golden_open(dir, &G);
  if (s) {
    CHECK_OK(s);
    bm_test_llm_golden_close(&G);
    return;
  }
  char *extra = NULL;
  bm_model_options mo = {.max_ctx = 64, .max_batch = 2, .max_seq = 48, .extra_json = &extra};
  bm_module *m = NULL;
  bm_weight_source *src = NULL;
  s = bm_model_build(dir, &mo, &m, &src);
  if (s) {
    fprintf(stderr, "%s: build: %s\n", name, bm_status_message(s));
    CHECK_OK(s);
    bm_test_llm_golden_close(&G);
    return;
  }
  /* the manifest's "extra": what a generation driver needs */
  cJSON *ej = cJSON_Parse(extra ? extra : "");
  CHECK_MSG(ej != NULL, "%s: extra json does not parse", name);
  const cJSON *vs = cJSON_GetObjectItemCaseSensitive(ej, "vocab_size");
  CHECK(cJSON_IsNumber(vs) && (int64_t)vs->valuedouble == G.V);
  CHECK(cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(ej, "functions"), "decode")));
  cJSON_Delete(ej);

  runner r = {0};
  const char *interp = getenv("BM_LLM_INTERP");
  if (interp && *interp == '1') {
    r.m = m;
    CHECK_OK(bm_interp_states_create(&r.states));
  } else {
    char pkg[1024];
    snprintf(pkg, sizeof pkg, "%s/%s.bmpk", bm_test_tmpdir(), name);
    bm_compile_options co;
    bm_compile_options_init(&co);
    co.passes.verify_each = true;
    co.extra_json = extra;
    s = bm_compile_module(m, &co, pkg);
    if (!s) s = bm_package_open(pkg, NULL, &r.pkg);
    bm_session_options so = {.threads = 2};
    if (!s) s = bm_session_create(r.pkg, &so, &r.ses);
    if (s) {
      fprintf(stderr, "%s: compile/open: %s\n", name, bm_status_message(s));
      CHECK_OK(s);
      goto done;
    }
  }

  float *out = NULL;
  int64_t V = G.V, P = G.P, BP = G.BP;
  /* 1. forward of the prompt */
  s = forward(&r, G.ids, 1, P, &out);
  CHECK_OK(s);
  if (!s) {
    double e = noted(name, "forward", 0, bm_test_rel_err(out, G.logits, P * V));
    CHECK_MSG(e < TOL, "%s: forward logits rel err %g", name, e);
  }
  free(out);
  /* 2. forward of a batch of two prompts */
  s = forward(&r, G.bids, 2, BP, &out);
  CHECK_OK(s);
  if (!s) {
    double e = noted(name, "batch forward", 0, bm_test_rel_err(out, G.batch_logits, 2 * BP * V));
    CHECK_MSG(e < TOL, "%s: batch forward logits rel err %g", name, e);
  }
  free(out);
  /* 3. prefill the prompt (logits of its last position), then decode greedily */
  int32_t st0[1] = {0}, last0[1] = {(int32_t)P - 1};
  s = cached(&r, "prefill", G.ids, 1, P, st0, last0, &out);
  CHECK_OK(s);
  int32_t tok = -1;
  if (!s) {
    double e = noted(name, "prefill", 0, bm_test_rel_err(out, G.logits + (P - 1) * V, V));
    CHECK_MSG(e < TOL, "%s: prefill logits rel err %g", name, e);
    tok = (int32_t)bm_test_argmax(out, V);
    CHECK_MSG(tok == G.greedy[0], "%s: first token %d, expected %d", name, tok, G.greedy[0]);
  }
  free(out);
  for (int64_t i = 0; i + 1 < G.N && tok >= 0; i++) {
    int32_t in[1] = {G.greedy[i]}, st[1] = {(int32_t)(P + i)};
    s = cached(&r, "decode", in, 1, 1, st, NULL, &out);
    CHECK_OK(s);
    if (s) break;
    double e = noted(name, "decode", i, bm_test_rel_err(out, G.decode_logits + i * V, V));
    CHECK_MSG(e < TOL, "%s: decode step %lld logits rel err %g", name, (long long)i, e);
    tok = (int32_t)bm_test_argmax(out, V);
    CHECK_MSG(tok == G.greedy[i + 1], "%s: decode step %lld gave token %d, expected %d", name,
              (long long)i, tok, G.greedy[i + 1]);
    free(out);
    out = NULL;
  }
  free(out);
  /* 4. two rows through prefill (overwriting row 0's cache; row 1's logits
   * of a middle position), then one decode step of both rows against the
   * forward pass of the longer rows */
  int32_t st2[2] = {0, 0}, last2[2] = {(int32_t)BP - 1, (int32_t)BP / 2};
  s = cached(&r, "prefill", G.bids, 2, BP, st2, last2, &out);
  CHECK_OK(s);
  int32_t next[2] = {0, 0};
  if (!s)
    for (int b = 0; b < 2; b++) {
      double e = noted(name, "batch prefill", b,
                       bm_test_rel_err(out + b * V, G.batch_logits + ((int64_t)b * BP + last2[b]) * V, V));
      CHECK_MSG(e < TOL, "%s: batch prefill row %d logits rel err %g", name, b, e);
      next[b] = (int32_t)bm_test_argmax(out + b * V, V);
    }
  free(out);
  out = NULL;
  int32_t stn[2] = {(int32_t)BP, (int32_t)BP};
  float *dec = NULL, *full = NULL;
  s = cached(&r, "decode", next, 2, 1, stn, NULL, &dec);
  CHECK_OK(s);
  int32_t *longer = malloc(sizeof(int32_t) * (size_t)(2 * (BP + 1)));
  for (int b = 0; b < 2; b++) {
    memcpy(longer + b * (BP + 1), G.bids + b * BP, sizeof(int32_t) * (size_t)BP);
    longer[b * (BP + 1) + BP] = next[b];
  }
  bm_status s2 = forward(&r, longer, 2, BP + 1, &full);
  CHECK_OK(s2);
  if (!s && !s2)
    for (int b = 0; b < 2; b++) {
      double e = noted(name, "batch decode", b, bm_test_rel_err(dec + b * V, full + ((int64_t)b * (BP + 1) + BP) * V, V));
      CHECK_MSG(e < TOL, "%s: batch decode row %d vs forward rel err %g", name, b, e);
    }
  free(longer);
  free(dec);
  free(full);

done:
  bm_session_destroy(r.ses);
  bm_package_close(r.pkg);
  bm_interp_states_destroy(r.states);
  bm_module_destroy(m);
  bm_weight_source_close(src);
  free(extra);
  bm_test_llm_golden_close(&G);
}

static void test_llama2(void) { check_case("llama2"); }
static void test_llama3(void) { check_case("llama3"); }
static void test_mistral(void) { check_case("mistral"); }
static void test_qwen2(void) { check_case("qwen2"); }
static void test_qwen3(void) { check_case("qwen3"); }
static void test_gemma2(void) { check_case("gemma2"); }
static void test_phi3(void) { check_case("phi3"); }
static void test_mixtral(void) { check_case("mixtral"); }
static void test_deepseek_v2(void) { check_case("deepseek_v2"); }

/* f16 weights: the compiled forward pass matches the interpreter on the
 * same f16 graph (1e-4), and transformers' f32 logits to within what f16
 * weights allow (their rounding is 2^-11 relative; measured ~1e-3). */
static void test_llama2_f16_weights(void) {
  char dir[1024];
  snprintf(dir, sizeof dir, "%s", bm_test_shared("golden/hf/llama2"));
  bm_test_llm_golden G;
  bm_status s = bm_test_llm_golden_open(dir, &G);
  if (s) {
    CHECK_OK(s);
    bm_test_llm_golden_close(&G);
    return;
  }
  bm_model_options mo = {.max_ctx = 32, .max_batch = 1, .max_seq = 32, .weight_dtype = BM_DTYPE_F16};
  bm_module *m = NULL;
  bm_weight_source *src = NULL;
  CHECK_OK(bm_model_build(dir, &mo, &m, &src));
  if (m) {
    bm_graph *g = bm_module_find_graph(m, "forward");
    CHECK(g != NULL);
    bool has_f16 = false;
    for (int i = 0; g && i < g->nnodes; i++)
      has_f16 |= g->nodes[i]->op == BM_OP_WEIGHT && g->nodes[i]->dtype == BM_DTYPE_F16;
    CHECK(has_f16);
    bm_tensor in[2] = {0}, out[1] = {0};
    int64_t shape[2] = {1, G.P};
    CHECK_OK(bm_tensor_alloc(&in[0], BM_DTYPE_I32, 2, shape));
    CHECK_OK(bm_tensor_alloc(&in[1], BM_DTYPE_I32, 2, shape));
    for (int64_t i = 0; in[0].data && in[1].data && i < G.P; i++) {
      ((int32_t *)in[0].data)[i] = G.ids[i];
      ((int32_t *)in[1].data)[i] = (int32_t)i;
    }
    if (g && in[0].data && in[1].data) {
      CHECK_OK(bm_interp_run(g, in, out));
      if (out[0].data) {
        float *f = malloc(sizeof(float) * (size_t)(G.P * G.V));
        for (int64_t i = 0; i < G.P * G.V; i++) f[i] = bm_load_f32(out[0].data, out[0].dtype, i);
        double e = noted("llama2 f16", "interp vs golden", 0, bm_test_rel_err(f, G.logits, G.P * G.V));
        CHECK_MSG(e < 1e-2, "f16 weights: rel err %g vs transformers' f32", e);
        free(f);
      }
      double err = 1;
      bm_opcheck_options oo = {.fuse = true, .threads = 2};
      CHECK_OK(bm_opcheck(g, in, &oo, &err));
      noted("llama2 f16", "compiled vs interp", 0, err);
      CHECK_MSG(err < 1e-4, "f16 weights: compiled vs interpreter rel err %g", err);
    }
    bm_tensor_free(&out[0]);
    bm_tensor_free(&in[0]);
    bm_tensor_free(&in[1]);
  }
  bm_module_destroy(m);
  bm_weight_source_close(src);
  bm_test_llm_golden_close(&G);
}

/* ------------------------------------------------------------------ errors */

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "wb");
  CHECK(f != NULL);
  if (!f) return;
  fputs(text, f);
  fclose(f);
}

/* The embedding table of a built module (its data), or NULL. */
static const float *embed_data(bm_module *m) {
  for (int i = 0; m && i < m->graphs[0]->nnodes; i++) {
    const bm_node *n = m->graphs[0]->nodes[i];
    if (n->op == BM_OP_WEIGHT && n->name && !strcmp(n->name, "model.embed_tokens.weight") &&
        n->dtype == BM_DTYPE_F32)
      return n->data;
  }
  return NULL;
}

/* bm_model_options.random_weights: a folder's config with generated weights
 * (bmc --random-weights); deterministic per seed; excludes a checkpoint. */
static void test_random_weights(void) {
  char dir[1024];
  snprintf(dir, sizeof dir, "%s/llama2", bm_test_shared("golden/hf"));
  bm_module *m[3] = {NULL};
  bm_weight_source *src[3] = {NULL};
  uint64_t seeds[3] = {7, 7, 8};
  for (int i = 0; i < 3; i++) {
    bm_model_options mo = {.max_ctx = 32, .max_batch = 1, .max_seq = 8, .random_weights = true, .seed = seeds[i]};
    CHECK_OK(bm_model_build(dir, &mo, &m[i], &src[i]));
  }
  bm_model_options mo = {.max_ctx = 32, .max_batch = 1, .max_seq = 8};
  bm_module *ck = NULL;
  bm_weight_source *cks = NULL;
  CHECK_OK(bm_model_build(dir, &mo, &ck, &cks));
  const float *e0 = embed_data(m[0]), *e1 = embed_data(m[1]), *e2 = embed_data(m[2]), *ec = embed_data(ck);
  size_t n = 512 * 64 * sizeof(float); /* vocab x hidden of the golden config */
  CHECK(e0 && e1 && e2 && ec);
  if (e0 && e1 && e2 && ec) {
    CHECK(!memcmp(e0, e1, n)); /* same seed, same weights */
    CHECK(memcmp(e0, e2, n));  /* another seed */
    CHECK(memcmp(e0, ec, n));  /* not the checkpoint's */
  }
  for (int i = 0; i < 3; i++) {
    bm_module_destroy(m[i]);
    bm_weight_source_close(src[i]);
  }
  bm_module_destroy(ck);
  bm_weight_source_close(cks);
  bm_module *x = NULL;
  bm_weight_source *xs = NULL;
  bm_model_options bad = {.weights = dir, .random_weights = true};
  CHECK_ERR(bm_model_build(dir, &bad, &x, &xs), BM_ERR_INVALID_ARGUMENT, "exclude each other");
}

static void test_unknown_architecture(void) {
  char dir[1024], file[1100];
  snprintf(dir, sizeof dir, "%s/gpt17", bm_test_tmpdir());
  mkdir(dir, 0755);
  snprintf(file, sizeof file, "%s/config.json", dir);
  write_file(file, "{\"model_type\": \"gpt17\", \"architectures\": [\"Gpt17ForCausalLM\"], "
                   "\"hidden_size\": 64}");
  bm_module *m = NULL;
  bm_weight_source *src = NULL;
  bm_status s = bm_model_build(dir, NULL, &m, &src);
  CHECK(s && strstr(bm_status_message(s), "llama") && strstr(bm_status_message(s), "deepseek_v2"));
  CHECK_ERR(s, BM_ERR_UNSUPPORTED, "model_type 'gpt17'");
  CHECK(m == NULL && src == NULL);
  /* a folder without config.json */
  snprintf(dir, sizeof dir, "%s/empty_model", bm_test_tmpdir());
  mkdir(dir, 0755);
  CHECK_ERR(bm_model_build(dir, NULL, &m, &src), BM_ERR_NOT_FOUND, "config.json");
  /* and a config the parser refuses */
  bm_hf_config c;
  CHECK_ERR(bm_hf_config_parse("{\"model_type\": \"llama\", \"hidden_size\": 64.5}", "cfg", &c),
            BM_ERR_INVALID_ARGUMENT, "hidden_size");
  CHECK_ERR(bm_hf_config_parse("[1]", "cfg", &c), BM_ERR_CORRUPT, "cfg");
}

/* llama2's config with its checkpoint minus one tensor */
static void test_missing_weight(void) {
  char dir[1024], file[1100];
  snprintf(dir, sizeof dir, "%s/llama_missing", bm_test_tmpdir());
  mkdir(dir, 0755);
  char src_dir[1024];
  snprintf(src_dir, sizeof src_dir, "%s", bm_test_shared("golden/hf/llama2"));
  /* config.json: copied */
  char cfg_path[1100];
  snprintf(cfg_path, sizeof cfg_path, "%s/config.json", src_dir);
  FILE *f = fopen(cfg_path, "rb");
  CHECK(f != NULL);
  if (!f) return;
  static char text[1 << 16];
  size_t n = fread(text, 1, sizeof text - 1, f);
  fclose(f);
  text[n] = 0;
  snprintf(file, sizeof file, "%s/config.json", dir);
  write_file(file, text);
  /* model.safetensors without layer 1's v_proj */
  bm_st_file *st;
  snprintf(cfg_path, sizeof cfg_path, "%s/model.safetensors", src_dir);
  CHECK_OK(bm_st_open(cfg_path, &st));
  if (!st) return;
  int cnt = bm_st_count(st), k = 0;
  bm_tensor_info *infos = calloc((size_t)cnt, sizeof *infos);
  const void **datas = calloc((size_t)cnt, sizeof *datas);
  const char *drop = "model.layers.1.self_attn.v_proj.weight";
  for (int i = 0; i < cnt; i++) {
    const bm_st_tensor *t = bm_st_tensor_at(st, i);
    if (!strcmp(t->name, drop)) continue;
    infos[k].name = t->name;
    infos[k].dtype = t->dtype;
    infos[k].ndim = t->ndim;
    memcpy(infos[k].shape, t->shape, sizeof(int64_t) * (size_t)t->ndim);
    datas[k++] = t->data;
  }
  snprintf(file, sizeof file, "%s/model.safetensors", dir);
  CHECK_OK(bm_st_write(file, k, infos, datas, NULL));
  free(infos);
  free(datas);
  bm_st_close(st);
  bm_module *m = NULL;
  bm_weight_source *wsrc = NULL;
  CHECK_ERR(bm_model_build(dir, NULL, &m, &wsrc), BM_ERR_NOT_FOUND, drop);
  CHECK(m == NULL && wsrc == NULL);
}

int main(void) {
  RUN(test_random_weights);
  RUN(test_unknown_architecture);
  RUN(test_missing_weight);
  RUN(test_llama2);
  RUN(test_llama3);
  RUN(test_mistral);
  RUN(test_qwen2);
  RUN(test_qwen3);
  RUN(test_gemma2);
  RUN(test_phi3);
  RUN(test_mixtral);
  RUN(test_deepseek_v2);
  RUN(test_llama2_f16_weights);
  return bm_test_finish();
}
