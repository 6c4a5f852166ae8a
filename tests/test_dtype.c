/* test_dtype.c - the compute dtype (bm_model_options.dtype, bmc --dtype):
 * every LLM golden (../shared/golden/hf) built with bf16 and f16
 * activations, KV cache and weights, compiled for the CPU, against the
 * reference interpreter on the same graph and against transformers' f32
 * logits; greedy decoding where the golden's top-2 margin allows; the SD
 * UNet and VAE decoder goldens (../shared/golden/diffusers) in f16; the
 * graph's dtypes at its boundary; and the errors for a bad dtype.
 *
 * Tolerances: tests/dtype_tol.h (AMP * u, u the unit roundoff of the dtype).
 *
 * BM_DTYPE_VERBOSE=1 prints every error measured; BM_DTYPE_ALL=1 adds f16 on
 * every LLM family. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../models/models.h"
#include "../models/sd.h"
#include "../runtime/safetensors.h"
#include "dtype_tol.h"
#include "opcheck.h"
#include "testutil.h"

static double unit_roundoff(bm_dtype t) { return t == BM_DTYPE_BF16 ? BM_U_BF16 : BM_U_F16; }

static double noted(const char *name, bm_dtype t, const char *what, long long step, double e) {
  const char *v = getenv("BM_DTYPE_VERBOSE");
  if (v && *v == '1')
    fprintf(stderr, "  %-12s %-4s %-22s %3lld  rel err %.3g (%.2f u)\n", name, bm_dtype_name(t), what, step, e,
            e / unit_roundoff(t));
  return e;
}

/* ------------------------------------------------------------------ LLM goldens */



/* Runs function fn of the session on i32 inputs; the f32 logits are
 * copied to *out (malloc'd). */
static bm_status run_llm(bm_package *pkg, bm_session *ses, const char *fn, int nin, int32_t *const *ins,
                         const int *nd, const int64_t (*shapes)[2], float **out) {
  *out = NULL;
  int f;
  BM_RETURN_IF_ERROR(bm_package_find_function(pkg, fn, &f));
  for (int i = 0; i < nin; i++)
    BM_RETURN_IF_ERROR(bm_session_set_input(ses, f, i, ins[i], BM_DTYPE_I32, nd[i], shapes[i]));
  BM_RETURN_IF_ERROR(bm_session_run(ses, f));
  const void *data;
  bm_tensor_info info;
  BM_RETURN_IF_ERROR(bm_session_get_output(ses, f, 0, &data, &info));
  if (info.dtype != BM_DTYPE_F32)
    return bm_status_make(BM_ERR_INTERNAL, "%s: logits are %s, expected f32", fn, bm_dtype_name(info.dtype));
  int64_t n = 1;
  for (int d = 0; d < info.ndim; d++) n *= info.shape[d];
  *out = malloc(sizeof(float) * (size_t)n);
  if (!*out) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "logits");
  memcpy(*out, data, sizeof(float) * (size_t)n);
  return NULL;
}

/* Checks the boundary of a graph built in dtype t: the inputs and outputs
 * keep their dtypes, the activations (the most common float dtype of the
 * non-source nodes) are in t, STATEs (the KV cache) are in t. */
static void check_graph_dtypes(const bm_graph *g, bm_dtype t, bm_dtype input_dt, const char *name) {
  CHECK_OK(bm_graph_verify(g));
  int in_t = 0, in_f32 = 0;
  for (int i = 0; i < g->nnodes; i++) {
    const bm_node *n = g->nodes[i];
    if (n->op == BM_OP_STATE) CHECK_MSG(n->dtype == t, "%s %s: state %s is %s", name, g->name, n->name, bm_dtype_name(n->dtype));
    if (n->op == BM_OP_INPUT) CHECK_MSG(n->dtype == input_dt, "%s %s: input %s is %s", name, g->name, n->name, bm_dtype_name(n->dtype));
    if (bm_op_table[n->op].flags & BM_OPF_SOURCE) continue;
    in_t += n->dtype == t;
    in_f32 += n->dtype == BM_DTYPE_F32;
  }
  CHECK_MSG(in_t > 4 * in_f32, "%s %s: %d nodes in %s, %d in f32", name, g->name, in_t, bm_dtype_name(t), in_f32);
  for (int i = 0; i < g->noutputs; i++)
    CHECK_MSG(g->outputs[i].node->dtype == BM_DTYPE_F32, "%s %s: output %s is %s", name, g->name,
              g->outputs[i].name, bm_dtype_name(g->outputs[i].node->dtype));
}

