/* test_corruption.c - corruption sweeps on a real compiled package (the
 * builders, passes, LLVM kernels and package writer of rel_package.h, plain
 * and zstd-compressed): every byte of the header and the manifest flipped,
 * a sample of the padding, weight and code bytes flipped, truncation at every
 * section boundary, trailing data. Each damaged file must be refused with a
 * clear error (corrupt / incompatible) before its data is used, or be shown
 * harmless: it opens, runs and gives bit-identical outputs.
 * With BM_SEED_OUT=DIR the packages are also copied to DIR (fuzz seeds). */
#include "rel_package.h"

/* Section map of a package, from its manifest. */
typedef struct layout {
  uint64_t manifest_end;
  int nweights;
  uint64_t woff[64], wsize[64];
  uint64_t code_off, code_size;
} layout;

static bool read_layout(const uint8_t *b, layout *l) {
  memset(l, 0, sizeof *l);
  uint64_t ms = bm_rd_u64(b + BM_PKG_OFF_MANIFEST_SIZE);
  l->manifest_end = 64 + ms;
  cJSON *j = cJSON_ParseWithLength((const char *)b + 64, ms);
  if (!j) return false;
  const cJSON *w;
  cJSON_ArrayForEach(w, cJSON_GetObjectItem(j, "weights")) {
    if (l->nweights == 64) break;
    l->woff[l->nweights] = (uint64_t)cJSON_GetObjectItem(w, "offset")->valuedouble;
    l->wsize[l->nweights] = (uint64_t)cJSON_GetObjectItem(w, "stored_size")->valuedouble;
    l->nweights++;
  }
  const cJSON *c = cJSON_GetObjectItem(j, "code");
  l->code_off = (uint64_t)cJSON_GetObjectItem(c, "offset")->valuedouble;
  l->code_size = (uint64_t)cJSON_GetObjectItem(c, "size")->valuedouble;
  cJSON_Delete(j);
  return l->nweights > 0 && l->code_size > 0;
}

/* Where does byte i lie? */
enum { IN_HEADER, IN_MANIFEST, IN_WEIGHT, IN_CODE, IN_PADDING };
static int region(const layout *l, uint64_t i) {
  if (i < 64) return IN_HEADER;
  if (i < l->manifest_end) return IN_MANIFEST;
  for (int k = 0; k < l->nweights; k++)
    if (i >= l->woff[k] && i < l->woff[k] + l->wsize[k]) return IN_WEIGHT;
  if (i >= l->code_off && i < l->code_off + l->code_size) return IN_CODE;
  return IN_PADDING;
}

static rel_outputs g_ref;

/* 0: refused with a clear error; 1: opened, ran, identical outputs;
 * -1: opened but failed to run or gave other outputs (silent damage). */
static int outcome(const char *path) {
  bm_package *pkg = NULL;
  bm_status s = bm_package_open(path, NULL, &pkg);
  if (s) {
    bm_code c = bm_status_code(s);
    CHECK_MSG(c == BM_ERR_CORRUPT || c == BM_ERR_INCOMPATIBLE, "unexpected code %s: %s", bm_code_name(c),
              bm_status_message(s));
    CHECK(strlen(bm_status_message(s)) > 20 && strstr(bm_status_message(s), path)); /* names the file */
    CHECK(pkg == NULL);
    bm_status_free(s);
    return 0;
  }
  rel_outputs got;
  memset(&got, 0, sizeof got);
  bool ran = rel_run(pkg, &got);
  bm_package_close(pkg);
  return ran && memcmp(&got, &g_ref, sizeof got) == 0 ? 1 : -1;
}

static void poke(FILE *f, uint64_t pos, uint8_t v) {
  fseek(f, (long)pos, SEEK_SET);
  fputc(v, f);
  fflush(f);
}

