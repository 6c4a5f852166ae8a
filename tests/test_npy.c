/* test_npy.c - .npy writer/reader round trips, numpy-compatible headers
 * (versions 1-3), and malformed or unsupported files. */
#include <stdlib.h>
#include <string.h>

#include "../runtime/npy.h"
#include "testutil.h"

static const char *tmp(const char *name) {
  static char buf[4][1024];
  static int k;
  char *p = buf[k++ % 4];
  snprintf(p, 1024, "%s/%s", bm_test_tmpdir(), name);
  return p;
}

static uint8_t *read_all(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *buf = malloc((size_t)size + 1);
  *n = fread(buf, 1, (size_t)size, f);
  fclose(f);
  return buf;
}

static void write_bytes(const char *path, const void *data, size_t n) {
  FILE *f = fopen(path, "wb");
  CHECK(f != NULL);
  if (!f) return;
  if (n) fwrite(data, 1, n, f);
  fclose(f);
}

/* A .npy image: version `major`, header dict text `dict` (padded to 64 with
 * spaces and '\n'), then `data_bytes` bytes counting up from 0. */
static size_t make_npy(uint8_t *out, int major, const char *dict, size_t data_bytes) {
  size_t pre = major == 1 ? 10 : 12, n = strlen(dict);
  size_t total = (pre + n + 1 + 63) / 64 * 64, hlen = total - pre;
  memcpy(out, "\x93NUMPY", 6);
  out[6] = (uint8_t)major;
  out[7] = 0;
  for (size_t i = 0; i < pre - 8; i++) out[8 + i] = (uint8_t)(hlen >> (8 * i));
  memcpy(out + pre, dict, n);
  memset(out + pre + n, ' ', hlen - n - 1);
  out[total - 1] = '\n';
  for (size_t i = 0; i < data_bytes; i++) out[total + i] = (uint8_t)i;
  return total + data_bytes;
}

static void test_round_trip(void) {
  float f[6] = {1, -2, 3.5f, 1e-20f, -0.0f, 6};
  uint16_t h[6] = {0x3c00, 0xc000, 0x7bff, 1, 0x8000, 0x7e00};
  int32_t i32[6] = {0, -1, 2147483647, -2147483647 - 1, 5, 6};
  int64_t i64[6] = {0, -1, 9000000000000LL, 3, 4, 5};
  int8_t i8[6] = {-128, 127, 0, 1, -1, 2};
  struct {
    bm_dtype t;
    const void *data;
  } cases[] = {{BM_DTYPE_F32, f}, {BM_DTYPE_F16, h}, {BM_DTYPE_I32, i32}, {BM_DTYPE_I64, i64},
               {BM_DTYPE_I8, i8}};
  int64_t shapes[4][3] = {{6, 0, 0}, {2, 3, 0}, {1, 2, 3}, {0, 0, 0}};
  int ndims[4] = {1, 2, 3, 0};
  for (size_t c = 0; c < 5; c++)
    for (int s = 0; s < 4; s++) {
      const char *p = tmp("rt.npy");
      CHECK_OK(bm_npy_write(p, cases[c].t, ndims[s], shapes[s], cases[c].data));
      bm_npy_array a;
      CHECK_OK(bm_npy_read(p, &a));
      int64_t numel = ndims[s] == 0 ? 1 : 6;
      CHECK(a.dtype == cases[c].t && a.ndim == ndims[s] && a.numel == numel && !a.from_f64);
      for (int d = 0; d < ndims[s]; d++) CHECK(a.shape[d] == shapes[s][d]);
      CHECK(a.nbytes == bm_dtype_nbytes(cases[c].t, numel));
      CHECK(a.data && memcmp(a.data, cases[c].data, a.nbytes) == 0);
      CHECK((uintptr_t)a.data % 64 == 0);
      /* Data starts at a multiple of 64, as numpy writes it. */
      size_t n;
      uint8_t *raw = read_all(p, &n);
      CHECK(raw && (n - a.nbytes) % 64 == 0 && raw[n - a.nbytes - 1] == '\n');
      free(raw);
      bm_npy_free(&a);
      CHECK(a.data == NULL);
    }
  /* Zero elements. */
  int64_t zshape[2] = {0, 5};
  CHECK_OK(bm_npy_write(tmp("z.npy"), BM_DTYPE_F32, 2, zshape, NULL));
  bm_npy_array a;
  CHECK_OK(bm_npy_read(tmp("z.npy"), &a));
  CHECK(a.numel == 0 && a.nbytes == 0 && a.data == NULL && a.ndim == 2 && a.shape[1] == 5);
  bm_npy_free(&a);
}

