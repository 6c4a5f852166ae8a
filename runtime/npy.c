/* npy.c - .npy reader/writer: strict parsing of the header dict, bounds-checked
 * sizes, little-endian C-order arrays only (see npy.h). */
#include "npy.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char npy_magic[6] = {'\x93', 'N', 'U', 'M', 'P', 'Y'};
#define NPY_MAX_HEADER (1u << 20) /* far above anything numpy writes */

/* The parsed header. */
typedef struct npy_header {
  size_t data_offset;   /* of the data from the start of the file */
  bm_dtype dtype;
  int elem_bytes;       /* in the file */
  int from_f64;
  int ndim;
  int64_t shape[BM_NPY_MAX_DIMS];
  int64_t numel;
  uint64_t file_bytes;  /* numel * elem_bytes */
} npy_header;

/* ----------------------------------------------------- header dict parser */

typedef struct lexer {
  const char *p, *end;
} lexer;

static void skip_ws(lexer *l) {
  while (l->p < l->end && (*l->p == ' ' || *l->p == '\t' || *l->p == '\n' || *l->p == '\r')) l->p++;
}

static int eat(lexer *l, char c) {
  skip_ws(l);
  if (l->p < l->end && *l->p == c) {
    l->p++;
    return 1;
  }
  return 0;
}

/* A quoted Python string literal without escapes, into buf. */
static int lex_string(lexer *l, char *buf, size_t size) {
  skip_ws(l);
  if (l->p >= l->end || (*l->p != '\'' && *l->p != '"')) return 0;
  char q = *l->p++;
  size_t n = 0;
  while (l->p < l->end && *l->p != q) {
    if (*l->p == '\\' || n + 1 >= size) return 0;
    buf[n++] = *l->p++;
  }
  if (l->p >= l->end) return 0;
  l->p++;
  buf[n] = 0;
  return 1;
}

static int lex_word(lexer *l, const char *w) {
  skip_ws(l);
  size_t n = strlen(w);
  if ((size_t)(l->end - l->p) >= n && memcmp(l->p, w, n) == 0) {
    l->p += n;
    return 1;
  }
  return 0;
}

/* A non-negative integer (optionally with Python 2's L suffix). */
static int lex_uint(lexer *l, int64_t *out) {
  skip_ws(l);
  if (l->p >= l->end || *l->p < '0' || *l->p > '9') return 0;
  int64_t v = 0;
  while (l->p < l->end && *l->p >= '0' && *l->p <= '9') {
    if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, *l->p - '0', &v)) return 0;
    l->p++;
  }
  if (l->p < l->end && *l->p == 'L') l->p++;
  *out = v;
  return 1;
}

static bm_status corrupt(const char *name, const char *what) {
  return bm_status_make(BM_ERR_CORRUPT, "%s: bad .npy header: %s", name, what);
}

static bm_status set_descr(const char *name, const char *d, npy_header *h) {
  static const struct {
    const char *descr;
    bm_dtype dtype;
    int bytes;
  } table[] = {{"<f4", BM_DTYPE_F32, 4}, {"<f2", BM_DTYPE_F16, 2}, {"<i4", BM_DTYPE_I32, 4},
               {"<i8", BM_DTYPE_I64, 8}, {"|i1", BM_DTYPE_I8, 1},  {"<i1", BM_DTYPE_I8, 1},
               {"<f8", BM_DTYPE_F32, 8}};
  for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
    if (strcmp(d, table[i].descr) == 0) {
      h->dtype = table[i].dtype;
      h->elem_bytes = table[i].bytes;
      h->from_f64 = strcmp(d, "<f8") == 0;
      return NULL;
    }
  if (d[0] == '>')
    return bm_status_make(BM_ERR_UNSUPPORTED,
                          "%s: big-endian dtype '%s' is not supported (use a.astype('<%s'))", name,
                          d, d + 1);
  return bm_status_make(BM_ERR_UNSUPPORTED,
                        "%s: dtype '%s' is not supported (float32, float16, float64, int32, int64, "
                        "int8 are)",
                        name, d);
}

/* Parses the preamble and header dict of buf[0..len). len may be just the
 * header (the data is checked by the caller). */
