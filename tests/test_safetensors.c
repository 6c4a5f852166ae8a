/* test_safetensors.c - the safetensors reader on the real golden checkpoints,
 * writer round trips, a table of malformed files, and sharded checkpoints. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../runtime/safetensors.h"
#include "testutil.h"

/* ------------------------------------------------------------ helpers */

static char *path_in_tmp(const char *name) {
  static char buf[8][1024];
  static int k;
  char *p = buf[k++ % 8];
  snprintf(p, 1024, "%s/%s", bm_test_tmpdir(), name);
  return p;
}

static void write_bytes(const char *path, const void *data, size_t n) {
  FILE *f = fopen(path, "wb");
  CHECK(f != NULL);
  if (!f) return;
  if (n) CHECK(fwrite(data, 1, n, f) == n);
  fclose(f);
}

/* A file: 8-byte length (hlen, or strlen(header) if hlen < 0), the header,
 * then data_bytes zero bytes. */
static void write_st_raw(const char *path, const char *header, int64_t hlen, size_t data_bytes) {
  size_t n = strlen(header);
  uint64_t len = hlen < 0 ? n : (uint64_t)hlen;
  uint8_t *buf = calloc(8 + n + data_bytes + 1, 1);
  for (int i = 0; i < 8; i++) buf[i] = (uint8_t)(len >> (8 * i));
  memcpy(buf + 8, header, n);
  write_bytes(path, buf, 8 + n + data_bytes);
  free(buf);
}

static uint8_t *read_all(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *buf = malloc((size_t)size + 1);
  *n = fread(buf, 1, (size_t)size, f);
  buf[*n] = 0;
  fclose(f);
  return buf;
}

/* ------------------------------------------------------------ real files */

/* Compares everything bm_st_open reports with an independent parse of the
 * header. */
static void check_against_header(const char *path) {
  size_t n;
  uint8_t *raw = read_all(path, &n);
  CHECK_MSG(raw != NULL, "%s", path);
  if (!raw) return;
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; i--) hlen = hlen << 8 | raw[i];
  cJSON *h = cJSON_ParseWithLength((const char *)raw + 8, hlen);
  CHECK(h != NULL);
  bm_st_file *st = NULL;
  CHECK_OK(bm_st_open(path, &st));
  if (!st || !h) goto out;
  int entries = 0;
  for (cJSON *e = h->child; e; e = e->next) {
    if (strcmp(e->string, "__metadata__") == 0) {
      for (cJSON *m = e->child; m; m = m->next) {
        const char *v = bm_st_metadata(st, m->string);
        CHECK(v && strcmp(v, m->valuestring) == 0);
      }
      CHECK(bm_st_metadata_count(st) == cJSON_GetArraySize(e));
      continue;
    }
    entries++;
    const bm_st_tensor *t = bm_st_find(st, e->string);
    CHECK_MSG(t != NULL, "%s: %s", path, e->string);
    if (!t) continue;
    CHECK(strcmp(t->dtype_name, cJSON_GetObjectItem(e, "dtype")->valuestring) == 0);
    cJSON *shape = cJSON_GetObjectItem(e, "shape");
    CHECK(t->ndim == cJSON_GetArraySize(shape));
    int64_t numel = 1;
    for (int d = 0; d < t->ndim; d++) {
      CHECK(t->shape[d] == (int64_t)cJSON_GetArrayItem(shape, d)->valuedouble);
      numel *= t->shape[d];
    }
    CHECK(t->numel == numel);
    cJSON *off = cJSON_GetObjectItem(e, "data_offsets");
    uint64_t b = (uint64_t)cJSON_GetArrayItem(off, 0)->valuedouble;
    uint64_t end = (uint64_t)cJSON_GetArrayItem(off, 1)->valuedouble;
    CHECK(t->offset == 8 + hlen + b);
    CHECK(t->nbytes == end - b);
    CHECK(t->nbytes == 0 || memcmp(t->data, raw + 8 + hlen + b, t->nbytes) == 0);
  }
  CHECK(bm_st_count(st) == entries);
  /* Iteration is sorted by name and find agrees with it. */
  for (int i = 0; i < bm_st_count(st); i++) {
    const bm_st_tensor *t = bm_st_tensor_at(st, i);
    if (i) CHECK(strcmp(bm_st_tensor_at(st, i - 1)->name, t->name) < 0);
    CHECK(bm_st_find(st, t->name) == t);
  }
