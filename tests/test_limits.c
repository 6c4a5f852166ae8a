/* test_limits.c - limits and skew: shapes, counts and sizes that would
 * overflow or exhaust memory get a clear error before anything is allocated
 * (builders, IR text, manifests, safetensors, npy, sessions); packages of
 * another format version, target or CPU feature set are refused as
 * "incompatible" naming both sides, never with SIGILL. */
#include <sys/sysinfo.h>

#include "rel_package.h"
#include "../runtime/npy.h"
#include "../runtime/safetensors.h"

#define T40 (1ll << 40)

/* ------------------------------------------------------------------ builders and IR text */

static void test_builder_huge_dims(void) {
  bm_module *m = bm_module_create("huge");
  /* 2^40 x 2^40 elements overflow: refused when the node is made */
  bm_graph *g = bm_graph_create(m, "a");
  int64_t s2[2] = {T40, T40};
  CHECK(bm_input(g, "x", BM_DTYPE_F32, 2, s2) == NULL);
  CHECK_MSG(bm_graph_status(g) != NULL, "a (2^40, 2^40) input was accepted");
  /* a constant of 2^40 elements must not read 4 TiB from a 16-byte buffer */
  g = bm_graph_create(m, "b");
  float small[4] = {0};
  int64_t s1[1] = {T40};
  CHECK(bm_const(g, BM_DTYPE_F32, 1, s1, small) == NULL);
  CHECK(bm_graph_status(g) && strstr(bm_status_message(bm_graph_status(g)), "use a weight"));
  /* a weight whose bytes do not match its shape */
  g = bm_graph_create(m, "c");
  CHECK(bm_weight(g, "w", BM_DTYPE_F32, 1, s1, small, sizeof small) == NULL);
  CHECK(bm_graph_status(g) != NULL);
  /* a 2^40-element input is a valid description, but compiling it must fail
   * cleanly (its arena would be 4 TiB) rather than allocate */
  bm_module *m2 = bm_module_create("huge2");
  g = bm_graph_create(m2, "main");
  bm_node *x = bm_input(g, "x", BM_DTYPE_F32, 1, s1);
  bm_output_add(g, "y", bm_unary(g, BM_OP_RELU, x));
  if (!bm_graph_status(g)) {
    bm_compile_options o;
    bm_compile_options_init(&o);
    o.target.opt_level = 0;
    bm_status s = bm_compile_module(m2, &o, rel_path("huge.bmpk"));
    CHECK_MSG(s != NULL, "a 4 TiB arena compiled");
    if (s) fprintf(stderr, "  compile of a 2^40-element input: %s: %s\n", bm_code_name(bm_status_code(s)),
                   bm_status_message(s));
    bm_status_free(s);
  }
  bm_module_destroy(m2);
  bm_module_destroy(m);

  m = bm_module_create("text");
  bm_graph *pg = NULL;
  bm_status s = bm_graph_parse(m, "graph main {\n  %0 = input \"x\" f32 [1099511627776, 1099511627776]\n}\n", &pg);
  CHECK(s != NULL && pg == NULL);
  bm_status_free(s);
  s = bm_graph_parse(m, "graph main {\n  sym n 1099511627776000\n}\n", &pg);
  CHECK(s != NULL);
  bm_status_free(s);
  bm_module_destroy(m);
}

/* ------------------------------------------------------------------ manifests */

static uint8_t *g_pkg;
static size_t g_pkg_size;

static bool load_pkg(void) {
  if (g_pkg) return true;
  const char *p = rel_path("limits.bmpk");
  if (!rel_compile(p, 0, NULL)) return false;
  g_pkg = rel_read(p, &g_pkg_size);
  return g_pkg != NULL;
}

typedef struct edit_ctx {
  const char *path; /* e.g. "weights.0" */
  const char *key;
  double num;       /* set key to this number ... */
  cJSON *json;      /* ... or to this JSON (taken) */
} edit_ctx;

