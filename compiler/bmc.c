/* bmc.c - the bm compiler CLI: `bmc compile`, `bmc inspect`, `bmc models`. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../models/models.h"
#include "../runtime/chat_template.h"
#include "compile.h"

static const char *usage =
    "usage: bmc <command> [options]\n"
    "\n"
    "commands:\n"
    "  compile   build a package from a model\n"
    "  inspect   summarize a package: manifest, sizes, functions, peak memory\n"
    "  models    list the models bmc can build\n"
    "\n"
    "bmc compile --model NAME|PATH [--weights PATH] [--target cpu] [--cpu CPU] -o FILE.bmpk\n"
    "  --model NAME|PATH   a model from `bmc models` (default model: tiny), or the path\n"
    "                      of a model folder (Hugging Face LLM: config.json + safetensors)\n"
    "  --weights PATH      checkpoint (.safetensors file, folder or index.json);\n"
    "                      default: the model's own generated weights\n"
    "  --seed N            seed of generated weights (default 0)\n"
    "  --max-batch N       upper bound of the symbolic batch dimension\n"
    "  --max-ctx N         LLMs: KV cache length (default min(max_position_embeddings, 4096))\n"
    "  --max-seq N         LLMs: longest forward/prefill chunk (default min(max-ctx, 512))\n"
    "  --dtype T           compute dtype f32 (default), f16 or bf16 (LLMs, Stable\n"
    "                      Diffusion): activations and the KV cache are stored in T,\n"
    "                      kernels accumulate in f32; inputs/outputs keep their dtypes;\n"
    "                      weights default to T too\n"
    "  --weight-dtype T    matmul/conv weights f32, f16 or bf16 (default: --dtype)\n"
    "  --width N           Stable Diffusion: image width in pixels (multiple of 8;\n"
    "                      default 512); fixed in the package\n"
    "  --height N          Stable Diffusion: image height in pixels (default 512)\n"
    "  --clip-skip N       Stable Diffusion: text encoder layer from the end (1 = last,\n"
    "                      default; 2 = penultimate, as AUTOMATIC1111's clip skip)\n"
    "  --sd-config DIR     Stable Diffusion single-file checkpoint: a diffusers folder\n"
    "                      whose unet/ vae/ text_encoder/ configs (and tokenizer/,\n"
    "                      scheduler/) describe it (default: inferred from the shapes)\n"
    "  --tokenizer PATH    embed this tokenizer (file or folder; default: the model\n"
    "                      folder's own tokenizer files, if it has any; Stable\n"
    "                      Diffusion: <folder>/tokenizer/ or <sd-config>/tokenizer/)\n"
    "  --no-tokenizer      embed no tokenizer\n"
    "  --chat-template K   chat format: llama3, llama2, mistral, chatml, gemma, phi3\n"
    "                      (default: detected from tokenizer_config.json)\n"
    "  --random-weights    model folder: generated weights (--seed) instead of its\n"
    "                      checkpoint (tests, benchmarks)\n"
    "  --quant MODE        weight-only quantization of linear (matmul) weights: none\n"
    "                      (default), int8 (per output channel) or int4 (groups along K);\n"
    "                      embeddings (gather tables) stay float\n"
    "  --group N           int4 group size: 32 (default) or 64\n"
    "  --quant-keep PATS   comma-separated weight-name patterns kept in float,\n"
    "                      e.g. 'lm_head.weight' or '*.mlp.down_proj.weight'\n"
    "  --target NAME       backend: cpu (default), cuda, metal, null\n"
    "  --cpu CPU           target CPU: native (default), x86-64-v3, x86-64-v4, znver3, ...\n"
    "  --features F        LLVM feature string, e.g. +avx2,+fma (default: the CPU's)\n"
    "  -O N                LLVM optimization level 0-3 (default 3)\n"
    "  --compress          zstd-compress weights where it helps\n"
    "  --no-fuse           skip the fusion passes\n"
    "  --print-after PASS  print the IR after a pass (or 'all'); see --passes\n"
    "  --print-ir          print the final IR\n"
    "  --passes            list the passes of the pipeline\n"
    "  -o FILE             output package (.bmpk)\n"
    "\n"
    "bmc inspect FILE [--json] [--no-verify]\n"
    "  --json              print the raw manifest\n"
    "  --no-verify         skip weight and code checksums\n";

#define USAGE_ERROR(...)                         \
  do {                                           \
    fprintf(stderr, "bmc: ");                    \
    fprintf(stderr, __VA_ARGS__);                \
    fprintf(stderr, "\n(see bmc --help)\n");     \
    return 2;                                    \
  } while (0)

static int fail(bm_status s) {
  fprintf(stderr, "bmc: error: %s\n", bm_status_message(s));
  bm_status_free(s);
  return 1;
}

static int parse_int(const char *s, long lo, long hi, long *out) {
  if (!s || !*s) return -1;
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || *end || v < lo || v > hi) return -1;
  *out = v;
  return 0;
}

static void print_ir(const char *pass, const bm_graph *g, void *user) {
  char *text = NULL;
  bm_status s = bm_graph_to_text(g, &text);
  if (s) {
    fprintf(stderr, "bmc: cannot print IR: %s\n", bm_status_message(s));
    bm_status_free(s);
    return;
  }
  printf("// IR of '%s' after pass %s\n%s\n", g->name, pass, text);
  free(text);
}

/* The last component of a path ("a/b/" -> "b/"; informational only). */
static const char *base_name(const char *p) {
  const char *b = p;
  for (const char *q = p; *q; q++)
    if (*q == '/' && q[1]) b = q + 1;
  return b;
}