/* Exactly the bytes numpy 1.x/2.x writes for np.save(f, np.zeros((2, 3), '<f4')). */
static void test_numpy_header_bytes(void) {
  float z[6] = {0};
  int64_t shape[2] = {2, 3};
  CHECK_OK(bm_npy_write(tmp("np.npy"), BM_DTYPE_F32, 2, shape, z));
  size_t n;
  uint8_t *raw = read_all(tmp("np.npy"), &n);
  const char *dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
  CHECK(raw && n == 128 + 24);
  if (!raw) return;
  CHECK(memcmp(raw, "\x93NUMPY\x01\x00\x76\x00", 10) == 0); /* header length 118 */
  CHECK(memcmp(raw + 10, dict, strlen(dict)) == 0);
  for (size_t i = 10 + strlen(dict); i < 127; i++) CHECK(raw[i] == ' ');
  CHECK(raw[127] == '\n');
  free(raw);
  /* 1-D shapes are written "(6,)". */
  int64_t s1 = 6;
  CHECK_OK(bm_npy_write(tmp("np1.npy"), BM_DTYPE_I8, 1, &s1, z));
  raw = read_all(tmp("np1.npy"), &n);
  CHECK(raw && strstr((const char *)raw + 10, "'descr': '|i1'") && strstr((const char *)raw + 10, "(6,)"));
  free(raw);
}

static void test_versions_and_variants(void) {
  uint8_t buf[512];
  bm_npy_array a;
  for (int v = 1; v <= 3; v++) {
    size_t n = make_npy(buf, v, "{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }", 8);
    CHECK_OK(bm_npy_parse(buf, n, "v.npy", &a));
    CHECK(a.dtype == BM_DTYPE_I32 && a.ndim == 1 && a.shape[0] == 2);
    int32_t want[2] = {0x03020100, 0x07060504};
    CHECK(a.data && memcmp(a.data, want, 8) == 0);
    bm_npy_free(&a);
  }
  /* Other key order, double quotes, Python 2 longs, no trailing comma. */
  size_t n = make_npy(buf, 1, "{\"shape\": (1L, 2L), \"fortran_order\": False, \"descr\": \"<f2\"}", 4);
  CHECK_OK(bm_npy_parse(buf, n, "var.npy", &a));
  CHECK(a.dtype == BM_DTYPE_F16 && a.ndim == 2 && a.shape[0] == 1 && a.shape[1] == 2);
  bm_npy_free(&a);
  /* float64 is converted to f32. */
  uint8_t img[256];
  size_t hdr = make_npy(img, 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }", 0);
  double d[3] = {1.5, -2.25, 1e300};
  memcpy(img + hdr, d, sizeof d);
  CHECK_OK(bm_npy_parse(img, hdr + sizeof d, "f8.npy", &a));
  CHECK(a.dtype == BM_DTYPE_F32 && a.from_f64 && a.numel == 3 && a.nbytes == 12);
  if (a.data) {
    float *f = a.data;
    CHECK(f[0] == 1.5f && f[1] == -2.25f && f[2] > 1e38f); /* overflow -> inf */
  }
  bm_npy_free(&a);
  write_bytes(tmp("f8.npy"), img, hdr + sizeof d);
  CHECK_OK(bm_npy_read(tmp("f8.npy"), &a));
  CHECK(a.from_f64 && a.data && ((float *)a.data)[1] == -2.25f);
  bm_npy_free(&a);
  /* '<i1' is accepted like '|i1'. */
  n = make_npy(buf, 1, "{'descr': '<i1', 'fortran_order': False, 'shape': (), }", 1);
  CHECK_OK(bm_npy_parse(buf, n, "i1.npy", &a));
  CHECK(a.dtype == BM_DTYPE_I8 && a.ndim == 0 && a.numel == 1);
  bm_npy_free(&a);
}

