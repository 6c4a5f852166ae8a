/* test_package.c - the package writer and the runtime end to end: a module
 * built by hand (storage, offsets and kernels set directly), kernels compiled
 * by cc, then write / open / run, reproducibility, compression, truncation,
 * byte flips, versions, CPU features, the allow-list and API misuse. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "testutil.h"
#include "../compiler/package_writer.h"
#include "../runtime/internal.h"

/* ------------------------------------------------------------------ kernels */

static const char *kernel_src =
    "#include <stdint.h>\n"
    "/* y[r, c] = x[r, c] * w[c] + 1, one task per row */\n"
    "void k_fma(void *const *bufs, const int64_t *syms, int64_t begin, int64_t end, void *scratch) {\n"
    "  const float *x = bufs[0], *w = bufs[1]; float *y = bufs[2];\n"
    "  for (int64_t r = begin; r < end; r++)\n"
    "    for (int c = 0; c < 4; c++) y[r * 4 + c] = x[r * 4 + c] * w[c] + 1.0f;\n"
    "}\n"
    "/* z = y + k (k has 4 elements, broadcast over rows) */\n"
    "void k_add_row(void *const *bufs, const int64_t *syms, int64_t begin, int64_t end, void *scratch) {\n"
    "  const float *y = bufs[0], *k = bufs[1]; float *z = bufs[2];\n"
    "  for (int64_t r = begin; r < end; r++)\n"
    "    for (int c = 0; c < 4; c++) z[r * 4 + c] = y[r * 4 + c] + k[c];\n"
    "}\n"
    "/* out = a * 2 + w[i % 4] over 8 elements, 4 per task, through scratch */\n"
    "void k_double(void *const *bufs, const int64_t *syms, int64_t begin, int64_t end, void *scratch) {\n"
    "  const float *a = bufs[0], *w = bufs[1]; float *o = bufs[2]; float *s = scratch;\n"
    "  for (int64_t t = begin; t < end; t++) {\n"
    "    for (int i = 0; i < 4; i++) s[i] = a[t * 4 + i] * 2.0f;\n"
    "    for (int i = 0; i < 4; i++) o[t * 4 + i] = s[i] + w[i];\n"
    "  }\n"
    "}\n"
    "/* out = p + q over syms[0] elements, one task per element */\n"
    "void k_pair(void *const *bufs, const int64_t *syms, int64_t begin, int64_t end, void *scratch) {\n"
    "  const float *p = bufs[0], *q = bufs[1]; float *o = bufs[2];\n"
    "  for (int64_t i = begin; i < end; i++) o[i] = p[i] + q[i];\n"
    "}\n";

static void *g_obj;
static size_t g_obj_size;

static bool load_kernels(void) {
  if (g_obj) return true;
  if (system("cc --version >/dev/null 2>&1") != 0) return false;
  char cpath[512], opath[512], cmd[1200];
  snprintf(cpath, sizeof cpath, "%s/kernels.c", bm_test_tmpdir());
  snprintf(opath, sizeof opath, "%s/kernels.o", bm_test_tmpdir());
  FILE *f = fopen(cpath, "w");
  if (!f) return false;
  fputs(kernel_src, f);
  fclose(f);
  snprintf(cmd, sizeof cmd, "cc -c -fPIC -O2 -fno-stack-protector -o %s %s", opath, cpath);
  if (system(cmd) != 0) return false;
  f = fopen(opath, "rb");
  if (!f) return false;
  fseek(f, 0, SEEK_END);
  g_obj_size = (size_t)ftell(f);
  fseek(f, 0, SEEK_SET);
  g_obj = malloc(g_obj_size);
  if (fread(g_obj, 1, g_obj_size, f) != g_obj_size) {
    free(g_obj);
    g_obj = NULL;
  }
  fclose(f);
  return g_obj != NULL;
}

static bm_object make_code(const char *required) {
  bm_object c;
  memset(&c, 0, sizeof c);
  snprintf(c.format, sizeof c.format, "elf64-x86_64-rel");
  snprintf(c.triple, sizeof c.triple, "x86_64-unknown-linux-gnu");
  snprintf(c.cpu, sizeof c.cpu, "x86-64");
  snprintf(c.features, sizeof c.features, "+sse2");
  snprintf(c.required, sizeof c.required, "%s", required);
  c.data = g_obj;
  c.size = g_obj_size;
  return c;
}

/* ------------------------------------------------------------------ a module by hand */

/* Everything the hand-built module allocates, freed by free_all(). */
static void *allocs[512];
static int nallocs;

static void *alloc(size_t n) {
  void *p = calloc(1, n);
  if (nallocs < 512) allocs[nallocs++] = p;
  return p;
}

static void free_all(void) {
  while (nallocs) free(allocs[--nallocs]);
}

static bm_graph *mk_graph(bm_module *m, const char *name) {
  bm_graph *g = alloc(sizeof *g);
  g->module = m;
  g->name = name;
  g->nodes = alloc(32 * sizeof *g->nodes);
  g->cap = 32;
  g->inputs = alloc(8 * sizeof *g->inputs);
  g->outputs = alloc(8 * sizeof *g->outputs);
  m->graphs[m->ngraphs++] = g;
  return g;
}

static bm_node *mk(bm_graph *g, bm_op op, int ndim, const bm_dim *shape) {
  bm_node *n = alloc(sizeof *n);
  n->op = op;
  n->id = g->nnodes;
  n->dtype = BM_DTYPE_F32;
  n->ndim = ndim;
  for (int i = 0; i < ndim; i++) n->shape[i] = shape[i];
  g->nodes[g->nnodes++] = n;
  return n;
}

static void arena_at(bm_node *n, int64_t offset, int64_t nbytes) {
  n->storage = BM_STORAGE_ARENA;
  n->offset = offset;
  n->nbytes = nbytes;
}

static void set_kernel(bm_node *n, const char *sym, bm_task_expr t, uint64_t scratch, int nin, bm_node *a,
                       bm_node *b) {
  n->kernel = sym;
  n->tasks = t;
  n->scratch = scratch;
  n->nin = nin;
  n->in[0] = a;
  n->in[1] = b;
}

static float w_data[4] = {1.0f, 2.0f, -1.0f, 0.5f};
static float k_data[4] = {10.0f, 20.0f, 30.0f, 40.0f};
static float k_data2[4] = {10.0f, 20.0f, 30.0f, 40.0f};
static float big_data[4096];

