/* bmrun.c - the generic tensor runner: opens a .bmpk package, sets a function's
 * inputs from .npy/.safetensors files or deterministic random values, runs it,
 * times it, and writes/prints its outputs; and, for causal LM packages, the
 * `generate` and `chat` subcommands (runtime/llm.h). Links only libbmrt. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <unistd.h>

#include "bm_runtime.h"
#include "chat_template.h"
#include "image.h"
#include "llm.h"
#include "npy.h"
#include "safetensors.h"
#include "sd.h"

enum { EXIT_OK = 0, EXIT_RUNTIME = 1, EXIT_USAGE = 2 };

static const char usage_text[] =
    "usage: bmrun FILE.bmpk [options]\n"
    "       bmrun FILE.bmpk generate|chat [options]   (LLMs; see bmrun FILE generate --help)\n"
    "       bmrun FILE.bmpk txt2img|img2img|inpaint [options]   (Stable Diffusion)\n"
    "\n"
    "Runs one function of a bm package on inputs read from files or made up.\n"
    "\n"
    "options:\n"
    "  --function F            the function to run (default: \"main\", or the only one)\n"
    "  --input NAME=PATH.npy   set input NAME from a .npy file\n"
    "  --input NAME=PATH.safetensors[:TENSOR]\n"
    "                          set input NAME from a tensor of a safetensors file\n"
    "                          (TENSOR defaults to NAME); repeat --input for each input\n"
    "  --random-inputs SEED    fill every input not given with deterministic values:\n"
    "                          floats uniform in [-1, 1), integers in [0, min(d, 16))\n"
    "                          where d is the input's last dimension; a symbolic\n"
    "                          dimension takes the value a file input gave it, else\n"
    "                          its upper bound\n"
    "  --output DIR            write each output to DIR/<name>.npy (DIR is created)\n"
    "  --threads N             worker threads (default: all CPUs)\n"
    "  --repeat N              run N times and report the first and the mean time\n"
    "  --profile               print per-kernel times of the last run, grouped by op\n"
    "  --no-verify             skip the weight and code checksums when opening\n"
    "  --allow-hash HEX        open the package only if its whole-file XXH3-64 (as\n"
    "                          `bmc inspect` prints it) is HEX; repeat to allow several\n"
    "  --list                  print the functions with their inputs and outputs\n"
    "  --help                  print this help\n"
    "\n"
    "Float inputs are converted between f32, f16 and bf16 (and .npy float64 to f32)\n"
    "and integer inputs between i8, i32 and i64 when the file's dtype differs from\n"
    "the declared one. Exit status: 0 ok, 1 runtime error, 2 usage error.\n";

/* ------------------------------------------------------------ messages */

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("bmrun: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputs("\n(run 'bmrun --help' for usage)\n", stderr);
  va_end(ap);
  return EXIT_USAGE;
}

/* Prints "bmrun: error: <message>", frees s. */
static int runtime_error(bm_status s) {
  fprintf(stderr, "bmrun: error: %s\n", bm_status_message(s));
  bm_status_free(s);
  return EXIT_RUNTIME;
}

/* ------------------------------------------------------------ options */

typedef struct input_arg {
  const char *name;   /* points into argv (NUL-terminated copy below) */
  const char *path;
  const char *tensor; /* safetensors tensor name; NULL for .npy */
  char *buf;          /* owns name/path/tensor */
} input_arg;

typedef struct options {
  const char *file;
  const char *function;
  input_arg *inputs;
  int n_inputs;
  int have_seed;
  uint64_t seed;
  const char *output_dir;
  int threads;
  int repeat;
  int profile, no_verify, list, help;
  uint64_t allow[64];  /* --allow-hash: bm_open_options.allowed_hashes */
  int n_allow;
} options;

static void free_options(options *o) {
  for (int i = 0; i < o->n_inputs; i++) free(o->inputs[i].buf);
  free(o->inputs);
}

static int parse_positive(const char *s, int max, int *out) {
  if (!s || !*s || *s == '-' || *s == '+') return 0;
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || *end || v < 1 || v > max) return 0;
  *out = (int)v;
  return 1;
}

static int parse_u64(const char *s, uint64_t *out) {
  if (!s || !*s || *s == '-' || *s == '+' || *s == ' ') return 0;
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 0);
  if (errno || *end) return 0;
  *out = v;
  return 1;
}

static int ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), m = strlen(suffix);
  return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Parses "NAME=PATH.npy" or "NAME=PATH.safetensors[:TENSOR]". */
static int parse_input_spec(const char *spec, input_arg *in) {
  memset(in, 0, sizeof *in);
  const char *eq = strchr(spec, '=');
  if (!eq || eq == spec || !eq[1])
    return usage_error("--input '%s': expected NAME=PATH.npy or NAME=PATH.safetensors[:TENSOR]", spec);
  in->buf = strdup(spec);
  if (!in->buf) return usage_error("out of memory");
  char *name = in->buf, *path = in->buf + (eq - spec) + 1;
  path[-1] = 0;
  in->name = name;
  in->path = path;
  if (ends_with(path, ".npy")) return 0;
  /* The last ".safetensors" followed by the end or ':'. */
  char *st = NULL;
  for (char *p = strstr(path, ".safetensors"); p; p = strstr(p + 1, ".safetensors"))
    if (p[12] == 0 || p[12] == ':') st = p;
  if (!st)
    return usage_error("--input '%s': PATH must end in .npy or .safetensors[:TENSOR]", spec);
  if (st[12] == ':') {
    st[12] = 0;
    in->tensor = st + 13;
    if (!*in->tensor) return usage_error("--input '%s': empty tensor name after ':'", spec);
  } else {
    in->tensor = name;
  }
  return 0;
}

/* Returns -1 to continue, or an exit code. */
static int parse_args(int argc, char **argv, options *o) {
  memset(o, 0, sizeof *o);
  o->repeat = 1;
  o->inputs = calloc((size_t)(argc > 0 ? argc : 0) + 1, sizeof *o->inputs);
  if (!o->inputs) return usage_error("out of memory");
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (a[0] != '-' || strcmp(a, "-") == 0) {
      if (o->file) return usage_error("more than one package file given ('%s' and '%s')", o->file, a);
      o->file = a;
      continue;
    }
    if (strcmp(a, "--") == 0) {
      if (i + 1 < argc && !o->file) o->file = argv[++i];
      if (i + 1 < argc) return usage_error("unexpected argument '%s'", argv[i + 1]);
      break;
    }
    /* Split "--opt=value". */
    char opt[64];
    const char *val = NULL;
    const char *eq = strchr(a, '=');
    size_t olen = eq ? (size_t)(eq - a) : strlen(a);
    if (olen >= sizeof opt) return usage_error("unknown option '%s'", a);
    memcpy(opt, a, olen);
    opt[olen] = 0;
    if (eq) val = eq + 1;

    static const char *const flags[] = {"--profile", "--no-verify", "--list", "--help", "-h"};
    int is_flag = 0;
    for (size_t k = 0; k < sizeof flags / sizeof flags[0]; k++)
      if (strcmp(opt, flags[k]) == 0) is_flag = 1;
    if (is_flag) {
      if (val) return usage_error("option '%s' takes no value", opt);
      if (!strcmp(opt, "--profile")) o->profile = 1;
      else if (!strcmp(opt, "--no-verify")) o->no_verify = 1;
      else if (!strcmp(opt, "--list")) o->list = 1;
      else o->help = 1;
      continue;
    }
    static const char *const valued[] = {"--function", "--input", "--random-inputs",
                                         "--output", "--threads", "--repeat", "--allow-hash"};
    int known = 0;
    for (size_t k = 0; k < sizeof valued / sizeof valued[0]; k++)
      if (strcmp(opt, valued[k]) == 0) known = 1;
    if (!known) return usage_error("unknown option '%s'", opt);
    if (!val) {
      if (i + 1 >= argc) return usage_error("option '%s' needs a value", opt);
      val = argv[++i];
    }
    if (!strcmp(opt, "--function")) {
      if (!*val) return usage_error("--function needs a non-empty name");
      o->function = val;
    } else if (!strcmp(opt, "--input")) {
      input_arg *in = &o->inputs[o->n_inputs];
      int rc = parse_input_spec(val, in);
      o->n_inputs++; /* so that free_options frees in->buf */
      if (rc) return rc;
      for (int k = 0; k + 1 < o->n_inputs; k++)
        if (strcmp(o->inputs[k].name, in->name) == 0)
          return usage_error("input '%s' is given twice", in->name);
    } else if (!strcmp(opt, "--random-inputs")) {
      if (!parse_u64(val, &o->seed))
        return usage_error("--random-inputs: '%s' is not a non-negative integer seed", val);
      o->have_seed = 1;
    } else if (!strcmp(opt, "--output")) {
      if (!*val) return usage_error("--output needs a directory");
      o->output_dir = val;
    } else if (!strcmp(opt, "--threads")) {
      if (!parse_positive(val, 4096, &o->threads))
        return usage_error("--threads: '%s' is not a positive integer", val);
    } else if (!strcmp(opt, "--repeat")) {
      if (!parse_positive(val, 1000000, &o->repeat))
        return usage_error("--repeat: '%s' is not a positive integer", val);
    } else if (!strcmp(opt, "--allow-hash")) {
      const char *h = val;
      if (h[0] == '0' && (h[1] == 'x' || h[1] == 'X')) h += 2;
      size_t len = strspn(h, "0123456789abcdefABCDEF");
      if (len == 0 || len > 16 || h[len]) return usage_error("--allow-hash: '%s' is not a 64-bit hex hash", val);
      if (o->n_allow == 64) return usage_error("--allow-hash: at most 64 hashes");
      o->allow[o->n_allow++] = strtoull(h, NULL, 16);
    }
  }
  if (o->help) return -1;
  if (!o->file) return usage_error("no package file given");
  return -1;
}

/* ------------------------------------------------------------ numbers */