/* Stable Diffusion: embeds the CLIP tokenizer files (--tokenizer, else
 * <sd_config>/tokenizer/, else <model>/tokenizer/) as package blobs and
 * merges their description into extra.tokenizer, keeping the fields the SD
 * builder wrote (kind, max_length, pad, ...). No tokenizer folder: extra
 * stays as the builder wrote it. */
static bm_status sd_embed_tokenizer(const char *model, const char *sd_config, const char *tokenizer, char **extra,
                                    bm_tokenizer_files *tf) {
  char dir[4096];
  const char *path = tokenizer;
  struct stat st;
  for (int i = 0; i < 2 && !path; i++) {
    const char *base = i == 0 ? sd_config : model;
    if (!base) continue;
    snprintf(dir, sizeof dir, "%s/tokenizer", base);
    if (stat(dir, &st) == 0 && S_ISDIR(st.st_mode) && bm_tokenizer_files_present(dir)) path = dir;
  }
  if (!path) return NULL;
  BM_RETURN_IF_ERROR(bm_tokenizer_files_read(path, tf));
  cJSON *e = cJSON_Parse(*extra);
  cJSON *from = cJSON_Parse(tf->json);
  if (!cJSON_IsObject(e) || !cJSON_IsObject(from)) {
    cJSON_Delete(e);
    cJSON_Delete(from);
    return bm_status_make(BM_ERR_INTERNAL, "extra JSON of the SD model does not parse");
  }
  const cJSON *tv = cJSON_GetObjectItemCaseSensitive(e, "text_vocab_size");
  if (cJSON_IsNumber(tv) && tf->vocab > (int32_t)tv->valuedouble) {
    bm_status s = bm_status_make(BM_ERR_INVALID_ARGUMENT,
                                 "tokenizer %s has %d tokens but the text encoder only %d: wrong tokenizer?", path,
                                 tf->vocab, (int)tv->valuedouble);
    cJSON_Delete(e);
    cJSON_Delete(from);
    return s;
  }
  cJSON *tok = cJSON_GetObjectItemCaseSensitive(e, "tokenizer");
  if (!cJSON_IsObject(tok)) { /* a single file without a tokenizer of its own */
    cJSON_DeleteItemFromObjectCaseSensitive(e, "tokenizer");
    tok = cJSON_AddObjectToObject(e, "tokenizer");
    const cJSON *ver = cJSON_GetObjectItemCaseSensitive(e, "version");
    bool sd2 = cJSON_IsString(ver) && !strcmp(ver->valuestring, "sd2");
    cJSON_AddStringToObject(tok, "kind", "clip");
    const cJSON *ml = cJSON_GetObjectItemCaseSensitive(e, "text_max_length");
    cJSON_AddNumberToObject(tok, "max_length", cJSON_IsNumber(ml) ? ml->valuedouble : 77);
    cJSON_AddStringToObject(tok, "pad", sd2 ? "!" : "<|endoftext|>");
  }
  const cJSON *it;
  cJSON_ArrayForEach(it, from)
    if (it->string && !cJSON_GetObjectItemCaseSensitive(tok, it->string))
      cJSON_AddItemToObject(tok, it->string, cJSON_Duplicate(it, 1));
  cJSON_Delete(from);
  char *txt = cJSON_Print(e);
  cJSON_Delete(e);
  if (!txt) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "extra json");
  free(*extra);
  *extra = txt;
  return NULL;
}

