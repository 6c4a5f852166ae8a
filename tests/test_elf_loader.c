/* test_elf_loader.c - the ELF relocatable-object loader: load an object that
 * cc compiles at test time, call its functions, then fuzz it with byte flips
 * and truncations (the loader must fail cleanly, never crash). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../runtime/elf_loader.h"
#include "testutil.h"

static const char *src_main =
    "extern float expf(float);\n"
    "extern void *memcpy(void *, const void *, unsigned long);\n"
    "static const float table[8] = {1.5f, 2.5f, 3.5f, 4.5f, 5.5f, 6.5f, 7.5f, 8.5f};\n"
    "float lookup(int i) { return table[i & 7] * 0.5f; }\n"
    "__attribute__((noinline)) float sq(float x) { return x * x + 0.25f; }\n"
    "float sum_sq(const float *x, int n) { float s = 0; for (int i = 0; i < n; i++) s += sq(x[i]); return s; }\n"
    "float my_exp(float x) { return expf(x) * 2.0f; }\n"
    "void copy(void *d, const void *s, unsigned long n) { memcpy(d, s, n); }\n"
    "int counter;\n"
    "int bump(void) { return ++counter; }\n"
    "int initialized = 42;\n"
    "int get_init(void) { return initialized; }\n"
    "const char *greeting(void) { return \"hello, loader\"; }\n"
    "float (*fp_table[2])(float) = {sq, my_exp};\n"
    "float call_fp(int i, float x) { return fp_table[i & 1](x); }\n"
    "double big[4] = {1.0, 2.0, 3.0, 4.0};\n"
    "double sum_big(void) { double s = 0; for (int i = 0; i < 4; i++) s += big[i]; return s; }\n";

static const char *src_undef =
    "extern float some_missing_function(float);\n"
    "float f(float x) { return some_missing_function(x) + 1.0f; }\n";

static int have_cc = -1;

/* Compiles src with extra flags into an object; returns malloc'd bytes. */
static void *compile(const char *name, const char *src, const char *flags, size_t *size) {
  *size = 0;
  if (have_cc < 0) have_cc = system("cc --version >/dev/null 2>&1") == 0;
  if (!have_cc) return NULL;
  char cpath[512], opath[512], cmd[1400];
  snprintf(cpath, sizeof cpath, "%s/%s.c", bm_test_tmpdir(), name);
  snprintf(opath, sizeof opath, "%s/%s.o", bm_test_tmpdir(), name);
  FILE *f = fopen(cpath, "w");
  if (!f) return NULL;
  fputs(src, f);
  fclose(f);
  snprintf(cmd, sizeof cmd, "cc -c -fPIC -O2 -fno-stack-protector %s -o %s %s", flags, opath, cpath);
  if (system(cmd) != 0) return NULL;
  f = fopen(opath, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  void *buf = malloc((size_t)n);
  if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
    free(buf);
    buf = NULL;
  }
  fclose(f);
  *size = buf ? (size_t)n : 0;
  return buf;
}

static void check_main_object(const char *flags) {
  size_t size;
  void *obj = compile("main", src_main, flags, &size);
  if (!obj) {
    fprintf(stderr, "skip: cc not available or failed\n");
    return;
  }
  bm_elf_image *img = NULL;
  CHECK_OK(bm_elf_load(obj, size, NULL, &img));
  free(obj); /* the image must not depend on the input bytes */
  if (!img) return;

  float (*lookup)(int) = (float (*)(int))bm_elf_lookup(img, "lookup");
  float (*sum_sq)(const float *, int) = (float (*)(const float *, int))bm_elf_lookup(img, "sum_sq");
  float (*my_exp)(float) = (float (*)(float))bm_elf_lookup(img, "my_exp");
  void (*copy)(void *, const void *, unsigned long) =
      (void (*)(void *, const void *, unsigned long))bm_elf_lookup(img, "copy");
  int (*bump)(void) = (int (*)(void))bm_elf_lookup(img, "bump");
  int (*get_init)(void) = (int (*)(void))bm_elf_lookup(img, "get_init");
  const char *(*greeting)(void) = (const char *(*)(void))bm_elf_lookup(img, "greeting");
  float (*call_fp)(int, float) = (float (*)(int, float))bm_elf_lookup(img, "call_fp");
  double (*sum_big)(void) = (double (*)(void))bm_elf_lookup(img, "sum_big");
  CHECK(lookup && sum_sq && my_exp && copy && bump && get_init && greeting && call_fp && sum_big);
  CHECK(bm_elf_lookup(img, "table") == NULL); /* static: not exported */
  CHECK(bm_elf_lookup(img, "no_such_symbol") == NULL);
  CHECK(bm_elf_lookup(img, "counter") != NULL);
  if (!(lookup && sum_sq && my_exp && copy && bump && get_init && greeting && call_fp && sum_big)) {
    bm_elf_unload(img);
    return;
  }
  CHECK(lookup(3) == 2.25f);
  CHECK(lookup(9) == 1.25f);
  float xs[3] = {1, 2, 3};
  CHECK(sum_sq(xs, 3) == 14.75f);
  CHECK(fabsf(my_exp(1.0f) - 2.0f * expf(1.0f)) < 1e-5f);
  char dst[16] = {0};
  copy(dst, "abcdefgh", 9);
  CHECK(strcmp(dst, "abcdefgh") == 0);
  CHECK(bump() == 1 && bump() == 2);
  CHECK(*(int *)bm_elf_lookup(img, "counter") == 2);
  CHECK(get_init() == 42);
  CHECK(strcmp(greeting(), "hello, loader") == 0);
  CHECK(call_fp(0, 3.0f) == 9.25f);
  CHECK(fabsf(call_fp(1, 0.0f) - 2.0f) < 1e-6f);
  CHECK(sum_big() == 10.0);
  CHECK(bm_elf_image_size(img) > 0);
  bm_elf_unload(img);
}