/* One golden in dtype t: forward (compiled vs interpreter, both vs the
 * golden), then prefill + decode through the cache, fed the golden's
 * tokens, with the logits of every step and the greedy token of every step
 * whose golden top-2 margin exceeds the error bound. */
static void check_llm(const char *name, bm_dtype t) {
  char dir[1024];
  snprintf(dir, sizeof dir, "%s/%s", bm_test_shared("golden/hf"), name);
  bm_test_llm_golden G;
  bm_status s = bm_test_llm_golden_open(dir, &G);
  if (s) {
    CHECK_OK(s);
    bm_test_llm_golden_close(&G);
    return;
  }
  const double u = unit_roundoff(t), tol_gold = BM_AMP_GOLD * u, tol_interp = BM_AMP_INTERP * u;
  bm_model_options mo = {.max_ctx = 64, .max_batch = 1, .max_seq = 48, .weight_dtype = t, .dtype = t};
  bm_module *m = NULL;
  bm_weight_source *src = NULL;
  s = bm_model_build(dir, &mo, &m, &src);
  if (s) {
    fprintf(stderr, "%s %s: build: %s\n", name, bm_dtype_name(t), bm_status_message(s));
    CHECK_OK(s);
    bm_test_llm_golden_close(&G);
    return;
  }
  for (int i = 0; i < m->ngraphs; i++) check_graph_dtypes(m->graphs[i], t, BM_DTYPE_I32, name);

  /* the interpreter on the built forward graph (before the passes) */
  const int64_t P = G.P, V = G.V;
  int32_t *pos = malloc(sizeof(int32_t) * (size_t)P);
  for (int64_t i = 0; i < P; i++) pos[i] = (int32_t)i;
  float *ref = calloc((size_t)(P * V), sizeof(float));
  {
    bm_tensor in[2] = {{.dtype = BM_DTYPE_I32, .ndim = 2, .shape = {1, P}, .data = G.ids},
                       {.dtype = BM_DTYPE_I32, .ndim = 2, .shape = {1, P}, .data = pos}};
    bm_tensor out[1] = {0};
    CHECK_OK(bm_interp_run(bm_module_find_graph(m, "forward"), in, out));
    CHECK(out[0].data && out[0].dtype == BM_DTYPE_F32 && bm_tensor_numel(&out[0]) == P * V);
    if (out[0].data && bm_tensor_numel(&out[0]) == P * V) {
      memcpy(ref, out[0].data, sizeof(float) * (size_t)(P * V));
      double e = noted(name, t, "interp vs golden", 0, bm_test_rel_err(ref, G.logits, P * V));
      CHECK_MSG(e < tol_gold, "%s %s: interpreter vs transformers rel err %g > %g", name, bm_dtype_name(t), e, tol_gold);
    }
    bm_tensor_free(&out[0]);
    /* prefill through a cache state in t (kv_write, attention over the cache, take_row) */
    int32_t st[1] = {0}, len[1] = {(int32_t)P}, last[1] = {(int32_t)P - 1};
    bm_tensor pin[5] = {in[0], in[1],
                        {.dtype = BM_DTYPE_I32, .ndim = 1, .shape = {1}, .data = st},
                        {.dtype = BM_DTYPE_I32, .ndim = 1, .shape = {1}, .data = len},
                        {.dtype = BM_DTYPE_I32, .ndim = 1, .shape = {1}, .data = last}};
    bm_interp_states *states = NULL;
    CHECK_OK(bm_interp_states_create(&states));
    CHECK_OK(bm_interp_run_states(bm_module_find_graph(m, "prefill"), pin, out, states));
    if (out[0].data && bm_tensor_numel(&out[0]) == V) {
      double e = noted(name, t, "interp prefill vs golden", 0, bm_test_rel_err(out[0].data, G.logits + (P - 1) * V, V));
      CHECK_MSG(e < tol_gold, "%s %s: interpreter prefill vs transformers rel err %g > %g", name, bm_dtype_name(t), e,
                tol_gold);
    }
    bm_tensor_free(&out[0]);
    bm_interp_states_destroy(states);
  }

  char pkgpath[1200];
  snprintf(pkgpath, sizeof pkgpath, "%s/%s_%s.bmpk", bm_test_tmpdir(), name, bm_dtype_name(t));
  bm_compile_options co;
  bm_compile_options_init(&co);
  co.passes.verify_each = true;
  co.target.opt_level = 1; /* compile time dominates this test */
  bm_package *pkg = NULL;
  bm_session *ses = NULL;
  s = bm_compile_module(m, &co, pkgpath);
  if (!s) s = bm_package_open(pkgpath, NULL, &pkg);
  bm_session_options so = {.threads = 2};
  if (!s) s = bm_session_create(pkg, &so, &ses);
  if (s) fprintf(stderr, "%s %s: compile/open: %s\n", name, bm_dtype_name(t), bm_status_message(s));
  CHECK_OK(s);

  float *out = NULL;
  if (ses) {
    /* 1. forward */
    int32_t *ins[2] = {G.ids, pos};
    int nd[2] = {2, 2};
    int64_t sh[2][2] = {{1, P}, {1, P}};
    s = run_llm(pkg, ses, "forward", 2, ins, nd, (const int64_t(*)[2])sh, &out);
    CHECK_OK(s);
    if (!s) {
      double e = noted(name, t, "compiled vs interp", 0, bm_test_rel_err(out, ref, P * V));
      CHECK_MSG(e < tol_interp, "%s %s: compiled vs interpreter rel err %g > %g", name, bm_dtype_name(t), e, tol_interp);
      e = noted(name, t, "forward vs golden", 0, bm_test_rel_err(out, G.logits, P * V));
      CHECK_MSG(e < tol_gold, "%s %s: forward vs transformers rel err %g > %g", name, bm_dtype_name(t), e, tol_gold);
    }
    free(out);
    out = NULL;
    /* 2. prefill, then decode fed the golden's tokens */
    int greedy_checked = 0, over = 0;
    /* routed experts: a router logit that rounding moves across the top-k
     * boundary picks another expert (a discontinuity transformers in
     * bf16 has too); one such step is allowed, still bounded */
    bool moe = !strcmp(name, "mixtral") || !strcmp(name, "deepseek_v2");
    for (int64_t i = 0; i < G.N; i++) {
      const float *gl = i == 0 ? G.logits + (P - 1) * V : G.decode_logits + (i - 1) * V;
      if (i == 0) {
        int32_t st[1] = {0}, len[1] = {(int32_t)P}, last[1] = {(int32_t)P - 1};
        int32_t *pins[5] = {G.ids, pos, st, len, last};
        int pnd[5] = {2, 2, 1, 1, 1};
        int64_t psh[5][2] = {{1, P}, {1, P}, {1, 0}, {1, 0}, {1, 0}};
        s = run_llm(pkg, ses, "prefill", 5, pins, pnd, (const int64_t(*)[2])psh, &out);
      } else {
        int32_t tok[1] = {G.greedy[i - 1]}, p1[1] = {(int32_t)(P + i - 1)}, len[1] = {(int32_t)(P + i)};
        int32_t *dins[4] = {tok, p1, p1, len};
        int dnd[4] = {2, 2, 1, 1};
        int64_t dsh[4][2] = {{1, 1}, {1, 1}, {1, 0}, {1, 0}};
        s = run_llm(pkg, ses, "decode", 4, dins, dnd, (const int64_t(*)[2])dsh, &out);
      }
      CHECK_OK(s);
      if (s) break;
      double e = noted(name, t, i ? "decode vs golden" : "prefill vs golden", i, bm_test_rel_err(out, gl, V));
      bool flip = moe && e >= tol_gold && e < 0.5 && over++ == 0;
      CHECK_MSG(e < tol_gold || flip, "%s %s: step %lld logits rel err %g > %g", name, bm_dtype_name(t), (long long)i, e,
                tol_gold);
      /* the greedy token must agree where rounding cannot swap the top two:
       * the golden's margin exceeds twice the error bound */
      if (bm_top2_margin(gl, V) > 2 * tol_gold) {
        int64_t tok = bm_test_argmax(out, V);
        CHECK_MSG(tok == G.greedy[i], "%s %s: step %lld gave token %lld, expected %d (margin %.3g)", name,
                  bm_dtype_name(t), (long long)i, (long long)tok, G.greedy[i], bm_top2_margin(gl, V));
        greedy_checked++;
      }
      free(out);
      out = NULL;
    }
    free(out);
    const char *v = getenv("BM_DTYPE_VERBOSE");
    if (v && *v == '1')
      fprintf(stderr, "  %-12s %-4s greedy tokens checked (margin > %.3g): %d of %lld\n", name, bm_dtype_name(t),
              2 * tol_gold, greedy_checked, (long long)G.N);
    CHECK_MSG(greedy_checked >= 2, "%s %s: only %d of %lld greedy steps have a margin above %g", name,
              bm_dtype_name(t), greedy_checked, (long long)G.N, 2 * tol_gold);
  }
  bm_session_destroy(ses);
  bm_package_close(pkg);
  bm_module_destroy(m);
  bm_weight_source_close(src);
  free(ref);
  free(pos);
  bm_test_llm_golden_close(&G);
}

