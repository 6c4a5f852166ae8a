/* rel_package.h - a small real package for the reliability tests
 * (test_corruption, test_limits, test_api_misuse): built with the graph
 * builders and compiled by the real pipeline (passes, LLVM, package writer),
 * plus helpers to read, patch, re-sign and run packages. Header-only. */
#ifndef BM_REL_PACKAGE_H
#define BM_REL_PACKAGE_H

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "../compiler/compile.h"
#include "../runtime/internal.h"
#include "testutil.h"

/* main(x: (n, 16), n <= 8) -> y = gelu(x @ w^T + b), s = y * big[0:16]... (see below)
 * scale(a: (64)) -> o = a * v + 1 */
static float rel_w[16 * 16], rel_b[16], rel_v[64], rel_big[4096];

static bm_module *rel_build_module(void) {
  for (int i = 0; i < 256; i++) rel_w[i] = (float)((i * 37) % 17 - 8) / 16.0f;
  for (int i = 0; i < 16; i++) rel_b[i] = (float)i / 8.0f - 1.0f;
  for (int i = 0; i < 64; i++) rel_v[i] = (float)(i % 5) - 2.0f;
  for (int i = 0; i < 4096; i++) rel_big[i] = (float)(i % 16) / 4.0f; /* compresses well */
  bm_module *m = bm_module_create("rel_small");
  bm_graph *g = bm_graph_create(m, "main");
  int n = bm_sym_declare(g, "n", 8);
  int64_t xs[2] = {BM_SYM(n), 16}, ws[2] = {16, 16}, bs[1] = {16}, gs[2] = {256, 16};
  bm_node *x = bm_input(g, "x", BM_DTYPE_F32, 2, xs);
  bm_node *w = bm_weight(g, "w", BM_DTYPE_F32, 2, ws, rel_w, sizeof rel_w);
  bm_node *b = bm_weight(g, "b", BM_DTYPE_F32, 1, bs, rel_b, sizeof rel_b);
  bm_node *big = bm_weight(g, "big", BM_DTYPE_F32, 2, gs, rel_big, sizeof rel_big);
  bm_node *y = bm_gelu(g, bm_linear(g, x, w, b));
  bm_output_add(g, "y", y);
  bm_output_add(g, "z", bm_matmul(g, y, big, false, true)); /* (n, 256) */
  bm_graph *g2 = bm_graph_create(m, "scale");
  int64_t as[1] = {64};
  bm_node *a = bm_input(g2, "a", BM_DTYPE_F32, 1, as);
  bm_node *v = bm_weight(g2, "v", BM_DTYPE_F32, 1, as, rel_v, sizeof rel_v);
  bm_output_add(g2, "o", bm_add(g2, bm_mul(g2, a, v), bm_scalar(g2, 1.0f)));
  bm_status s = bm_graph_status(g);
  if (!s) s = bm_graph_status(g2);
  if (s) {
    fprintf(stderr, "rel_build_module: %s\n", bm_status_message(s));
    bm_module_destroy(m);
    return NULL;
  }
  return m;
}

/* Compiles the small module to path (for the host CPU unless cpu is given). */
static bool rel_compile(const char *path, int compress, const char *cpu) {
  bm_module *m = rel_build_module();
  if (!m) return false;
  bm_compile_options o;
  bm_compile_options_init(&o);
  o.compress = compress;
  o.target.cpu = cpu;
  o.target.opt_level = 1;
  bm_status s = bm_compile_module(m, &o, path);
  bm_module_destroy(m);
  if (s) {
    fprintf(stderr, "rel_compile %s: %s\n", path, bm_status_message(s));
    bm_status_free(s);
    return false;
  }
  return true;
}

static const char *rel_path(const char *name) {
  static char buf[4][512];
  static int k;
  k = (k + 1) % 4;
  snprintf(buf[k], sizeof buf[k], "%s/%s", bm_test_tmpdir(), name);
  return buf[k];
}

__attribute__((unused)) static uint8_t *rel_read(const char *path, size_t *size) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  *size = (size_t)ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *b = malloc(*size + 1);
  if (b && fread(b, 1, *size, f) != *size) {
    free(b);
    b = NULL;
  }
  fclose(f);
  return b;
}

__attribute__((unused)) static void rel_write(const char *path, const void *p, size_t n) {
  FILE *f = fopen(path, "wb");
  if (!f) return;
  if (n) fwrite(p, 1, n, f);
  fclose(f);
}