static float f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else if (exp == 0) {
    float f = ldexpf((float)mant, -24);
    return sign ? -f : f;
  } else {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  }
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

static uint16_t f32_to_f16(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
  uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return sign | 0x7c00 | (ax > 0x7f800000u ? 0x200 : 0); /* inf/nan */
  if (ax >= 0x477ff000u) return sign | 0x7c00; /* rounds to >= 65520: inf */
  if (ax < 0x38800000u) {                      /* subnormal or zero in f16 */
    float a;
    memcpy(&a, &ax, 4);
    return sign | (uint16_t)lrintf(a * 16777216.0f); /* units of 2^-24, ties to even */
  }
  uint32_t r = ax + 0xfffu + ((ax >> 13) & 1); /* round to nearest even */
  return sign | (uint16_t)((r - 0x38000000u) >> 13);
}

static float bf16_to_f32(uint16_t h) {
  uint32_t bits = (uint32_t)h << 16;
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

static uint16_t f32_to_bf16(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40); /* quiet NaN */
  return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1)) >> 16);
}

static float fp8_e4m3_to_f32(uint8_t v) {
  int sign = v >> 7, exp = (v >> 3) & 0xf, mant = v & 7;
  if (exp == 0xf && mant == 7) return NAN;
  float f = exp == 0 ? ldexpf((float)mant, -9) : ldexpf(1.0f + mant / 8.0f, exp - 7);
  return sign ? -f : f;
}

static float fp8_e5m2_to_f32(uint8_t v) { return f16_to_f32((uint16_t)(v << 8)); }

/* Element i of a buffer of dtype t as a double (for summaries). */
static double elem_as_double(const void *p, bm_dtype t, int64_t i) {
  const uint8_t *b = p;
  switch (t) {
    case BM_DTYPE_F32: { float v; memcpy(&v, b + 4 * i, 4); return v; }
    case BM_DTYPE_F16: { uint16_t v; memcpy(&v, b + 2 * i, 2); return f16_to_f32(v); }
    case BM_DTYPE_BF16: { uint16_t v; memcpy(&v, b + 2 * i, 2); return bf16_to_f32(v); }
    case BM_DTYPE_I8: return (int8_t)b[i];
    case BM_DTYPE_I4: { int v = (b[i / 2] >> (4 * (i & 1))) & 0xf; return v >= 8 ? v - 16 : v; }
    case BM_DTYPE_FP8_E4M3: return fp8_e4m3_to_f32(b[i]);
    case BM_DTYPE_FP8_E5M2: return fp8_e5m2_to_f32(b[i]);
    case BM_DTYPE_I32: { int32_t v; memcpy(&v, b + 4 * i, 4); return v; }
    case BM_DTYPE_I64: { int64_t v; memcpy(&v, b + 8 * i, 8); return (double)v; }
    default: return NAN;
  }
}

static int is_float(bm_dtype t) { return t == BM_DTYPE_F32 || t == BM_DTYPE_F16 || t == BM_DTYPE_BF16; }
static int is_int(bm_dtype t) { return t == BM_DTYPE_I8 || t == BM_DTYPE_I32 || t == BM_DTYPE_I64; }

static int64_t int_elem(const void *p, bm_dtype t, int64_t i) {
  const uint8_t *b = p;
  if (t == BM_DTYPE_I8) return (int8_t)b[i];
  if (t == BM_DTYPE_I32) { int32_t v; memcpy(&v, b + 4 * i, 4); return v; }
  int64_t v;
  memcpy(&v, b + 8 * i, 8);
  return v;
}

static void store_float(void *p, bm_dtype t, int64_t i, float v) {
  uint8_t *b = p;
  if (t == BM_DTYPE_F32) memcpy(b + 4 * i, &v, 4);
  else if (t == BM_DTYPE_F16) { uint16_t h = f32_to_f16(v); memcpy(b + 2 * i, &h, 2); }
  else { uint16_t h = f32_to_bf16(v); memcpy(b + 2 * i, &h, 2); }
}

static void store_int(void *p, bm_dtype t, int64_t i, int64_t v) {
  uint8_t *b = p;
  if (t == BM_DTYPE_I8) b[i] = (uint8_t)(int8_t)v;
  else if (t == BM_DTYPE_I32) { int32_t w = (int32_t)v; memcpy(b + 4 * i, &w, 4); }
  else memcpy(b + 8 * i, &v, 8);
}

static uint64_t splitmix64(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* "12.3 us", "1.234 ms", "2.50 s" into buf. */
static const char *fmt_time(double sec, char *buf, size_t size) {
  if (sec < 1e-3) snprintf(buf, size, "%.1f us", sec * 1e6);
  else if (sec < 1) snprintf(buf, size, "%.3f ms", sec * 1e3);
  else snprintf(buf, size, "%.3f s", sec);
  return buf;
}

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ------------------------------------------------------------ shapes */

/* "(batch<=4, seq<=128, 64)" (declared) or "(1, 20, 64)" (bound). */
static const char *shape_str(const bm_tensor_info *t, int declared, char *buf, size_t size) {
  size_t at = (size_t)snprintf(buf, size, "(");
  for (int d = 0; d < t->ndim && at < size; d++) {
    if (declared && t->dim_names[d])
      at += (size_t)snprintf(buf + at, size - at, "%s%s<=%lld", d ? ", " : "", t->dim_names[d],
                             (long long)t->shape[d]);
    else
      at += (size_t)snprintf(buf + at, size - at, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
  }
  if (at < size) snprintf(buf + at, size - at, t->ndim == 1 ? ",)" : ")");
  return buf;
}

static const char *plain_shape(int ndim, const int64_t *shape, char *buf, size_t size) {
  return bm_st_shape_str(ndim, shape, buf, size);
}

/* Symbols bound so far (from file inputs), so that random inputs agree;
 * assumes a symbolic input dim is the symbol itself (the usual case). */
typedef struct bindings {
  int n;
  const char *name[64];
  int64_t value[64];
} bindings;

static int64_t *binding(bindings *b, const char *name) {
  for (int i = 0; i < b->n; i++)
    if (strcmp(b->name[i], name) == 0) return &b->value[i];
  return NULL;
}

static void bind(bindings *b, const char *name, int64_t v) {
  if (!binding(b, name) && b->n < 64) {
    b->name[b->n] = name;
    b->value[b->n++] = v;
  }
}

/* ------------------------------------------------------------ inputs */

/* A tensor loaded from a file, owning its (aligned) data. */
typedef struct loaded {
  bm_dtype dtype;
  int ndim;
  int64_t shape[BM_ST_MAX_DIMS];
  int64_t numel;
  void *data;
  char source[512]; /* "PATH" or "PATH:TENSOR", for messages */
} loaded;

static bm_status load_input(const input_arg *in, loaded *out) {
  memset(out, 0, sizeof *out);
  if (!in->tensor) {
    snprintf(out->source, sizeof out->source, "%s", in->path);
    bm_npy_array a;
    BM_RETURN_IF_ERROR(bm_npy_read(in->path, &a));
    out->dtype = a.dtype;
    out->ndim = a.ndim;
    memcpy(out->shape, a.shape, sizeof a.shape);
    out->numel = a.numel;
    out->data = a.data; /* ownership moves */
    return NULL;
  }
  snprintf(out->source, sizeof out->source, "%s:%s", in->path, in->tensor);
  bm_st_file *st;
  BM_RETURN_IF_ERROR(bm_st_open(in->path, &st));
  const bm_st_tensor *t;
  bm_status s = bm_st_get(st, in->tensor, &t);
  if (s) {
    bm_st_close(st);
    return bm_status_wrap(s, "input '%s'", in->name);
  }
  if ((s = bm_st_check_dtype(t))) {
    bm_st_close(st);
    return bm_status_wrap(s, "input '%s' from %s", in->name, in->path);
  }
  out->dtype = t->dtype;
  out->ndim = t->ndim;
  memcpy(out->shape, t->shape, sizeof t->shape);
  out->numel = t->numel;
  if (t->nbytes) {
    out->data = malloc(t->nbytes);
    if (!out->data) s = bm_status_make(BM_ERR_OUT_OF_MEMORY, "%s: %zu bytes", out->source, t->nbytes);
    else memcpy(out->data, t->data, t->nbytes);
  }
  bm_st_close(st);
  return s;
}

/* Checks a given shape against the declared input (rank, static dims and
 * symbolic upper bounds) and records the symbols it binds, for random
 * inputs. Agreement between inputs is left to the runtime: bm_tensor_info
 * does not say whether a symbolic dim is the symbol itself or an affine
 * function of it (2*batch, seq+1). */
static bm_status check_shape(const bm_tensor_info *decl, const loaded *l, bindings *b) {
  char want[256], got[256];
  int ok = l->ndim == decl->ndim;
  for (int d = 0; ok && d < decl->ndim; d++)
    ok = decl->dim_names[d] ? l->shape[d] <= decl->shape[d] : l->shape[d] == decl->shape[d];
  if (!ok)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "input '%s': expected %s %s, got %s %s from %s",
                          decl->name, bm_dtype_name(decl->dtype), shape_str(decl, 1, want, sizeof want),
                          bm_dtype_name(l->dtype), plain_shape(l->ndim, l->shape, got, sizeof got),
                          l->source);
  for (int d = 0; d < decl->ndim; d++)
    if (decl->dim_names[d]) bind(b, decl->dim_names[d], l->shape[d]);
  return NULL;
}

/* Converts l->data to `want` in place (new buffer) where allowed. */
static bm_status convert_input(const bm_tensor_info *decl, loaded *l) {
  bm_dtype want = decl->dtype;
  if (l->dtype == want) return NULL;
  int floats = is_float(l->dtype) && is_float(want), ints = is_int(l->dtype) && is_int(want);
  if (!floats && !ints) {
    char shp[256], dshp[256];
    return bm_status_make(BM_ERR_INVALID_ARGUMENT,
                          "input '%s': expected %s %s, got %s %s from %s (no conversion from %s to "
                          "%s)",
                          decl->name, bm_dtype_name(want), shape_str(decl, 1, dshp, sizeof dshp),
                          bm_dtype_name(l->dtype), plain_shape(l->ndim, l->shape, shp, sizeof shp),
                          l->source, bm_dtype_name(l->dtype), bm_dtype_name(want));
  }
  size_t nb = bm_dtype_nbytes(want, l->numel);
  void *dst = malloc(nb ? nb : 1);
  if (!dst) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "input '%s': %zu bytes", decl->name, nb);
  for (int64_t i = 0; i < l->numel; i++) {
    if (floats) {
      store_float(dst, want, i, (float)elem_as_double(l->data, l->dtype, i));
    } else {
      int64_t v = int_elem(l->data, l->dtype, i);
      int64_t lo = want == BM_DTYPE_I8 ? INT8_MIN : want == BM_DTYPE_I32 ? INT32_MIN : INT64_MIN;
      int64_t hi = want == BM_DTYPE_I8 ? INT8_MAX : want == BM_DTYPE_I32 ? INT32_MAX : INT64_MAX;
      if (v < lo || v > hi) {
        free(dst);
        return bm_status_make(BM_ERR_INVALID_ARGUMENT,
                              "input '%s': element %lld of %s is %lld, out of range for %s",
                              decl->name, (long long)i, l->source, (long long)v, bm_dtype_name(want));
      }
      store_int(dst, want, i, v);
    }
  }
  free(l->data);
  l->data = dst;
  l->dtype = want;
  return NULL;
}