out:
  cJSON_Delete(h);
  bm_st_close(st);
  free(raw);
}

static void test_llama2_model(void) {
  const char *path = bm_test_shared("golden/hf/llama2/model.safetensors");
  check_against_header(path);
  bm_st_file *st = NULL;
  CHECK_OK(bm_st_open(path, &st));
  if (!st) return;
  CHECK(bm_st_count(st) == 21); /* embed, lm_head, norm, 2 layers x 9 */
  CHECK(bm_st_metadata(st, "format") && strcmp(bm_st_metadata(st, "format"), "pt") == 0);
  const bm_st_tensor *t;
  CHECK_OK(bm_st_get(st, "lm_head.weight", &t));
  if (t) {
    CHECK(t->supported && t->dtype == BM_DTYPE_F32 && t->elem_bytes == 4);
    CHECK(t->ndim == 2 && t->shape[0] == 512 && t->shape[1] == 64);
    CHECK(t->nbytes == 512 * 64 * 4);
  }
  CHECK_OK(bm_st_get(st, "model.layers.1.mlp.down_proj.weight", &t));
  if (t) CHECK(t->ndim == 2 && t->shape[0] == 64 && t->shape[1] == 192);
  CHECK_OK(bm_st_get(st, "model.norm.weight", &t));
  if (t) CHECK(t->ndim == 1 && t->shape[0] == 64);
  CHECK_ERR(bm_st_get(st, "model.layers.2.mlp.down_proj.weight", &t), BM_ERR_NOT_FOUND,
            "'model.layers.2.mlp.down_proj.weight'");
  CHECK(t == NULL);
  bm_st_close(st);
}

static void test_llama2_golden(void) {
  const char *path = bm_test_shared("golden/hf/llama2/golden.safetensors");
  check_against_header(path);
  bm_st_file *st = NULL;
  CHECK_OK(bm_st_open(path, &st));
  if (!st) return;
  CHECK(bm_st_count(st) == 6);
  const bm_st_tensor *t;
  CHECK_OK(bm_st_get(st, "input_ids", &t));
  if (t) {
    CHECK(t->dtype == BM_DTYPE_I64 && t->ndim == 2 && t->shape[0] == 1 && t->shape[1] == 20);
    int64_t ids[2];
    memcpy(ids, t->data, sizeof ids);
    CHECK(ids[0] == 332 && ids[1] == 179);
  }
  CHECK_OK(bm_st_get(st, "logits", &t));
  if (t) CHECK(t->dtype == BM_DTYPE_F32 && t->ndim == 3 && t->shape[1] == 20 && t->shape[2] == 512);
  CHECK_OK(bm_st_get(st, "decode_logits", &t));
  if (t) CHECK(t->ndim == 3 && t->shape[1] == 11);
  bm_st_close(st);
}

/* Every golden checkpoint folder opens through bm_st_open_dir (HF and
 * diffusers layouts) and agrees with its header. */
static void test_all_golden_folders(void) {
  const char *groups[] = {"golden/hf", "golden/diffusers"};
  int opened = 0;
  for (int g = 0; g < 2; g++) {
    char base[1024];
    snprintf(base, sizeof base, "%s", bm_test_shared(groups[g]));
    DIR *d = opendir(base);
    CHECK_MSG(d != NULL, "%s", base);
    if (!d) continue;
    struct dirent *e;
    while ((e = readdir(d))) {
      if (e->d_name[0] == '.') continue;
      char folder[2048], golden[2300];
      snprintf(folder, sizeof folder, "%s/%s", base, e->d_name);
      struct stat sb;
      if (stat(folder, &sb) != 0 || !S_ISDIR(sb.st_mode)) continue;
      bm_st_set *set = NULL;
      CHECK_OK(bm_st_open_dir(folder, &set));
      if (set) {
        CHECK_MSG(bm_st_set_count(set) > 0 && bm_st_set_file_count(set) == 1, "%s", folder);
        check_against_header(bm_st_path(bm_st_set_file(set, 0)));
        opened++;
      }
      bm_st_set_close(set);
      snprintf(golden, sizeof golden, "%s/golden.safetensors", folder);
      if (stat(golden, &sb) == 0) check_against_header(golden);
    }
    closedir(d);
  }
  CHECK_MSG(opened >= 20, "opened %d golden folders", opened);
}

