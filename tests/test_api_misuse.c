/* test_api_misuse.c - the public runtime API under misuse, on a real
 * compiled package: NULL for every pointer argument, out-of-range indices,
 * invalid enum values, wrong input dtype / rank / shape, outputs read
 * before a run, sessions that outlive their package (bm_package_close
 * first), NULL close. Every call must return a clear error, never crash.
 * Closing a package twice is the caller's bug (documented in bm_runtime.h);
 * it is not tested. */
#include "rel_package.h"
#include "../runtime/npy.h"
#include "../runtime/safetensors.h"
#include "../runtime/tokenizer.h"

static bm_package *open_small(void) {
  static bool built;
  const char *p = rel_path("misuse.bmpk");
  if (!built && !rel_compile(p, 0, NULL)) return NULL;
  built = true;
  bm_package *pkg = NULL;
  CHECK_OK(bm_package_open(p, NULL, &pkg));
  return pkg;
}

static void test_null_everywhere(void) {
  bm_package *pkg = (bm_package *)1; /* output parameters are cleared on failure */
  CHECK_ERR(bm_package_open(NULL, NULL, &pkg), BM_ERR_INVALID_ARGUMENT, NULL);
  CHECK(pkg == NULL);
  CHECK_ERR(bm_package_open("x.bmpk", NULL, NULL), BM_ERR_INVALID_ARGUMENT, NULL);
  CHECK_ERR(bm_package_open("", NULL, &pkg), BM_ERR_IO, NULL);
  CHECK_ERR(bm_package_open("/", NULL, &pkg), BM_ERR_IO, "not a regular file");
  bm_package_close(NULL);
  bm_session_destroy(NULL);
  bm_session_reset_state(NULL);
  CHECK(bm_package_manifest_json(NULL) == NULL && bm_package_model_name(NULL) == NULL);
  CHECK(bm_package_file_hash(NULL) == 0 && bm_package_arena_bytes(NULL) == 0 && bm_package_weight_bytes(NULL) == 0);
  CHECK(bm_package_function_count(NULL) == 0 && bm_package_function_name(NULL, 0) == NULL);
  CHECK(bm_function_input_count(NULL, 0) == 0 && bm_function_output_count(NULL, 0) == 0);
  int f = 5, i = 5;
  CHECK_ERR(bm_package_find_function(NULL, "main", &f), BM_ERR_INVALID_ARGUMENT, NULL);
  CHECK(f == -1);
  bm_tensor_info info;
  CHECK_ERR(bm_function_input_info(NULL, 0, 0, &info), BM_ERR_INVALID_ARGUMENT, NULL);
  CHECK_ERR(bm_function_output_info(NULL, 0, 0, &info), BM_ERR_INVALID_ARGUMENT, NULL);
  CHECK_ERR(bm_function_find_input(NULL, 0, "x", &i), BM_ERR_INVALID_ARGUMENT, NULL);
  bm_session *s = (bm_session *)1;
  CHECK_ERR(bm_session_create(NULL, NULL, &s), BM_ERR_INVALID_ARGUMENT, NULL);
  CHECK(s == NULL);
  CHECK_ERR(bm_session_set_input(NULL, 0, 0, NULL, BM_DTYPE_F32, 0, NULL), BM_ERR_INVALID_ARGUMENT, NULL);
  CHECK_ERR(bm_session_run(NULL, 0), BM_ERR_INVALID_ARGUMENT, NULL);
  const void *p = (const void *)1;
  CHECK_ERR(bm_session_get_output(NULL, 0, 0, &p, &info), BM_ERR_INVALID_ARGUMENT, NULL);
  CHECK(p == NULL);
  const bm_kernel_profile *prof;
  int np;
  CHECK_ERR(bm_session_profile(NULL, 0, &prof, &np), BM_ERR_INVALID_ARGUMENT, NULL);
  void *sd;
  CHECK_ERR(bm_session_state(NULL, "kv", &sd, NULL), BM_ERR_INVALID_ARGUMENT, NULL);
  /* status helpers */
  CHECK(bm_status_code(NULL) == BM_OK && !strcmp(bm_status_message(NULL), "ok"));
  bm_status_free(NULL);
  CHECK(bm_code_name((bm_code)99) != NULL && bm_code_name((bm_code)-1) != NULL);
  bm_status w = bm_status_wrap(NULL, "prefix");
  CHECK(w == NULL || bm_status_message(w) != NULL);
  bm_status_free(w);
  CHECK(!strcmp(bm_dtype_name((bm_dtype)-1), "?") && !strcmp(bm_dtype_name(BM_DTYPE_COUNT), "?"));
  CHECK(bm_dtype_nbytes((bm_dtype)99, 4) == 0 && bm_dtype_nbytes(BM_DTYPE_F32, -1) == 0);
  bm_dtype dt;
  CHECK(bm_dtype_from_name(NULL, &dt) != 0 && bm_dtype_from_name("f99", &dt) != 0);
  CHECK_ERR(bm_device_probe((bm_device_kind)-3), BM_ERR_INVALID_ARGUMENT, NULL);
  CHECK(bm_device_kind_name((bm_device_kind)77) != NULL);

  /* the file readers and the tokenizer */
  bm_st_file *st = (bm_st_file *)1;
  CHECK_ERR(bm_st_open(NULL, &st), BM_ERR_INVALID_ARGUMENT, NULL);
  CHECK(st == NULL);
  bm_st_set *set;
  CHECK_ERR(bm_st_open_dir(NULL, &set), BM_ERR_INVALID_ARGUMENT, NULL);
  CHECK_ERR(bm_st_open_dir("x", NULL), BM_ERR_INVALID_ARGUMENT, NULL);
  bm_st_close(NULL);
  bm_st_set_close(NULL);
  bm_npy_array a;
  CHECK_ERR(bm_npy_read(NULL, &a), BM_ERR_INVALID_ARGUMENT, NULL);
  CHECK_ERR(bm_npy_parse(NULL, 10, "x", &a), BM_ERR_INVALID_ARGUMENT, NULL);
  bm_npy_free(NULL);
  bm_tokenizer *tok = (bm_tokenizer *)1;
  CHECK_ERR(bm_tokenizer_load(NULL, &tok), BM_ERR_INVALID_ARGUMENT, NULL);
  CHECK(tok == NULL);
  CHECK_ERR(bm_tokenizer_load_memory(BM_TOK_FORMAT_HF_JSON, NULL, 5, NULL, 0, NULL, &tok), BM_ERR_INVALID_ARGUMENT,
            NULL);
  CHECK_ERR(bm_tokenizer_load_memory((bm_tok_format)42, "x", 1, NULL, 0, NULL, &tok), BM_ERR_INVALID_ARGUMENT, NULL);
  bm_tokenizer_free(NULL);
  size_t n;
  int32_t ids[4];
  CHECK_ERR(bm_tokenizer_encode(NULL, "a", 1, 0, ids, 4, &n), BM_ERR_INVALID_ARGUMENT, NULL);
  char out[8];
  CHECK_ERR(bm_tokenizer_decode(NULL, ids, 1, 0, out, 8, &n), BM_ERR_INVALID_ARGUMENT, NULL);
  bm_elf_image *img;
  CHECK_ERR(bm_elf_load(NULL, 100, NULL, &img), BM_ERR_INVALID_ARGUMENT, NULL);
  bm_elf_unload(NULL);
  CHECK(bm_elf_lookup(NULL, "k") == NULL);
}