/* Fills an input with deterministic values (see the usage text). */
static bm_status random_input(const bm_tensor_info *decl, int index, uint64_t seed, bindings *b,
                              loaded *l) {
  memset(l, 0, sizeof *l);
  snprintf(l->source, sizeof l->source, "--random-inputs %" PRIu64, seed);
  l->dtype = decl->dtype;
  l->ndim = decl->ndim;
  l->numel = 1;
  for (int d = 0; d < decl->ndim; d++) {
    int64_t v = decl->shape[d];
    if (decl->dim_names[d]) {
      int64_t *bv = binding(b, decl->dim_names[d]);
      if (bv) v = *bv < v ? *bv : v;
      else bind(b, decl->dim_names[d], v);
    }
    l->shape[d] = v;
    if (__builtin_mul_overflow(l->numel, v, &l->numel))
      return bm_status_make(BM_ERR_OUT_OF_MEMORY, "input '%s': shape too large", decl->name);
  }
  size_t nb = bm_dtype_nbytes(decl->dtype, l->numel);
  l->data = calloc(nb ? nb : 1, 1);
  if (!l->data) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "input '%s': %zu bytes", decl->name, nb);
  /* One stream per input index, so giving one input from a file does not
   * change the others' values. */
  uint64_t state = seed ^ (0xD1B54A32D192ED03ull * (uint64_t)(index + 1));
  int64_t last = decl->ndim ? l->shape[decl->ndim - 1] : 16;
  int64_t range = last < 1 ? 1 : last < 16 ? last : 16;
  /* fp8: a uniform choice among the codes that decode into [-1, 1]. */
  uint8_t fp8_codes[256];
  int n_fp8 = 0;
  if (decl->dtype == BM_DTYPE_FP8_E4M3 || decl->dtype == BM_DTYPE_FP8_E5M2)
    for (int c = 0; c < 256; c++) {
      double v = elem_as_double(&(uint8_t){(uint8_t)c}, decl->dtype, 0);
      if (v >= -1 && v <= 1) fp8_codes[n_fp8++] = (uint8_t)c;
    }
  uint8_t *bytes = l->data;
  for (int64_t i = 0; i < l->numel; i++) {
    uint64_t r = splitmix64(&state);
    switch (decl->dtype) {
      case BM_DTYPE_F32: case BM_DTYPE_F16: case BM_DTYPE_BF16:
        store_float(l->data, decl->dtype, i, -1.0f + 2.0f * (float)((r >> 40) * (1.0 / 16777216.0)));
        break;
      case BM_DTYPE_I8: case BM_DTYPE_I32: case BM_DTYPE_I64:
        store_int(l->data, decl->dtype, i, (int64_t)(r % (uint64_t)range));
        break;
      case BM_DTYPE_I4:
        bytes[i / 2] |= (uint8_t)((r % (uint64_t)(range < 8 ? range : 8)) << (4 * (i & 1)));
        break;
      case BM_DTYPE_FP8_E4M3: case BM_DTYPE_FP8_E5M2:
        bytes[i] = fp8_codes[r % (uint64_t)n_fp8];
        break;
      default:
        return bm_status_make(BM_ERR_UNSUPPORTED, "input '%s': cannot make random %s values",
                              decl->name, bm_dtype_name(decl->dtype));
    }
  }
  return NULL;
}

/* ------------------------------------------------------------ outputs */

static bm_status make_dirs(const char *dir) {
  char p[4096];
  if (snprintf(p, sizeof p, "%s", dir) >= (int)sizeof p)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "--output: path too long");
  for (char *c = p + 1; ; c++) {
    if (*c == '/' || *c == 0) {
      char saved = *c;
      *c = 0;
      if (mkdir(p, 0777) != 0 && errno != EEXIST)
        return bm_status_make(BM_ERR_IO, "%s: cannot create directory: %s", p, strerror(errno));
      *c = saved;
      if (!saved) break;
    }
  }
  struct stat sb;
  if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
    return bm_status_make(BM_ERR_IO, "%s: not a directory", dir);
  return NULL;
}

/* Writes an output as .npy: bf16/fp8 become f32, i4 becomes i8. */
static bm_status write_output(const char *dir, const bm_tensor_info *info, const void *data) {
  char fname[256];
  size_t k = 0;
  for (const char *c = info->name; *c && k + 5 < sizeof fname; c++) {
    int keep = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
               *c == '_' || *c == '-' || (*c == '.' && k > 0);
    fname[k] = keep ? *c : '_';
    k++;
  }
  if (k == 0) fname[k++] = '_';
  fname[k] = 0;
  char path[4096];
  snprintf(path, sizeof path, "%s/%s.npy", dir, fname);
  int64_t numel = 1;
  for (int d = 0; d < info->ndim; d++) numel *= info->shape[d];
  bm_dtype t = info->dtype;
  if (t == BM_DTYPE_F32 || t == BM_DTYPE_F16 || is_int(t))
    return bm_npy_write(path, t, info->ndim, info->shape, data);
  bm_dtype to = t == BM_DTYPE_I4 ? BM_DTYPE_I8 : BM_DTYPE_F32;
  void *tmp = malloc(bm_dtype_nbytes(to, numel) + 1);
  if (!tmp) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "%s", path);
  for (int64_t i = 0; i < numel; i++) {
    double v = elem_as_double(data, t, i);
    if (to == BM_DTYPE_I8) ((int8_t *)tmp)[i] = (int8_t)v;
    else ((float *)tmp)[i] = (float)v;
  }
  bm_status s = bm_npy_write(path, to, info->ndim, info->shape, tmp);
  free(tmp);
  return s;
}

static void print_summary(const bm_tensor_info *info, const void *data) {
  int64_t numel = 1;
  for (int d = 0; d < info->ndim; d++) numel *= info->shape[d];
  double sum = 0, mn = INFINITY, mx = -INFINITY;
  int64_t nans = 0;
  for (int64_t i = 0; i < numel; i++) {
    double v = elem_as_double(data, info->dtype, i);
    if (isnan(v)) { nans++; continue; }
    sum += v;
    if (v < mn) mn = v;
    if (v > mx) mx = v;
  }
  char shp[256];
  printf("  %s %s %s", info->name, bm_dtype_name(info->dtype), shape_str(info, 0, shp, sizeof shp));
  if (numel > nans)
    printf("  mean=%.6g min=%.6g max=%.6g", sum / (double)(numel - nans), mn, mx);
  if (nans) printf("  nan=%lld", (long long)nans);
  printf("  first=[");
  for (int64_t i = 0; i < numel && i < 6; i++)
    printf("%s%.6g", i ? ", " : "", elem_as_double(data, info->dtype, i));
  printf("%s]\n", numel > 6 ? ", ..." : "");
}

/* ------------------------------------------------------------ --list */

static void list_function(const bm_package *pkg, int f) {
  char shp[256];
  bm_tensor_info info;
  printf("function %s\n", bm_package_function_name(pkg, f));
  for (int io = 0; io < 2; io++) {
    int n = io ? bm_function_output_count(pkg, f) : bm_function_input_count(pkg, f);
    printf("  %s:%s\n", io ? "outputs" : "inputs", n ? "" : " (none)");
    for (int i = 0; i < n; i++) {
      bm_status s = io ? bm_function_output_info(pkg, f, i, &info) : bm_function_input_info(pkg, f, i, &info);
      if (s) {
        printf("    #%d: %s\n", i, bm_status_message(s));
        bm_status_free(s);
        continue;
      }
      printf("    %s %s %s\n", info.name, bm_dtype_name(info.dtype), shape_str(&info, 1, shp, sizeof shp));
    }
  }
}

/* ------------------------------------------------------------ --profile */

typedef struct op_total {
  const char *op;
  double seconds;
  int count;
} op_total;

static int cmp_op_total(const void *a, const void *b) {
  double x = ((const op_total *)a)->seconds, y = ((const op_total *)b)->seconds;
  return x < y ? 1 : x > y ? -1 : strcmp(((const op_total *)a)->op, ((const op_total *)b)->op);
}

static const bm_kernel_profile *g_prof; /* for the qsort comparator below */

static int cmp_kernel_index(const void *a, const void *b) {
  const bm_kernel_profile *x = &g_prof[*(const int *)a], *y = &g_prof[*(const int *)b];
  return x->seconds < y->seconds ? 1 : x->seconds > y->seconds ? -1 : (*(const int *)a - *(const int *)b);
}

