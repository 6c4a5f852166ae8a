/* test_fuzz_regress.c - replays every input the fuzzers found a bug with:
 * tests/data/regress/<target>/<file> goes through the same parser as
 * fuzz/<target>.c (fuzz_ prefix dropped), from an exact-size heap copy so
 * that ASan sees any read past the end. Each must give a clean result
 * (success or an error with a message), never a crash. Inputs under
 * tests/data/regress/pending/ reproduce findings in code owned elsewhere
 * whose fix is pending; they are not replayed (move them up once fixed). */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"
#include "../runtime/elf_loader.h"
#include "../runtime/npy.h"
#include "../runtime/safetensors.h"
#include "../runtime/tokenizer.h"
#include "../runtime/image.h"
#include "../ir/ir.h"
#include "../models/hf_config.h"
#include "../models/sd.h"

static void clean(bm_status s, const char *file) {
  if (!s) return;
  CHECK_MSG(bm_status_code(s) != BM_ERR_INTERNAL && bm_status_message(s)[0], "%s: %s", file, bm_status_message(s));
  bm_status_free(s);
}

static void tok(bm_tok_format f, const uint8_t *p, size_t n, const char *file) {
  bm_tokenizer *t = NULL;
  clean(bm_tokenizer_load_memory(f, p, n, NULL, 0, file, &t), file);
  if (t) {
    int32_t *ids = NULL;
    size_t k = 0;
    clean(bm_tokenizer_encode_alloc(t, "Hello <s> world", 15, BM_TOK_PARSE_SPECIAL, &ids, &k), file);
    for (size_t i = 0; i < k; i++)
      CHECK_MSG(ids[i] >= 0 && ids[i] < bm_tokenizer_vocab_size(t), "%s: id %d out of range", file, ids[i]);
    free(ids);
  }
  bm_tokenizer_free(t);
}

/* Writes p to a temporary file for the readers that take a path. */
static const char *as_file(const uint8_t *p, size_t n, const char *name) {
  static char path[600];
  snprintf(path, sizeof path, "%s/%s", bm_test_tmpdir(), name);
  FILE *f = fopen(path, "wb");
  if (f) {
    if (n) fwrite(p, 1, n, f);
    fclose(f);
  }
  return path;
}

static void replay(const char *target, const uint8_t *p, size_t n, const char *file) {
  if (!strcmp(target, "tok_tiktoken")) tok(BM_TOK_FORMAT_TIKTOKEN, p, n, file);
  else if (!strcmp(target, "tok_hf_json")) tok(BM_TOK_FORMAT_HF_JSON, p, n, file);
  else if (!strcmp(target, "tok_spm")) tok(BM_TOK_FORMAT_SENTENCEPIECE, p, n, file);
  else if (!strcmp(target, "tok_clip") && n > 0) tok(BM_TOK_FORMAT_CLIP_MERGES, p + 1, n - 1, file);
  else if (!strcmp(target, "npy")) {
    bm_npy_array a;
    clean(bm_npy_parse(p, n, file, &a), file);
    bm_npy_free(&a);
  } else if (!strcmp(target, "elf")) {
    bm_elf_image *img = NULL;
    clean(bm_elf_load(p, n, NULL, &img), file);
    bm_elf_unload(img);
  } else if (!strcmp(target, "safetensors")) {
    bm_st_file *st = NULL;
    clean(bm_st_open(as_file(p, n, "r.safetensors"), &st), file);
    bm_st_close(st);
  } else if (!strcmp(target, "hf_config")) {
    char *text = malloc(n + 1);
    memcpy(text, p, n);
    text[n] = 0;
    bm_hf_config *cfg = malloc(sizeof *cfg);
    clean(bm_hf_config_parse(text, file, cfg), file);
    free(cfg);
    free(text);
  } else if (!strcmp(target, "png")) {
    bm_image img;
    clean(bm_image_read_png_memory(p, n, file, &img), file);
    bm_image_free(&img);
  } else if (!strcmp(target, "model_index") && n > 0) { /* byte 0 as in fuzz_model_index.c */
    char *text = malloc(n);
    memcpy(text, p + 1, n - 1);
    text[n - 1] = 0;
    char cn[64];
    bm_sd_unet_config unet;
    bm_sd_vae_config vae;
    bm_sd_clip_config clip;
    switch (p[0] % 4) {
    case 0: clean(bm_sd_model_index_parse(text, file, cn, sizeof cn), file); break;
    case 1: clean(bm_sd_unet_config_parse(text, file, &unet), file); break;
    case 2: clean(bm_sd_vae_config_parse(text, file, &vae), file); break;
    default: clean(bm_sd_clip_config_parse(text, file, &clip), file); break;
    }
    free(text);
  } else if (!strcmp(target, "ir_text")) { /* as fuzz_ir_text.c: a graph that parses must verify */
    char *text = malloc(n + 1);
    memcpy(text, p, n);
    text[n] = 0;
    bm_module *m = bm_module_create("regress");
    bm_graph *g = NULL;
    bm_status s = bm_graph_parse(m, text, &g);
    if (!s) {
      bm_status v = bm_graph_verify(g);
      CHECK_MSG(!v, "%s: a parsed graph fails verification: %s", file, v ? bm_status_message(v) : "");
      bm_status_free(v);
    }
    clean(s, file);
    bm_module_destroy(m);
    free(text);
  } else if (!strcmp(target, "package") && n > 0) {
    bm_package *pkg = NULL;
    clean(bm_package_open(as_file(p + 1, n - 1, "r.bmpk"), NULL, &pkg), file);
    bm_package_close(pkg);
  } else {
    CHECK_MSG(0, "%s: no replay for target '%s'", file, target);
  }
}

static void test_replay_all(void) {
  char root[512];
  snprintf(root, sizeof root, "%s/tests/data/regress", BM_SOURCE_DIR);
  DIR *d = opendir(root);
  CHECK_MSG(d != NULL, "cannot open %s", root);
  if (!d) return;
  int count = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    if (!strcmp(e->d_name, "pending")) { /* found, reported, not fixed yet: listed only */
      fprintf(stderr, "  note: tests/data/regress/pending holds inputs whose fix is pending (see docs/reliability.md)\n");
      continue;
    }
    char sub[1024];
    snprintf(sub, sizeof sub, "%s/%s", root, e->d_name);
    DIR *d2 = opendir(sub);
    if (!d2) continue;
    struct dirent *f;
    while ((f = readdir(d2))) {
      if (f->d_name[0] == '.') continue;
      char path[1536];
      snprintf(path, sizeof path, "%s/%s", sub, f->d_name);
      FILE *fp = fopen(path, "rb");
      if (!fp) continue;
      fseek(fp, 0, SEEK_END);
      size_t n = (size_t)ftell(fp);
      fseek(fp, 0, SEEK_SET);
      uint8_t *p = malloc(n ? n : 1); /* exact size, no NUL: overreads are caught */
      if (n && fread(p, 1, n, fp) != n) n = 0;
      fclose(fp);
      replay(e->d_name, p, n, path);
      free(p);
      count++;
    }
    closedir(d2);
  }
  closedir(d);
  fprintf(stderr, "  replayed %d regression inputs\n", count);
  CHECK(count > 0);
}

int main(void) {
  RUN(test_replay_all);
  return bm_test_finish();
}