static bm_status parse_header(const uint8_t *buf, size_t len, const char *name, npy_header *h) {
  memset(h, 0, sizeof *h);
  if (len < 10 || memcmp(buf, npy_magic, 6) != 0)
    return bm_status_make(BM_ERR_CORRUPT, "%s: not a .npy file (bad magic)", name);
  int major = buf[6];
  size_t hlen, pre;
  if (major == 1) {
    hlen = buf[8] | (size_t)buf[9] << 8;
    pre = 10;
  } else if (major == 2 || major == 3) {
    if (len < 12) return bm_status_make(BM_ERR_CORRUPT, "%s: .npy preamble truncated", name);
    hlen = buf[8] | (size_t)buf[9] << 8 | (size_t)buf[10] << 16 | (size_t)buf[11] << 24;
    pre = 12;
  } else {
    return bm_status_make(BM_ERR_INCOMPATIBLE, "%s: .npy format version %d.%d is not supported",
                          name, major, buf[7]);
  }
  if (hlen > NPY_MAX_HEADER)
    return bm_status_make(BM_ERR_CORRUPT, "%s: .npy header length %zu is too large", name, hlen);
  if (pre + hlen > len)
    return bm_status_make(BM_ERR_CORRUPT,
                          "%s: .npy header length %zu goes beyond the end of the file (%zu bytes)",
                          name, hlen, len);
  h->data_offset = pre + hlen;

  lexer l = {(const char *)buf + pre, (const char *)buf + pre + hlen};
  for (const char *c = l.p; c < l.end; c++)
    if (*c == 0) return corrupt(name, "contains a NUL byte");
  int have_descr = 0, have_fortran = 0, have_shape = 0;
  if (!eat(&l, '{')) return corrupt(name, "does not start with '{'");
  while (!eat(&l, '}')) {
    char key[32], val[64];
    if (!lex_string(&l, key, sizeof key)) return corrupt(name, "expected a quoted key");
    if (!eat(&l, ':')) return corrupt(name, "expected ':' after a key");
    if (strcmp(key, "descr") == 0 && !have_descr) {
      skip_ws(&l);
      if (l.p < l.end && *l.p == '[')
        return bm_status_make(BM_ERR_UNSUPPORTED, "%s: structured dtypes are not supported", name);
      if (!lex_string(&l, val, sizeof val)) return corrupt(name, "'descr' is not a string");
      BM_RETURN_IF_ERROR(set_descr(name, val, h));
      have_descr = 1;
    } else if (strcmp(key, "fortran_order") == 0 && !have_fortran) {
      if (lex_word(&l, "True"))
        return bm_status_make(BM_ERR_UNSUPPORTED,
                              "%s: fortran_order is True; only C order is supported "
                              "(save np.ascontiguousarray(a))",
                              name);
      if (!lex_word(&l, "False")) return corrupt(name, "'fortran_order' is not True or False");
      have_fortran = 1;
    } else if (strcmp(key, "shape") == 0 && !have_shape) {
      if (!eat(&l, '(')) return corrupt(name, "'shape' is not a tuple");
      int64_t numel = 1;
      while (!eat(&l, ')')) {
        int64_t v;
        if (h->ndim == BM_NPY_MAX_DIMS) return corrupt(name, "'shape' has too many dimensions");
        if (!lex_uint(&l, &v)) return corrupt(name, "'shape' holds something other than integers");
        if (__builtin_mul_overflow(numel, v, &numel)) return corrupt(name, "'shape' overflows");
        h->shape[h->ndim++] = v;
        if (!eat(&l, ',')) {
          if (!eat(&l, ')')) return corrupt(name, "'shape' is not a tuple");
          break;
        }
      }
      h->numel = numel;
      have_shape = 1;
    } else {
      char msg[80];
      snprintf(msg, sizeof msg, "unexpected or repeated key '%s'", key);
      return corrupt(name, msg);
    }
    if (!eat(&l, ',')) {
      if (!eat(&l, '}')) return corrupt(name, "expected ',' or '}'");
      break;
    }
  }
  skip_ws(&l);
  if (l.p != l.end) return corrupt(name, "data after the dict");
  if (!have_descr || !have_fortran || !have_shape)
    return corrupt(name, !have_descr ? "missing 'descr'" : !have_fortran ? "missing 'fortran_order'"
                                                                         : "missing 'shape'");
  if (__builtin_mul_overflow((uint64_t)h->numel, (uint64_t)h->elem_bytes, &h->file_bytes) ||
      h->file_bytes > (uint64_t)SIZE_MAX / 2)
    return corrupt(name, "data size overflows");
  return NULL;
}

