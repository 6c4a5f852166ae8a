/* compile.c - the compiler driver (see compile.h). */
#include "compile.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../runtime/chat_template.h"
#include "../runtime/tokenizer.h"

void bm_compile_options_init(bm_compile_options *o) {
  memset(o, 0, sizeof *o);
  o->target.backend = "cpu";
  o->target.opt_level = 3;
}

bm_status bm_compile_module(bm_module *m, const bm_compile_options *o, const char *out_path) {
  if (!m || !o || !out_path)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "bm_compile_module: NULL argument");
  if (m->ngraphs == 0)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "model '%s' has no functions", m->name);
  const bm_backend *be;
  BM_RETURN_IF_ERROR(bm_backend_find(o->target.backend ? o->target.backend : "cpu", &be));

  bm_pass_options po = o->passes;
  if (!po.supports) {
    po.supports = be->supports;
    if (!po.supports_in) po.supports_in = be->supports_in; /* the backend's own, sized answer */
  }
  for (int i = 0; i < m->ngraphs; i++) {
    bm_graph *g = m->graphs[i];
    BM_RETURN_IF_ERROR(bm_graph_status(g) ? bm_status_make(bm_status_code(bm_graph_status(g)), "%s",
                                                           bm_status_message(bm_graph_status(g)))
                                          : NULL);
    bm_status s = bm_pipeline_run(g, &po);
    if (s) return bm_status_wrap(s, "function '%s'", g->name);
  }

  bm_object code = {0};
  bm_status s = be->compile(m, &o->target, &code);
  if (s) {
    bm_object_free(&code);
    return s;
  }
  bm_package_meta meta = {
      .model = m->name,
      .compiler_version = BM_VERSION,
      .options_json = o->options_json,
      .target_backend = be->name,
      .compress = o->compress,
      .zstd_level = 3,
      .extra_json = o->extra_json,
      .blobs = o->blobs,
      .nblobs = o->nblobs,
  };
  s = bm_package_write(out_path, m, &code, &meta);
  bm_object_free(&code);
  return s;
}

/* ------------------------------------------------------------------ tokenizer files */

static int is_file(const char *dir, const char *name, char *path, size_t cap) {
  if (dir) snprintf(path, cap, "%s/%s", dir, name);
  else snprintf(path, cap, "%s", name);
  struct stat sb;
  return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

static const char *const tok_names[] = {"tokenizer.json", "tokenizer.model", "tokenizer.model.v3", "spiece.model",
                                        "bpe_simple_vocab_16e6.txt.gz"};

int bm_tokenizer_files_present(const char *dir) {
  char p[4096];
  struct stat sb;
  if (!dir || stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) return 0;
  for (size_t i = 0; i < sizeof tok_names / sizeof *tok_names; i++)
    if (is_file(dir, tok_names[i], p, sizeof p)) return 1;
  return is_file(dir, "vocab.json", p, sizeof p) && is_file(dir, "merges.txt", p, sizeof p);
}

static bm_status slurp(const char *path, void **data, size_t *size) {
  *data = NULL;
  *size = 0;
  FILE *f = fopen(path, "rb");
  if (!f) return bm_status_make(BM_ERR_IO, "cannot open %s: %s", path, strerror(errno));
  struct stat sb;
  if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size > (1ll << 30)) {
    fclose(f);
    return bm_status_make(BM_ERR_IO, "%s: not a regular file of at most 1 GiB", path);
  }
  size_t n = (size_t)sb.st_size;
  char *p = malloc(n + 1);
  if (!p) {
    fclose(f);
    return bm_status_make(BM_ERR_OUT_OF_MEMORY, "%s: %zu bytes", path, n);
  }
  size_t got = fread(p, 1, n, f);
  fclose(f);
  if (got != n) {
    free(p);
    return bm_status_make(BM_ERR_IO, "%s: short read (%zu of %zu bytes)", path, got, n);
  }
  *data = p;
  *size = n;
  return NULL;
}