/* ------------------------------------------------------------ writer */

static void test_write_round_trip(void) {
  float w[6] = {1, -2, 3.5f, 0, 1e-3f, -7};
  uint16_t h[3] = {0x3c00, 0xc000, 0x7bff};
  int8_t q[5] = {-128, -1, 0, 1, 127};
  int32_t i32[2] = {123456, -7};
  int64_t i64[1] = {-1234567890123LL};
  uint8_t fp8[3] = {0x38, 0xb8, 0x00};
  float scalar = 42;
  bm_tensor_info infos[] = {
      {"w", BM_DTYPE_F32, 2, {2, 3}},  {"half", BM_DTYPE_F16, 1, {3}},
      {"bh", BM_DTYPE_BF16, 1, {3}},   {"q", BM_DTYPE_I8, 1, {5}},
      {"i32", BM_DTYPE_I32, 2, {1, 2}}, {"i64", BM_DTYPE_I64, 1, {1}},
      {"f8", BM_DTYPE_FP8_E4M3, 1, {3}}, {"e5", BM_DTYPE_FP8_E5M2, 1, {3}},
      {"scalar", BM_DTYPE_F32, 0, {0}}, {"empty", BM_DTYPE_F32, 2, {0, 4}},
      {"quote\"name\\x", BM_DTYPE_I8, 1, {5}},
  };
  const void *datas[] = {w, h, h, q, i32, i64, fp8, fp8, &scalar, NULL, q};
  int n = (int)(sizeof infos / sizeof infos[0]);
  const char *meta[] = {"format", "pt", "note", "a \"quoted\" value", NULL};
  const char *p1 = path_in_tmp("rt1.safetensors"), *p2 = path_in_tmp("rt2.safetensors");
  CHECK_OK(bm_st_write(p1, n, infos, datas, meta));

  /* Same tensors in reverse order: byte-identical output. */
  bm_tensor_info rinfos[16];
  const void *rdatas[16];
  for (int i = 0; i < n; i++) {
    rinfos[i] = infos[n - 1 - i];
    rdatas[i] = datas[n - 1 - i];
  }
  CHECK_OK(bm_st_write(p2, n, rinfos, rdatas, meta));
  size_t n1, n2;
  uint8_t *b1 = read_all(p1, &n1), *b2 = read_all(p2, &n2);
  CHECK(b1 && b2 && n1 == n2 && memcmp(b1, b2, n1) == 0);
  uint64_t hlen = 0;
  for (int i = 7; b1 && i >= 0; i--) hlen = hlen << 8 | b1[i];
  CHECK(hlen % 8 == 0);
  free(b1);
  free(b2);

  check_against_header(p1);
  bm_st_file *st = NULL;
  CHECK_OK(bm_st_open(p1, &st));
  if (!st) return;
  CHECK(bm_st_count(st) == n);
  CHECK(strcmp(bm_st_metadata(st, "note"), "a \"quoted\" value") == 0);
  CHECK(bm_st_metadata(st, "missing") == NULL);
  for (int i = 0; i < n; i++) {
    const bm_st_tensor *t = bm_st_find(st, infos[i].name);
    CHECK_MSG(t != NULL, "%s", infos[i].name);
    if (!t) continue;
    CHECK(t->supported && t->dtype == infos[i].dtype && t->ndim == infos[i].ndim);
    int64_t numel = 1;
    for (int d = 0; d < t->ndim; d++) {
      CHECK(t->shape[d] == infos[i].shape[d]);
      numel *= infos[i].shape[d];
    }
    CHECK(t->nbytes == bm_dtype_nbytes(infos[i].dtype, numel));
    CHECK(t->nbytes == 0 || memcmp(t->data, datas[i], t->nbytes) == 0);
    CHECK((uintptr_t)t->data % (uintptr_t)t->elem_bytes == 0); /* aligned layout */
  }
  const bm_st_tensor *t = bm_st_find(st, "scalar");
  CHECK(t && t->ndim == 0 && t->numel == 1 && t->nbytes == 4);
  t = bm_st_find(st, "e5");
  CHECK(t && strcmp(t->dtype_name, "F8_E5M2") == 0);
  bm_st_close(st);
}