static bm_status print_profile(bm_session *s, int f) {
  const bm_kernel_profile *prof;
  int n;
  BM_RETURN_IF_ERROR(bm_session_profile(s, f, &prof, &n));
  op_total *ops = calloc((size_t)n + 1, sizeof *ops);
  int *order = calloc((size_t)n + 1, sizeof *order);
  if (!ops || !order) {
    free(ops);
    free(order);
    return bm_status_make(BM_ERR_OUT_OF_MEMORY, "profile of %d kernels", n);
  }
  int nops = 0;
  double total = 0;
  for (int i = 0; i < n; i++) {
    const char *op = prof[i].op ? prof[i].op : "?";
    total += prof[i].seconds;
    int k = 0;
    while (k < nops && strcmp(ops[k].op, op) != 0) k++;
    if (k == nops) ops[nops++] = (op_total){op, 0, 0};
    ops[k].seconds += prof[i].seconds;
    ops[k].count++;
    order[i] = i;
  }
  qsort(ops, (size_t)nops, sizeof *ops, cmp_op_total);
  g_prof = prof;
  qsort(order, (size_t)n, sizeof *order, cmp_kernel_index);
  printf("profile of the last run: %d kernels, %.3f ms in kernels\n", n, total * 1e3);
  printf("  %-40s %6s %10s %7s\n", "op / kernel", "count", "ms", "%");
  for (int k = 0; k < nops; k++) {
    printf("  %-40s %6d %10.4f %6.1f%%\n", ops[k].op, ops[k].count, ops[k].seconds * 1e3,
           total > 0 ? 100.0 * ops[k].seconds / total : 0.0);
    int shown = 0, hidden = 0;
    double hidden_s = 0;
    for (int j = 0; j < n; j++) {
      const bm_kernel_profile *p = &prof[order[j]];
      if (strcmp(p->op ? p->op : "?", ops[k].op) != 0) continue;
      if (shown < 8) {
        printf("    %-38s %6s %10.4f %6.1f%%\n", p->kernel ? p->kernel : "?", "", p->seconds * 1e3,
               total > 0 ? 100.0 * p->seconds / total : 0.0);
        shown++;
      } else {
        hidden++;
        hidden_s += p->seconds;
      }
    }
    if (hidden) printf("    ... %d more kernels, %.4f ms\n", hidden, hidden_s * 1e3);
  }
  free(ops);
  free(order);
  return NULL;
}

/* ------------------------------------------------------------ main */

/* Picks the function: --function, else "main", else the only one. Returns
 * -1 on success or an exit code. */
static int pick_function(const bm_package *pkg, const char *want, int *f) {
  int n = bm_package_function_count(pkg);
  char names[1024] = "";
  size_t at = 0;
  for (int i = 0; i < n && at < sizeof names; i++)
    at += (size_t)snprintf(names + at, sizeof names - at, "%s%s", i ? ", " : "",
                           bm_package_function_name(pkg, i));
  if (n == 0) {
    fprintf(stderr, "bmrun: error: the package has no functions\n");
    return EXIT_RUNTIME;
  }
  const char *name = want ? want : "main";
  bm_status s = bm_package_find_function(pkg, name, f);
  if (!s) return -1;
  bm_status_free(s);
  if (!want && n == 1) {
    *f = 0;
    return -1;
  }
  if (want) return usage_error("no function '%s' in the package (functions: %s)", want, names);
  return usage_error("the package has several functions and none is \"main\": pick one with "
                     "--function (functions: %s)", names);
}

static int run(const options *o) {
  bm_package *pkg = NULL;
  bm_session *sess = NULL;
  loaded *ins = NULL;
  int rc = EXIT_OK, nin = 0, nout = 0;
  bm_status s = NULL;
  bm_open_options oo = {.flags = o->no_verify ? BM_OPEN_SKIP_CHECKSUMS : 0,
                       .allowed_hashes = o->allow, .n_allowed_hashes = (size_t)o->n_allow};

  s = bm_package_open(o->file, &oo, &pkg);
  if (s) return runtime_error(s);

  int f = -1;
  if (o->list) {
    int n = bm_package_function_count(pkg);
    printf("package %s: model %s, weights %llu bytes, arena %llu bytes\n", o->file,
           bm_package_model_name(pkg) ? bm_package_model_name(pkg) : "?",
           (unsigned long long)bm_package_weight_bytes(pkg),
           (unsigned long long)bm_package_arena_bytes(pkg));
    if (o->function) {
      rc = pick_function(pkg, o->function, &f);
      if (rc >= 0) goto done;
      rc = EXIT_OK;
      list_function(pkg, f);
    } else {
      for (int i = 0; i < n; i++) list_function(pkg, i);
    }
    goto done;
  }

  rc = pick_function(pkg, o->function, &f);
  if (rc >= 0) goto done;
  rc = EXIT_OK;
  const char *fname = bm_package_function_name(pkg, f);
  nin = bm_function_input_count(pkg, f);
  nout = bm_function_output_count(pkg, f);

  /* Every --input must name a declared input. */
  for (int k = 0; k < o->n_inputs; k++) {
    int idx;
    bm_status e = bm_function_find_input(pkg, f, o->inputs[k].name, &idx);
    if (e) {
      bm_status_free(e);
      char names[1024] = "";
      size_t at = 0;
      bm_tensor_info info;
      for (int i = 0; i < nin && at < sizeof names; i++)
        if (!(e = bm_function_input_info(pkg, f, i, &info)))
          at += (size_t)snprintf(names + at, sizeof names - at, "%s%s", i ? ", " : "", info.name);
        else
          bm_status_free(e);
      rc = usage_error("function '%s' has no input '%s' (inputs: %s)", fname, o->inputs[k].name,
                       nin ? names : "none");
      goto done;
    }
  }

  /* Inputs not given need --random-inputs. */
  bm_tensor_info *decl = calloc((size_t)nin + 1, sizeof *decl);
  ins = calloc((size_t)nin + 1, sizeof *ins);
  int *given = calloc((size_t)nin + 1, sizeof *given); /* index into o->inputs, + 1 */
  if (!decl || !ins || !given) {
    free(decl);
    free(given);
    rc = runtime_error(bm_status_make(BM_ERR_OUT_OF_MEMORY, "inputs"));
    goto done;
  }
  for (int i = 0; i < nin && !s; i++) s = bm_function_input_info(pkg, f, i, &decl[i]);
  for (int k = 0; k < o->n_inputs && !s; k++) {
    int idx = 0;
    s = bm_function_find_input(pkg, f, o->inputs[k].name, &idx);
    if (!s) given[idx] = k + 1;
  }
  if (s) {
    free(decl);
    free(given);
    rc = runtime_error(s);
    goto done;
  }
  if (!o->have_seed)
    for (int i = 0; i < nin; i++)
      if (!given[i]) {
        rc = usage_error("input '%s' of function '%s' is not given (use --input %s=FILE or "
                         "--random-inputs SEED)", decl[i].name, fname, decl[i].name);
        free(decl);
        free(given);
        goto done;
      }

  bm_session_options so = {.threads = o->threads, .profile = o->profile};
  s = bm_session_create(pkg, &so, &sess);

  /* File inputs first (they bind the symbols), then random ones. */
  bindings b = {0};
  for (int pass = 0; pass < 2 && !s; pass++)
    for (int i = 0; i < nin && !s; i++) {
      if ((pass == 0) != (given[i] != 0)) continue;
      if (pass == 0) {
        s = load_input(&o->inputs[given[i] - 1], &ins[i]);
        if (!s) s = convert_input(&decl[i], &ins[i]);
        if (!s) s = check_shape(&decl[i], &ins[i], &b);
      } else {
        s = random_input(&decl[i], i, o->seed, &b, &ins[i]);
      }
      if (!s) {
        s = bm_session_set_input(sess, f, i, ins[i].data, ins[i].dtype, ins[i].ndim, ins[i].shape);
        if (s) s = bm_status_wrap(s, "input '%s' from %s", decl[i].name, ins[i].source);
      }
    }
  free(decl);
  free(given);
  if (s) {
    rc = runtime_error(s);
    goto done;
  }

  /* Run. */
  double first = 0, rest = 0, best = INFINITY;
  for (int r = 0; r < o->repeat && !s; r++) {
    double t0 = now_seconds();
    s = bm_session_run(sess, f);
    double dt = now_seconds() - t0;
    if (r == 0) first = dt;
    else {
      rest += dt;
      if (dt < best) best = dt;
    }
  }
  if (s) {
    rc = runtime_error(bm_status_wrap(s, "running '%s'", fname));
    goto done;
  }
  char t1[32], t2[32], t3[32];
  printf("%s: run 1: %s", fname, fmt_time(first, t1, sizeof t1));
  if (o->repeat > 1)
    printf(", mean of the other %d: %s (best %s)", o->repeat - 1,
           fmt_time(rest / (o->repeat - 1), t2, sizeof t2), fmt_time(best, t3, sizeof t3));
  printf("\n");

  /* Outputs. */
  if (o->output_dir && (s = make_dirs(o->output_dir))) {
    rc = runtime_error(s);
    goto done;
  }
  printf("outputs:\n");
  for (int i = 0; i < nout && !s; i++) {
    const void *data;
    bm_tensor_info info;
    s = bm_session_get_output(sess, f, i, &data, &info);
    if (s) break;
    print_summary(&info, data);
    if (o->output_dir) s = write_output(o->output_dir, &info, data);
  }
  if (!s && o->profile) s = print_profile(sess, f);
  if (s) rc = runtime_error(s);

done:
  for (int i = 0; ins && i < nin; i++) free(ins[i].data);
  free(ins);
  bm_session_destroy(sess);
  bm_package_close(pkg);
  return rc;
}

/* ------------------------------------------------------------ generate / chat */