static void test_load_and_call(void) { check_main_object(""); }
static void test_function_sections(void) { check_main_object("-ffunction-sections -fdata-sections"); }
static void test_no_unwind_tables(void) { check_main_object("-fno-asynchronous-unwind-tables -O1"); }

static float fake_expf(float x) { return 100.0f + x; }

static void test_custom_imports(void) {
  size_t size;
  void *obj = compile("main2", src_main, "", &size);
  if (!obj) return;
  bm_elf_import imports[] = {{"expf", (void *)fake_expf}, {"memcpy", (void *)memcpy}, {NULL, NULL}};
  bm_elf_image *img = NULL;
  CHECK_OK(bm_elf_load(obj, size, imports, &img));
  float (*my_exp)(float) = (float (*)(float))bm_elf_lookup(img, "my_exp");
  CHECK(my_exp && my_exp(1.0f) == 202.0f);
  bm_elf_unload(img);
  /* without memcpy in the table, the object cannot load */
  bm_elf_import few[] = {{"expf", (void *)fake_expf}, {NULL, NULL}};
  CHECK_ERR(bm_elf_load(obj, size, few, &img), BM_ERR_CORRUPT, "memcpy");
  CHECK(img == NULL);
  free(obj);
}

static void test_unresolved(void) {
  size_t size;
  void *obj = compile("undef", src_undef, "", &size);
  if (!obj) return;
  bm_elf_image *img = (bm_elf_image *)1;
  CHECK_ERR(bm_elf_load(obj, size, NULL, &img), BM_ERR_CORRUPT, "some_missing_function");
  CHECK(img == NULL);
  free(obj);
}

static void test_bad_input(void) {
  bm_elf_image *img;
  CHECK_ERR(bm_elf_load(NULL, 10, NULL, &img), BM_ERR_INVALID_ARGUMENT, NULL);
  CHECK_ERR(bm_elf_load("x", 1, NULL, NULL), BM_ERR_INVALID_ARGUMENT, NULL);
  CHECK_ERR(bm_elf_load("hello", 5, NULL, &img), BM_ERR_CORRUPT, "too small");
  static const char junk[128] = "\x7f" "ELF";
  CHECK_ERR(bm_elf_load(junk, sizeof junk, NULL, &img), BM_ERR_CORRUPT, NULL);
  bm_elf_unload(NULL);
  CHECK(bm_elf_lookup(NULL, "x") == NULL);

  size_t size;
  uint8_t *obj = compile("main3", src_main, "", &size);
  if (!obj) return;
  obj[16] = 3; /* e_type = ET_DYN */
  CHECK_ERR(bm_elf_load(obj, size, NULL, &img), BM_ERR_CORRUPT, "ET_REL");
  obj[16] = 1;
  obj[18] = 183; /* e_machine = EM_AARCH64 */
  CHECK_ERR(bm_elf_load(obj, size, NULL, &img), BM_ERR_INCOMPATIBLE, NULL);
  free(obj);
}

/* Random byte flips and truncations: every outcome must be an error or a
 * loaded image, never a crash (the code itself is not called). */
static void test_fuzz(void) {
  size_t size;
  uint8_t *obj = compile("fuzz", src_main, "-ffunction-sections", &size);
  if (!obj) return;
  uint8_t *buf = malloc(size);
  uint64_t rng = 12345;
  int loaded = 0, failed = 0;
  uint64_t shoff;
  memcpy(&shoff, obj + 0x28, 8);
  for (int iter = 0; iter < 400; iter++) {
    memcpy(buf, obj, size);
    int nflips = 1 + (int)(bm_test_rand_u64(&rng) % 4);
    for (int k = 0; k < nflips; k++) {
      uint64_t r = bm_test_rand_u64(&rng);
      size_t pos;
      switch (r % 3) {
        case 0: pos = (size_t)(r >> 8) % 64; break;                               /* ELF header */
        case 1: pos = shoff < size ? (size_t)(shoff + (r >> 8) % (size - shoff)) : 0; break; /* section headers */
        default: pos = (size_t)(r >> 8) % size; break;                           /* anywhere */
      }
      buf[pos] ^= (uint8_t)(1u << ((r >> 40) % 8));
      if ((r >> 50) % 4 == 0) buf[pos] = (uint8_t)(r >> 56); /* sometimes a whole random byte */
    }
    bm_elf_image *img = NULL;
    bm_status s = bm_elf_load(buf, size, NULL, &img);
    if (s) {
      CHECK(img == NULL);
      CHECK(bm_status_message(s)[0] != 0);
      failed++;
    } else {
      loaded++;
      (void)bm_elf_lookup(img, "lookup");
    }
    bm_status_free(s);
    bm_elf_unload(img);
  }
  for (int iter = 0; iter < 120; iter++) {
    size_t n = iter < 64 ? (size_t)iter : (size_t)(bm_test_rand_u64(&rng) % size);
    bm_elf_image *img = NULL;
    bm_status s = bm_elf_load(obj, n, NULL, &img);
    CHECK(s != NULL); /* the section headers sit at the end: any cut breaks it */
    bm_status_free(s);
    bm_elf_unload(img);
  }
  fprintf(stderr, "  fuzz: %d loaded, %d rejected\n", loaded, failed);
  CHECK(failed > 0);
  free(buf);
  free(obj);
}

int main(void) {
  RUN(test_load_and_call);
  RUN(test_function_sections);
  RUN(test_no_unwind_tables);
  RUN(test_custom_imports);
  RUN(test_unresolved);
  RUN(test_bad_input);
  RUN(test_fuzz);
  return bm_test_finish();
}