static void apply_edit(cJSON *root, void *ctx) {
  edit_ctx *e = ctx;
  cJSON *o = e->path ? rel_at(root, e->path) : root;
  if (!o) return;
  cJSON *v = e->json ? e->json : cJSON_CreateNumber(e->num);
  e->json = NULL;
  if (cJSON_GetObjectItem(o, e->key)) cJSON_ReplaceItemInObject(o, e->key, v);
  else cJSON_AddItemToObject(o, e->key, v);
}

/* Opens the package with one manifest edit; returns the status. */
static bm_status open_edited(edit_ctx e, bm_package **pkg) {
  *pkg = NULL;
  if (!load_pkg()) return bm_status_make(BM_ERR_INTERNAL, "no package");
  uint8_t *b = malloc(g_pkg_size);
  memcpy(b, g_pkg, g_pkg_size);
  if (!rel_edit(b, g_pkg_size, apply_edit, &e)) {
    free(b);
    cJSON_Delete(e.json);
    return bm_status_make(BM_ERR_INTERNAL, "edit %s.%s failed", e.path ? e.path : "", e.key);
  }
  const char *p = rel_path("edited.bmpk");
  rel_write(p, b, g_pkg_size);
  free(b);
  return bm_package_open(p, NULL, pkg);
}

static void expect_refused(edit_ctx e, bm_code code, const char *substr) {
  bm_package *pkg = NULL;
  bm_status s = open_edited(e, &pkg);
  CHECK_ERR(s, code, substr);
  CHECK(pkg == NULL);
  bm_package_close(pkg);
}

static void zstd_bomb_edit(cJSON *root, void *ctx) {
  cJSON *w = rel_at(root, "weights.0");
  cJSON_ReplaceItemInObject(w, "shape", cJSON_Parse("[274877906944]")); /* 2^38 f32 = 2^40 bytes */
  cJSON_ReplaceItemInObject(w, "size", cJSON_CreateNumber((double)T40));
  cJSON_ReplaceItemInObject(w, "compression", cJSON_CreateString("zstd"));
  *(uint64_t *)ctx = (uint64_t)cJSON_GetObjectItem(w, "offset")->valuedouble;
}

static void test_zstd_bomb(void) {
  uint8_t *b = malloc(g_pkg_size);
  memcpy(b, g_pkg, g_pkg_size);
  uint64_t off = 0;
  CHECK(rel_edit(b, g_pkg_size, zstd_bomb_edit, &off));
  /* a zstd frame header: magic, single segment with an 8-byte content size
   * of 2^40, then one last RLE block of 128 KiB */
  static const uint8_t frame[] = {0x28, 0xb5, 0x2f, 0xfd, 0xe0, 0, 0, 0, 0, 0, 1, 0, 0, 0x03, 0x00, 0x10, 0x00};
  if (off && off + sizeof frame < g_pkg_size) memcpy(b + off, frame, sizeof frame);
  rel_write(rel_path("bomb.bmpk"), b, g_pkg_size);
  free(b);
  bm_package *pkg = NULL;
  CHECK_ERR(bm_package_open(rel_path("bomb.bmpk"), NULL, &pkg), BM_ERR_CORRUPT,
            "1024 bytes of zstd data cannot hold 1099511627776 bytes");
}