static const char gen_usage_text[] =
    "usage: bmrun FILE.bmpk generate -p PROMPT [options]\n"
    "       bmrun FILE.bmpk generate --batch-prompts FILE [options]\n"
    "       bmrun FILE.bmpk chat [options]\n"
    "\n"
    "Text generation with a compiled causal LM package (bmc compile --model FOLDER).\n"
    "generate streams the continuation of the prompt to stdout; chat reads user\n"
    "messages from stdin, one per line, and answers each with the model's chat\n"
    "template, keeping the conversation in the KV cache (/reset starts over,\n"
    "/exit or end of input quits). Prefill and decode speeds go to stderr.\n"
    "\n"
    "options:\n"
    "  -p, --prompt TEXT        the prompt (generate)\n"
    "  --batch-prompts FILE     one prompt per line (blank lines skipped), generated\n"
    "                           as one batch of up to max_batch rows at a time\n"
    "  --ids LIST               the prompt as token ids, e.g. 1,450,4996 (generate;\n"
    "                           prints ids: for packages without a tokenizer)\n"
    "  -n, --n-predict N        tokens to generate per prompt or reply (default 128;\n"
    "                           -1: until end of text or a full context)\n"
    "  --temp T                 temperature (default 0.8; 0 = greedy)\n"
    "  --top-k N                keep the N most likely tokens (default 40; 0 = off)\n"
    "  --top-p P                nucleus sampling (default 0.95; 1 = off)\n"
    "  --min-p P                drop tokens below P x the top probability (default 0.05; 0 = off)\n"
    "  --repeat-penalty F       penalty of recent tokens (default 1.0 = off)\n"
    "  --repeat-last-n N        tokens the penalty looks back at (default 64; -1 = all)\n"
    "  --seed N                 sampling seed (default: from the clock, printed)\n"
    "  --no-bos                 do not prepend BOS to the prompt (generate)\n"
    "  --ignore-eos             keep generating after end-of-text tokens\n"
    "  --system TEXT            system message (chat)\n"
    "  --template NAME          chat format: llama3, llama2, mistral, chatml, gemma, phi3\n"
    "                           (default: the package's)\n"
    "  --threads N              worker threads (default: all CPUs)\n"
    "  --no-verify              skip the weight and code checksums when opening\n"
    "  --help                   print this help\n"
    "\n"
    "Sampling applies the repetition penalty, then temperature, top-k, top-p and\n"
    "min-p (docs/llm.md). Exit status: 0 ok, 1 runtime error, 2 usage error.\n";

typedef struct gen_options {
  const char *file;
  int chat;
  const char *prompt, *batch_file, *ids, *system, *tmpl;
  int n_predict;
  bm_sample_params sp;
  int have_seed;
  int threads, no_verify, no_bos, ignore_eos;
} gen_options;

static int parse_int_range(const char *s, long lo, long hi, int *out) {
  if (!s || !*s) return 0;
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || *end || v < lo || v > hi) return 0;
  *out = (int)v;
  return 1;
}

static int parse_double(const char *s, double lo, double hi, double *out) {
  if (!s || !*s) return 0;
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || *end || !(v >= lo && v <= hi)) return 0;
  *out = v;
  return 1;
}

static int parse_float_range(const char *s, double lo, double hi, float *out) {
  double v;
  if (!parse_double(s, lo, hi, &v)) return 0;
  *out = (float)v;
  return 1;
}

/* Returns -1 to continue, or an exit code. */
static int parse_gen_args(int argc, char **argv, gen_options *o) {
  memset(o, 0, sizeof *o);
  o->file = argv[1];
  o->chat = !strcmp(argv[2], "chat");
  o->n_predict = 128;
  o->sp = bm_sample_params_default();
  for (int i = 3; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      fputs(gen_usage_text, stdout);
      return EXIT_OK;
    }
    if (!strcmp(a, "--no-verify")) { o->no_verify = 1; continue; }
    if (!strcmp(a, "--no-bos")) { o->no_bos = 1; continue; }
    if (!strcmp(a, "--ignore-eos")) { o->ignore_eos = 1; continue; }
    static const char *const valued[] = {"-p", "--prompt", "--batch-prompts", "--ids", "-n", "--n-predict",
                                         "--temp", "--top-k", "--top-p", "--min-p", "--repeat-penalty",
                                         "--repeat-last-n", "--seed", "--system", "--template", "--threads"};
    int known = 0;
    for (size_t k = 0; k < sizeof valued / sizeof *valued; k++) known |= !strcmp(a, valued[k]);
    if (!known) return usage_error("%s: unknown option '%s'", argv[2], a);
    if (i + 1 >= argc) return usage_error("option '%s' needs a value", a);
    const char *v = argv[++i];
    if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) o->prompt = v;
    else if (!strcmp(a, "--batch-prompts")) o->batch_file = v;
    else if (!strcmp(a, "--ids")) o->ids = v;
    else if (!strcmp(a, "--system")) o->system = v;
    else if (!strcmp(a, "--template")) {
      if (bm_chat_kind_from_name(v) == BM_CHAT_NONE)
        return usage_error("--template: '%s' is not llama3, llama2, mistral, chatml, gemma or phi3", v);
      o->tmpl = v;
    } else if (!strcmp(a, "-n") || !strcmp(a, "--n-predict")) {
      if (!parse_int_range(v, -1, 1 << 24, &o->n_predict) || o->n_predict == 0)
        return usage_error("%s: '%s' is not a positive number of tokens (or -1)", a, v);
    } else if (!strcmp(a, "--temp")) {
      if (!parse_float_range(v, 0, 1e6, &o->sp.temperature)) return usage_error("--temp: '%s' is not a number >= 0", v);
    } else if (!strcmp(a, "--top-k")) {
      if (!parse_int_range(v, 0, 1 << 30, &o->sp.top_k)) return usage_error("--top-k: '%s' is not an integer >= 0", v);
    } else if (!strcmp(a, "--top-p")) {
      if (!parse_float_range(v, 1e-9, 1, &o->sp.top_p)) return usage_error("--top-p: '%s' is not in (0, 1]", v);
    } else if (!strcmp(a, "--min-p")) {
      if (!parse_float_range(v, 0, 1, &o->sp.min_p)) return usage_error("--min-p: '%s' is not in [0, 1]", v);
    } else if (!strcmp(a, "--repeat-penalty")) {
      if (!parse_float_range(v, 1e-6, 1e6, &o->sp.repeat_penalty))
        return usage_error("--repeat-penalty: '%s' is not a positive number", v);
    } else if (!strcmp(a, "--repeat-last-n")) {
      if (!parse_int_range(v, -1, 1 << 30, &o->sp.repeat_last_n))
        return usage_error("--repeat-last-n: '%s' is not an integer >= -1", v);
    } else if (!strcmp(a, "--seed")) {
      if (!parse_u64(v, &o->sp.seed)) return usage_error("--seed: '%s' is not a non-negative integer", v);
      o->have_seed = 1;
    } else if (!strcmp(a, "--threads")) {
      if (!parse_positive(v, 4096, &o->threads)) return usage_error("--threads: '%s' is not a positive integer", v);
    }
  }
  if (o->chat) {
    if (o->prompt || o->batch_file || o->ids)
      return usage_error("chat: -p, --batch-prompts and --ids are for generate (chat reads stdin)");
  } else {
    int given = !!o->prompt + !!o->batch_file + !!o->ids;
    if (given == 0) return usage_error("generate: give a prompt with -p TEXT, --batch-prompts FILE or --ids LIST");
    if (given > 1) return usage_error("generate: -p, --batch-prompts and --ids exclude each other");
    if (o->system || o->tmpl) return usage_error("generate: --system and --template are for chat");
  }
  if (!o->have_seed) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    o->sp.seed = (uint64_t)ts.tv_sec * 1000000007ull ^ (uint64_t)ts.tv_nsec;
  }
  return -1;
}

/* A growing string (the CLI may allocate; the driver does not). */
typedef struct strbuf {
  char *p;
  size_t n, cap;
} strbuf;

static int sb_append(strbuf *b, const char *s, size_t n) {
  if (b->n + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + n + 1) cap *= 2;
    char *q = realloc(b->p, cap);
    if (!q) return 0;
    b->p = q;
    b->cap = cap;
  }
  memcpy(b->p + b->n, s, n);
  b->n += n;
  b->p[b->n] = 0;
  return 1;
}

typedef struct stream_ctx {
  int stream;           /* write to stdout as tokens come */
  int print_ids;        /* --ids: print token ids instead of text */
  strbuf *rows;         /* per row text (batch mode, chat reply) */
  int oom;
} stream_ctx;

static int on_token(void *user, int row, int32_t token, const char *text, size_t len) {
  stream_ctx *c = user;
  char idbuf[24];
  if (c->print_ids) {
    if (token < 0) return 0;
    len = (size_t)snprintf(idbuf, sizeof idbuf, " %d", token);
    text = idbuf;
  }
  if (c->stream) {
    fwrite(text, 1, len, stdout);
    fflush(stdout);
  }
  if (c->rows && !sb_append(&c->rows[row], text, len)) c->oom = 1;
  return 0;
}

static void report(const char *what, const bm_gen_result *r, int rows) {
  double pt = r->prefill_seconds > 0 ? (double)r->prompt_tokens / r->prefill_seconds : 0;
  double dt = r->decode_seconds > 0 ? (double)r->decode_tokens / r->decode_seconds : 0;
  fprintf(stderr, "bmrun: %s: prefill %lld tokens", what, (long long)r->prompt_tokens);
  if (r->reused_tokens) fprintf(stderr, " (+%lld cached)", (long long)r->reused_tokens);
  fprintf(stderr, " in %.3f s (%.1f tokens/s); decode %lld tokens in %.3f s (%.1f tokens/s)", r->prefill_seconds,
          pt, (long long)r->decode_tokens, r->decode_seconds, dt);
  fprintf(stderr, "; stop:");
  for (int i = 0; i < rows; i++) fprintf(stderr, " %s", bm_gen_stop_name(r->stop[i]));
  fprintf(stderr, "\n");
}