static void test_write_errors(void) {
  int8_t q[4] = {0};
  bm_tensor_info i4 = {"packed", BM_DTYPE_I4, 1, {8}};
  const void *d[] = {q, q};
  CHECK_ERR(bm_st_write(path_in_tmp("bad.safetensors"), 1, &i4, d, NULL), BM_ERR_UNSUPPORTED, "'packed'");
  bm_tensor_info dup[2] = {{"a", BM_DTYPE_I8, 1, {4}}, {"a", BM_DTYPE_I8, 1, {4}}};
  CHECK_ERR(bm_st_write(path_in_tmp("bad.safetensors"), 2, dup, d, NULL), BM_ERR_INVALID_ARGUMENT,
            "'a' given twice");
  bm_tensor_info meta = {"__metadata__", BM_DTYPE_I8, 1, {4}};
  CHECK_ERR(bm_st_write(path_in_tmp("bad.safetensors"), 1, &meta, d, NULL),
            BM_ERR_INVALID_ARGUMENT, "bad name");
  bm_tensor_info neg = {"n", BM_DTYPE_I8, 1, {-4}};
  CHECK_ERR(bm_st_write(path_in_tmp("bad.safetensors"), 1, &neg, d, NULL), BM_ERR_INVALID_ARGUMENT,
            "bad shape");
  bm_tensor_info ok = {"a", BM_DTYPE_I8, 1, {4}};
  CHECK_ERR(bm_st_write("/nonexistent-dir/x.safetensors", 1, &ok, d, NULL), BM_ERR_IO,
            "nonexistent-dir");
  /* An empty file (0 tensors) is valid. */
  CHECK_OK(bm_st_write(path_in_tmp("empty.safetensors"), 0, NULL, NULL, NULL));
  bm_st_file *st = NULL;
  CHECK_OK(bm_st_open(path_in_tmp("empty.safetensors"), &st));
  CHECK(st && bm_st_count(st) == 0 && bm_st_find(st, "a") == NULL);
  bm_st_close(st);
}

/* ------------------------------------------------------------ malformed */

typedef struct bad_case {
  const char *file;
  const char *header;
  int64_t hlen;      /* -1: strlen(header) */
  size_t data_bytes;
  bm_code code;
  const char *substr;
} bad_case;