static void test_manifest_limits(void) {
  if (!load_pkg()) {
    CHECK_MSG(0, "cannot compile the small package");
    return;
  }
  /* an unedited round trip through rel_edit opens */
  bm_package *pkg = NULL;
  CHECK_OK(open_edited((edit_ctx){.key = "extra_key_ignored", .num = 1}, &pkg));
  bm_package_close(pkg);
  /* a dimension of 2^40 in a weight, an input and a state */
  expect_refused((edit_ctx){"weights.0", "shape", 0, cJSON_Parse("[1099511627776, 1099511627776]")},
                 BM_ERR_CORRUPT, "weights[0].shape");
  expect_refused((edit_ctx){"weights.0", "shape", 0, cJSON_Parse("[1099511627776]")}, BM_ERR_CORRUPT, "size");
  expect_refused((edit_ctx){"functions.0.inputs.0", "shape", 0, cJSON_Parse("[{\"sym\":0,\"mul\":1,\"add\":0}, 1099511627776]")},
                 BM_ERR_CORRUPT, "inputs 'x' needs 35184372088832 bytes");
  expect_refused((edit_ctx){NULL, "states", 0,
                            cJSON_Parse("[{\"name\":\"kv\",\"dtype\":\"f32\",\"shape\":[1099511627776,1024],"
                                        "\"nbytes\":4503599627370496}]")},
                 BM_ERR_CORRUPT, "states[0]");
  /* states that together pass 2^40 bytes */
  expect_refused((edit_ctx){NULL, "states", 0,
                            cJSON_Parse("[{\"name\":\"a\",\"dtype\":\"i8\",\"shape\":[1099511627776],\"nbytes\":1099511627776},"
                                        "{\"name\":\"b\",\"dtype\":\"i8\",\"shape\":[64],\"nbytes\":64}]")},
                 BM_ERR_CORRUPT, "2^40");
  /* arenas, scratch and task counts past their limits */
  expect_refused((edit_ctx){NULL, "arena_bytes", 2.0 * T40}, BM_ERR_CORRUPT, "arena_bytes");
  expect_refused((edit_ctx){"functions.0.kernels.0", "scratch", 8.0 * (1ll << 32)}, BM_ERR_CORRUPT, "scratch");
  expect_refused((edit_ctx){"functions.0.kernels.0", "tasks", 0,
                            cJSON_Parse("{\"sym\":-1,\"mul\":0,\"add\":1099511627776,\"div\":1,\"factor\":1099511627776}")},
                 BM_ERR_CORRUPT, "task count");
  /* a compressed weight whose zstd frame claims 2^40 bytes: refused before
   * the buffer is allocated (regression: it used to be allocated) */
  test_zstd_bomb();
  /* huge counts are bounded by the manifest's own size: more kernel
   * arguments than the ABI allows, 4097 functions */
  cJSON *args = cJSON_CreateArray();
  for (int i = 0; i < 65; i++) cJSON_AddItemToArray(args, cJSON_Parse("{\"weight\":0}"));
  expect_refused((edit_ctx){"functions.0.kernels.0", "args", 0, args}, BM_ERR_CORRUPT, "at most 64");
  /* a header that declares a 2^40-byte manifest or file: refused before reading it */
  uint8_t *b = malloc(g_pkg_size);
  memcpy(b, g_pkg, g_pkg_size);
  bm_wr_u64(b + BM_PKG_OFF_MANIFEST_SIZE, (uint64_t)T40);
  bm_wr_u64(b + BM_PKG_OFF_FILE_SIZE, (uint64_t)T40 * 2);
  bm_wr_u64(b + BM_PKG_OFF_HEADER_HASH, XXH3_64bits(b, BM_PKG_OFF_HEADER_HASH));
  rel_write(rel_path("bighdr.bmpk"), b, g_pkg_size);
  CHECK_ERR(bm_package_open(rel_path("bighdr.bmpk"), NULL, &pkg), BM_ERR_CORRUPT,
            "manifest (offset 64, size 1099511627776) lies outside");
  free(b);
}

static uint64_t machine_memory(void) {
  struct sysinfo si;
  if (sysinfo(&si) != 0) return 0;
  return ((uint64_t)si.totalram + si.totalswap) * (si.mem_unit ? si.mem_unit : 1);
}

static void arena_edit(cJSON *root, void *ctx) {
  cJSON_ReplaceItemInObject(root, "arena_bytes", cJSON_CreateNumber(1e11));
  cJSON_ReplaceItemInObject(rel_at(root, "functions.0"), "arena_bytes", cJSON_CreateNumber(1e11));
}