static void test_bad_indices_and_inputs(void) {
  bm_package *pkg = open_small();
  if (!pkg) return;
  int f = -1;
  CHECK_OK(bm_package_find_function(pkg, "main", &f));
  CHECK_ERR(bm_package_find_function(pkg, NULL, &f), BM_ERR_INVALID_ARGUMENT, NULL);
  CHECK_ERR(bm_package_find_function(pkg, "main", NULL), BM_ERR_INVALID_ARGUMENT, NULL);
  CHECK_ERR(bm_package_find_function(pkg, "", &f), BM_ERR_NOT_FOUND, "'main', 'scale'");
  CHECK(f == -1);
  CHECK_OK(bm_package_find_function(pkg, "main", &f));
  bm_tensor_info info;
  for (int bad = -2; bad <= 3; bad += 5) { /* -2 and 3: out of range */
    CHECK(bm_package_function_name(pkg, bad) == NULL && bm_function_input_count(pkg, bad) == 0);
    CHECK_ERR(bm_function_input_info(pkg, bad, 0, &info), BM_ERR_INVALID_ARGUMENT, "function index");
    CHECK_ERR(bm_function_output_info(pkg, 0, bad, &info), BM_ERR_INVALID_ARGUMENT, "output index");
  }
  CHECK_ERR(bm_function_input_info(pkg, 0, INT32_MIN, &info), BM_ERR_INVALID_ARGUMENT, NULL);
  CHECK_ERR(bm_function_output_info(pkg, 0, 0, NULL), BM_ERR_INVALID_ARGUMENT, NULL);
  int i;
  CHECK_ERR(bm_function_find_input(pkg, 0, NULL, &i), BM_ERR_INVALID_ARGUMENT, NULL);
  bm_session_options so = {.threads = 100000};
  bm_session *s = NULL;
  CHECK_ERR(bm_session_create(pkg, &so, &s), BM_ERR_INVALID_ARGUMENT, "thread count");
  CHECK_ERR(bm_session_create(pkg, NULL, NULL), BM_ERR_INVALID_ARGUMENT, NULL);
  so.threads = 2;
  CHECK_OK(bm_session_create(pkg, &so, &s));
  if (!s) {
    bm_package_close(pkg);
    return;
  }
  float x[8 * 16] = {0};
  int64_t good[2] = {3, 16}, big[2] = {9, 16}, neg[2] = {-3, 16}, wide[2] = {3, 17};
  int64_t seven[7] = {1, 1, 1, 1, 1, 3, 16};
  CHECK_ERR(bm_session_set_input(s, f, 0, x, (bm_dtype)-1, 2, good), BM_ERR_INVALID_ARGUMENT, "dtype ?");
  CHECK_ERR(bm_session_set_input(s, f, 0, x, (bm_dtype)1000, 2, good), BM_ERR_INVALID_ARGUMENT, "expected f32");
  CHECK_ERR(bm_session_set_input(s, f, 0, x, BM_DTYPE_I32, 2, good), BM_ERR_INVALID_ARGUMENT, "dtype i32");
  CHECK_ERR(bm_session_set_input(s, f, 0, x, BM_DTYPE_F32, -1, good), BM_ERR_INVALID_ARGUMENT, "rank -1");
  CHECK_ERR(bm_session_set_input(s, f, 0, x, BM_DTYPE_F32, 0, NULL), BM_ERR_INVALID_ARGUMENT, "rank 0");
  CHECK_ERR(bm_session_set_input(s, f, 0, x, BM_DTYPE_F32, 7, seven), BM_ERR_INVALID_ARGUMENT, "rank 7");
  CHECK_ERR(bm_session_set_input(s, f, 0, x, BM_DTYPE_F32, 2, NULL), BM_ERR_INVALID_ARGUMENT, NULL);
  CHECK_ERR(bm_session_set_input(s, f, 0, NULL, BM_DTYPE_F32, 2, good), BM_ERR_INVALID_ARGUMENT, "NULL");
  CHECK_ERR(bm_session_set_input(s, f, 0, x, BM_DTYPE_F32, 2, big), BM_ERR_INVALID_ARGUMENT, "above its bound 8");
  CHECK_ERR(bm_session_set_input(s, f, 0, x, BM_DTYPE_F32, 2, neg), BM_ERR_INVALID_ARGUMENT, "negative");
  CHECK_ERR(bm_session_set_input(s, f, 0, x, BM_DTYPE_F32, 2, wide), BM_ERR_INVALID_ARGUMENT, "expected 16");
  CHECK_ERR(bm_session_set_input(s, f, 1, x, BM_DTYPE_F32, 2, good), BM_ERR_INVALID_ARGUMENT, "input index 1");
  CHECK_ERR(bm_session_set_input(s, -1, 0, x, BM_DTYPE_F32, 2, good), BM_ERR_INVALID_ARGUMENT, "function index");
  const void *p;
  CHECK_ERR(bm_session_run(s, f), BM_ERR_INVALID_ARGUMENT, "was not set");
  CHECK_ERR(bm_session_run(s, 99), BM_ERR_INVALID_ARGUMENT, "function index 99");
  CHECK_ERR(bm_session_get_output(s, f, 0, &p, &info), BM_ERR_INVALID_ARGUMENT, "not been run");
  CHECK_OK(bm_session_set_input(s, f, 0, x, BM_DTYPE_F32, 2, good));
  CHECK_OK(bm_session_run(s, f));
  CHECK_OK(bm_session_get_output(s, f, 1, &p, NULL)); /* info may be NULL */
  CHECK_ERR(bm_session_get_output(s, f, 2, &p, &info), BM_ERR_INVALID_ARGUMENT, "output index 2");
  CHECK_ERR(bm_session_get_output(s, f, -1, &p, &info), BM_ERR_INVALID_ARGUMENT, NULL);
  /* setting another function's input invalidates main's outputs */
  float a[64] = {0};
  int64_t as[1] = {64};
  CHECK_OK(bm_session_set_input(s, 1, 0, a, BM_DTYPE_F32, 1, as));
  CHECK_ERR(bm_session_get_output(s, f, 0, &p, &info), BM_ERR_INVALID_ARGUMENT, "not been run");
  void *sd = NULL;
  CHECK_ERR(bm_session_state(s, "kv", &sd, NULL), BM_ERR_NOT_FOUND, "no state 'kv'");
  CHECK_ERR(bm_session_state(s, NULL, &sd, NULL), BM_ERR_INVALID_ARGUMENT, NULL);
  const bm_kernel_profile *prof;
  CHECK_ERR(bm_session_profile(s, f, &prof, NULL), BM_ERR_INVALID_ARGUMENT, NULL);
  bm_session_reset_state(s); /* no states: nothing to do */
  bm_session_destroy(s);
  bm_package_close(pkg);
}