/* "1,2, 3" -> ids */
static int parse_ids(const char *s, int32_t **ids, size_t *n) {
  size_t cap = strlen(s) / 2 + 2, k = 0;
  int32_t *v = malloc(sizeof *v * cap);
  if (!v) return 0;
  const char *p = s;
  while (*p) {
    while (*p == ' ' || *p == ',') p++;
    if (!*p) break;
    char *end;
    errno = 0;
    long x = strtol(p, &end, 10);
    if (end == p || errno || x < 0 || x > INT32_MAX || k >= cap) {
      free(v);
      return 0;
    }
    v[k++] = (int32_t)x;
    p = end;
    if (*p && *p != ',' && *p != ' ') {
      free(v);
      return 0;
    }
  }
  if (!k) {
    free(v);
    return 0;
  }
  *ids = v;
  *n = k;
  return 1;
}

/* Reads the non-blank lines of a file (malloc'd strings). */
static bm_status read_lines(const char *path, char ***lines, int *n) {
  *lines = NULL;
  *n = 0;
  FILE *f = fopen(path, "rb");
  if (!f) return bm_status_make(BM_ERR_IO, "cannot open %s: %s", path, strerror(errno));
  char *line = NULL;
  size_t cap = 0;
  ssize_t len;
  int count = 0, lcap = 0;
  char **v = NULL;
  bm_status s = NULL;
  while ((len = getline(&line, &cap, f)) >= 0) {
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
    int blank = 1;
    for (ssize_t i = 0; i < len; i++) blank &= line[i] == ' ' || line[i] == '\t';
    if (blank) continue;
    if (count == lcap) {
      lcap = lcap ? 2 * lcap : 16;
      char **nv = realloc(v, sizeof *nv * (size_t)lcap);
      if (!nv) { s = bm_status_make(BM_ERR_OUT_OF_MEMORY, "%s", path); break; }
      v = nv;
    }
    if (!(v[count] = strdup(line))) { s = bm_status_make(BM_ERR_OUT_OF_MEMORY, "%s", path); break; }
    count++;
  }
  free(line);
  fclose(f);
  if (!s && count == 0) s = bm_status_make(BM_ERR_INVALID_ARGUMENT, "%s holds no prompts (no non-blank line)", path);
  if (s) {
    for (int i = 0; i < count; i++) free(v[i]);
    free(v);
    return s;
  }
  *lines = v;
  *n = count;
  return NULL;
}

static int cmd_generate(const gen_options *o, bm_gen *g) {
  const bm_gen_info *in = bm_gen_get_info(g);
  const bm_tokenizer *tok = bm_gen_tokenizer(g);
  if (!o->ids && !tok) {
    fprintf(stderr, "bmrun: error: %s embeds no tokenizer: give the prompt as token ids with --ids, or "
                    "recompile with bmc compile --tokenizer PATH\n", o->file);
    return EXIT_RUNTIME;
  }
  char **lines = NULL;
  int nlines = 0, rc = EXIT_OK;
  bm_status s = NULL;
  if (o->batch_file) {
    if ((s = read_lines(o->batch_file, &lines, &nlines))) return runtime_error(s);
  } else {
    lines = malloc(sizeof *lines);
    if (!lines || !(lines[0] = strdup(o->ids ? o->ids : o->prompt))) {
      free(lines);
      return runtime_error(bm_status_make(BM_ERR_OUT_OF_MEMORY, "prompt"));
    }
    nlines = 1;
  }
  int32_t **ids = calloc((size_t)nlines, sizeof *ids);
  size_t *lens = calloc((size_t)nlines, sizeof *lens);
  strbuf *texts = calloc((size_t)nlines, sizeof *texts);
  if (!ids || !lens || !texts) s = bm_status_make(BM_ERR_OUT_OF_MEMORY, "prompts");
  uint32_t flags = BM_TOK_PARSE_SPECIAL | (o->no_bos ? 0 : BM_TOK_ADD_BOS);
  for (int i = 0; i < nlines && !s; i++) {
    if (o->ids) {
      if (!parse_ids(lines[i], &ids[i], &lens[i])) {
        rc = usage_error("--ids: '%s' is not a comma-separated list of token ids", lines[i]);
        goto done;
      }
    } else {
      s = bm_tokenizer_encode_alloc(tok, lines[i], strlen(lines[i]), flags, &ids[i], &lens[i]);
      if (s) s = bm_status_wrap(s, "encoding prompt %d", i + 1);
    }
  }
  stream_ctx sc = {.stream = nlines == 1, .print_ids = o->ids != NULL, .rows = NULL};
  for (int first = 0; first < nlines && !s; first += in->max_batch) {
    int rows = nlines - first < in->max_batch ? nlines - first : in->max_batch;
    bm_gen_request rq = bm_gen_request_default();
    rq.n_rows = rows;
    rq.prompts = (const int32_t *const *)ids + first;
    rq.prompt_lens = lens + first;
    rq.max_new_tokens = o->n_predict;
    rq.sample = o->sp;
    rq.ignore_eos = o->ignore_eos;
    rq.on_token = on_token;
    sc.rows = texts + first;
    rq.user = &sc;
    bm_gen_result res;
    s = bm_gen_generate(g, &rq, &res);
    if (s) break;
    if (sc.oom) {
      s = bm_status_make(BM_ERR_OUT_OF_MEMORY, "generated text");
      break;
    }
    if (sc.stream) {
      fputc('\n', stdout);
    } else {
      for (int r = 0; r < rows; r++)
        printf("--- prompt %d ---\n%s\n", first + r + 1, texts[first + r].p ? texts[first + r].p : "");
    }
    fflush(stdout);
    char what[64];
    snprintf(what, sizeof what, nlines == 1 ? "generate" : "prompts %d-%d", first + 1, first + rows);
    report(what, &res, rows);
  }
  if (s) rc = runtime_error(s);
done:
  for (int i = 0; i < nlines; i++) {
    free(lines[i]);
    if (ids) free(ids[i]);
    if (texts) free(texts[i].p);
  }
  free(lines);
  free(ids);
  free(lens);
  free(texts);
  return rc;
}

/* The conversation of a chat (strings owned). */
typedef struct convo {
  bm_chat_msg *m;
  int n, cap;
} convo;

static int convo_add(convo *c, const char *role, const char *text) {
  if (c->n == c->cap) {
    int cap = c->cap ? 2 * c->cap : 16;
    bm_chat_msg *nm = realloc(c->m, sizeof *nm * (size_t)cap);
    if (!nm) return 0;
    c->m = nm;
    c->cap = cap;
  }
  char *t = strdup(text);
  if (!t) return 0;
  c->m[c->n++] = (bm_chat_msg){role, t};
  return 1;
}

/* Removes messages [i, i + k). */
static void convo_drop(convo *c, int i, int k) {
  if (k <= 0) return;
  for (int j = i; j < i + k; j++) free((char *)c->m[j].content);
  memmove(c->m + i, c->m + i + k, sizeof *c->m * (size_t)(c->n - i - k));
  c->n -= k;
}

static void convo_clear(convo *c, int keep) {
  convo_drop(c, keep, c->n - keep);
}

static int cmd_chat(const gen_options *o, bm_gen *g) {
  const bm_gen_info *in = bm_gen_get_info(g);
  const bm_tokenizer *tok = bm_gen_tokenizer(g);
  if (!tok) {
    fprintf(stderr, "bmrun: error: %s embeds no tokenizer (recompile with bmc compile --tokenizer PATH)\n", o->file);
    return EXIT_RUNTIME;
  }
  bm_chat_kind kind = o->tmpl ? bm_chat_kind_from_name(o->tmpl) : in->chat;
  if (kind == BM_CHAT_NONE) {
    fprintf(stderr, "bmrun: error: %s records no chat template: pick one with --template "
                    "(llama3, llama2, mistral, chatml, gemma, phi3)\n", o->file);
    return EXIT_RUNTIME;
  }
  /* the end-of-turn token of the template, besides eos */
  static const char *const turn_end[] = {"<|eot_id|>", "<|im_end|>", "<end_of_turn>", "<|end|>", "</s>"};
  int32_t stops[8];
  int nstops = 0;
  for (size_t i = 0; i < sizeof turn_end / sizeof *turn_end; i++) {
    int32_t id = bm_tokenizer_find(tok, turn_end[i], strlen(turn_end[i]));
    if (id >= 0 && bm_tokenizer_is_special(tok, id)) stops[nstops++] = id;
  }
  convo c = {0};
  int keep = 0, rc = EXIT_OK;
  if (o->system) {
    if (!convo_add(&c, "system", o->system)) return runtime_error(bm_status_make(BM_ERR_OUT_OF_MEMORY, "chat"));
    keep = 1;
  }
  int tty = isatty(0);
  char *line = NULL;
  size_t lcap = 0;
  strbuf reply = {0};
  for (;;) {
    if (tty) {
      fputs("> ", stderr);
      fflush(stderr);
    }
    ssize_t len = getline(&line, &lcap, stdin);
    if (len < 0) break;
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
    if (len == 0) continue;
    if (line[0] == '/') {
      if (!strcmp(line, "/exit") || !strcmp(line, "/quit")) break;
      if (!strcmp(line, "/reset")) {
        convo_clear(&c, keep);
        bm_gen_reset(g);
        fprintf(stderr, "bmrun: conversation reset\n");
        continue;
      }
      fprintf(stderr, "bmrun: unknown command '%s' (/reset, /exit)\n", line);
      continue;
    }
    if (!convo_add(&c, "user", line)) {
      rc = runtime_error(bm_status_make(BM_ERR_OUT_OF_MEMORY, "chat"));
      break;
    }
    /* Render and encode; drop the oldest exchanges while it does not fit
     * (leaving room for at least one new token). */
    int32_t *ids = NULL;
    size_t n = 0;
    bm_status s = NULL;
    for (;;) {
      char *text = NULL;
      s = bm_chat_format(kind, c.m, c.n, true, &text);
      if (!s) s = bm_tokenizer_encode_alloc(tok, text, strlen(text), BM_TOK_PARSE_SPECIAL, &ids, &n);
      free(text);
      if (s || n < (size_t)in->max_ctx) break;
      free(ids);
      ids = NULL;
      if (c.n - keep < 3) {
        s = bm_status_make(BM_ERR_INVALID_ARGUMENT, "the message is %zu tokens with the template; the context "
                                                    "holds %d", n, in->max_ctx);
        break;
      }
      convo_drop(&c, keep, 2); /* the oldest user message and its answer */
      fprintf(stderr, "bmrun: context full: dropped the oldest exchange\n");
    }
    if (s) {
      fprintf(stderr, "bmrun: error: %s\n", bm_status_message(s));
      bm_status_free(s);
      convo_drop(&c, c.n - 1, 1);
      continue;
    }
    reply.n = 0;
    if (reply.p) reply.p[0] = 0;
    stream_ctx sc = {.stream = 1, .rows = &reply};
    bm_gen_request rq = bm_gen_request_default();
    rq.n_rows = 1;
    const int32_t *pp[1] = {ids};
    rq.prompts = pp;
    rq.prompt_lens = &n;
    rq.max_new_tokens = o->n_predict;
    rq.sample = o->sp;
    rq.reuse_cache = true;
    rq.ignore_eos = o->ignore_eos;
    rq.stop_ids = o->ignore_eos ? NULL : stops;
    rq.n_stop_ids = o->ignore_eos ? 0 : nstops;
    rq.on_token = on_token;
    rq.user = &sc;
    bm_gen_result res;
    s = bm_gen_generate(g, &rq, &res);
    free(ids);
    fputc('\n', stdout);
    fflush(stdout);
    if (s) {
      rc = runtime_error(s);
      break;
    }
    report("chat", &res, 1);
    if (sc.oom || !convo_add(&c, "assistant", reply.p ? reply.p : "")) {
      rc = runtime_error(bm_status_make(BM_ERR_OUT_OF_MEMORY, "chat"));
      break;
    }
  }
  free(line);
  free(reply.p);
  convo_clear(&c, 0);
  free(c.m);
  return rc;
}