/* main(x: (n, 4)) -> y = x*w+1, z = y+k, y_flat = reshape(y, (4n)), w
 * double(a: (8)) -> out = a*2 + w, big (a weight output)
 * pair(p: (m), q: (m)) -> p + q */
static bm_module *build_module(void) {
  for (int i = 0; i < 4096; i++) big_data[i] = (float)(i % 7);
  bm_module *m = alloc(sizeof *m);
  m->name = "handmade";
  m->graphs = alloc(4 * sizeof *m->graphs);
  m->cap = 4;

  bm_graph *g = mk_graph(m, "main");
  g->syms[0] = (bm_sym){"n", 64};
  g->nsyms = 1;
  bm_dim row[2] = {bm_dim_s(0), bm_dim_c(4)}, four[1] = {bm_dim_c(4)}, flat[1] = {{0, 0, 4}};
  bm_node *x = mk(g, BM_OP_INPUT, 2, row);
  x->name = "x";
  arena_at(x, 0, 1024);
  g->inputs[g->ninputs++] = x;
  bm_node *w = mk(g, BM_OP_WEIGHT, 1, four);
  w->name = "w";
  w->data = w_data;
  w->data_size = sizeof w_data;
  w->storage = BM_STORAGE_WEIGHT;
  bm_node *k = mk(g, BM_OP_CONST, 1, four);
  k->data = k_data;
  k->data_size = sizeof k_data;
  k->storage = BM_STORAGE_WEIGHT;
  bm_node *k2 = mk(g, BM_OP_CONST, 1, four); /* same bytes: deduplicated */
  k2->data = k_data2;
  k2->data_size = sizeof k_data2;
  k2->storage = BM_STORAGE_WEIGHT;
  bm_node *y = mk(g, BM_OP_MUL, 2, row);
  arena_at(y, 1024, 1024);
  set_kernel(y, "k_fma", (bm_task_expr){0, 1, 0, 1, 1}, 0, 2, x, w);
  bm_node *z = mk(g, BM_OP_ADD, 2, row);
  arena_at(z, 2048, 1024);
  set_kernel(z, "k_add_row", (bm_task_expr){0, 1, 0, 1, 1}, 0, 2, y, k2);
  bm_node *yf = mk(g, BM_OP_RESHAPE, 1, flat);
  yf->nin = 1;
  yf->in[0] = y;
  yf->storage = BM_STORAGE_ALIAS;
  yf->alias = y;
  g->arena_bytes = 3072;
  g->outputs[g->noutputs++] = (bm_output){"y", y};
  g->outputs[g->noutputs++] = (bm_output){"z", z};
  g->outputs[g->noutputs++] = (bm_output){"y_flat", yf};
  g->outputs[g->noutputs++] = (bm_output){"w", w};
  (void)k;

  g = mk_graph(m, "double");
  bm_dim eight[1] = {bm_dim_c(8)}, bigs[2] = {bm_dim_c(64), bm_dim_c(64)};
  bm_node *a = mk(g, BM_OP_INPUT, 1, eight);
  a->name = "a";
  arena_at(a, 0, 32);
  g->inputs[g->ninputs++] = a;
  bm_node *w2 = mk(g, BM_OP_WEIGHT, 1, four); /* same name and data as main's: shared */
  w2->name = "w";
  w2->data = w_data;
  w2->data_size = sizeof w_data;
  w2->storage = BM_STORAGE_WEIGHT;
  bm_node *big = mk(g, BM_OP_WEIGHT, 2, bigs);
  big->name = "big";
  big->data = big_data;
  big->data_size = sizeof big_data;
  big->storage = BM_STORAGE_WEIGHT;
  bm_node *o = mk(g, BM_OP_ADD, 1, eight);
  arena_at(o, 64, 32);
  set_kernel(o, "k_double", (bm_task_expr){-1, 0, 8, 4, 1}, 16, 2, a, w2);
  g->arena_bytes = 128;
  g->outputs[g->noutputs++] = (bm_output){"out", o};
  g->outputs[g->noutputs++] = (bm_output){"big", big};

  g = mk_graph(m, "pair");
  g->syms[0] = (bm_sym){"m", 16};
  g->nsyms = 1;
  bm_dim ms[1] = {bm_dim_s(0)};
  bm_node *p = mk(g, BM_OP_INPUT, 1, ms);
  p->name = "p";
  arena_at(p, 0, 64);
  bm_node *q = mk(g, BM_OP_INPUT, 1, ms);
  q->name = "q";
  arena_at(q, 64, 64);
  g->inputs[g->ninputs++] = p;
  g->inputs[g->ninputs++] = q;
  bm_node *pq = mk(g, BM_OP_ADD, 1, ms);
  arena_at(pq, 128, 64);
  set_kernel(pq, "k_pair", (bm_task_expr){0, 1, 0, 1, 1}, 0, 2, p, q);
  g->arena_bytes = 192;
  g->outputs[g->noutputs++] = (bm_output){"sum", pq};

  /* chain(c: (8)) -> t2 = double(double(c)); no kernel writes c's slot (the
   * planner keeps inputs live for the whole function) */
  g = mk_graph(m, "chain");
  bm_node *c = mk(g, BM_OP_INPUT, 1, eight);
  c->name = "c";
  arena_at(c, 0, 32);
  g->inputs[g->ninputs++] = c;
  bm_node *w3 = mk(g, BM_OP_WEIGHT, 1, four);
  w3->name = "w";
  w3->data = w_data;
  w3->data_size = sizeof w_data;
  w3->storage = BM_STORAGE_WEIGHT;
  bm_node *t1 = mk(g, BM_OP_ADD, 1, eight);
  arena_at(t1, 64, 32);
  set_kernel(t1, "k_double", (bm_task_expr){-1, 0, 8, 4, 1}, 16, 2, c, w3);
  bm_node *t2 = mk(g, BM_OP_ADD, 1, eight);
  arena_at(t2, 96, 32);
  set_kernel(t2, "k_double", (bm_task_expr){-1, 0, 8, 4, 1}, 16, 2, t1, w3);
  g->arena_bytes = 128;
  g->outputs[g->noutputs++] = (bm_output){"t2", t2};
  return m;
}