/* Sets out's fields from h and allocates out->data (64-byte aligned). */
static bm_status alloc_array(const npy_header *h, const char *name, bm_npy_array *out) {
  out->dtype = h->dtype;
  out->ndim = h->ndim;
  memcpy(out->shape, h->shape, sizeof h->shape);
  out->numel = h->numel;
  out->from_f64 = h->from_f64;
  out->nbytes = bm_dtype_nbytes(h->dtype, h->numel);
  if (out->nbytes == 0) return NULL;
  size_t alloc = (out->nbytes + 63) & ~(size_t)63;
  out->data = aligned_alloc(64, alloc);
  if (!out->data) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "%s: %zu bytes", name, out->nbytes);
  return NULL;
}

/* Fills an allocated array from the file's bytes (converting f64). */
static void fill_array(const npy_header *h, const uint8_t *src, bm_npy_array *out) {
  if (out->nbytes == 0) return;
  if (!h->from_f64) {
    memcpy(out->data, src, out->nbytes);
    return;
  }
  float *dst = out->data;
  for (int64_t i = 0; i < h->numel; i++) {
    double d;
    memcpy(&d, src + 8 * i, 8);
    dst[i] = (float)d;
  }
}

bm_status bm_npy_parse(const void *buf, size_t len, const char *name, bm_npy_array *out) {
  if (!out) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "bm_npy_parse: NULL output");
  memset(out, 0, sizeof *out);
  if (!name) name = "<npy>";
  if (!buf) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "%s: NULL buffer", name);
  npy_header h;
  BM_RETURN_IF_ERROR(parse_header(buf, len, name, &h));
  uint64_t have = len - h.data_offset;
  if (have != h.file_bytes)
    return bm_status_make(BM_ERR_CORRUPT, "%s: .npy data is %llu bytes but the header needs %llu%s",
                          name, (unsigned long long)have, (unsigned long long)h.file_bytes,
                          have < h.file_bytes ? " (truncated)" : "");
  bm_status s = alloc_array(&h, name, out);
  if (s) {
    bm_npy_free(out);
    return s;
  }
  fill_array(&h, (const uint8_t *)buf + h.data_offset, out);
  return NULL;
}

bm_status bm_npy_read(const char *path, bm_npy_array *out) {
  if (!out) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "bm_npy_read: NULL output");
  memset(out, 0, sizeof *out);
  if (!path) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "bm_npy_read: NULL path");
  FILE *f = fopen(path, "rb");
  if (!f) return bm_status_make(BM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
  struct stat sb;
  bm_status s = NULL;
  uint8_t *hbuf = NULL, *dbuf = NULL;
  if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
    s = bm_status_make(BM_ERR_IO, "%s: not a regular file", path);
    goto done;
  }
  size_t size = (size_t)sb.st_size;
  /* The preamble, then the header, then the data. */
  uint8_t pre[12];
  size_t npre = fread(pre, 1, sizeof pre, f);
  if (npre < 10 || memcmp(pre, npy_magic, 6) != 0) {
    s = bm_status_make(BM_ERR_CORRUPT, "%s: not a .npy file (%s)", path,
                       npre < 10 ? "too short" : "bad magic");
    goto done;
  }
  size_t pre_len = pre[6] == 1 ? 10 : 12, hlen = pre[8] | (size_t)pre[9] << 8;
  if (pre_len == 12 && npre >= 12) hlen |= (size_t)pre[10] << 16 | (size_t)pre[11] << 24;
  if (hlen > NPY_MAX_HEADER) hlen = NPY_MAX_HEADER + 1; /* parse_header reports it */
  size_t hl = pre_len + hlen;
  if (hl > size) hl = size;
  if (hl < npre) hl = npre;
  hbuf = malloc(hl);
  if (!hbuf) {
    s = bm_status_make(BM_ERR_OUT_OF_MEMORY, "%s: header", path);
    goto done;
  }
  memcpy(hbuf, pre, npre);
  if (hl > npre && fread(hbuf + npre, 1, hl - npre, f) != hl - npre) {
    s = bm_status_make(BM_ERR_IO, "%s: read error", path);
    goto done;
  }
  npy_header h;
  s = parse_header(hbuf, hl, path, &h);
  if (s) goto done;
  uint64_t have = size - h.data_offset;
  if (have != h.file_bytes) {
    s = bm_status_make(BM_ERR_CORRUPT, "%s: .npy data is %llu bytes but the header needs %llu%s",
                       path, (unsigned long long)have, (unsigned long long)h.file_bytes,
                       have < h.file_bytes ? " (truncated)" : "");
    goto done;
  }
  if (fseek(f, (long)h.data_offset, SEEK_SET) != 0) {
    s = bm_status_make(BM_ERR_IO, "%s: seek failed", path);
    goto done;
  }
  s = alloc_array(&h, path, out);
  if (s) goto done;
  if (out->nbytes == 0) goto done;
  if (!h.from_f64) {
    /* Read straight into the array. */
    if (fread(out->data, 1, out->nbytes, f) != out->nbytes)
      s = bm_status_make(BM_ERR_IO, "%s: read error", path);
    goto done;
  }
  dbuf = malloc((size_t)h.file_bytes);
  if (!dbuf) {
    s = bm_status_make(BM_ERR_OUT_OF_MEMORY, "%s: %llu bytes", path, (unsigned long long)h.file_bytes);
    goto done;
  }
  if (fread(dbuf, 1, (size_t)h.file_bytes, f) != h.file_bytes) {
    s = bm_status_make(BM_ERR_IO, "%s: read error", path);
    goto done;
  }
  fill_array(&h, dbuf, out);