static int gen_main(int argc, char **argv) {
  gen_options o;
  int rc = parse_gen_args(argc, argv, &o);
  if (rc >= 0) return rc;
  if (!o.have_seed && (o.sp.temperature > 0)) fprintf(stderr, "bmrun: seed %llu\n", (unsigned long long)o.sp.seed);
  bm_open_options oo = {.flags = o.no_verify ? BM_OPEN_SKIP_CHECKSUMS : 0};
  bm_package *pkg = NULL;
  bm_status s = bm_package_open(o.file, &oo, &pkg);
  if (s) return runtime_error(s);
  bm_gen *g = NULL;
  bm_gen_options go = {.threads = o.threads};
  s = bm_gen_open(pkg, &go, &g);
  if (s) {
    bm_package_close(pkg);
    return runtime_error(s);
  }
  rc = o.chat ? cmd_chat(&o, g) : cmd_generate(&o, g);
  bm_gen_close(g);
  bm_package_close(pkg);
  return rc;
}

/* ------------------------------------------------------------ txt2img, img2img, inpaint */

static const char sd_usage_text[] =
    "usage: bmrun FILE.bmpk txt2img -p PROMPT [options]\n"
    "       bmrun FILE.bmpk img2img -p PROMPT --init-img IMAGE.png [--strength S] [options]\n"
    "       bmrun FILE.bmpk inpaint -p PROMPT --init-img IMAGE.png --mask MASK.png [options]\n"
    "\n"
    "Image generation with a compiled Stable Diffusion 1.x/2.x package (bmc compile\n"
    "--model FOLDER|CHECKPOINT --width W --height H). The image size is the one the\n"
    "package was compiled for; init images and masks must have exactly that size.\n"
    "\n"
    "options:\n"
    "  -p, --prompt TEXT        the prompt\n"
    "  -n, --negative TEXT      the negative prompt (default: empty)\n"
    "  --steps N                sampler steps (default 20)\n"
    "  --cfg S                  classifier-free guidance scale (default 7.5; 1 = off)\n"
    "  --sampler NAME           a sampler below, an alias (euler_a, dpm2_a, ...) or an\n"
    "                           AUTOMATIC1111 name (\"DPM++ 2M Karras\") (default euler)\n"
    "  --schedule NAME          a schedule below (default: from the sampler name, else\n"
    "                           discrete)\n"
    "  --seed N                 seed of the first image (default: from the clock, printed)\n"
    "  --batch-count N          images, with seeds seed, seed+1, ... (default 1)\n"
    "  --eta X, --s-noise X     ancestral/SDE noise options (default: the reference's)\n"
    "  --init-img FILE.png      img2img/inpaint: the starting image\n"
    "  --strength S             img2img/inpaint: denoising strength in (0, 1] (default\n"
    "                           0.75 for img2img, 1 for inpaint); runs int(steps * S) steps\n"
    "  --mask FILE.png          inpaint: white = repaint, black = keep\n"
    "  -o, --output FILE.png    output file (default out.png); several images are\n"
    "                           written as FILE-0.png, FILE-1.png, ...\n"
    "  --threads N              worker threads (default: all CPUs)\n"
    "  --profile                print the UNet's per-op times of its last run\n"
    "  --quiet                  no progress bar\n"
    "  --no-verify              skip the weight and code checksums when opening\n"
    "  --help                   print this help and the samplers and schedules\n"
    "\n"
    "The PNG gets the generation parameters in a \"parameters\" text chunk, as\n"
    "AUTOMATIC1111 writes them. Exit status: 0 ok, 1 runtime error, 2 usage error.\n";

/* The samplers and schedules, from the registries. */
static void print_sd_lists(FILE *f) {
  fprintf(f, "\nsamplers (--sampler; model calls per step):\n");
  for (int i = 0; i < bm_sampler_count(); i++) {
    const bm_sampler_info *s = bm_sampler_at(i);
    const char *disp = bm_sd_sampler_display_name(s->name);
    char calls[96];
    snprintf(calls, sizeof calls, "%s%s%s", s->calls, s->cfg_pp ? ", CFG++" : "", s->deterministic ? "" : ", stochastic");
    fprintf(f, "  %-30s %-40s", s->name, calls);
    if (strcmp(disp, s->name)) fprintf(f, " \"%s\"", disp);
    fputc('\n', f);
  }
  fprintf(f, "\nschedules (--schedule):\n");
  for (int i = 0; i < bm_schedule_count(); i++)
    fprintf(f, "  %-32s %s\n", bm_schedule_name(i), bm_schedule_reference(i));
}

typedef struct sd_cli {
  const char *file, *out, *init, *mask;
  bm_sd_request rq;
  bm_sampler_options so;
  int have_seed, have_strength, threads, no_verify, profile, quiet;
  char sched_buf[64];
} sd_cli;