/* bf16 (PyTorch's LLM dtype) on every family; f16 on a dense model and the
 * soft-capped one, and on every family with BM_DTYPE_ALL=1 (the numbers
 * in docs/models.md) */
static void check_both(const char *name, bool f16) {
  const char *all = getenv("BM_DTYPE_ALL");
  check_llm(name, BM_DTYPE_BF16);
  if (f16 || (all && *all == '1')) check_llm(name, BM_DTYPE_F16);
}
static void test_llama2(void) { check_both("llama2", true); }
static void test_llama3(void) { check_both("llama3", false); }
static void test_mistral(void) { check_both("mistral", false); }
static void test_qwen2(void) { check_both("qwen2", false); }
static void test_qwen3(void) { check_both("qwen3", false); }
static void test_gemma2(void) { check_both("gemma2", true); }
static void test_phi3(void) { check_both("phi3", false); }
static void test_mixtral(void) { check_both("mixtral", false); }
static void test_deepseek_v2(void) { check_both("deepseek_v2", false); }

/* ------------------------------------------------------------------ Stable Diffusion */

static char *read_text(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *t = n >= 0 ? malloc((size_t)n + 1) : NULL;
  if (t && fread(t, 1, (size_t)n, f) != (size_t)n) {
    free(t);
    t = NULL;
  }
  if (t) t[n] = 0;
  fclose(f);
  return t;
}