/* A package asking for a 100 GB arena opens (the size is valid) but a
 * session on a smaller machine is refused before allocating. */
static void test_100gb_arena(void) {
  if (!load_pkg()) return;
  uint8_t *b = malloc(g_pkg_size);
  memcpy(b, g_pkg, g_pkg_size);
  CHECK(rel_edit(b, g_pkg_size, arena_edit, NULL));
  rel_write(rel_path("arena100g.bmpk"), b, g_pkg_size);
  free(b);
  bm_package *pkg = NULL;
  CHECK_OK(bm_package_open(rel_path("arena100g.bmpk"), NULL, &pkg));
  if (!pkg) return;
  CHECK(bm_package_arena_bytes(pkg) == 100000000000ull);
  bm_session *s = NULL;
  bm_status st = bm_session_create(pkg, NULL, &s);
  if (machine_memory() < 100000000000ull) {
    CHECK_ERR(st, BM_ERR_OUT_OF_MEMORY, "arena 100000000000 bytes");
    CHECK(s == NULL);
  } else { /* a big machine: the arena is mapped lazily */
    bm_status_free(st);
  }
  bm_session_destroy(s);
  bm_package_close(pkg);
}

/* ------------------------------------------------------------------ skew */

static void test_version_skew(void) {
  if (!load_pkg()) return;
  uint8_t *b = malloc(g_pkg_size);
  memcpy(b, g_pkg, g_pkg_size);
  bm_wr_u32(b + BM_PKG_OFF_VERSION, 2); /* a newer writer; the header hash is checked after the version */
  rel_write(rel_path("v2.bmpk"), b, g_pkg_size);
  bm_package *pkg = NULL;
  CHECK_ERR(bm_package_open(rel_path("v2.bmpk"), NULL, &pkg), BM_ERR_INCOMPATIBLE,
            "package format version 2, this runtime reads version 1");
  bm_wr_u32(b + BM_PKG_OFF_VERSION, 0); /* an older one */
  rel_write(rel_path("v0.bmpk"), b, g_pkg_size);
  CHECK_ERR(bm_package_open(rel_path("v0.bmpk"), NULL, &pkg), BM_ERR_INCOMPATIBLE,
            "package format version 0, this runtime reads version 1");
  free(b);
  /* the manifest's own version, re-signed */
  expect_refused((edit_ctx){NULL, "format_version", 3}, BM_ERR_INCOMPATIBLE,
                 "package format version 3, this runtime reads version 1");
}

static void test_target_skew(void) {
  if (!load_pkg()) return;
  expect_refused((edit_ctx){"target", "triple", 0, cJSON_CreateString("aarch64-unknown-linux-gnu")},
                 BM_ERR_INCOMPATIBLE, "built for aarch64-unknown-linux-gnu, this host is x86_64");
  expect_refused((edit_ctx){"target", "backend", 0, cJSON_CreateString("cuda")}, BM_ERR_INCOMPATIBLE, "cannot be loaded here");
  expect_refused((edit_ctx){"target", "backend", 0, cJSON_CreateString("tpu")}, BM_ERR_INCOMPATIBLE, "'tpu'");
  expect_refused((edit_ctx){"code", "format", 0, cJSON_CreateString("macho-arm64")}, BM_ERR_INCOMPATIBLE,
                 "macho-arm64");
  expect_refused((edit_ctx){"target", "required", 0, cJSON_CreateString("avx2,amx-fp42")}, BM_ERR_INCOMPATIBLE,
                 "amx-fp42, which this runtime does not know");
}

/* AVX-512 code on a machine without AVX-512: a real package compiled for
 * x86-64-v4, opened with avx512f masked (bm_cpu_test_mask simulates the
 * older CPU), is refused with a clear error; it never reaches the code. */