static const bad_case bad_cases[] = {
    {"hlen0", "", 0, 16, BM_ERR_CORRUPT, "header length is 0"},
    {"hlen_beyond", "{}", 1000, 16, BM_ERR_CORRUPT, "header length 1000 exceeds the file size"},
    {"hlen_huge", "{}", (int64_t)1 << 40, 16, BM_ERR_CORRUPT, "exceeds the 104857600-byte limit"},
    {"hlen_max", "{}", INT64_MAX, 0, BM_ERR_CORRUPT, "exceeds the 104857600-byte limit"},
    {"not_json", "{not json", -1, 0, BM_ERR_CORRUPT, "not valid JSON"},
    {"not_object", "[1, 2]  ", -1, 0, BM_ERR_CORRUPT, "not a JSON object"},
    {"trailing", "{}xyz", -1, 0, BM_ERR_CORRUPT, "data after the JSON object"},
    {"bad_utf8", "{\"a\xff\": 1}", -1, 0, BM_ERR_CORRUPT, "not valid UTF-8"},
    {"overlong_utf8", "{\"a\xc0\xaf\": 1}", -1, 0, BM_ERR_CORRUPT, "not valid UTF-8"},
    {"unknown_dtype", "{\"t\":{\"dtype\":\"F33\",\"shape\":[2],\"data_offsets\":[0,8]}}", -1, 8,
     BM_ERR_CORRUPT, "tensor 't': unknown dtype \"F33\""},
    {"offsets_oob", "{\"t\":{\"dtype\":\"F32\",\"shape\":[8],\"data_offsets\":[0,32]}}", -1, 16,
     BM_ERR_CORRUPT, "tensor 't': data_offsets [0, 32] end beyond the data section (16 bytes"},
    {"size_mismatch",
     "{\"lm_head.weight\":{\"dtype\":\"F32\",\"shape\":[4,8],\"data_offsets\":[0,96]}}", -1, 128,
     BM_ERR_CORRUPT,
     "tensor 'lm_head.weight': data_offsets [0, 96] is 96 bytes but shape (4, 8) of f32 needs 128"},
    {"size_mismatch_bf16", "{\"t\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[0,8]}}", -1,
     8, BM_ERR_CORRUPT, "is 8 bytes but shape (3,) of bf16 needs 6"},
    {"negative_shape", "{\"t\":{\"dtype\":\"F32\",\"shape\":[-1,4],\"data_offsets\":[0,0]}}", -1,
     0, BM_ERR_CORRUPT, "tensor 't': shape[0] is not an integer in [0, 2^53]"},
    {"fraction_shape", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,10]}}", -1,
     10, BM_ERR_CORRUPT, "shape[0] is not an integer in [0, 2^53]"},
    {"huge_shape",
     "{\"t\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}}", -1, 8,
     BM_ERR_CORRUPT, "element count overflows"},
    {"huge_bytes", "{\"t\":{\"dtype\":\"F64\",\"shape\":[1125899906842624,1024],\"data_offsets\":[0,8]}}",
     -1, 8, BM_ERR_CORRUPT, "byte size overflows"},
    {"too_many_dims",
     "{\"t\":{\"dtype\":\"I8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", -1, 1,
     BM_ERR_CORRUPT, "shape has 9 dims (at most 8)"},
    {"truncated_data", "{\"t\":{\"dtype\":\"F32\",\"shape\":[16],\"data_offsets\":[0,64]}}", -1, 32,
     BM_ERR_CORRUPT, "file truncated?"},
    {"begin_gt_end", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[16,8]}}", -1, 16,
     BM_ERR_CORRUPT, "data_offsets [16, 8] has begin > end"},
    {"missing_dtype", "{\"t\":{\"shape\":[2],\"data_offsets\":[0,8]}}", -1, 8, BM_ERR_CORRUPT,
     "tensor 't': missing \"dtype\""},
    {"missing_shape", "{\"t\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", -1, 8, BM_ERR_CORRUPT,
     "tensor 't': missing \"shape\""},
    {"missing_offsets", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2]}}", -1, 8, BM_ERR_CORRUPT,
     "tensor 't': missing \"data_offsets\""},
    {"dtype_not_string", "{\"t\":{\"dtype\":5,\"shape\":[2],\"data_offsets\":[0,8]}}", -1, 8,
     BM_ERR_CORRUPT, "\"dtype\" is not a string"},
    {"shape_not_array", "{\"t\":{\"dtype\":\"F32\",\"shape\":\"2\",\"data_offsets\":[0,8]}}", -1, 8,
     BM_ERR_CORRUPT, "\"shape\" is not an array"},
    {"shape_of_strings", "{\"t\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", -1,
     8, BM_ERR_CORRUPT, "shape[0] is not an integer in [0, 2^53]"},
    {"offsets_one", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8]}}", -1, 8,
     BM_ERR_CORRUPT, "\"data_offsets\" is not [begin, end]"},
    {"offsets_negative", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", -1, 8,
     BM_ERR_CORRUPT, "\"data_offsets\" is not [begin, end]"},
    {"offsets_object", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":{\"a\":1}}}", -1,
     8, BM_ERR_CORRUPT, "\"data_offsets\" is not [begin, end]"},
    {"entry_not_object", "{\"t\":5}", -1, 0, BM_ERR_CORRUPT, "tensor 't': entry is not a JSON object"},
    {"metadata_not_object", "{\"__metadata__\":[1]}", -1, 0, BM_ERR_CORRUPT,
     "\"__metadata__\" is not an object"},
    {"metadata_not_string", "{\"__metadata__\":{\"k\":1}}", -1, 0, BM_ERR_CORRUPT,
     "\"__metadata__\" value 'k' is not a string"},
    {"duplicate", "{\"t\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[0,1]},"
     "\"t\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[0,1]}}", -1, 1, BM_ERR_CORRUPT,
     "tensor 't' appears twice"},
};