/* A session keeps its package alive: closing the package first is fine,
 * the session still runs, and the last session frees it (ASan/LSan check
 * that nothing is used after free or leaked). */
static void test_session_outlives_package(void) {
  bm_package *pkg = open_small();
  if (!pkg) return;
  rel_outputs before, after;
  CHECK(rel_run(pkg, &before));
  bm_session *s1 = NULL, *s2 = NULL;
  CHECK_OK(bm_session_create(pkg, NULL, &s1));
  CHECK_OK(bm_session_create(pkg, NULL, &s2));
  bm_package_close(pkg); /* the caller's reference; the sessions hold theirs */
  pkg = NULL;
  if (!s1 || !s2) return;
  float x[5 * 16];
  for (int i = 0; i < 80; i++) x[i] = (float)(i % 11) / 5.0f - 1.0f;
  int64_t xs[2] = {5, 16};
  CHECK_OK(bm_session_set_input(s1, 0, 0, x, BM_DTYPE_F32, 2, xs));
  CHECK_OK(bm_session_run(s1, 0));
  const void *p = NULL;
  bm_tensor_info info;
  CHECK_OK(bm_session_get_output(s1, 0, 0, &p, &info));
  if (p) memcpy(after.y, p, sizeof after.y);
  CHECK(p && memcmp(after.y, before.y, sizeof after.y) == 0);
  bm_session_destroy(s1);
  CHECK_OK(bm_session_set_input(s2, 0, 0, x, BM_DTYPE_F32, 2, xs)); /* still alive through s2 */
  CHECK_OK(bm_session_run(s2, 0));
  bm_session_destroy(s2); /* frees the package */
}

int main(void) {
  RUN(test_null_everywhere);
  RUN(test_bad_indices_and_inputs);
  RUN(test_session_outlives_package);
  return bm_test_finish();
}