/* Golden tensor `name` as an f32 input tensor (i64 timesteps converted);
 * data malloc'd (bm_tensor_free). */
static bm_tensor golden_tensor(const bm_st_file *gold, const char *name) {
  bm_tensor t = {0};
  const bm_st_tensor *g = bm_st_find(gold, name);
  CHECK_MSG(g != NULL, "golden tensor %s missing", name);
  if (!g) return t;
  CHECK_OK(bm_tensor_alloc(&t, BM_DTYPE_F32, g->ndim, g->shape));
  for (int64_t i = 0; t.data && i < g->numel; i++)
    ((float *)t.data)[i] = g->dtype == BM_DTYPE_I64 ? (float)bm_load_i64(g->data, g->dtype, i)
                                                    : bm_load_f32(g->data, g->dtype, i);
  return t;
}

/* An SD component built in f16 (weights and activations) from golden
 * folder `rel`: graph boundary checks, the interpreter vs diffusers' f32
 * output `gout`, the compiled graph vs the interpreter. */
typedef void (*sd_build_fn)(bm_graph *g, const bm_sd_src *w, const char *config_json, const char *where);

static void build_unet(bm_graph *g, const bm_sd_src *w, const char *cfg, const char *where) {
  bm_sd_unet_config uc;
  bm_status s = bm_sd_unet_config_parse(cfg, where, &uc);
  CHECK_OK(s);
  if (!s) bm_sd_unet_build(g, w, &uc, bm_sym_declare(g, "batch", 2), 16, 16, 77);
}