static int cmd_compile(int argc, char **argv) {
  const char *model = NULL, *weights = NULL, *out = NULL, *target = "cpu", *cpu = NULL,
             *features = NULL, *print_after = NULL;
  long seed = 0, max_batch = 0, opt = 3, max_ctx = 0, max_seq = 0, width = 0, height = 0, clip_skip = 0;
  const char *sd_config = NULL;
  bm_dtype weight_dtype = BM_DTYPE_F32, dtype = BM_DTYPE_F32;
  bool weight_dtype_set = false;
  bool compress = false, no_fuse = false, print_final = false, no_tokenizer = false, random_weights = false;
  const char *tokenizer = NULL, *chat_template = NULL;
  bm_quant_mode quant = BM_QUANT_NONE;
  long group = 0;
  const char *quant_keep = NULL;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEED_VALUE() \
  if (!v) USAGE_ERROR("option %s needs a value", a); \
  i++
    if (!strcmp(a, "--model")) { NEED_VALUE(); model = v; }
    else if (!strcmp(a, "--weights")) { NEED_VALUE(); weights = v; }
    else if (!strcmp(a, "-o") || !strcmp(a, "--output")) { NEED_VALUE(); out = v; }
    else if (!strcmp(a, "--target")) { NEED_VALUE(); target = v; }
    else if (!strcmp(a, "--cpu")) { NEED_VALUE(); cpu = v; }
    else if (!strcmp(a, "--features")) { NEED_VALUE(); features = v; }
    else if (!strcmp(a, "--print-after")) { NEED_VALUE(); print_after = v; }
    else if (!strcmp(a, "--tokenizer")) { NEED_VALUE(); tokenizer = v; }
    else if (!strcmp(a, "--sd-config")) { NEED_VALUE(); sd_config = v; }
    else if (!strcmp(a, "--width") || !strcmp(a, "--height")) {
      NEED_VALUE();
      long *dst = !strcmp(a, "--width") ? &width : &height;
      if (parse_int(v, 8, 16384, dst) || *dst % 8) USAGE_ERROR("%s: '%s' is not a multiple of 8 in 8..16384", a, v);
    } else if (!strcmp(a, "--clip-skip")) {
      NEED_VALUE();
      if (parse_int(v, 1, 64, &clip_skip)) USAGE_ERROR("--clip-skip: '%s' is not an integer in 1..64", v);
    }
    else if (!strcmp(a, "--chat-template")) {
      NEED_VALUE();
      if (bm_chat_kind_from_name(v) == BM_CHAT_NONE)
        USAGE_ERROR("--chat-template: '%s' is not llama3, llama2, mistral, chatml, gemma or phi3", v);
      chat_template = v;
    }
    else if (!strcmp(a, "--no-tokenizer")) no_tokenizer = true;
    else if (!strcmp(a, "--random-weights")) random_weights = true;
    else if (!strcmp(a, "--seed")) {
      NEED_VALUE();
      if (parse_int(v, 0, 0x7fffffffL, &seed)) USAGE_ERROR("--seed: '%s' is not a non-negative integer", v);
    } else if (!strcmp(a, "--max-batch")) {
      NEED_VALUE();
      if (parse_int(v, 1, 1 << 20, &max_batch)) USAGE_ERROR("--max-batch: '%s' is not an integer in 1..1048576", v);
    } else if (!strcmp(a, "--max-ctx")) {
      NEED_VALUE();
      if (parse_int(v, 1, 1 << 24, &max_ctx)) USAGE_ERROR("--max-ctx: '%s' is not an integer in 1..16777216", v);
    } else if (!strcmp(a, "--max-seq")) {
      NEED_VALUE();
      if (parse_int(v, 1, 1 << 24, &max_seq)) USAGE_ERROR("--max-seq: '%s' is not an integer in 1..16777216", v);
    } else if (!strcmp(a, "--weight-dtype")) {
      NEED_VALUE();
      if (bm_dtype_from_name(v, &weight_dtype) ||
          (weight_dtype != BM_DTYPE_F32 && weight_dtype != BM_DTYPE_F16 && weight_dtype != BM_DTYPE_BF16))
        USAGE_ERROR("--weight-dtype: '%s' is not f32, f16 or bf16", v);
      weight_dtype_set = true;
    } else if (!strcmp(a, "--dtype")) {
      NEED_VALUE();
      if (bm_dtype_from_name(v, &dtype) ||
          (dtype != BM_DTYPE_F32 && dtype != BM_DTYPE_F16 && dtype != BM_DTYPE_BF16))
        USAGE_ERROR("--dtype: '%s' is not f32, f16 or bf16", v);
    } else if (!strcmp(a, "--quant")) {
      NEED_VALUE();
      if (!strcmp(v, "none")) quant = BM_QUANT_NONE;
      else if (!strcmp(v, "int8")) quant = BM_QUANT_INT8;
      else if (!strcmp(v, "int4")) quant = BM_QUANT_INT4;
      else USAGE_ERROR("--quant: '%s' is not none, int8 or int4", v);
    } else if (!strcmp(a, "--group")) {
      NEED_VALUE();
      if (parse_int(v, 32, 64, &group) || (group != 32 && group != 64))
        USAGE_ERROR("--group: '%s' is not 32 or 64", v);
    } else if (!strcmp(a, "--quant-keep")) {
      NEED_VALUE();
      quant_keep = v;
    } else if (!strcmp(a, "-O")) {
      NEED_VALUE();
      if (parse_int(v, 0, 3, &opt)) USAGE_ERROR("-O: '%s' is not 0, 1, 2 or 3", v);
    } else if (!strcmp(a, "--compress")) compress = true;
    else if (!strcmp(a, "--no-fuse")) no_fuse = true;
    else if (!strcmp(a, "--print-ir")) print_final = true;
    else USAGE_ERROR("compile: unknown option '%s'", a);
#undef NEED_VALUE
  }
  if (!model) model = "tiny";
  if (!out) USAGE_ERROR("compile: missing -o FILE");
  if (tokenizer && no_tokenizer) USAGE_ERROR("compile: --tokenizer and --no-tokenizer exclude each other");
  if (random_weights && weights) USAGE_ERROR("compile: --random-weights and --weights exclude each other");
  if (group && quant != BM_QUANT_INT4) USAGE_ERROR("--group applies to --quant int4 only");
  if (quant_keep && quant == BM_QUANT_NONE) USAGE_ERROR("--quant-keep needs --quant int8 or int4");
  if (quant == BM_QUANT_INT4 && !group) group = 32;
  if (!weight_dtype_set) weight_dtype = dtype; /* weights follow the compute dtype by default */
  if (print_after && strcmp(print_after, "all") != 0) {
    bool known = false;
    for (int i = 0; i < bm_pipeline_len; i++) known |= !strcmp(bm_pipeline[i].name, print_after);
    if (!known) USAGE_ERROR("--print-after: unknown pass '%s' (see bmc compile --passes)", print_after);
  }

  char *extra = NULL;
  bm_model_options mo = {.weights = weights, .seed = (uint64_t)seed, .max_batch = (int)max_batch,
                         .max_ctx = (int)max_ctx, .max_seq = (int)max_seq,
                         .weight_dtype = weight_dtype, .dtype = dtype, .extra_json = &extra, .width = (int)width,
                         .height = (int)height, .clip_skip = (int)clip_skip, .sd_config = sd_config,
                         .random_weights = random_weights};
  bm_module *m = NULL;
  bm_weight_source *src = NULL;
  bm_status s = bm_model_build(model, &mo, &m, &src);
  if (s) {
    free(extra);
    return fail(s);
  }

  /* The tokenizer: --tokenizer, else the model folder's own files. */
  bm_tokenizer_files tf = {0};
  bool have_tok = false;
  if (extra && strstr(extra, "\"stable-diffusion\"")) {
    s = no_tokenizer ? NULL : sd_embed_tokenizer(model, sd_config, tokenizer, &extra, &tf);
  } else if (!no_tokenizer && (tokenizer || bm_tokenizer_files_present(model))) {
    s = bm_tokenizer_files_read(tokenizer ? tokenizer : model, &tf);
    have_tok = !s;
  }
  if (!s && (have_tok || chat_template || extra)) {
    char *e2 = NULL;
    if (have_tok || chat_template || strstr(extra, "\"causal_lm\"")) {
      s = bm_extra_add_tokenizer(extra, have_tok ? &tf : NULL, chat_template, &e2);
      if (!s) {
        free(extra);
        extra = e2;
      }
    }
  }
  if (s) {
    bm_tokenizer_files_free(&tf);
    free(extra);
    bm_module_destroy(m);
    bm_weight_source_close(src);
    return fail(s);
  }

  bm_compile_options co;
  bm_compile_options_init(&co);
  co.target.backend = target;
  co.target.cpu = cpu;
  co.target.features = features;
  co.target.opt_level = (int)opt;
  co.compress = compress;
  co.passes.no_fuse = no_fuse;
  co.passes.quant = quant;
  co.passes.quant_group = (int)group;
  co.passes.quant_keep = quant_keep;
  co.passes.print = print_ir;
  co.passes.print_after = print_final ? "plan_memory" : print_after;
  /* Recorded in the manifest: everything that determines the output, and
   * nothing else (no paths or times), so builds are reproducible. */
  cJSON *oj = cJSON_CreateObject();
  /* a model folder is recorded by its last component (no paths) */
  const char *mname = model;
  size_t mlen = strlen(model);
  while (mlen > 1 && model[mlen - 1] == '/') mlen--;
  for (size_t i = 0; i + 1 < mlen; i++)
    if (model[i] == '/') mname = model + i + 1;
  char mbuf[256];
  snprintf(mbuf, sizeof mbuf, "%.*s", (int)(model + mlen - mname), mname);
  cJSON_AddStringToObject(oj, "model", mbuf);
  if (weights) cJSON_AddStringToObject(oj, "weights", strrchr(weights, '/') ? strrchr(weights, '/') + 1 : weights);
  cJSON_AddNumberToObject(oj, "seed", (double)seed);
  if (max_batch) cJSON_AddNumberToObject(oj, "max_batch", (double)max_batch);
  if (max_ctx) cJSON_AddNumberToObject(oj, "max_ctx", (double)max_ctx);
  if (max_seq) cJSON_AddNumberToObject(oj, "max_seq", (double)max_seq);
  if (width) cJSON_AddNumberToObject(oj, "width", (double)width);
  if (height) cJSON_AddNumberToObject(oj, "height", (double)height);
  if (clip_skip) cJSON_AddNumberToObject(oj, "clip_skip", (double)clip_skip);
  if (sd_config) cJSON_AddStringToObject(oj, "sd_config", base_name(sd_config));
  if (weight_dtype != BM_DTYPE_F32) cJSON_AddStringToObject(oj, "weight_dtype", bm_dtype_name(weight_dtype));
  if (dtype != BM_DTYPE_F32) cJSON_AddStringToObject(oj, "dtype", bm_dtype_name(dtype));
  if (random_weights) cJSON_AddBoolToObject(oj, "random_weights", true);
  if (tokenizer) cJSON_AddStringToObject(oj, "tokenizer", base_name(tokenizer));
  if (no_tokenizer) cJSON_AddBoolToObject(oj, "tokenizer", false);
  if (chat_template) cJSON_AddStringToObject(oj, "chat_template", chat_template);
  cJSON_AddStringToObject(oj, "target", target);
  cJSON_AddStringToObject(oj, "cpu", cpu ? cpu : "native");
  if (features) cJSON_AddStringToObject(oj, "features", features);
  cJSON_AddNumberToObject(oj, "opt_level", (double)opt);
  cJSON_AddBoolToObject(oj, "compress", compress);
  cJSON_AddBoolToObject(oj, "fuse", !no_fuse);
  cJSON_AddStringToObject(oj, "quant", quant == BM_QUANT_INT8 ? "int8" : quant == BM_QUANT_INT4 ? "int4" : "none");
  if (group) cJSON_AddNumberToObject(oj, "group", (double)group);
  if (quant_keep) cJSON_AddStringToObject(oj, "quant_keep", quant_keep);
  char *ojs = cJSON_PrintUnformatted(oj);
  cJSON_Delete(oj);
  co.options_json = ojs;
  co.extra_json = extra;
  co.blobs = tf.blobs;
  co.nblobs = tf.nblobs;

  s = bm_compile_module(m, &co, out);
  bm_tokenizer_files_free(&tf);
  free(ojs);
  free(extra);
  bm_module_destroy(m);
  bm_weight_source_close(src);
  if (s) return fail(s);
  struct stat st;
  if (stat(out, &st) == 0)
    fprintf(stderr, "bmc: wrote %s (%.1f KiB)\n", out, (double)st.st_size / 1024.0);
  return 0;
}