static void test_malformed(void) {
  static const struct {
    const char *dict;
    int major;
    long data;     /* data bytes written */
    bm_code code;
    const char *substr;
  } cases[] = {
      {"{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }", 1, 8, BM_ERR_UNSUPPORTED,
       "fortran_order is True"},
      {"{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", 1, 8, BM_ERR_UNSUPPORTED,
       "big-endian dtype '>f4'"},
      {"{'descr': '|b1', 'fortran_order': False, 'shape': (2,), }", 1, 2, BM_ERR_UNSUPPORTED,
       "dtype '|b1' is not supported"},
      {"{'descr': '<u2', 'fortran_order': False, 'shape': (2,), }", 1, 4, BM_ERR_UNSUPPORTED,
       "dtype '<u2'"},
      {"{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }", 1, 8,
       BM_ERR_UNSUPPORTED, "structured"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", 4, 8, BM_ERR_INCOMPATIBLE,
       "version 4.0"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", 1, 4, BM_ERR_CORRUPT,
       "data is 4 bytes but the header needs 8 (truncated)"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", 1, 12, BM_ERR_CORRUPT,
       "data is 12 bytes but the header needs 8"},
      {"{'descr': '<f4', 'fortran_order': False, }", 1, 8, BM_ERR_CORRUPT, "missing 'shape'"},
      {"{'descr': '<f4', 'shape': (2,), }", 1, 8, BM_ERR_CORRUPT, "missing 'fortran_order'"},
      {"{'fortran_order': False, 'shape': (2,), }", 1, 8, BM_ERR_CORRUPT, "missing 'descr'"},
      {"{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", 1, 8,
       BM_ERR_CORRUPT, "repeated key 'descr'"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}", 1, 8, BM_ERR_CORRUPT,
       "unexpected or repeated key 'x'"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }", 1, 8, BM_ERR_CORRUPT,
       "'shape' holds something other than integers"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2.5,), }", 1, 8, BM_ERR_CORRUPT,
       "'shape' is not a tuple"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': [2], }", 1, 8, BM_ERR_CORRUPT,
       "'shape' is not a tuple"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }", 1, 8,
       BM_ERR_CORRUPT, "'shape' overflows"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }", 1, 8,
       BM_ERR_CORRUPT, "'shape' holds something other than integers"},
      {"{'descr': '<f8', 'fortran_order': False, 'shape': (1152921504606846976, 2), }", 1, 8,
       BM_ERR_CORRUPT, "data size overflows"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1), }", 1, 4,
       BM_ERR_CORRUPT, "too many dimensions"},
      {"{'descr': '<f4', 'fortran_order': 0, 'shape': (2,), }", 1, 8, BM_ERR_CORRUPT,
       "'fortran_order' is not True or False"},
      {"{'descr': 5, 'fortran_order': False, 'shape': (2,), }", 1, 8, BM_ERR_CORRUPT,
       "'descr' is not a string"},
      {"'descr': '<f4'", 1, 8, BM_ERR_CORRUPT, "does not start with '{'"},
      {"{'descr': '<f4' 'fortran_order': False}", 1, 8, BM_ERR_CORRUPT, "expected ',' or '}'"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,)} x", 1, 8, BM_ERR_CORRUPT,
       "data after the dict"},
      {"{descr: '<f4'}", 1, 8, BM_ERR_CORRUPT, "expected a quoted key"},
      {"{'descr' '<f4'}", 1, 8, BM_ERR_CORRUPT, "expected ':'"},
      {"{'descr': '<f4", 1, 8, BM_ERR_CORRUPT, "'descr' is not a string"},
  };
  uint8_t buf[1024];
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    size_t n = make_npy(buf, cases[i].major, cases[i].dict, (size_t)cases[i].data);
    bm_npy_array a;
    memset(&a, 0x5a, sizeof a);
    bm_status s = bm_npy_parse(buf, n, "bad.npy", &a);
    CHECK_MSG(s != NULL, "case %zu succeeded", i);
    if (s) CHECK_MSG(strstr(bm_status_message(s), "bad.npy"), "case %zu: %s", i, bm_status_message(s));
    CHECK_ERR(s, cases[i].code, cases[i].substr);
    CHECK(a.data == NULL);
    /* The same through a file. */
    write_bytes(tmp("bad.npy"), buf, n);
    CHECK_ERR(bm_npy_read(tmp("bad.npy"), &a), cases[i].code, cases[i].substr);
  }

  /* Preamble problems. */
  bm_npy_array a;
  CHECK_ERR(bm_npy_parse("NUMPY\x01\x00", 7, "m.npy", &a), BM_ERR_CORRUPT, "bad magic");
  CHECK_ERR(bm_npy_parse("\x93NUMPY\x01\x00\xff\xff{}", 12, "l.npy", &a), BM_ERR_CORRUPT,
            "header length 65535 goes beyond the end of the file (12 bytes)");
  CHECK_ERR(bm_npy_parse("\x93NUMPY\x02\x00\xff\xff", 10, "p.npy", &a), BM_ERR_CORRUPT,
            "preamble truncated");
  CHECK_ERR(bm_npy_parse("\x93NUMPY\x02\x00\xff\xff\xff\x7f", 12, "h.npy", &a), BM_ERR_CORRUPT,
            "too large");
  write_bytes(tmp("short.npy"), "\x93NUM", 4);
  CHECK_ERR(bm_npy_read(tmp("short.npy"), &a), BM_ERR_CORRUPT, "not a .npy file (too short)");
  write_bytes(tmp("empty.npy"), "", 0);
  CHECK_ERR(bm_npy_read(tmp("empty.npy"), &a), BM_ERR_CORRUPT, "empty.npy");
  write_bytes(tmp("hl.npy"), "\x93NUMPY\x01\x00\xff\x00{'descr'", 18);
  CHECK_ERR(bm_npy_read(tmp("hl.npy"), &a), BM_ERR_CORRUPT, "goes beyond the end of the file (18 bytes)");
  CHECK_ERR(bm_npy_read(tmp("missing.npy"), &a), BM_ERR_IO, "missing.npy: cannot open");
  CHECK_ERR(bm_npy_read(bm_test_tmpdir(), &a), BM_ERR_IO, "not a regular file");
}