static void test_malformed(void) {
  for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
    const bad_case *c = &bad_cases[i];
    char name[128];
    snprintf(name, sizeof name, "%s.safetensors", c->file);
    const char *path = path_in_tmp(name);
    write_st_raw(path, c->header, c->hlen, c->data_bytes);
    bm_st_file *st = (bm_st_file *)&st; /* must be cleared */
    bm_status s = bm_st_open(path, &st);
    CHECK_MSG(st == NULL, "%s: output not cleared", c->file);
    if (s) CHECK_MSG(strstr(bm_status_message(s), name) != NULL, "%s: message lacks the file: %s",
                     c->file, bm_status_message(s));
    CHECK_ERR(s, c->code, c->substr);
    if (st) bm_st_close(st);
  }
  /* Files too short for the length field. */
  const char *p = path_in_tmp("empty_file.safetensors");
  write_bytes(p, "", 0);
  bm_st_file *st = NULL;
  CHECK_ERR(bm_st_open(p, &st), BM_ERR_CORRUPT, "empty_file.safetensors: file is empty");
  p = path_in_tmp("short_file.safetensors");
  write_bytes(p, "\x02\0\0\0", 4);
  CHECK_ERR(bm_st_open(p, &st), BM_ERR_CORRUPT, "4 bytes, too short");
  /* A NUL byte inside the header. */
  p = path_in_tmp("nul.safetensors");
  write_bytes(p, "\x04\0\0\0\0\0\0\0{\0} ", 12);
  CHECK_ERR(bm_st_open(p, &st), BM_ERR_CORRUPT, "not valid UTF-8");
  CHECK_ERR(bm_st_open(path_in_tmp("does_not_exist.safetensors"), &st), BM_ERR_IO,
            "does_not_exist.safetensors: cannot open");
  CHECK_ERR(bm_st_open(bm_test_tmpdir(), &st), BM_ERR_IO, "not a regular file");
  CHECK(st == NULL);
}

/* Valid but unusual files. */
static void test_valid_edge_cases(void) {
  const char *p = path_in_tmp("edge.safetensors");
  write_st_raw(p,
               "{\"__metadata__\":{},\"b\":{\"dtype\":\"BOOL\",\"shape\":[2],\"data_offsets\":[0,2]},"
               "\"s\":{\"dtype\":\"I32\",\"shape\":[],\"data_offsets\":[4,8]},"
               "\"z\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[8,8]},"
               "\"u\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2],\"extra\":1}}   \n",
               -1, 8);
  bm_st_file *st = NULL;
  CHECK_OK(bm_st_open(p, &st));
  if (!st) return;
  CHECK(bm_st_count(st) == 4 && bm_st_metadata_count(st) == 0);
  const bm_st_tensor *b = bm_st_find(st, "b");
  CHECK(b && !b->supported && strcmp(b->dtype_name, "BOOL") == 0 && b->nbytes == 2);
  CHECK_ERR(bm_st_check_dtype(b), BM_ERR_UNSUPPORTED, "tensor 'b' has dtype BOOL");
  const bm_st_tensor *s = bm_st_find(st, "s");
  CHECK(s && s->supported && s->ndim == 0 && s->numel == 1 && s->nbytes == 4);
  CHECK_OK(bm_st_check_dtype(s));
  const bm_st_tensor *z = bm_st_find(st, "z");
  CHECK(z && z->numel == 0 && z->nbytes == 0);
  bm_st_close(st);
}

/* Random corruptions of a valid file never crash and either open or fail
 * with a status. */
static void test_mutations(void) {
  float w[4] = {1, 2, 3, 4};
  bm_tensor_info infos[2] = {{"a.weight", BM_DTYPE_F32, 2, {2, 2}}, {"b", BM_DTYPE_F32, 1, {4}}};
  const void *datas[2] = {w, w};
  const char *src = path_in_tmp("mut_src.safetensors"), *dst = path_in_tmp("mut.safetensors");
  CHECK_OK(bm_st_write(src, 2, infos, datas, NULL));
  size_t n;
  uint8_t *orig = read_all(src, &n);
  if (!orig) return;
  uint8_t *buf = malloc(n);
  uint64_t rng = 1234;
  int opened = 0, failed = 0;
  for (int it = 0; it < 300; it++) {
    memcpy(buf, orig, n);
    int edits = 1 + (int)(bm_test_rand_u64(&rng) % 4);
    for (int k = 0; k < edits; k++) {
      size_t at = bm_test_rand_u64(&rng) % n;
      buf[at] = (uint8_t)bm_test_rand_u64(&rng);
    }
    size_t len = (it % 5 == 0) ? bm_test_rand_u64(&rng) % n : n; /* sometimes truncate */
    write_bytes(dst, buf, len);
    bm_st_file *st = NULL;
    bm_status s = bm_st_open(dst, &st);
    if (s) {
      failed++;
      CHECK(st == NULL && bm_status_code(s) == BM_ERR_CORRUPT);
      bm_status_free(s);
    } else {
      opened++;
      for (int i = 0; i < bm_st_count(st); i++) {
        const bm_st_tensor *t = bm_st_tensor_at(st, i);
        CHECK(t->offset + t->nbytes <= len);
      }
      bm_st_close(st);
    }
  }
  CHECK(failed > 0);
  free(buf);
  free(orig);
}