static void build_vae_decoder(bm_graph *g, const bm_sd_src *w, const char *cfg, const char *where) {
  bm_sd_vae_config vc;
  bm_status s = bm_sd_vae_config_parse(cfg, where, &vc);
  CHECK_OK(s);
  if (!s) bm_sd_vae_decoder_build(g, w, &vc, 16, 16);
}

static void check_sd(const char *rel, sd_build_fn build, int nin, const char *const *gins, const char *gout) {
  const bm_dtype t = BM_DTYPE_F16;
  const double u = unit_roundoff(t);
  char dir[1024], path[1200];
  snprintf(dir, sizeof dir, "%s/%s", bm_test_shared("golden/diffusers"), rel);
  snprintf(path, sizeof path, "%s/config.json", dir);
  char *cfg = read_text(path);
  CHECK_MSG(cfg != NULL, "%s missing", path);
  bm_weight_source *src = NULL;
  bm_st_file *gold = NULL;
  CHECK_OK(bm_weight_source_open(dir, &src));
  snprintf(path, sizeof path, "%s/golden.safetensors", dir);
  CHECK_OK(bm_st_open(path, &gold));
  bm_module *m = bm_module_create(rel);
  bm_graph *g = m ? bm_graph_create(m, rel) : NULL;
  bm_tensor in[4] = {{0}}, out[1] = {{0}};
  if (!cfg || !src || !gold || !g) goto done;
  bm_sd_src w = {src, "", NULL, t, t};
  build(g, &w, cfg, dir);
  CHECK_MSG(!bm_graph_status(g), "%s: %s", rel, bm_status_message(bm_graph_status(g)));
  if (bm_graph_status(g)) goto done;
  check_graph_dtypes(g, t, BM_DTYPE_F32, rel);
  for (int i = 0; i < nin; i++) in[i] = golden_tensor(gold, gins[i]);
  CHECK_OK(bm_interp_run(g, in, out));
  const bm_st_tensor *ref = bm_st_find(gold, gout);
  CHECK(ref && out[0].data && bm_tensor_numel(&out[0]) == ref->numel && out[0].dtype == BM_DTYPE_F32);
  if (ref && out[0].data && bm_tensor_numel(&out[0]) == ref->numel) {
    double e = noted(rel, t, "interp vs golden", 0, bm_test_rel_err(out[0].data, ref->data, ref->numel));
    CHECK_MSG(e < BM_AMP_GOLD * u, "%s f16: interpreter vs diffusers rel err %g > %g", rel, e, BM_AMP_GOLD * u);
  }
  double err = 1;
  bm_opcheck_options oo = {.fuse = true, .threads = 2};
  CHECK_OK(bm_opcheck(g, in, &oo, &err));
  noted(rel, t, "compiled vs interp", 0, err);
  CHECK_MSG(err < BM_AMP_INTERP * u, "%s f16: compiled vs interpreter rel err %g > %g", rel, err, BM_AMP_INTERP * u);
done:
  for (int i = 0; i < 4; i++) bm_tensor_free(&in[i]);
  bm_tensor_free(&out[0]);
  bm_module_destroy(m);
  bm_st_close(gold);
  bm_weight_source_close(src);
  free(cfg);
}

static void test_sd1_unet_f16(void) {
  const char *ins[3] = {"sample", "timestep", "encoder_hidden_states"};
  check_sd("sd1_unet", build_unet, 3, ins, "out_sample");
}

static void test_vae_decoder_f16(void) {
  const char *ins[1] = {"latent"};
  check_sd("vae_kl", build_vae_decoder, 1, ins, "out_decoded");
}

/* ------------------------------------------------------------------ cast fusion */