/* Fixes the header's manifest and header checksums after an edit. */
static void rel_resign(uint8_t *b) {
  uint64_t mo = bm_rd_u64(b + BM_PKG_OFF_MANIFEST_OFFSET), ms = bm_rd_u64(b + BM_PKG_OFF_MANIFEST_SIZE);
  bm_wr_u64(b + BM_PKG_OFF_MANIFEST_HASH, XXH3_64bits(b + mo, ms));
  bm_wr_u64(b + BM_PKG_OFF_HEADER_HASH, XXH3_64bits(b, BM_PKG_OFF_HEADER_HASH));
}

/* Replaces the first occurrence of `from` in the manifest by `to` (no
 * longer; padded with spaces) and re-signs. */
__attribute__((unused)) static bool rel_patch(uint8_t *b, const char *from, const char *to) {
  uint64_t ms = bm_rd_u64(b + BM_PKG_OFF_MANIFEST_SIZE);
  char *m = (char *)b + 64, saved = m[ms];
  m[ms] = 0;
  char *p = strstr(m, from);
  m[ms] = saved;
  if (!p || strlen(to) > strlen(from)) return false;
  memset(p, ' ', strlen(from));
  memcpy(p, to, strlen(to));
  rel_resign(b);
  return true;
}

/* Rewrites the manifest of package b (n bytes) through edit(root, ctx) and
 * re-signs it: the new (unformatted, so shorter) manifest replaces the old
 * one in place, zero padding after it. false if it does not parse or fit. */
__attribute__((unused)) static bool rel_edit(uint8_t *b, size_t n, void (*edit)(cJSON *root, void *ctx), void *ctx) {
  uint64_t ms = bm_rd_u64(b + BM_PKG_OFF_MANIFEST_SIZE);
  cJSON *root = cJSON_ParseWithLength((const char *)b + 64, ms);
  if (!root) return false;
  edit(root, ctx);
  char *text = cJSON_PrintUnformatted(root);
  cJSON_Delete(root);
  size_t len = text ? strlen(text) : 0;
  bool ok = text && len <= ms && 64 + ms <= n; /* fits where the old one was */
  if (ok) {
    memset(b + 64, 0, ms);
    memcpy(b + 64, text, len);
    bm_wr_u64(b + BM_PKG_OFF_MANIFEST_SIZE, len);
    rel_resign(b);
  }
  free(text);
  return ok;
}

/* cJSON helpers for rel_edit callbacks: the object at a path like
 * "functions.0.inputs.0" (array indices as numbers). */
__attribute__((unused)) static cJSON *rel_at(cJSON *root, const char *path) {
  char buf[256];
  snprintf(buf, sizeof buf, "%s", path);
  cJSON *j = root;
  for (char *tok = strtok(buf, "."); j && tok; tok = strtok(NULL, "."))
    j = (tok[0] >= '0' && tok[0] <= '9') ? cJSON_GetArrayItem(j, atoi(tok)) : cJSON_GetObjectItem(j, tok);
  return j;
}

/* The outputs of a run: y (5, 16), z (5, 256) of main and o (64) of scale. */
typedef struct rel_outputs {
  float y[5 * 16], z[5 * 256], o[64];
} rel_outputs;

/* Runs both functions on fixed inputs; false (with a message) on any error. */
static bool rel_run(bm_package *pkg, rel_outputs *out) {
  bm_session *s = NULL;
  bm_session_options so = {.threads = 2};
  bm_status st = bm_session_create(pkg, &so, &s);
  float x[5 * 16], a[64];
  for (int i = 0; i < 80; i++) x[i] = (float)(i % 11) / 5.0f - 1.0f;
  for (int i = 0; i < 64; i++) a[i] = (float)i / 8.0f;
  int64_t xs[2] = {5, 16}, as[1] = {64};
  int f = -1;
  const void *p;
  bm_tensor_info info;
  if (!st) st = bm_package_find_function(pkg, "main", &f);
  if (!st) st = bm_session_set_input(s, f, 0, x, BM_DTYPE_F32, 2, xs);
  if (!st) st = bm_session_run(s, f);
  if (!st) st = bm_session_get_output(s, f, 0, &p, &info);
  if (!st) memcpy(out->y, p, sizeof out->y);
  if (!st) st = bm_session_get_output(s, f, 1, &p, &info);
  if (!st) memcpy(out->z, p, sizeof out->z);
  if (!st) st = bm_package_find_function(pkg, "scale", &f);
  if (!st) st = bm_session_set_input(s, f, 0, a, BM_DTYPE_F32, 1, as);
  if (!st) st = bm_session_run(s, f);
  if (!st) st = bm_session_get_output(s, f, 0, &p, &info);
  if (!st) memcpy(out->o, p, sizeof out->o);
  bm_session_destroy(s);
  if (st) {
    fprintf(stderr, "rel_run: %s\n", bm_status_message(st));
    bm_status_free(st);
    return false;
  }
  return true;
}

#endif