static void sweep(const char *name, int compress) {
  const char *src = rel_path(name);
  if (!rel_compile(src, compress, NULL)) {
    CHECK_MSG(0, "cannot compile the small package");
    return;
  }
  const char *seed_dir = getenv("BM_SEED_OUT");
  size_t n;
  uint8_t *b = rel_read(src, &n);
  if (!b) return;
  if (seed_dir && *seed_dir) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", seed_dir, name);
    rel_write(p, b, n);
  }
  layout l;
  CHECK(read_layout(b, &l));
  bm_package *pkg = NULL;
  CHECK_OK(bm_package_open(src, NULL, &pkg));
  if (!pkg) {
    free(b);
    return;
  }
  CHECK(rel_run(pkg, &g_ref));
  bm_package_close(pkg);

  const char *path = rel_path("flip.bmpk");
  rel_write(path, b, n);
  FILE *f = fopen(path, "r+b");
  if (!f) return;
  int count[5][2] = {{0}}; /* region x {refused, harmless} */
  /* every byte of the header and the manifest, with two different flips */
  for (uint64_t i = 0; i < l.manifest_end; i++)
    for (int k = 0; k < 2; k++) {
      poke(f, i, b[i] ^ (k ? 0xff : 0x01));
      int r = outcome(path);
      CHECK_MSG(r >= 0, "%s: flip at byte %llu (header/manifest) ran with wrong outputs", name, (unsigned long long)i);
      if (r >= 0) count[region(&l, i)][r]++;
      poke(f, i, b[i]);
    }
  /* a sample of the rest: 300 positions in weights, code and padding */
  uint64_t rng = 1234;
  int per[5] = {0};
  for (int tries = 0; tries < 20000 && (per[IN_WEIGHT] < 150 || per[IN_CODE] < 150 || per[IN_PADDING] < 40);
       tries++) {
    uint64_t i = l.manifest_end + bm_test_rand_u64(&rng) % (n - l.manifest_end);
    int reg = region(&l, i);
    if (per[reg] >= (reg == IN_PADDING ? 40 : 150)) continue;
    per[reg]++;
    poke(f, i, b[i] ^ (uint8_t)(1 + bm_test_rand_u64(&rng) % 255));
    int r = outcome(path);
    CHECK_MSG(r >= 0, "%s: flip at byte %llu ran with wrong outputs", name, (unsigned long long)i);
    /* weights and code are checksummed: damage there is always refused */
    if (reg == IN_WEIGHT || reg == IN_CODE)
      CHECK_MSG(r == 0, "%s: flip at byte %llu (%s) was not detected", name, (unsigned long long)i,
                reg == IN_WEIGHT ? "weight" : "code");
    if (r >= 0) count[reg][r]++;
    poke(f, i, b[i]);
  }
  fclose(f);
  CHECK(count[IN_HEADER][0] > 0 && count[IN_MANIFEST][0] > 0 && count[IN_WEIGHT][0] > 0 && count[IN_CODE][0] > 0);
  fprintf(stderr,
          "  %s (%zu bytes): refused/harmless flips: header %d/%d, manifest %d/%d, weights %d/%d, code %d/%d, "
          "padding %d/%d\n",
          name, n, count[0][0], count[0][1], count[1][0], count[1][1], count[2][0], count[2][1], count[3][0],
          count[3][1], count[4][0], count[4][1]);

  /* truncation at every section boundary (and one byte either side) */
  uint64_t cuts[256];
  int nc = 0;
  uint64_t base[] = {0, 1, 8, 12, 16, 63, 64, l.manifest_end - 1, l.manifest_end, l.code_off, l.code_off + 1,
                     l.code_off + l.code_size - 1, n - 1};
  for (size_t k = 0; k < sizeof base / sizeof *base; k++) cuts[nc++] = base[k];
  for (int k = 0; k < l.nweights && nc < 250; k++) {
    cuts[nc++] = l.woff[k];
    cuts[nc++] = l.woff[k] + 1;
    cuts[nc++] = l.woff[k] + l.wsize[k] - 1;
    cuts[nc++] = l.woff[k] + l.wsize[k];
  }
  const char *tpath = rel_path("trunc.bmpk");
  for (int k = 0; k < nc; k++) {
    if (cuts[k] >= n) continue;
    rel_write(tpath, b, (size_t)cuts[k]);
    pkg = NULL;
    bm_status s = bm_package_open(tpath, NULL, &pkg);
    CHECK_MSG(s && bm_status_code(s) == BM_ERR_CORRUPT, "%s cut at %llu: %s", name, (unsigned long long)cuts[k],
              s ? bm_status_message(s) : "opened");
    if (s && cuts[k] >= 64)
      CHECK_MSG(strstr(bm_status_message(s), "truncated"), "cut at %llu: %s", (unsigned long long)cuts[k],
                bm_status_message(s));
    if (s && cuts[k] >= l.code_off)
      CHECK_MSG(strstr(bm_status_message(s), "code section"), "cut at %llu: %s", (unsigned long long)cuts[k],
                bm_status_message(s));
    CHECK(pkg == NULL);
    bm_status_free(s);
    bm_package_close(pkg);
  }
  /* trailing data */
  uint8_t *longer = calloc(1, n + 100);
  memcpy(longer, b, n);
  rel_write(tpath, longer, n + 100);
  CHECK_ERR(bm_package_open(tpath, NULL, &pkg), BM_ERR_CORRUPT, "trailing data");
  free(longer);
  free(b);
}