static const char *base_name(const char *p) {
  const char *s = strrchr(p, '/');
  return s ? s + 1 : p;
}

/* Adds file `path` as blob "tokenizer/<base name>". */
static bm_status add_file(bm_tokenizer_files *tf, const char *path) {
  int i = tf->nblobs;
  size_t size;
  BM_RETURN_IF_ERROR(slurp(path, &tf->owned[i], &size));
  char *name = malloc(strlen(base_name(path)) + 16);
  if (!name) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "blob name");
  sprintf(name, "tokenizer/%s", base_name(path));
  tf->blobs[i] = (bm_embedded_file){name, tf->owned[i], size};
  tf->nblobs++;
  return NULL;
}

static const char *model_name(bm_tok_model m) {
  switch (m) {
  case BM_TOK_MODEL_BYTE_BPE: return "byte_bpe";
  case BM_TOK_MODEL_SPM_BPE: return "spm_bpe";
  case BM_TOK_MODEL_SPM_UNIGRAM: return "spm_unigram";
  case BM_TOK_MODEL_CLIP: return "clip";
  }
  return "?";
}

static bm_status read_files(const char *path, bm_tokenizer_files *tf) {
  struct stat sb;
  if (stat(path, &sb) != 0) return bm_status_make(BM_ERR_IO, "tokenizer %s: %s", path, strerror(errno));
  char p1[4096], p2[4096], pc[4096];
  const char *f1 = NULL, *f2 = NULL, *cfg = NULL;
  if (S_ISDIR(sb.st_mode)) {
    for (size_t i = 0; i < 4 && !f1; i++)
      if (is_file(path, tok_names[i], p1, sizeof p1)) f1 = p1;
    if (!f1 && is_file(path, "vocab.json", p1, sizeof p1) && is_file(path, "merges.txt", p2, sizeof p2)) {
      f1 = p1;
      f2 = p2;
    }
    if (!f1 && is_file(path, tok_names[4], p1, sizeof p1)) f1 = p1;
    if (!f1)
      return bm_status_make(BM_ERR_NOT_FOUND, "%s holds no tokenizer (tokenizer.json, tokenizer.model, "
                                              "tokenizer.model.v3, spiece.model, vocab.json + merges.txt or "
                                              "bpe_simple_vocab_16e6.txt.gz)", path);
    if (is_file(path, "tokenizer_config.json", pc, sizeof pc)) cfg = pc;
  } else {
    f1 = path;
    if (!strcmp(base_name(path), "vocab.json")) { /* CLIP: merges.txt next to it */
      char m[4096];
      snprintf(m, sizeof m, "%.*smerges.txt", (int)(base_name(path) - path), path);
      if (is_file(NULL, m, p2, sizeof p2)) f2 = p2;
    }
  }
  BM_RETURN_IF_ERROR(add_file(tf, f1));
  if (f2) BM_RETURN_IF_ERROR(add_file(tf, f2));
  if (cfg) BM_RETURN_IF_ERROR(add_file(tf, cfg));

  /* load it as the runtime will */
  bm_tokenizer *tok = NULL;
  bm_status s = bm_tokenizer_load_memory(f2 ? BM_TOK_FORMAT_CLIP_VOCAB_MERGES : BM_TOK_FORMAT_AUTO,
                                         tf->blobs[0].data, tf->blobs[0].size, f2 ? tf->blobs[1].data : NULL,
                                         f2 ? tf->blobs[1].size : 0, f1, &tok);
  if (!s && cfg) s = bm_tokenizer_apply_config(tok, tf->blobs[tf->nblobs - 1].data, tf->blobs[tf->nblobs - 1].size, cfg);
  if (s) {
    bm_tokenizer_free(tok);
    return s;
  }
  bm_chat_kind chat = bm_tokenizer_chat_kind(tok);
  tf->chat = chat != BM_CHAT_NONE ? bm_chat_kind_name(chat) : NULL;
  tf->vocab = bm_tokenizer_vocab_size(tok);
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "file", tf->blobs[0].name);
  if (f2) cJSON_AddStringToObject(o, "file2", tf->blobs[1].name);
  else cJSON_AddNullToObject(o, "file2");
  if (cfg) cJSON_AddStringToObject(o, "config", tf->blobs[tf->nblobs - 1].name);
  else cJSON_AddNullToObject(o, "config");
  cJSON_AddStringToObject(o, "model", model_name(bm_tokenizer_model(tok)));
  cJSON_AddNumberToObject(o, "vocab_size", tf->vocab);
  cJSON_AddNumberToObject(o, "bos", bm_tokenizer_bos(tok));
  cJSON_AddNumberToObject(o, "eos", bm_tokenizer_eos(tok));
  bm_tokenizer_free(tok);
  tf->json = cJSON_PrintUnformatted(o);
  cJSON_Delete(o);
  if (!tf->json) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "tokenizer json");
  return NULL;
}