/* Returns -1 to continue, or an exit code. */
static int parse_sd_args(int argc, char **argv, sd_cli *o) {
  memset(o, 0, sizeof *o);
  o->file = argv[1];
  o->rq = bm_sd_request_default();
  o->so = bm_sampler_options_default();
  o->rq.mode = !strcmp(argv[2], "img2img") ? BM_SD_IMG2IMG : !strcmp(argv[2], "inpaint") ? BM_SD_INPAINT : BM_SD_TXT2IMG;
  o->out = "out.png";
  const char *prompt = NULL;
  for (int i = 3; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      fputs(sd_usage_text, stdout);
      print_sd_lists(stdout);
      return EXIT_OK;
    }
    if (!strcmp(a, "--no-verify")) { o->no_verify = 1; continue; }
    if (!strcmp(a, "--profile")) { o->profile = 1; continue; }
    if (!strcmp(a, "--quiet")) { o->quiet = 1; continue; }
    static const char *const valued[] = {"-p", "--prompt", "-n", "--negative", "--negative-prompt", "--steps", "--cfg",
                                         "--cfg-scale", "--sampler", "--schedule", "--seed", "--batch-count", "--eta",
                                         "--s-noise", "--init-img", "--strength", "--mask", "-o", "--output",
                                         "--threads"};
    int known = 0;
    for (size_t k = 0; k < sizeof valued / sizeof *valued; k++) known |= !strcmp(a, valued[k]);
    if (!known) return usage_error("%s: unknown option '%s'", argv[2], a);
    if (i + 1 >= argc) return usage_error("option '%s' needs a value", a);
    const char *v = argv[++i];
    bm_sd_request *rq = &o->rq;
    if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) prompt = v;
    else if (!strcmp(a, "-n") || !strcmp(a, "--negative") || !strcmp(a, "--negative-prompt")) rq->negative_prompt = v;
    else if (!strcmp(a, "--steps")) {
      if (!parse_int_range(v, 1, BM_SD_MAX_STEPS, &rq->steps))
        return usage_error("--steps: '%s' is not an integer in 1..%d", v, BM_SD_MAX_STEPS);
    } else if (!strcmp(a, "--cfg") || !strcmp(a, "--cfg-scale")) {
      if (!parse_double(v, 0, 1000, &rq->cfg_scale)) return usage_error("%s: '%s' is not a number in 0..1000", a, v);
    } else if (!strcmp(a, "--sampler")) rq->sampler = v;
    else if (!strcmp(a, "--schedule")) rq->schedule = v;
    else if (!strcmp(a, "--seed")) {
      if (!parse_u64(v, &rq->seed)) return usage_error("--seed: '%s' is not a non-negative integer", v);
      o->have_seed = 1;
    } else if (!strcmp(a, "--batch-count")) {
      if (!parse_int_range(v, 1, BM_SD_MAX_BATCH_COUNT, &rq->batch_count))
        return usage_error("--batch-count: '%s' is not an integer in 1..%d", v, BM_SD_MAX_BATCH_COUNT);
    } else if (!strcmp(a, "--eta")) {
      if (!parse_double(v, 0, 100, &o->so.eta)) return usage_error("--eta: '%s' is not a number in 0..100", v);
    } else if (!strcmp(a, "--s-noise")) {
      if (!parse_double(v, 0, 100, &o->so.s_noise)) return usage_error("--s-noise: '%s' is not a number in 0..100", v);
    } else if (!strcmp(a, "--strength")) {
      if (!parse_double(v, 1e-9, 1, &rq->strength)) return usage_error("--strength: '%s' is not in (0, 1]", v);
      o->have_strength = 1;
    } else if (!strcmp(a, "--init-img")) o->init = v;
    else if (!strcmp(a, "--mask")) o->mask = v;
    else if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
      if (!*v) return usage_error("%s needs a file name", a);
      o->out = v;
    } else if (!strcmp(a, "--threads")) {
      if (!parse_positive(v, 4096, &o->threads)) return usage_error("--threads: '%s' is not a positive integer", v);
    }
  }
  bm_sd_request *rq = &o->rq;
  if (!prompt) return usage_error("%s: give a prompt with -p TEXT", argv[2]);
  rq->prompt = prompt;
  if (rq->mode != BM_SD_TXT2IMG && !o->init) return usage_error("%s needs --init-img FILE.png", argv[2]);
  if (rq->mode == BM_SD_INPAINT && !o->mask) return usage_error("inpaint needs --mask FILE.png");
  if (rq->mode == BM_SD_TXT2IMG && (o->init || o->mask || o->have_strength))
    return usage_error("txt2img takes no --init-img, --mask or --strength (use img2img or inpaint)");
  if (rq->mode == BM_SD_IMG2IMG && o->mask) return usage_error("img2img takes no --mask (use inpaint)");
  if (rq->mode == BM_SD_INPAINT && !o->have_strength) rq->strength = 1.0;
  /* sampler, schedule and step count: checked against the registries now */
  const bm_sampler_info *si;
  const char *hint;
  bm_status s = bm_sd_resolve_sampler(rq->sampler, &si, &hint);
  if (s) {
    fprintf(stderr, "bmrun: --sampler: %s\n(run 'bmrun FILE txt2img --help' for the list)\n", bm_status_message(s));
    bm_status_free(s);
    return EXIT_USAGE;
  }
  rq->sampler = si->name;
  if (!rq->schedule) rq->schedule = hint ? hint : "discrete";
  int known = 0;
  for (int i = 0; i < bm_schedule_count(); i++) known |= !strcmp(bm_schedule_name(i), rq->schedule);
  if (!known) {
    char list[600];
    size_t at = 0;
    list[0] = 0;
    for (int i = 0; i < bm_schedule_count() && at < sizeof list; i++)
      at += (size_t)snprintf(list + at, sizeof list - at, "%s%s", i ? ", " : "", bm_schedule_name(i));
    return usage_error("--schedule: unknown schedule '%s'; valid schedules: %s", rq->schedule, list);
  }
  if (rq->steps < si->min_steps)
    return usage_error("--steps: sampler '%s' needs at least %d steps, got %d", si->name, si->min_steps, rq->steps);
  if (rq->mode != BM_SD_TXT2IMG) {
    int t_enc = (int)(rq->steps * rq->strength);
    if (t_enc < si->min_steps)
      return usage_error("--strength %g with --steps %d runs %d steps; sampler '%s' needs at least %d", rq->strength,
                         rq->steps, t_enc, si->name, si->min_steps < 1 ? 1 : si->min_steps);
  }
  rq->sampler_opts = &o->so;
  if (!o->have_seed) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    rq->seed = ((uint64_t)ts.tv_sec * 1000003ull ^ (uint64_t)ts.tv_nsec) & 0xffffffffull;
  }
  return -1;
}

typedef struct sd_out {
  const sd_cli *o;
  const bm_sd *sd;
  int failed;
} sd_out;

/* FILE.png -> FILE-<i>.png when there are several images. */
static void output_name(const char *out, int i, int count, char *buf, size_t size) {
  if (count <= 1) {
    snprintf(buf, size, "%s", out);
    return;
  }
  const char *dot = strrchr(out, '.'), *slash = strrchr(out, '/');
  if (!dot || (slash && dot < slash)) dot = out + strlen(out);
  snprintf(buf, size, "%.*s-%d%s", (int)(dot - out), out, i, dot);
}

static int sd_on_image(void *user, int image, uint64_t seed, const uint8_t *rgb, const float *latent) {
  (void)latent;
  (void)seed;
  sd_out *c = user;
  const bm_sd_info *in = bm_sd_get_info(c->sd);
  char params[8192], path[4096];
  bm_sd_format_parameters(c->sd, &c->o->rq, NULL, image, params, sizeof params);
  output_name(c->o->out, image, c->o->rq.batch_count, path, sizeof path);
  bm_status s = bm_image_write_png(path, rgb, in->width, in->height, 3, params);
  if (s) {
    fprintf(stderr, "bmrun: error: %s\n", bm_status_message(s));
    bm_status_free(s);
    c->failed = 1;
    return 1;
  }
  fprintf(stderr, "bmrun: wrote %s (seed %llu)\n", path, (unsigned long long)seed);
  return 0;
}

/* Reads a PNG of the package's size: RGB into rgb, or (mask) gray into rgb. */
static bm_status read_sd_image(const char *path, const bm_sd_info *in, int gray, const char *what, uint8_t *dst) {
  bm_image img;
  BM_RETURN_IF_ERROR(bm_image_read_png(path, &img));
  bm_status s = bm_image_check_size(&img, in->width, in->height, what);
  for (int y = 0; !s && y < img.height; y++)
    for (int x = 0; x < img.width; x++) {
      size_t i = (size_t)y * (size_t)img.width + (size_t)x;
      if (gray) dst[i] = bm_image_gray(&img, x, y);
      else bm_image_rgb(&img, x, y, dst + 3 * i);
    }
  bm_image_free(&img);
  if (s) return bm_status_wrap(s, "%s", path);
  return NULL;
}

static int sd_main(int argc, char **argv) {
  sd_cli o;
  int rc = parse_sd_args(argc, argv, &o);
  if (rc >= 0) return rc;
  if (!o.have_seed) fprintf(stderr, "bmrun: seed %llu\n", (unsigned long long)o.rq.seed);
  bm_open_options oo = {.flags = o.no_verify ? BM_OPEN_SKIP_CHECKSUMS : 0};
  bm_package *pkg = NULL;
  bm_status s = bm_package_open(o.file, &oo, &pkg);
  if (s) return runtime_error(s);
  bm_sd *sd = NULL;
  bm_sd_options so = {.threads = o.threads, .profile = o.profile};
  uint8_t *init = NULL, *mask = NULL;
  s = bm_sd_open(pkg, &so, &sd);
  if (!s) {
    const bm_sd_info *in = bm_sd_get_info(sd);
    size_t px = (size_t)in->width * (size_t)in->height;
    if (o.init && !(init = malloc(3 * px))) s = bm_status_make(BM_ERR_OUT_OF_MEMORY, "init image");
    if (!s && o.mask && !(mask = malloc(px))) s = bm_status_make(BM_ERR_OUT_OF_MEMORY, "mask");
    if (!s && o.init) s = read_sd_image(o.init, in, 0, "--init-img", init);
    if (!s && o.mask) s = read_sd_image(o.mask, in, 1, "--mask", mask);
  }
  sd_out out = {&o, sd, 0};
  bm_sd_result res;
  if (!s) {
    o.rq.init_rgb = init;
    o.rq.mask = mask;
    o.rq.on_progress = o.quiet ? NULL : bm_sd_progress_stderr;
    o.rq.on_image = sd_on_image;
    o.rq.user = &out;
    s = bm_sd_generate(sd, &o.rq, &res);
  }
  if (!s && !out.failed) {
    const bm_sd_info *in = bm_sd_get_info(sd);
    if (res.tokens > in->text_len || res.tokens_negative > in->text_len)
      fprintf(stderr, "bmrun: warning: the prompt (%d tokens) or negative prompt (%d) was truncated to %d tokens\n",
              res.tokens, res.tokens_negative, in->text_len);
    fprintf(stderr,
            "bmrun: %s: %d image(s) %dx%d, %d steps of %s (%s schedule), %d model evals, %d UNet runs; text %.3f s, "
            "sampling %.3f s (%.3f s/eval), VAE %.3f s, total %.3f s\n",
            argv[2], res.images, in->width, in->height, res.steps, res.sampler, res.schedule, res.model_evals,
            res.unet_calls, res.text_seconds, res.sample_seconds,
            res.model_evals ? res.sample_seconds / res.model_evals : 0.0, res.vae_seconds, res.total_seconds);
    if (o.profile) {
      int f;
      s = bm_package_find_function(pkg, "unet", &f);
      if (!s) s = print_profile(bm_sd_session(sd), f);
    }
  }
  if (s) rc = runtime_error(s);
  else rc = out.failed ? EXIT_RUNTIME : EXIT_OK;
  free(init);
  free(mask);
  bm_sd_close(sd);
  bm_package_close(pkg);
  return rc;
}

int main(int argc, char **argv) {
  if (argc >= 3 && argv[1][0] != '-' && (!strcmp(argv[2], "generate") || !strcmp(argv[2], "chat")))
    return gen_main(argc, argv);
  if (argc >= 3 && argv[1][0] != '-' &&
      (!strcmp(argv[2], "txt2img") || !strcmp(argv[2], "img2img") || !strcmp(argv[2], "inpaint")))
    return sd_main(argc, argv);
  options o;
  int rc = parse_args(argc, argv, &o);
  if (rc < 0 && o.help) {
    fputs(usage_text, stdout);
    fputs("\nStable Diffusion packages: bmrun FILE.bmpk txt2img|img2img|inpaint [options]\n"
          "(see bmrun FILE txt2img --help; docs/sd.md)\n", stdout);
    print_sd_lists(stdout);
    rc = EXIT_OK;
  } else if (rc < 0) {
    rc = run(&o);
  }
  free_options(&o);
  return rc;
}