static void test_sweep_plain(void) { sweep("rel_small.bmpk", 0); }
static void test_sweep_zstd(void) { sweep("rel_small_zstd.bmpk", 1); }

/* Damage that keeps the checksums valid (a forged or re-signed manifest) is
 * caught by validation: every byte of the manifest replaced by a JSON-ish
 * character and re-signed must be refused or open cleanly (open only: a
 * re-signed manifest is trusted code, see docs/reliability.md). */
static void test_resigned_manifest(void) {
  const char *src = rel_path("rel_resign.bmpk");
  if (!rel_compile(src, 1, NULL)) return;
  size_t n;
  uint8_t *b = rel_read(src, &n);
  if (!b) return;
  uint64_t ms = bm_rd_u64(b + BM_PKG_OFF_MANIFEST_SIZE);
  static const char repl[] = "0123456789-e{}[]\",: x";
  const char *path = rel_path("resigned.bmpk");
  rel_write(path, b, n);
  FILE *f = fopen(path, "r+b");
  if (!f) return;
  uint64_t rng = 77;
  int refused = 0, opened = 0;
  for (uint64_t i = 64; i < 64 + ms; i++) {
    uint8_t old = b[i];
    b[i] = (uint8_t)repl[bm_test_rand_u64(&rng) % (sizeof repl - 1)];
    rel_resign(b);
    fseek(f, 0, SEEK_SET);
    fwrite(b, 1, 64, f);
    poke(f, i, b[i]);
    bm_package *pkg = NULL;
    bm_status s = bm_package_open(path, NULL, &pkg);
    if (s) {
      bm_code c = bm_status_code(s);
      CHECK_MSG(c == BM_ERR_CORRUPT || c == BM_ERR_INCOMPATIBLE || c == BM_ERR_NOT_FOUND,
                "byte %llu: %s", (unsigned long long)i, bm_status_message(s));
      refused++;
    } else {
      opened++;
      bm_session *ss = NULL;
      bm_status s2 = bm_session_create(pkg, NULL, &ss);
      CHECK(s2 == NULL || bm_status_code(s2) == BM_ERR_OUT_OF_MEMORY);
      bm_status_free(s2);
      bm_session_destroy(ss);
    }
    bm_status_free(s);
    bm_package_close(pkg);
    b[i] = old;
    poke(f, i, old);
  }
  fclose(f);
  fprintf(stderr, "  re-signed manifest mutations: %d refused, %d opened\n", refused, opened);
  CHECK(refused > 0);
  free(b);
}

int main(void) {
  RUN(test_sweep_plain);
  RUN(test_sweep_zstd);
  RUN(test_resigned_manifest);
  return bm_test_finish();
}