done:
  free(hbuf);
  free(dbuf);
  fclose(f);
  if (s) bm_npy_free(out);
  return s;
}

void bm_npy_free(bm_npy_array *a) {
  if (!a) return;
  free(a->data);
  memset(a, 0, sizeof *a);
}

bm_status bm_npy_write(const char *path, bm_dtype dtype, int ndim, const int64_t *shape,
                       const void *data) {
  const char *descr;
  switch (dtype) {
    case BM_DTYPE_F32: descr = "<f4"; break;
    case BM_DTYPE_F16: descr = "<f2"; break;
    case BM_DTYPE_I32: descr = "<i4"; break;
    case BM_DTYPE_I64: descr = "<i8"; break;
    case BM_DTYPE_I8: descr = "|i1"; break;
    default:
      return bm_status_make(BM_ERR_UNSUPPORTED, "%s: dtype %s has no .npy type (convert to f32)",
                            path ? path : "?", bm_dtype_name(dtype));
  }
  if (!path || ndim < 0 || ndim > BM_NPY_MAX_DIMS || (ndim > 0 && !shape))
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "bm_npy_write: bad arguments");
  int64_t numel = 1;
  for (int i = 0; i < ndim; i++)
    if (shape[i] < 0 || __builtin_mul_overflow(numel, shape[i], &numel))
      return bm_status_make(BM_ERR_INVALID_ARGUMENT, "%s: bad shape", path);
  size_t nbytes = bm_dtype_nbytes(dtype, numel);
  if (nbytes && !data) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "%s: NULL data", path);

  char dict[400];
  int n = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (", descr);
  for (int i = 0; i < ndim; i++)
    n += snprintf(dict + n, sizeof dict - n, "%s%lld", i ? ", " : "", (long long)shape[i]);
  n += snprintf(dict + n, sizeof dict - n, "%s), }", ndim == 1 ? "," : "");
  /* Pad with spaces and a final newline so the data starts at a multiple of 64. */
  char header[512];
  memcpy(header, npy_magic, 6);
  header[6] = 1;
  header[7] = 0;
  size_t total = (10 + (size_t)n + 1 + 63) & ~(size_t)63;
  size_t hlen = total - 10;
  header[8] = (char)(hlen & 0xff);
  header[9] = (char)(hlen >> 8);
  memcpy(header + 10, dict, (size_t)n);
  memset(header + 10 + n, ' ', hlen - (size_t)n - 1);
  header[total - 1] = '\n';

  FILE *f = fopen(path, "wb");
  if (!f) return bm_status_make(BM_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
  int ok = fwrite(header, 1, total, f) == total && (nbytes == 0 || fwrite(data, 1, nbytes, f) == nbytes);
  if (fclose(f) != 0) ok = 0;
  if (!ok) return bm_status_make(BM_ERR_IO, "%s: write failed: %s", path, strerror(errno));
  return NULL;
}