/* ------------------------------------------------------------ sharded */

static void make_dir(const char *p) { mkdir(p, 0777); }

static void write_text(const char *path, const char *text) { write_bytes(path, text, strlen(text)); }

static void test_sharded(void) {
  char dir[1024], p[1200];
  snprintf(dir, sizeof dir, "%s", path_in_tmp("sharded"));
  make_dir(dir);
  float a[4] = {1, 2, 3, 4}, b[2] = {5, 6}, c[3] = {7, 8, 9};
  bm_tensor_info ia[2] = {{"layer.0.w", BM_DTYPE_F32, 2, {2, 2}}, {"layer.0.b", BM_DTYPE_F32, 1, {2}}};
  const void *da[2] = {a, b};
  bm_tensor_info ic[2] = {{"layer.1.w", BM_DTYPE_F32, 1, {3}}, {"unmapped", BM_DTYPE_F32, 1, {2}}};
  const void *dc[2] = {c, b};
  snprintf(p, sizeof p, "%s/model-00001-of-00002.safetensors", dir);
  CHECK_OK(bm_st_write(p, 2, ia, da, NULL));
  snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", dir);
  CHECK_OK(bm_st_write(p, 2, ic, dc, NULL));
  snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
  write_text(p, "{\"metadata\": {\"total_size\": 36}, \"weight_map\": {"
                "\"layer.1.w\": \"model-00002-of-00002.safetensors\","
                "\"layer.0.w\": \"model-00001-of-00002.safetensors\","
                "\"layer.0.b\": \"model-00001-of-00002.safetensors\"}}");

  /* By folder and by index path. */
  for (int via = 0; via < 2; via++) {
    bm_st_set *set = NULL;
    CHECK_OK(bm_st_open_dir(via ? p : dir, &set));
    if (!set) continue;
    CHECK(bm_st_set_count(set) == 3 && bm_st_set_file_count(set) == 2);
    const bm_st_tensor *t;
    const bm_st_file *f;
    CHECK_OK(bm_st_set_get(set, "layer.1.w", &t, &f));
    CHECK(t && t->shape[0] == 3 && memcmp(t->data, c, sizeof c) == 0);
    CHECK(f && strstr(bm_st_path(f), "model-00002-of-00002.safetensors"));
    CHECK_OK(bm_st_set_get(set, "layer.0.b", &t, NULL));
    CHECK(t && memcmp(t->data, b, sizeof b) == 0);
    CHECK(bm_st_set_find(set, "layer.0.w") != NULL);
    CHECK(bm_st_set_find(set, "unmapped") == NULL); /* only weight_map names */
    CHECK_ERR(bm_st_set_get(set, "layer.2.w", &t, &f), BM_ERR_NOT_FOUND, "no tensor 'layer.2.w'");
    CHECK(t == NULL && f == NULL);
    for (int i = 1; i < bm_st_set_count(set); i++)
      CHECK(strcmp(bm_st_set_tensor_at(set, i - 1)->name, bm_st_set_tensor_at(set, i)->name) < 0);
    bm_st_set_close(set);
  }

  /* A single file opens as a set, too. */
  bm_st_set *set = NULL;
  snprintf(p, sizeof p, "%s/model-00001-of-00002.safetensors", dir);
  CHECK_OK(bm_st_open_dir(p, &set));
  CHECK(set && bm_st_set_count(set) == 2 && bm_st_set_find(set, "layer.0.w"));
  bm_st_set_close(set);

  /* Bad indexes. */
  static const struct {
    const char *folder, *index;
    bm_code code;
    const char *substr;
  } bad[] = {
      {"dotdot", "{\"weight_map\": {\"w\": \"../model-00001-of-00002.safetensors\"}}",
       BM_ERR_CORRUPT, "shard '../model-00001-of-00002.safetensors', which is not a plain file name"},
      {"abs", "{\"weight_map\": {\"w\": \"/etc/passwd\"}}", BM_ERR_CORRUPT, "not a plain file name"},
      {"backslash", "{\"weight_map\": {\"w\": \"..\\\\x.safetensors\"}}", BM_ERR_CORRUPT,
       "not a plain file name"},
      {"missing", "{\"weight_map\": {\"w\": \"model-00009-of-00009.safetensors\"}}", BM_ERR_IO,
       "shard 'model-00009-of-00009.safetensors'"},
      {"wrongshard", NULL, BM_ERR_CORRUPT,
       "tensor 'layer.1.w' maps to shard 'model-00001-of-00002.safetensors', which does not hold it"},
      {"nomap", "{\"metadata\": {}}", BM_ERR_CORRUPT, "no \"weight_map\""},
      {"emptymap", "{\"weight_map\": {}}", BM_ERR_CORRUPT, "\"weight_map\" is empty"},
      {"notstring", "{\"weight_map\": {\"w\": 3}}", BM_ERR_CORRUPT, "entry 'w' is not a string"},
      {"notjson", "{\"weight_map\": ", BM_ERR_CORRUPT, "not valid JSON"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char sub[1200], ip[1400];
    snprintf(sub, sizeof sub, "%s/%s", dir, bad[i].folder);
    make_dir(sub);
    /* Each folder gets a copy of shard 1 so that valid names resolve. */
    snprintf(ip, sizeof ip, "%s/model-00001-of-00002.safetensors", sub);
    CHECK_OK(bm_st_write(ip, 2, ia, da, NULL));
    snprintf(ip, sizeof ip, "%s/model.safetensors.index.json", sub);
    write_text(ip, bad[i].index ? bad[i].index
                                : "{\"weight_map\": {\"layer.1.w\": \"model-00001-of-00002.safetensors\"}}");
    set = (bm_st_set *)&set;
    CHECK_ERR(bm_st_open_dir(sub, &set), bad[i].code, bad[i].substr);
    CHECK(set == NULL);
  }

  /* A folder with no checkpoint, and a diffusers-style folder. */
  snprintf(p, sizeof p, "%s/nothing", dir);
  make_dir(p);
  CHECK_ERR(bm_st_open_dir(p, &set), BM_ERR_NOT_FOUND, "no model.safetensors");
  snprintf(p, sizeof p, "%s/unet", dir);
  make_dir(p);
  char f[1400];
  snprintf(f, sizeof f, "%s/diffusion_pytorch_model.safetensors", p);
  CHECK_OK(bm_st_write(f, 2, ic, dc, NULL));
  CHECK_OK(bm_st_open_dir(p, &set));
  CHECK(set && bm_st_set_count(set) == 2 && bm_st_set_find(set, "unmapped"));
  bm_st_set_close(set);
  CHECK_ERR(bm_st_open_dir(path_in_tmp("no-such-folder"), &set), BM_ERR_IO, "no-such-folder");
}

static void test_shape_str(void) {
  char buf[64];
  int64_t s[3] = {4, 8, 16};
  CHECK(strcmp(bm_st_shape_str(0, s, buf, sizeof buf), "()") == 0);
  CHECK(strcmp(bm_st_shape_str(1, s, buf, sizeof buf), "(4,)") == 0);
  CHECK(strcmp(bm_st_shape_str(3, s, buf, sizeof buf), "(4, 8, 16)") == 0);
  CHECK(strlen(bm_st_shape_str(3, s, buf, 5)) == 4); /* truncated, terminated */
}

int main(void) {
  RUN(test_llama2_model);
  RUN(test_llama2_golden);
  RUN(test_all_golden_folders);
  RUN(test_write_round_trip);
  RUN(test_write_errors);
  RUN(test_malformed);
  RUN(test_valid_edge_cases);
  RUN(test_mutations);
  RUN(test_sharded);
  RUN(test_shape_str);
  return bm_test_finish();
}