static bm_package_meta default_meta(int compress) {
  bm_package_meta meta = {
      .model = "handmade",
      .compiler_version = "test",
      .options_json = "{\"opt\": 3}",
      .target_backend = "cpu",
      .compress = compress,
      .zstd_level = 3,
      .extra_json = "{\"tokenizer\": {\"kind\": \"none\"}}",
  };
  return meta;
}

static const char *pkg_path(const char *name) {
  static char buf[4][512];
  static int k;
  k = (k + 1) % 4;
  snprintf(buf[k], sizeof buf[k], "%s/%s", bm_test_tmpdir(), name);
  return buf[k];
}

/* Writes the standard package to name; returns false (and skips) without cc. */
static bool write_std(const char *name, int compress, const char *required) {
  if (!load_kernels()) {
    fprintf(stderr, "skip: cc not available\n");
    return false;
  }
  bm_module *m = build_module();
  bm_object code = make_code(required ? required : "sse2");
  bm_package_meta meta = default_meta(compress);
  bm_status s = bm_package_write(pkg_path(name), m, &code, &meta);
  CHECK_OK(s);
  free_all();
  return true;
}

static uint8_t *read_file(const char *path, size_t *size) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  *size = (size_t)ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *b = malloc(*size + 1);
  if (fread(b, 1, *size, f) != *size) {
    free(b);
    b = NULL;
  }
  fclose(f);
  return b;
}

/* Writes one byte at pos of an open file (cheaper than rewriting it). */
static void poke(FILE *f, uint64_t pos, uint8_t v) {
  fseek(f, (long)pos, SEEK_SET);
  fputc(v, f);
  fflush(f);
}

static void write_bytes(const char *path, const void *p, size_t n) {
  FILE *f = fopen(path, "wb");
  if (!f) return;
  fwrite(p, 1, n, f);
  fclose(f);
}

/* Runs all three functions and checks every output; returns the number of
 * wrong values (0 = all correct). */