static void fmt_bytes(double b, char *buf, size_t n) {
  const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int i = 0;
  while (b >= 1024 && i < 4) b /= 1024, i++;
  snprintf(buf, n, i ? "%.1f %s" : "%.0f %s", b, u[i]);
}

static void print_tensor(const char *dir, const bm_tensor_info *t) {
  printf("    %s %-16s %-5s [", dir, t->name, bm_dtype_name(t->dtype));
  for (int d = 0; d < t->ndim; d++)
    if (t->dim_names[d])
      printf("%s%s<=%lld", d ? ", " : "", t->dim_names[d], (long long)t->shape[d]);
    else
      printf("%s%lld", d ? ", " : "", (long long)t->shape[d]);
  printf("]\n");
}

static const cJSON *jget(const cJSON *o, const char *k) { return cJSON_GetObjectItemCaseSensitive(o, k); }
static const char *jstr(const cJSON *o, const char *k) {
  const cJSON *v = jget(o, k);
  return cJSON_IsString(v) ? v->valuestring : "?";
}

static int cmd_inspect(int argc, char **argv) {
  const char *path = NULL;
  bool json = false, no_verify = false;
  for (int i = 0; i < argc; i++) {
    if (!strcmp(argv[i], "--json")) json = true;
    else if (!strcmp(argv[i], "--no-verify")) no_verify = true;
    else if (argv[i][0] == '-') USAGE_ERROR("inspect: unknown option '%s'", argv[i]);
    else if (path) USAGE_ERROR("inspect: more than one file given");
    else path = argv[i];
  }
  if (!path) USAGE_ERROR("inspect: missing FILE");
  bm_open_options oo = {.flags = no_verify ? BM_OPEN_SKIP_CHECKSUMS : 0};
  bm_package *pkg;
  bm_status s = bm_package_open(path, &oo, &pkg);
  if (s) return fail(s);
  const char *mj = bm_package_manifest_json(pkg);
  if (json) {
    printf("%s\n", mj);
    bm_package_close(pkg);
    return 0;
  }
  cJSON *man = cJSON_Parse(mj);
  struct stat st;
  char b1[32], b2[32], b3[32], b4[32];
  fmt_bytes(stat(path, &st) == 0 ? (double)st.st_size : 0, b1, sizeof b1);
  printf("package   %s (%s), xxh3 %016llx, checksums %s\n", path, b1,
         (unsigned long long)bm_package_file_hash(pkg), no_verify ? "not checked" : "ok");
  printf("model     %s (compiled by bm %s)\n", bm_package_model_name(pkg), jstr(man, "compiler_version"));
  const cJSON *tg = jget(man, "target");
  printf("target    %s %s cpu=%s requires [%s]\n", jstr(tg, "backend"), jstr(tg, "triple"), jstr(tg, "cpu"),
         jstr(tg, "required"));
  const cJSON *ws = jget(man, "weights");
  double stored = 0;
  const cJSON *w;
  cJSON_ArrayForEach(w, ws) {
    const cJSON *v = jget(w, "stored_size");
    stored += cJSON_IsNumber(v) ? v->valuedouble : 0;
  }
  fmt_bytes((double)bm_package_weight_bytes(pkg), b2, sizeof b2);
  fmt_bytes(stored, b3, sizeof b3);
  printf("weights   %d tensors, %s (%s stored)\n", cJSON_GetArraySize(ws), b2, b3);
  const cJSON *code = jget(man, "code");
  const cJSON *csz = jget(code, "size");
  fmt_bytes(cJSON_IsNumber(csz) ? csz->valuedouble : 0, b4, sizeof b4);
  printf("code      %s (%s)\n", b4, jstr(code, "format"));
  if (bm_package_blob_count(pkg) > 0) {
    printf("files    ");
    for (int i = 0; i < bm_package_blob_count(pkg); i++) {
      const void *d;
      size_t n = 0;
      bm_status bs = bm_package_blob(pkg, bm_package_blob_name(pkg, i), &d, &n);
      bm_status_free(bs);
      fmt_bytes((double)n, b1, sizeof b1);
      printf(" %s (%s)", bm_package_blob_name(pkg, i), b1);
    }
    printf("\n");
  }
  const cJSON *ex = jget(man, "extra"), *tk = jget(ex, "chat_template");
  if (cJSON_IsString(tk)) printf("chat      %s template\n", tk->valuestring);
  double arena = (double)bm_package_arena_bytes(pkg);
  fmt_bytes(arena, b1, sizeof b1);
  printf("arena     %s (planned activation memory, at the symbols' upper bounds)\n", b1);
  double scratch = 0;
  const cJSON *fns = jget(man, "functions"), *fn;
  cJSON_ArrayForEach(fn, fns) {
    const cJSON *k;
    cJSON_ArrayForEach(k, jget(fn, "kernels")) {
      const cJSON *sc = jget(k, "scratch");
      if (cJSON_IsNumber(sc) && sc->valuedouble > scratch) scratch = sc->valuedouble;
    }
  }
  fmt_bytes((double)bm_package_weight_bytes(pkg) + arena + scratch, b2, sizeof b2);
  fmt_bytes(scratch, b3, sizeof b3);
  printf("peak mem  %s = weights + arena + %s scratch per thread\n", b2, b3);
  int nf = bm_package_function_count(pkg);
  for (int f = 0; f < nf; f++) {
    printf("function  %s\n", bm_package_function_name(pkg, f));
    for (int i = 0; i < bm_function_input_count(pkg, f); i++) {
      bm_tensor_info t;
      if (!bm_function_input_info(pkg, f, i, &t)) print_tensor("in ", &t);
    }
    for (int i = 0; i < bm_function_output_count(pkg, f); i++) {
      bm_tensor_info t;
      if (!bm_function_output_info(pkg, f, i, &t)) print_tensor("out", &t);
    }
    /* kernel count per op */
    const cJSON *jf = cJSON_GetArrayItem(fns, f);
    const cJSON *ks = jget(jf, "kernels"), *k;
    printf("    kernels %d:", cJSON_GetArraySize(ks));
    const char *seen[64];
    int counts[64], nseen = 0;
    cJSON_ArrayForEach(k, ks) {
      const char *op = jstr(k, "op");
      int j = 0;
      while (j < nseen && strcmp(seen[j], op)) j++;
      if (j == nseen && nseen < 64) seen[nseen] = op, counts[nseen++] = 0;
      if (j < 64) counts[j]++;
    }
    for (int j = 0; j < nseen; j++) printf(" %s %d", seen[j], counts[j]);
    printf("\n");
  }
  cJSON_Delete(man);
  bm_package_close(pkg);
  return 0;
}

static int cmd_models(void) {
  for (int i = 0; i < bm_models_count; i++)
    printf("%-12s %s\n", bm_models[i]->name, bm_models[i]->description);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fputs(usage, stderr);
    return 2;
  }
  const char *cmd = argv[1];
  if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
    fputs(usage, stdout);
    return 0;
  }
  if (!strcmp(cmd, "--version")) {
    printf("bmc %s\n", BM_VERSION);
    return 0;
  }
  for (int i = 2; i < argc; i++)
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      fputs(usage, stdout);
      return 0;
    }
  if (!strcmp(cmd, "compile")) {
    for (int i = 2; i < argc; i++)
      if (!strcmp(argv[i], "--passes")) {
        for (int p = 0; p < bm_pipeline_len; p++)
          printf("%-18s%s\n", bm_pipeline[p].name, bm_pipeline[p].is_fusion ? " (fusion)" : "");
        return 0;
      }
    return cmd_compile(argc - 2, argv + 2);
  }
  if (!strcmp(cmd, "inspect")) return cmd_inspect(argc - 2, argv + 2);
  if (!strcmp(cmd, "models")) return cmd_models();
  USAGE_ERROR("unknown command '%s'", cmd);
}