static void test_missing_cpu_feature(void) {
  const char *p = rel_path("v4.bmpk");
  if (!rel_compile(p, 0, "x86-64-v4")) {
    CHECK_MSG(0, "cannot compile for x86-64-v4");
    return;
  }
  bm_package *pkg = NULL;
  bm_cpu_test_mask("avx512f");
  CHECK_ERR(bm_package_open(p, NULL, &pkg), BM_ERR_INCOMPATIBLE,
            "package needs CPU feature avx512f, which this CPU lacks");
  CHECK(pkg == NULL);
  bm_cpu_test_mask(NULL);
  if (bm_cpu_has_feature("avx512f") == 1 && bm_cpu_has_feature("avx512bw") == 1 &&
      bm_cpu_has_feature("avx512dq") == 1 && bm_cpu_has_feature("avx512vl") == 1) {
    CHECK_OK(bm_package_open(p, NULL, &pkg)); /* this machine has it: it runs */
    rel_outputs o;
    if (pkg) CHECK(rel_run(pkg, &o));
    bm_package_close(pkg);
  } else {
    CHECK_ERR(bm_package_open(p, NULL, &pkg), BM_ERR_INCOMPATIBLE, "which this CPU lacks");
  }
  /* and an edited required list, re-signed */
  bm_cpu_test_mask("avx2");
  expect_refused((edit_ctx){"target", "required", 0, cJSON_CreateString("sse2,avx2")}, BM_ERR_INCOMPATIBLE,
                 "package needs CPU feature avx2, which this CPU lacks");
  bm_cpu_test_mask(NULL);
}

/* ------------------------------------------------------------------ checkpoints and arrays */

static void test_file_limits(void) {
  /* safetensors: a header length of 2^62, a (2^40, 2^40) tensor */
  uint8_t st[64] = {0};
  bm_wr_u64(st, 1ull << 62);
  memcpy(st + 8, "{}", 2);
  const char *p = rel_path("huge.safetensors");
  rel_write(p, st, sizeof st);
  bm_st_file *f = NULL;
  CHECK_ERR(bm_st_open(p, &f), BM_ERR_CORRUPT, "huge.safetensors");
  const char *hdr = "{\"t\":{\"dtype\":\"F32\",\"shape\":[1099511627776,1099511627776],\"data_offsets\":[0,16]}}";
  size_t hl = strlen(hdr);
  uint8_t *b = calloc(1, 8 + hl + 16);
  bm_wr_u64(b, hl);
  memcpy(b + 8, hdr, hl);
  rel_write(p, b, 8 + hl + 16);
  CHECK_ERR(bm_st_open(p, &f), BM_ERR_CORRUPT, "'t'");
  CHECK(f == NULL);
  free(b);
  /* npy: a (2^40, 2^40) array, and a (2^40,) array in a tiny file: refused
   * before the data buffer is allocated */
  static const char *shapes[] = {"(1099511627776, 1099511627776)", "(1099511627776,)",
                                 "(4611686018427387904, 4)"};
  for (int i = 0; i < 3; i++) {
    char d[128];
    int len = snprintf(d, sizeof d, "{'descr': '<f4', 'fortran_order': False, 'shape': %s, }", shapes[i]);
    while ((10 + len + 1) % 64) d[len++] = ' ';
    d[len++] = '\n';
    uint8_t img[256] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (uint8_t)len, 0};
    memcpy(img + 10, d, (size_t)len);
    bm_npy_array a;
    CHECK_ERR(bm_npy_parse(img, 10 + (size_t)len + 16, "huge.npy", &a), BM_ERR_CORRUPT, "huge.npy");
    CHECK(a.data == NULL);
  }
}

int main(void) {
  RUN(test_builder_huge_dims);
  RUN(test_manifest_limits);
  RUN(test_100gb_arena);
  RUN(test_version_skew);
  RUN(test_target_skew);
  RUN(test_missing_cpu_feature);
  RUN(test_file_limits);
  free(g_pkg);
  return bm_test_finish();
}