static int run_and_check(bm_package *pkg, int threads) {
  int bad = 0;
  bm_session *s = NULL;
  bm_session_options so = {.threads = threads};
  bm_status st = bm_session_create(pkg, &so, &s);
  if (st) {
    fprintf(stderr, "session: %s\n", bm_status_message(st));
    bm_status_free(st);
    return 1;
  }
  int f;
  CHECK_OK(bm_package_find_function(pkg, "main", &f));
  float x[5 * 4];
  for (int i = 0; i < 20; i++) x[i] = (float)i * 0.5f - 3.0f;
  int64_t shape[2] = {5, 4};
  CHECK_OK(bm_session_set_input(s, f, 0, x, BM_DTYPE_F32, 2, shape));
  CHECK_OK(bm_session_run(s, f));
  const void *p;
  bm_tensor_info info;
  CHECK_OK(bm_session_get_output(s, f, 0, &p, &info));
  const float *y = p;
  if (!y || info.ndim != 2 || info.shape[0] != 5 || info.shape[1] != 4) return bad + 1;
  CHECK(info.dim_names[0] && !strcmp(info.dim_names[0], "n") && info.dim_names[1] == NULL);
  for (int i = 0; i < 20; i++) bad += y[i] != x[i] * w_data[i % 4] + 1.0f;
  CHECK_OK(bm_session_get_output(s, f, 1, &p, &info));
  const float *z = p;
  for (int i = 0; z && i < 20; i++) bad += z[i] != y[i] + k_data[i % 4];
  CHECK_OK(bm_session_get_output(s, f, 2, &p, &info));
  bad += p != (const void *)y || info.ndim != 1 || info.shape[0] != 20;
  CHECK_OK(bm_session_get_output(s, f, 3, &p, &info));
  bad += !p || memcmp(p, w_data, sizeof w_data) != 0;

  CHECK_OK(bm_package_find_function(pkg, "double", &f));
  float a[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  int64_t ashape[1] = {8};
  CHECK_OK(bm_session_set_input(s, f, 0, a, BM_DTYPE_F32, 1, ashape));
  CHECK_OK(bm_session_run(s, f));
  CHECK_OK(bm_session_get_output(s, f, 0, &p, &info));
  for (int i = 0; p && i < 8; i++) bad += ((const float *)p)[i] != a[i] * 2 + w_data[i % 4];
  CHECK_OK(bm_session_get_output(s, f, 1, &p, &info));
  bad += !p || memcmp(p, big_data, sizeof big_data) != 0 || info.shape[0] != 64;

  CHECK_OK(bm_package_find_function(pkg, "pair", &f));
  float pv[16], qv[16];
  for (int i = 0; i < 16; i++) pv[i] = (float)i, qv[i] = 100.0f * (float)i;
  int64_t m7[1] = {7};
  CHECK_OK(bm_session_set_input(s, f, 0, pv, BM_DTYPE_F32, 1, m7));
  CHECK_OK(bm_session_set_input(s, f, 1, qv, BM_DTYPE_F32, 1, m7));
  CHECK_OK(bm_session_run(s, f));
  CHECK_OK(bm_session_get_output(s, f, 0, &p, &info));
  for (int i = 0; p && i < 7; i++) bad += ((const float *)p)[i] != pv[i] + qv[i];
  bad += info.shape[0] != 7;

  CHECK_OK(bm_package_find_function(pkg, "chain", &f));
  CHECK_OK(bm_session_set_input(s, f, 0, a, BM_DTYPE_F32, 1, ashape));
  CHECK_OK(bm_session_run(s, f));
  CHECK_OK(bm_session_get_output(s, f, 0, &p, &info));
  for (int i = 0; p && i < 8; i++) bad += ((const float *)p)[i] != (a[i] * 2 + w_data[i % 4]) * 2 + w_data[i % 4];
  /* running again on the same inputs gives the same result */
  CHECK_OK(bm_session_run(s, f));
  CHECK_OK(bm_session_get_output(s, f, 0, &p, &info));
  for (int i = 0; p && i < 8; i++) bad += ((const float *)p)[i] != (a[i] * 2 + w_data[i % 4]) * 2 + w_data[i % 4];
  bm_session_destroy(s);
  return bad;
}

/* ------------------------------------------------------------------ tests */

static void test_end_to_end(void) {
  if (!write_std("e2e.bmpk", 0, NULL)) return;
  bm_package *pkg = NULL;
  CHECK_OK(bm_package_open(pkg_path("e2e.bmpk"), NULL, &pkg));
  if (!pkg) return;
  CHECK(!strcmp(bm_package_model_name(pkg), "handmade"));
  CHECK(bm_package_function_count(pkg) == 4);
  CHECK(!strcmp(bm_package_function_name(pkg, 1), "double"));
  CHECK(bm_package_function_name(pkg, 4) == NULL);
  CHECK(bm_package_arena_bytes(pkg) == 3072);
  /* weights: w, one deduplicated const, big */
  CHECK(bm_package_weight_bytes(pkg) == 16 + 16 + 4096 * 4);
  CHECK(strstr(bm_package_manifest_json(pkg), "\"tokenizer\"") != NULL);
  CHECK(strstr(bm_package_manifest_json(pkg), "const.main.2") != NULL);
  CHECK(strstr(bm_package_manifest_json(pkg), "const.main.3") == NULL);
  CHECK(bm_package_file_hash(pkg) != 0);
  CHECK(bm_function_input_count(pkg, 0) == 1 && bm_function_output_count(pkg, 0) == 4);
  bm_tensor_info info;
  CHECK_OK(bm_function_input_info(pkg, 0, 0, &info));
  CHECK(!strcmp(info.name, "x") && info.ndim == 2 && info.shape[0] == 64 && info.shape[1] == 4);
  CHECK(info.dim_names[0] && !strcmp(info.dim_names[0], "n"));
  CHECK_OK(bm_function_output_info(pkg, 0, 2, &info));
  CHECK(!strcmp(info.name, "y_flat") && info.shape[0] == 256);
  int i;
  CHECK_OK(bm_function_find_input(pkg, 2, "q", &i));
  CHECK(i == 1);
  CHECK(run_and_check(pkg, 1) == 0);
  CHECK(run_and_check(pkg, 3) == 0);
  CHECK(run_and_check(pkg, 0) == 0);
  bm_package_close(pkg);
}

static void test_reproducible(void) {
  for (int compress = 0; compress < 2; compress++) {
    if (!write_std("r1.bmpk", compress, NULL) || !write_std("r2.bmpk", compress, NULL)) return;
    size_t n1, n2;
    uint8_t *a = read_file(pkg_path("r1.bmpk"), &n1), *b = read_file(pkg_path("r2.bmpk"), &n2);
    CHECK(a && b && n1 == n2 && memcmp(a, b, n1) == 0);
    free(a);
    free(b);
  }
  struct stat st;
  CHECK(stat(pkg_path("r1.bmpk.tmp"), &st) != 0); /* no tmp file left */
}

static void test_compression(void) {
  if (!write_std("plain.bmpk", 0, NULL) || !write_std("zstd.bmpk", 1, NULL)) return;
  size_t n0, n1;
  uint8_t *a = read_file(pkg_path("plain.bmpk"), &n0), *b = read_file(pkg_path("zstd.bmpk"), &n1);
  CHECK(a && b && n1 + 8000 < n0); /* big (16 KiB of a repeating pattern) compresses */
  free(a);
  free(b);
  bm_package *pkg = NULL;
  CHECK_OK(bm_package_open(pkg_path("zstd.bmpk"), NULL, &pkg));
  if (!pkg) return;
  CHECK(strstr(bm_package_manifest_json(pkg), "\"zstd\"") != NULL);
  CHECK(bm_package_weight_bytes(pkg) == 16 + 16 + 4096 * 4);
  CHECK(run_and_check(pkg, 2) == 0);
  bm_package_close(pkg);
}

/* Section boundaries of a package: header, manifest, weights, code. */
static int boundaries(const uint8_t *b, size_t n, uint64_t *out) {
  int k = 0;
  out[k++] = 0;
  out[k++] = 7;
  out[k++] = 8;
  out[k++] = 63;
  out[k++] = 64;
  uint64_t mo = bm_rd_u64(b + BM_PKG_OFF_MANIFEST_OFFSET), ms = bm_rd_u64(b + BM_PKG_OFF_MANIFEST_SIZE);
  out[k++] = mo + ms / 2;
  out[k++] = mo + ms - 1;
  out[k++] = mo + ms;
  out[k++] = 4096;
  out[k++] = 4097;
  /* every "offset" in the manifest */
  const char *p = (const char *)b + mo, *end = p + ms;
  while (k < 60 && (p = strstr(p, "\"offset\":")) && p < end) {
    uint64_t v = strtoull(p + 9, NULL, 10);
    if (v > 0 && v < n) {
      out[k++] = v;
      out[k++] = v + 1;
    }
    p += 9;
  }
  out[k++] = n - 1;
  return k;
}

static void test_truncation(void) {
  if (!write_std("trunc_src.bmpk", 1, NULL)) return;
  size_t n;
  uint8_t *b = read_file(pkg_path("trunc_src.bmpk"), &n);
  if (!b) return;
  uint64_t cut[200];
  int k = boundaries(b, n, cut);
  uint64_t rng = 99;
  while (k < 160) cut[k++] = bm_test_rand_u64(&rng) % n;
  const char *path = pkg_path("trunc.bmpk");
  uint64_t mend = 64 + bm_rd_u64(b + BM_PKG_OFF_MANIFEST_SIZE);
  for (int i = 0; i < k; i++) {
    write_bytes(path, b, (size_t)cut[i]);
    bm_package *pkg = NULL;
    bm_status s = bm_package_open(path, NULL, &pkg);
    CHECK_MSG(s && bm_status_code(s) == BM_ERR_CORRUPT, "cut at %llu: %s", (unsigned long long)cut[i],
              bm_status_message(s));
    if (s && cut[i] >= 64) CHECK_MSG(strstr(bm_status_message(s), "truncated"), "%s", bm_status_message(s));
    if (s && cut[i] >= mend) CHECK_MSG(strstr(bm_status_message(s), "weight") || strstr(bm_status_message(s), "code"),
                                      "%s", bm_status_message(s));
    CHECK(pkg == NULL);
    bm_status_free(s);
    bm_package_close(pkg);
  }
  free(b);
}

/* Opens path; on success runs everything and counts it as "ran". Returns
 * 0 for a clean error, 1 for a correct run, -1 for a wrong result. */
static int open_outcome(const char *path, bool run, uint32_t flags) {
  bm_package *pkg = NULL;
  bm_open_options o = {.flags = flags};
  bm_status s = bm_package_open(path, &o, &pkg);
  if (s) {
    int c = (int)bm_status_code(s);
    CHECK_MSG(c == BM_ERR_CORRUPT || c == BM_ERR_INCOMPATIBLE, "%s", bm_status_message(s));
    CHECK(strlen(bm_status_message(s)) > 10);
    CHECK(pkg == NULL);
    bm_status_free(s);
    return 0;
  }
  int r = 1;
  if (run && run_and_check(pkg, 2) != 0) r = -1;
  bm_package_close(pkg);
  return r;
}

static void test_flips(void) {
  if (!write_std("flip_src.bmpk", 0, NULL)) return;
  size_t n;
  uint8_t *b = read_file(pkg_path("flip_src.bmpk"), &n);
  if (!b) return;
  const char *path = pkg_path("flip.bmpk");
  uint64_t mend = 64 + bm_rd_u64(b + BM_PKG_OFF_MANIFEST_SIZE);
  int errors = 0, ok = 0;
  /* every byte of the header and the manifest */
  write_bytes(path, b, n);
  FILE *f = fopen(path, "r+b");
  if (!f) return;
  for (uint64_t i = 0; i < mend; i++) {
    poke(f, i, b[i] ^ 0x20);
    int r = open_outcome(path, true, 0);
    CHECK_MSG(r >= 0, "flip at %llu ran with a wrong result", (unsigned long long)i);
    errors += r == 0;
    ok += r == 1;
    poke(f, i, b[i]);
  }
  /* a sample of the weights and the code */
  uint64_t rng = 7;
  for (int k = 0; k < 150; k++) {
    uint64_t i = mend + bm_test_rand_u64(&rng) % (n - mend);
    poke(f, i, b[i] ^ (uint8_t)(1 + bm_test_rand_u64(&rng) % 255));
    int r = open_outcome(path, true, 0);
    CHECK_MSG(r >= 0, "flip at %llu ran with a wrong result", (unsigned long long)i);
    poke(f, i, b[i]);
  }
  fclose(f);
  fprintf(stderr, "  header/manifest flips: %d rejected, %d still ran correctly\n", errors, ok);
  free(b);
}

/* Re-signs a mutated manifest (fixes both checksums) so the validator, not
 * the checksum, has to catch the damage. Opens only: a package whose task
 * counts were changed could make correct kernels overrun. */
static void resign(uint8_t *b) {
  uint64_t mo = bm_rd_u64(b + BM_PKG_OFF_MANIFEST_OFFSET), ms = bm_rd_u64(b + BM_PKG_OFF_MANIFEST_SIZE);
  bm_wr_u64(b + BM_PKG_OFF_MANIFEST_HASH, XXH3_64bits(b + mo, ms));
  bm_wr_u64(b + BM_PKG_OFF_HEADER_HASH, XXH3_64bits(b, BM_PKG_OFF_HEADER_HASH));
}

static void test_manifest_fuzz(void) {
  if (!write_std("mfuzz_src.bmpk", 1, NULL)) return;
  size_t n;
  uint8_t *b = read_file(pkg_path("mfuzz_src.bmpk"), &n);
  if (!b) return;
  const char *path = pkg_path("mfuzz.bmpk");
  uint64_t ms = bm_rd_u64(b + BM_PKG_OFF_MANIFEST_SIZE);
  static const char repl[] = "0123456789-9e{}[]\",:x \0";
  uint64_t rng = 3;
  int rejected = 0;
  write_bytes(path, b, n);
  FILE *f = fopen(path, "r+b");
  if (!f) return;
  for (uint64_t i = 64; i < 64 + ms; i++) {
    uint8_t old = b[i];
    b[i] = (uint8_t)repl[bm_test_rand_u64(&rng) % (sizeof repl - 1)];
    resign(b);
    fseek(f, 0, SEEK_SET);
    fwrite(b, 1, 64, f); /* the header with the new checksums */
    poke(f, i, b[i]);
    rejected += open_outcome(path, false, 0) == 0;
    b[i] = old;
    poke(f, i, old);
  }
  fclose(f);
  resign(b);
  fprintf(stderr, "  re-signed manifest mutations: %d of %llu rejected\n", rejected, (unsigned long long)ms);
  CHECK(rejected > 0);
  free(b);
}

/* Replaces the first occurrence of `from` in the manifest with `to` (same
 * length or padded with spaces) and re-signs. */
static bool patch_manifest(uint8_t *b, const char *from, const char *to) {
  uint64_t ms = bm_rd_u64(b + BM_PKG_OFF_MANIFEST_SIZE);
  char *m = (char *)b + 64;
  char saved = m[ms];
  m[ms] = 0;
  char *p = strstr(m, from);
  m[ms] = saved;
  if (!p || strlen(to) > strlen(from)) return false;
  memset(p, ' ', strlen(from));
  memcpy(p, to, strlen(to));
  resign(b);
  return true;
}

static void test_semantic_checks(void) {
  if (!write_std("sem_src.bmpk", 0, NULL)) return;
  size_t n;
  uint8_t *orig = read_file(pkg_path("sem_src.bmpk"), &n);
  if (!orig) return;
  uint8_t *b = malloc(n);
  const char *path = pkg_path("sem.bmpk");
  struct {
    const char *from, *to, *expect;
  } cases[] = {
      {"\"arena_bytes\":\t3072", "\"arena_bytes\":\t1e15", "arena_bytes"},
      {"\"div\":\t1", "\"div\":\t0", "div"},
      {"\"factor\":\t1", "\"factor\":\t0", "factor"},
      {"\"dtype\":\t\"f32\"", "\"dtype\":\t\"f99\"", "dtype"},
      {"\"weight\":\t0", "\"weight\":\t9", "weight"},
      {"\"symbol\":\t\"k_fma\"", "\"symbol\":\t\"k_fmb\"", "k_fmb"},
      {"\"sym\":\t0", "\"sym\":\t5", "sym"},
      {"\"backend\":\t\"cpu\"", "\"backend\":\t\"gpu\"", "gpu"},
      {"\"triple\":\t\"x86_64", "\"triple\":\t\"riscv6", "riscv"},
      {"\"compression\":\t\"none\"", "\"compression\":\t\"lz4\"", "lz4"},
      {"\"scratch\":\t16", "\"scratch\":\t-1", "scratch"},
      {"\"nbytes\":\t1024", "\"nbytes\":\t9999", "nbytes"},
      {"\"format_version\":\t1", "\"format_version\":\t2", "version 2"},
      {"\"required\":\t\"sse2\"", "\"required\":\t\"sse9\"", "sse9"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    memcpy(b, orig, n);
    if (!patch_manifest(b, cases[i].from, cases[i].to)) {
      CHECK_MSG(0, "pattern %s not in the manifest", cases[i].from);
      continue;
    }
    write_bytes(path, b, n);
    bm_package *pkg = NULL;
    bm_status s = bm_package_open(path, NULL, &pkg);
    CHECK_MSG(s && strstr(bm_status_message(s), cases[i].expect), "%s -> %s: %s", cases[i].from, cases[i].to,
              s ? bm_status_message(s) : "opened");
    bm_status_free(s);
    bm_package_close(pkg);
  }
  free(b);
  free(orig);
}

static void test_version(void) {
  if (!write_std("ver_src.bmpk", 0, NULL)) return;
  size_t n;
  uint8_t *b = read_file(pkg_path("ver_src.bmpk"), &n);
  if (!b) return;
  bm_wr_u32(b + BM_PKG_OFF_VERSION, 7);
  write_bytes(pkg_path("ver.bmpk"), b, n);
  bm_package *pkg = NULL;
  CHECK_ERR(bm_package_open(pkg_path("ver.bmpk"), NULL, &pkg), BM_ERR_INCOMPATIBLE,
            "package format version 7, this runtime reads version 1");
  memcpy(b, "BMPX", 4);
  write_bytes(pkg_path("ver.bmpk"), b, n);
  CHECK_ERR(bm_package_open(pkg_path("ver.bmpk"), NULL, &pkg), BM_ERR_CORRUPT, "not a bm package");
  write_bytes(pkg_path("ver.bmpk"), b, 0);
  CHECK_ERR(bm_package_open(pkg_path("ver.bmpk"), NULL, &pkg), BM_ERR_CORRUPT, "not a bm package");
  CHECK_ERR(bm_package_open(pkg_path("does_not_exist.bmpk"), NULL, &pkg), BM_ERR_IO, "does_not_exist");
  free(b);
}

static void test_cpu_features(void) {
  if (!write_std("feat1.bmpk", 0, "sse2,bm_imaginary_feature")) return;
  bm_package *pkg = NULL;
  CHECK_ERR(bm_package_open(pkg_path("feat1.bmpk"), NULL, &pkg), BM_ERR_INCOMPATIBLE, "bm_imaginary_feature");
  if (!write_std("feat2.bmpk", 0, "avx512fp16")) return;
  bm_status s = bm_package_open(pkg_path("feat2.bmpk"), NULL, &pkg);
  if (bm_cpu_has_feature("avx512fp16") == 1) {
    CHECK(s == NULL);
  } else {
    CHECK_ERR(s, BM_ERR_INCOMPATIBLE, "package needs CPU feature avx512fp16, which this CPU lacks");
    s = NULL;
  }
  bm_status_free(s);
  bm_package_close(pkg);
  CHECK(bm_cpu_has_feature("sse2") == 1);
  CHECK(bm_cpu_has_feature("nonsense") == -1);
}

static void test_allow_list(void) {
  if (!write_std("allow.bmpk", 0, NULL)) return;
  bm_package *pkg = NULL;
  CHECK_OK(bm_package_open(pkg_path("allow.bmpk"), NULL, &pkg));
  if (!pkg) return;
  uint64_t h = bm_package_file_hash(pkg);
  bm_package_close(pkg);
  size_t n;
  uint8_t *b = read_file(pkg_path("allow.bmpk"), &n);
  CHECK(b && XXH3_64bits(b, n) == h);
  free(b);
  uint64_t good[2] = {1, h}, bad[1] = {h + 1};
  bm_open_options o = {.allowed_hashes = good, .n_allowed_hashes = 2};
  CHECK_OK(bm_package_open(pkg_path("allow.bmpk"), &o, &pkg));
  bm_package_close(pkg);
  o.allowed_hashes = bad;
  o.n_allowed_hashes = 1;
  CHECK_ERR(bm_package_open(pkg_path("allow.bmpk"), &o, &pkg), BM_ERR_PERMISSION, "allow-list");
  CHECK(pkg == NULL);
  o.flags = BM_OPEN_SKIP_CHECKSUMS;
  o.n_allowed_hashes = 0;
  CHECK_OK(bm_package_open(pkg_path("allow.bmpk"), &o, &pkg));
  bm_package_close(pkg);
}

static void test_api_misuse(void) {
  bm_package *pkg = NULL;
  CHECK_ERR(bm_package_open(NULL, NULL, &pkg), BM_ERR_INVALID_ARGUMENT, NULL);
  CHECK_ERR(bm_package_open("x", NULL, NULL), BM_ERR_INVALID_ARGUMENT, NULL);
  bm_package_close(NULL);
  bm_session_destroy(NULL);
  CHECK(bm_package_model_name(NULL) == NULL && bm_package_function_count(NULL) == 0);
  CHECK(bm_package_manifest_json(NULL) == NULL && bm_package_arena_bytes(NULL) == 0);
  bm_session *s = NULL;
  CHECK_ERR(bm_session_create(NULL, NULL, &s), BM_ERR_INVALID_ARGUMENT, NULL);
  CHECK_ERR(bm_session_run(NULL, 0), BM_ERR_INVALID_ARGUMENT, NULL);
  CHECK_ERR(bm_session_set_input(NULL, 0, 0, NULL, BM_DTYPE_F32, 0, NULL), BM_ERR_INVALID_ARGUMENT, NULL);
  const void *p;
  CHECK_ERR(bm_session_get_output(NULL, 0, 0, &p, NULL), BM_ERR_INVALID_ARGUMENT, NULL);
  int f;
  CHECK_ERR(bm_package_find_function(NULL, "main", &f), BM_ERR_INVALID_ARGUMENT, NULL);

  if (!write_std("misuse.bmpk", 0, NULL)) return;
  CHECK_OK(bm_package_open(pkg_path("misuse.bmpk"), NULL, &pkg));
  if (!pkg) return;
  CHECK_ERR(bm_package_find_function(pkg, "decode", &f), BM_ERR_NOT_FOUND, "'main', 'double', 'pair'");
  CHECK_ERR(bm_package_find_function(pkg, NULL, &f), BM_ERR_INVALID_ARGUMENT, NULL);
  int i;
  CHECK_ERR(bm_function_find_input(pkg, 0, "nope", &i), BM_ERR_NOT_FOUND, "'x'");
  CHECK_ERR(bm_function_find_input(pkg, 9, "x", &i), BM_ERR_INVALID_ARGUMENT, NULL);
  bm_tensor_info info;
  CHECK_ERR(bm_function_input_info(pkg, 0, 1, &info), BM_ERR_INVALID_ARGUMENT, "input index 1");
  CHECK_ERR(bm_function_output_info(pkg, -1, 0, &info), BM_ERR_INVALID_ARGUMENT, NULL);
  CHECK_ERR(bm_function_input_info(pkg, 0, 0, NULL), BM_ERR_INVALID_ARGUMENT, NULL);
  CHECK(bm_function_input_count(pkg, 7) == 0);
  bm_session_options so = {.threads = -1};
  CHECK_ERR(bm_session_create(pkg, &so, &s), BM_ERR_INVALID_ARGUMENT, "thread");
  so.threads = 2;
  so.profile = 0;
  CHECK_OK(bm_session_create(pkg, &so, &s));
  if (!s) {
    bm_package_close(pkg);
    return;
  }
  CHECK_ERR(bm_session_run(s, 0), BM_ERR_INVALID_ARGUMENT, "input 'x' was not set");
  CHECK_ERR(bm_session_run(s, 4), BM_ERR_INVALID_ARGUMENT, "function index 4");
  CHECK_ERR(bm_session_get_output(s, 0, 0, &p, &info), BM_ERR_INVALID_ARGUMENT, "not been run");
  float x[64 * 4 + 4] = {0};
  int64_t sh[2] = {5, 4};
  CHECK_ERR(bm_session_set_input(s, 0, 0, x, BM_DTYPE_F16, 2, sh), BM_ERR_INVALID_ARGUMENT, "dtype f16, expected f32");
  CHECK_ERR(bm_session_set_input(s, 0, 0, x, BM_DTYPE_F32, 1, sh), BM_ERR_INVALID_ARGUMENT, "rank 1, expected 2");
  int64_t sh2[2] = {5, 3};
  CHECK_ERR(bm_session_set_input(s, 0, 0, x, BM_DTYPE_F32, 2, sh2), BM_ERR_INVALID_ARGUMENT, "expected 4");
  int64_t sh3[2] = {65, 4};
  CHECK_ERR(bm_session_set_input(s, 0, 0, x, BM_DTYPE_F32, 2, sh3), BM_ERR_INVALID_ARGUMENT, "above its bound 64");
  int64_t sh4[2] = {-1, 4};
  CHECK_ERR(bm_session_set_input(s, 0, 0, x, BM_DTYPE_F32, 2, sh4), BM_ERR_INVALID_ARGUMENT, "negative");
  CHECK_ERR(bm_session_set_input(s, 0, 0, NULL, BM_DTYPE_F32, 2, sh), BM_ERR_INVALID_ARGUMENT, "NULL");
  CHECK_ERR(bm_session_set_input(s, 0, 2, x, BM_DTYPE_F32, 2, sh), BM_ERR_INVALID_ARGUMENT, "input index 2");
  CHECK_ERR(bm_session_set_input(s, 0, 0, x, BM_DTYPE_F32, 2, NULL), BM_ERR_INVALID_ARGUMENT, NULL);
  int64_t sh0[2] = {0, 4};
  CHECK_OK(bm_session_set_input(s, 0, 0, x, BM_DTYPE_F32, 2, sh0)); /* empty is allowed */
  CHECK_OK(bm_session_run(s, 0));
  CHECK_OK(bm_session_get_output(s, 0, 0, &p, &info));
  CHECK(info.shape[0] == 0);
  CHECK_ERR(bm_session_get_output(s, 0, 4, &p, &info), BM_ERR_INVALID_ARGUMENT, "output index 4");
  CHECK_ERR(bm_session_get_output(s, 0, 0, NULL, &info), BM_ERR_INVALID_ARGUMENT, NULL);
  const bm_kernel_profile *prof;
  int nprof;
  CHECK_ERR(bm_session_profile(s, 0, &prof, &nprof), BM_ERR_INVALID_ARGUMENT, "profile");

  /* inputs that disagree on a symbol */
  float pv[16] = {0};
  int64_t m3[1] = {3}, m4[1] = {4};
  CHECK_OK(bm_session_set_input(s, 2, 0, pv, BM_DTYPE_F32, 1, m3));
  CHECK_OK(bm_session_set_input(s, 2, 1, pv, BM_DTYPE_F32, 1, m4));
  CHECK_ERR(bm_session_run(s, 2), BM_ERR_INVALID_ARGUMENT, "gives m = 4 but input 'p' gives 3");
  /* setting inputs of another function drops these */
  CHECK_OK(bm_session_set_input(s, 0, 0, x, BM_DTYPE_F32, 2, sh));
  CHECK_ERR(bm_session_run(s, 2), BM_ERR_INVALID_ARGUMENT, "was not set");
  CHECK_OK(bm_session_run(s, 0));
  CHECK_OK(bm_session_run(s, 0)); /* again on the same inputs */
  bm_session_destroy(s);
  bm_package_close(pkg);
}

static void test_profile(void) {
  if (!write_std("prof.bmpk", 0, NULL)) return;
  bm_package *pkg = NULL;
  CHECK_OK(bm_package_open(pkg_path("prof.bmpk"), NULL, &pkg));
  if (!pkg) return;
  bm_session *s = NULL;
  bm_session_options so = {.threads = 2, .profile = 1};
  CHECK_OK(bm_session_create(pkg, &so, &s));
  float x[8] = {0};
  int64_t sh[2] = {2, 4};
  CHECK_OK(bm_session_set_input(s, 0, 0, x, BM_DTYPE_F32, 2, sh));
  CHECK_OK(bm_session_run(s, 0));
  const bm_kernel_profile *prof;
  int n;
  CHECK_OK(bm_session_profile(s, 0, &prof, &n));
  CHECK(n == 2 && !strcmp(prof[0].kernel, "k_fma") && !strcmp(prof[0].op, "mul") && prof[1].seconds >= 0);
  bm_session_destroy(s);
  bm_package_close(pkg);
}

static void test_writer_errors(void) {
  if (!load_kernels()) return;
  bm_object code = make_code("");
  bm_package_meta meta = default_meta(0);
  const char *path = pkg_path("werr.bmpk");
  unlink(path);

  bm_module *m = build_module();
  ((bm_node *)m->graphs[0]->nodes[1])->data = NULL; /* weight w unbound */
  CHECK_ERR(bm_package_write(path, m, &code, &meta), BM_ERR_INVALID_ARGUMENT, "weight 'w' is not bound");
  free_all();
  struct stat st;
  CHECK(stat(path, &st) != 0);
  char tmp[600];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  CHECK(stat(tmp, &st) != 0);

  m = build_module();
  m->graphs[1]->nodes[1]->data = big_data; /* same name 'w', other data (first 16 bytes differ) */
  CHECK_ERR(bm_package_write(path, m, &code, &meta), BM_ERR_INVALID_ARGUMENT, "weight 'w' differs");
  free_all();

  m = build_module();
  m->graphs[0]->nodes[4]->storage = BM_STORAGE_NONE; /* y not planned */
  CHECK_ERR(bm_package_write(path, m, &code, &meta), BM_ERR_INVALID_ARGUMENT, "no storage");
  free_all();

  m = build_module();
  m->graphs[0]->nodes[4]->offset = 4000; /* outside the arena */
  CHECK_ERR(bm_package_write(path, m, &code, &meta), BM_ERR_INTERNAL, "arena");
  free_all();

  m = build_module();
  m->graphs[0]->nodes[4]->kernel = "k_nope"; /* not in the code object */
  CHECK_ERR(bm_package_write(path, m, &code, &meta), BM_ERR_INTERNAL, "kernel 'k_nope'");
  free_all();

  m = build_module();
  bm_object empty = code;
  empty.size = 0;
  CHECK_ERR(bm_package_write(path, m, &empty, &meta), BM_ERR_INVALID_ARGUMENT, "code object is empty");
  empty = code;
  empty.size = 100; /* a truncated object */
  CHECK_ERR(bm_package_write(path, m, &empty, &meta), BM_ERR_CORRUPT, "not loadable");
  free_all();

  m = build_module();
  bm_package_meta bad = meta;
  bad.options_json = "[1, 2";
  CHECK_ERR(bm_package_write(path, m, &code, &bad), BM_ERR_INVALID_ARGUMENT, "options_json");
  CHECK_ERR(bm_package_write("/nonexistent_dir_bm/x.bmpk", m, &code, &meta), BM_ERR_IO, "nonexistent_dir_bm");
  CHECK_ERR(bm_package_write(NULL, m, &code, &meta), BM_ERR_INVALID_ARGUMENT, NULL);
  free_all();
  CHECK(stat(path, &st) != 0);

  /* a failed write leaves an existing package untouched */
  CHECK(write_std("keep.bmpk", 0, NULL));
  size_t n0, n1;
  uint8_t *before = read_file(pkg_path("keep.bmpk"), &n0);
  m = build_module();
  m->graphs[0]->nodes[1]->data = NULL;
  CHECK_ERR(bm_package_write(pkg_path("keep.bmpk"), m, &code, &meta), BM_ERR_INVALID_ARGUMENT, NULL);
  free_all();
  uint8_t *after = read_file(pkg_path("keep.bmpk"), &n1);
  CHECK(before && after && n0 == n1 && !memcmp(before, after, n0));
  free(before);
  free(after);
}

/* Every task of every job runs exactly once, whatever the thread count. */
static int hits[1000];
static void count_tasks(void *const *bufs, const int64_t *syms, int64_t begin, int64_t end, void *scratch) {
  for (int64_t i = begin; i < end; i++) __atomic_fetch_add(&hits[i], 1, __ATOMIC_RELAXED);
  ((uint8_t *)scratch)[0]++; /* each thread owns its scratch */
}

static void test_threadpool(void) {
  for (int threads = 1; threads <= 4; threads++) {
    bm_threadpool *p = NULL;
    CHECK_OK(bm_threadpool_create(threads, &p));
    if (!p) return;
    CHECK(bm_threadpool_threads(p) == threads);
    uint8_t scratch[4 * 64] = {0};
    int bad = 0;
    for (int job = 0; job < 300; job++) {
      int64_t ntasks = job % 7 == 0 ? 1 : (job * 37) % 1000;
      memset(hits, 0, sizeof hits);
      bm_threadpool_run(p, count_tasks, NULL, NULL, ntasks, scratch, 64);
      for (int64_t i = 0; i < 1000; i++) bad += hits[i] != (i < ntasks);
    }
    CHECK(bad == 0);
    bm_threadpool_destroy(p);
  }
  bm_threadpool *p;
  CHECK_ERR(bm_threadpool_create(0, &p), BM_ERR_INVALID_ARGUMENT, NULL);
  bm_threadpool_destroy(NULL);
}

static void test_devices(void) {
  CHECK(!strcmp(bm_device_kind_name(BM_DEVICE_CPU), "cpu"));
  CHECK(!strcmp(bm_device_kind_name(BM_DEVICE_CUDA), "cuda"));
  CHECK_OK(bm_device_probe(BM_DEVICE_CPU));
  bm_status s = bm_device_probe(BM_DEVICE_CUDA);
  CHECK(s == NULL || (bm_status_code(s) == BM_ERR_UNSUPPORTED && strstr(bm_status_message(s), "cuda")));
  bm_status_free(s);
  CHECK_ERR(bm_device_probe(BM_DEVICE_METAL), BM_ERR_UNSUPPORTED, "metal");
  CHECK_ERR(bm_device_probe((bm_device_kind)42), BM_ERR_INVALID_ARGUMENT, NULL);
  CHECK(bm_runtime_version()[0] != 0);
}

int main(void) {
  RUN(test_end_to_end);
  RUN(test_reproducible);
  RUN(test_compression);
  RUN(test_truncation);
  RUN(test_flips);
  RUN(test_manifest_fuzz);
  RUN(test_semantic_checks);
  RUN(test_version);
  RUN(test_cpu_features);
  RUN(test_allow_list);
  RUN(test_api_misuse);
  RUN(test_profile);
  RUN(test_writer_errors);
  RUN(test_threadpool);
  RUN(test_devices);
  free(g_obj);
  return bm_test_finish();
}