/* Float casts are transparent to fuse_elementwise: a widened input, a
 * chain in bf16 and the cast back to f32 become one FUSED kernel, which
 * rounds only at its store (the unfused graph rounds at every bf16 node:
 * the two agree to a few bf16 units). */
static void test_cast_fusion(void) {
  bm_module *m = bm_module_create("casts");
  bm_graph *g = bm_graph_create(m, "main");
  int64_t s2[2] = {4, 33};
  bm_node *x = bm_input(g, "x", BM_DTYPE_F32, 2, s2);
  bm_node *y = bm_input(g, "y", BM_DTYPE_F32, 2, s2);
  bm_node *h = bm_cast(g, x, BM_DTYPE_BF16);                       /* f32 -> bf16 */
  h = bm_add(g, bm_mul(g, bm_silu(g, h), bm_scalar(g, 2.0f)), bm_cast(g, y, BM_DTYPE_BF16));
  bm_output_add(g, "out", bm_cast(g, h, BM_DTYPE_F32));           /* bf16 -> f32 */
  CHECK_OK(bm_graph_status(g));
  bm_tensor in[2] = {{0}};
  CHECK_OK(bm_opcheck_random_inputs(g, NULL, 3, in));
  double err = 1;
  bm_opcheck_options oo = {.fuse = true, .threads = 1};
  CHECK_OK(bm_opcheck(g, in, &oo, &err));
  CHECK_MSG(err < 3 * BM_U_BF16, "fused casts vs interpreter rel err %g", err);
  int kernels = 0, casts = 0;
  for (int i = 0; i < g->nnodes; i++) {
    const bm_node *n = g->nodes[i];
    if (bm_op_table[n->op].flags & BM_OPF_SOURCE) continue;
    kernels++;
    casts += n->op == BM_OP_CAST;
  }
  CHECK_MSG(kernels == 1 && casts == 0, "%d kernels, %d casts after fusion (expected one fused kernel)", kernels, casts);
  CHECK(g->outputs[0].node->op == BM_OP_FUSED && g->outputs[0].node->dtype == BM_DTYPE_F32);
  for (int i = 0; i < 2; i++) bm_tensor_free(&in[i]);
  bm_module_destroy(m);
}

/* ------------------------------------------------------------------ errors */

static void test_bad_dtype(void) {
  char dir[1024];
  snprintf(dir, sizeof dir, "%s/llama2", bm_test_shared("golden/hf"));
  bm_model_options mo = {.max_ctx = 16, .dtype = BM_DTYPE_FP8_E4M3};
  bm_module *m = NULL;
  bm_weight_source *src = NULL;
  bm_status s = bm_model_build(dir, &mo, &m, &src);
  CHECK(s && bm_status_code(s) == BM_ERR_INVALID_ARGUMENT && strstr(bm_status_message(s), "compute dtype fp8_e4m3") &&
        strstr(bm_status_message(s), "f32, f16, bf16"));
  if (s) fprintf(stderr, "  (expected) %s\n", bm_status_message(s));
  bm_status_free(s);
  CHECK(m == NULL && src == NULL);
  mo.dtype = (bm_dtype)99;
  s = bm_model_build(dir, &mo, &m, &src);
  CHECK(s && bm_status_code(s) == BM_ERR_INVALID_ARGUMENT);
  bm_status_free(s);
  /* the built-in model runs in f32 only */
  mo.dtype = BM_DTYPE_BF16;
  s = bm_model_build("tiny", &mo, &m, &src);
  CHECK(s && bm_status_code(s) == BM_ERR_UNSUPPORTED && strstr(bm_status_message(s), "tiny"));
  bm_status_free(s);
  CHECK(m == NULL && src == NULL);
}

int main(void) {
  RUN(test_cast_fusion);
  RUN(test_bad_dtype);
  RUN(test_llama2);
  RUN(test_llama3);
  RUN(test_mistral);
  RUN(test_qwen2);
  RUN(test_qwen3);
  RUN(test_gemma2);
  RUN(test_phi3);
  RUN(test_mixtral);
  RUN(test_deepseek_v2);
  RUN(test_sd1_unet_f16);
  RUN(test_vae_decoder_f16);
  return bm_test_finish();
}