bm_status bm_tokenizer_files_read(const char *path, bm_tokenizer_files *tf) {
  if (!tf) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "bm_tokenizer_files_read: NULL argument");
  memset(tf, 0, sizeof *tf);
  if (!path) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "bm_tokenizer_files_read: NULL path");
  bm_status s = read_files(path, tf);
  if (s) {
    bm_tokenizer_files_free(tf);
    return bm_status_wrap(s, "tokenizer %s", path);
  }
  return NULL;
}

void bm_tokenizer_files_free(bm_tokenizer_files *tf) {
  if (!tf) return;
  for (int i = 0; i < tf->nblobs; i++) free((char *)tf->blobs[i].name);
  for (int i = 0; i < 3; i++) free(tf->owned[i]);
  free(tf->json);
  memset(tf, 0, sizeof *tf);
}

bm_status bm_extra_add_tokenizer(const char *extra, const bm_tokenizer_files *tf, const char *chat_override,
                                 char **out) {
  if (!out) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "bm_extra_add_tokenizer: NULL argument");
  *out = NULL;
  if (chat_override && bm_chat_kind_from_name(chat_override) == BM_CHAT_NONE)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT,
                          "unknown chat template '%s' (known: llama3, llama2, mistral, chatml, gemma, phi3)",
                          chat_override);
  cJSON *o = extra ? cJSON_Parse(extra) : cJSON_CreateObject();
  if (!cJSON_IsObject(o)) {
    cJSON_Delete(o);
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "extra JSON is not an object");
  }
  const cJSON *vs = cJSON_GetObjectItemCaseSensitive(o, "vocab_size");
  if (tf && cJSON_IsNumber(vs) && tf->vocab > (int32_t)vs->valuedouble) {
    bm_status s = bm_status_make(BM_ERR_INVALID_ARGUMENT,
                                 "the tokenizer has %d tokens but the model's vocab_size is %d: wrong tokenizer?",
                                 tf->vocab, (int)vs->valuedouble);
    cJSON_Delete(o);
    return s;
  }
  cJSON_DeleteItemFromObjectCaseSensitive(o, "tokenizer");
  cJSON_DeleteItemFromObjectCaseSensitive(o, "chat_template");
  if (tf) cJSON_AddItemToObject(o, "tokenizer", cJSON_Parse(tf->json));
  else cJSON_AddNullToObject(o, "tokenizer");
  const char *chat = chat_override ? bm_chat_kind_name(bm_chat_kind_from_name(chat_override)) : tf ? tf->chat : NULL;
  if (chat) cJSON_AddStringToObject(o, "chat_template", chat);
  else cJSON_AddNullToObject(o, "chat_template");
  *out = cJSON_PrintUnformatted(o);
  cJSON_Delete(o);
  return *out ? NULL : bm_status_make(BM_ERR_OUT_OF_MEMORY, "extra json");
}