static void test_write_errors(void) {
  uint16_t h[2] = {0};
  int64_t shape[1] = {2};
  CHECK_ERR(bm_npy_write(tmp("b.npy"), BM_DTYPE_BF16, 1, shape, h), BM_ERR_UNSUPPORTED,
            "bf16 has no .npy type");
  CHECK_ERR(bm_npy_write(tmp("b.npy"), BM_DTYPE_FP8_E4M3, 1, shape, h), BM_ERR_UNSUPPORTED, "fp8_e4m3");
  CHECK_ERR(bm_npy_write(tmp("b.npy"), BM_DTYPE_I4, 1, shape, h), BM_ERR_UNSUPPORTED, "i4");
  int64_t neg = -1;
  CHECK_ERR(bm_npy_write(tmp("b.npy"), BM_DTYPE_I8, 1, &neg, h), BM_ERR_INVALID_ARGUMENT, "bad shape");
  CHECK_ERR(bm_npy_write(tmp("b.npy"), BM_DTYPE_I8, 9, shape, h), BM_ERR_INVALID_ARGUMENT, "bad arguments");
  CHECK_ERR(bm_npy_write(tmp("b.npy"), BM_DTYPE_I8, 1, shape, NULL), BM_ERR_INVALID_ARGUMENT, "NULL data");
  CHECK_ERR(bm_npy_write("/nonexistent-dir/b.npy", BM_DTYPE_I8, 1, shape, h), BM_ERR_IO,
            "nonexistent-dir");
}

/* Random corruptions of valid images never crash. */
static void test_mutations(void) {
  uint8_t orig[256], buf[256];
  size_t n = make_npy(orig, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 24);
  uint64_t rng = 99;
  int ok = 0, bad = 0;
  for (int it = 0; it < 5000; it++) {
    memcpy(buf, orig, n);
    int edits = 1 + (int)(bm_test_rand_u64(&rng) % 3);
    for (int k = 0; k < edits; k++) buf[bm_test_rand_u64(&rng) % n] = (uint8_t)bm_test_rand_u64(&rng);
    size_t len = it % 7 == 0 ? bm_test_rand_u64(&rng) % n : n;
    /* Copy into an exact-size heap block so ASan sees any overread. */
    uint8_t *exact = malloc(len ? len : 1);
    memcpy(exact, buf, len);
    bm_npy_array a;
    bm_status s = bm_npy_parse(exact, len, "mut.npy", &a);
    if (s) {
      bad++;
      CHECK(a.data == NULL);
      bm_status_free(s);
    } else {
      ok++;
      CHECK(a.nbytes <= len);
      bm_npy_free(&a);
    }
    free(exact);
  }
  CHECK(bad > 0 && ok > 0);
}

int main(void) {
  RUN(test_round_trip);
  RUN(test_numpy_header_bytes);
  RUN(test_versions_and_variants);
  RUN(test_malformed);
  RUN(test_write_errors);
  RUN(test_mutations);
  return bm_test_finish();
}
