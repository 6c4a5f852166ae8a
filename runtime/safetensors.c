/* safetensors.c - safetensors reader (mmap, full header validation), sharded
 * checkpoint sets resolved through *.index.json, and a deterministic writer. */
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------ dtypes */

static const struct {
  const char *name;
  int bytes;
  int bm; /* bm_dtype, or -1 when bm has none */
} st_dtypes[] = {
    {"F32", 4, BM_DTYPE_F32},          {"F16", 2, BM_DTYPE_F16},
    {"BF16", 2, BM_DTYPE_BF16},        {"I8", 1, BM_DTYPE_I8},
    {"I32", 4, BM_DTYPE_I32},          {"I64", 8, BM_DTYPE_I64},
    {"F8_E4M3", 1, BM_DTYPE_FP8_E4M3}, {"F8_E5M2", 1, BM_DTYPE_FP8_E5M2},
    {"F64", 8, -1},                    {"I16", 2, -1},
    {"U8", 1, -1},                     {"U16", 2, -1},
    {"U32", 4, -1},                    {"U64", 8, -1},
    {"BOOL", 1, -1},                   {"F8_E8M0", 1, -1},
};
enum { N_ST_DTYPES = sizeof st_dtypes / sizeof st_dtypes[0] };

/* The safetensors name of a bm dtype, or NULL (I4 has none). */
static const char *st_name_of(bm_dtype t) {
  for (int i = 0; i < N_ST_DTYPES; i++)
    if (st_dtypes[i].bm == (int)t) return st_dtypes[i].name;
  return NULL;
}

/* "F8_E4M3" -> "f8_e4m3" for messages. */
static const char *lower(const char *s, char *buf, size_t size) {
  size_t i = 0;
  for (; s[i] && i + 1 < size; i++) buf[i] = (s[i] >= 'A' && s[i] <= 'Z') ? s[i] - 'A' + 'a' : s[i];
  buf[i] = 0;
  return buf;
}

char *bm_st_shape_str(int ndim, const int64_t *shape, char *buf, size_t size) {
  size_t at = 0;
  if (size == 0) return buf;
  buf[0] = 0;
  at += snprintf(buf + at, size - at, "(");
  for (int i = 0; i < ndim && at < size; i++)
    at += snprintf(buf + at, size - at, "%s%lld", i ? ", " : "", (long long)shape[i]);
  if (at < size) at += snprintf(buf + at, size - at, ndim == 1 ? ",)" : ")");
  return buf;
}

/* ------------------------------------------------------------------ UTF-8 */

/* 1 if p[0..n) is valid UTF-8 without NUL bytes, else 0; *bad = offset. */
static int valid_utf8(const uint8_t *p, size_t n, size_t *bad) {
  size_t i = 0;
  while (i < n) {
    uint8_t c = p[i];
    size_t len;
    uint32_t cp, min;
    if (c == 0) goto fail;
    if (c < 0x80) { i++; continue; }
    if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; min = 0x80; }
    else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; min = 0x800; }
    else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; min = 0x10000; }
    else goto fail;
    if (n - i < len) goto fail;
    for (size_t k = 1; k < len; k++) {
      if ((p[i + k] & 0xC0) != 0x80) goto fail;
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) goto fail;
    i += len;
  }
  return 1;
fail:
  *bad = i;
  return 0;
}

/* ------------------------------------------------------------------ files */

struct bm_st_file {
  char *path;
  const uint8_t *map; /* whole file, read-only; NULL when size is 0 */
  size_t size;
  cJSON *root;        /* parsed header: names and metadata point into it */
  int n;
  bm_st_tensor *tensors; /* sorted by name */
  int n_meta;
  const cJSON **meta;    /* string members of __metadata__, file order */
};

const char *bm_st_path(const bm_st_file *st) { return st ? st->path : ""; }
int bm_st_count(const bm_st_file *st) { return st ? st->n : 0; }

const bm_st_tensor *bm_st_tensor_at(const bm_st_file *st, int i) {
  return st && i >= 0 && i < st->n ? &st->tensors[i] : NULL;
}

static int cmp_name_key(const void *key, const void *elem) {
  return strcmp((const char *)key, ((const bm_st_tensor *)elem)->name);
}

const bm_st_tensor *bm_st_find(const bm_st_file *st, const char *name) {
  if (!st || !name || st->n == 0) return NULL;
  return bsearch(name, st->tensors, (size_t)st->n, sizeof *st->tensors, cmp_name_key);
}

bm_status bm_st_get(const bm_st_file *st, const char *name, const bm_st_tensor **out) {
  *out = NULL;
  if (!st || !name) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "bm_st_get: NULL argument");
  *out = bm_st_find(st, name);
  if (!*out) return bm_status_make(BM_ERR_NOT_FOUND, "%s: no tensor '%s'", st->path, name);
  return NULL;
}

const char *bm_st_metadata(const bm_st_file *st, const char *key) {
  if (!st || !key) return NULL;
  for (int i = 0; i < st->n_meta; i++)
    if (strcmp(st->meta[i]->string, key) == 0) return st->meta[i]->valuestring;
  return NULL;
}

int bm_st_metadata_count(const bm_st_file *st) { return st ? st->n_meta : 0; }

void bm_st_metadata_at(const bm_st_file *st, int i, const char **key, const char **value) {
  *key = *value = NULL;
  if (!st || i < 0 || i >= st->n_meta) return;
  *key = st->meta[i]->string;
  *value = st->meta[i]->valuestring;
}

bm_status bm_st_check_dtype(const bm_st_tensor *t) {
  if (!t) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "bm_st_check_dtype: NULL tensor");
  if (t->supported) return NULL;
  return bm_status_make(BM_ERR_UNSUPPORTED, "tensor '%s' has dtype %s, which bm does not support",
                        t->name, t->dtype_name);
}

void bm_st_close(bm_st_file *st) {
  if (!st) return;
  if (st->map) munmap((void *)st->map, st->size);
  cJSON_Delete(st->root);
  free(st->tensors);
  free(st->meta);
  free(st->path);
  free(st);
}

static int cmp_tensor_name(const void *a, const void *b) {
  return strcmp(((const bm_st_tensor *)a)->name, ((const bm_st_tensor *)b)->name);
}

/* A JSON number that is an integer in [0, 2^53]; 0 if not. */
static int json_uint(const cJSON *j, uint64_t *out) {
  if (!cJSON_IsNumber(j)) return 0;
  double d = j->valuedouble;
  if (!(d >= 0 && d <= 9007199254740992.0) || d != floor(d)) return 0;
  *out = (uint64_t)d;
  return 1;
}

/* Validates one tensor entry `j` (named j->string) into *t. */
static bm_status parse_entry(const char *path, const cJSON *j, uint64_t data_size, bm_st_tensor *t) {
  const char *name = j->string;
  memset(t, 0, sizeof *t);
  t->name = name;
  if (!cJSON_IsObject(j))
    return bm_status_make(BM_ERR_CORRUPT, "%s: tensor '%s': entry is not a JSON object", path, name);

  const cJSON *dt = cJSON_GetObjectItemCaseSensitive(j, "dtype");
  const cJSON *sh = cJSON_GetObjectItemCaseSensitive(j, "shape");
  const cJSON *off = cJSON_GetObjectItemCaseSensitive(j, "data_offsets");
  if (!dt || !sh || !off)
    return bm_status_make(BM_ERR_CORRUPT, "%s: tensor '%s': missing \"%s\"", path, name,
                          !dt ? "dtype" : !sh ? "shape" : "data_offsets");

  if (!cJSON_IsString(dt))
    return bm_status_make(BM_ERR_CORRUPT, "%s: tensor '%s': \"dtype\" is not a string", path, name);
  int k = 0;
  while (k < N_ST_DTYPES && strcmp(st_dtypes[k].name, dt->valuestring) != 0) k++;
  if (k == N_ST_DTYPES)
    return bm_status_make(BM_ERR_CORRUPT, "%s: tensor '%s': unknown dtype \"%.40s\"", path, name,
                          dt->valuestring);
  t->dtype_name = st_dtypes[k].name;
  t->elem_bytes = st_dtypes[k].bytes;
  t->supported = st_dtypes[k].bm >= 0;
  t->dtype = t->supported ? (bm_dtype)st_dtypes[k].bm : BM_DTYPE_F32;

  if (!cJSON_IsArray(sh))
    return bm_status_make(BM_ERR_CORRUPT, "%s: tensor '%s': \"shape\" is not an array", path, name);
  int ndim = cJSON_GetArraySize(sh);
  if (ndim > BM_ST_MAX_DIMS)
    return bm_status_make(BM_ERR_CORRUPT, "%s: tensor '%s': shape has %d dims (at most %d)", path,
                          name, ndim, BM_ST_MAX_DIMS);
  t->ndim = ndim;
  int64_t numel = 1;
  int d = 0;
  for (const cJSON *e = sh->child; e; e = e->next, d++) {
    uint64_t v;
    if (!json_uint(e, &v))
      return bm_status_make(BM_ERR_CORRUPT,
                            "%s: tensor '%s': shape[%d] is not an integer in [0, 2^53]", path, name, d);
    t->shape[d] = (int64_t)v;
    if (__builtin_mul_overflow(numel, (int64_t)v, &numel))
      return bm_status_make(BM_ERR_CORRUPT, "%s: tensor '%s': shape element count overflows", path,
                            name);
  }
  t->numel = numel;
  int64_t need;
  if (__builtin_mul_overflow(numel, (int64_t)t->elem_bytes, &need))
    return bm_status_make(BM_ERR_CORRUPT, "%s: tensor '%s': shape byte size overflows", path, name);

  uint64_t b, e;
  if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 || !json_uint(off->child, &b) ||
      !json_uint(off->child->next, &e))
    return bm_status_make(BM_ERR_CORRUPT,
                          "%s: tensor '%s': \"data_offsets\" is not [begin, end] of integers in "
                          "[0, 2^53]",
                          path, name);
  if (b > e)
    return bm_status_make(BM_ERR_CORRUPT, "%s: tensor '%s': data_offsets [%llu, %llu] has begin > end",
                          path, name, (unsigned long long)b, (unsigned long long)e);
  if (e > data_size)
    return bm_status_make(BM_ERR_CORRUPT,
                          "%s: tensor '%s': data_offsets [%llu, %llu] end beyond the data section "
                          "(%llu bytes; file truncated?)",
                          path, name, (unsigned long long)b, (unsigned long long)e,
                          (unsigned long long)data_size);
  if (e - b != (uint64_t)need) {
    char sbuf[200], lbuf[16];
    return bm_status_make(BM_ERR_CORRUPT,
                          "%s: tensor '%s': data_offsets [%llu, %llu] is %llu bytes but shape %s of "
                          "%s needs %lld",
                          path, name, (unsigned long long)b, (unsigned long long)e,
                          (unsigned long long)(e - b), bm_st_shape_str(ndim, t->shape, sbuf, sizeof sbuf),
                          lower(t->dtype_name, lbuf, sizeof lbuf), (long long)need);
  }
  t->nbytes = (size_t)need;
  t->offset = b; /* relative for now; made absolute by the caller */
  return NULL;
}

/* Validates the header of an open mapping and fills st. */
static bm_status parse_file(bm_st_file *st) {
  const char *path = st->path;
  if (st->size == 0) return bm_status_make(BM_ERR_CORRUPT, "%s: file is empty", path);
  if (st->size < 8)
    return bm_status_make(BM_ERR_CORRUPT,
                          "%s: file is %zu bytes, too short for the 8-byte header length", path,
                          st->size);
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | st->map[i];
  if (hlen == 0) return bm_status_make(BM_ERR_CORRUPT, "%s: header length is 0", path);
  if (hlen > BM_ST_MAX_HEADER)
    return bm_status_make(BM_ERR_CORRUPT, "%s: header length %llu exceeds the %u-byte limit "
                          "(not a safetensors file?)", path, (unsigned long long)hlen, BM_ST_MAX_HEADER);
  if (hlen > st->size - 8)
    return bm_status_make(BM_ERR_CORRUPT,
                          "%s: header length %llu exceeds the file size %zu - 8 (truncated?)", path,
                          (unsigned long long)hlen, st->size);
  const uint8_t *h = st->map + 8;
  size_t bad;
  if (!valid_utf8(h, (size_t)hlen, &bad))
    return bm_status_make(BM_ERR_CORRUPT, "%s: header is not valid UTF-8 (byte %zu)", path, bad);

  /* cJSON gets a NUL-terminated copy so it can never read past the header. */
  char *copy = malloc((size_t)hlen + 1);
  if (!copy) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "%s: header of %llu bytes", path,
                                   (unsigned long long)hlen);
  memcpy(copy, h, (size_t)hlen);
  copy[hlen] = 0;
  const char *end = NULL;
  st->root = cJSON_ParseWithOpts(copy, &end, 0);
  size_t end_off = end ? (size_t)(end - copy) : 0;
  int trailing_ok = 1;
  if (st->root)
    for (size_t i = end_off; i < hlen; i++)
      if (!strchr(" \t\r\n", copy[i])) trailing_ok = 0;
  free(copy);
  if (!st->root)
    return bm_status_make(BM_ERR_CORRUPT, "%s: header is not valid JSON (near byte %zu)", path,
                          end_off);
  if (!trailing_ok)
    return bm_status_make(BM_ERR_CORRUPT, "%s: header has data after the JSON object", path);
  if (!cJSON_IsObject(st->root))
    return bm_status_make(BM_ERR_CORRUPT, "%s: header is not a JSON object", path);

  int n = 0;
  const cJSON *meta = NULL;
  for (const cJSON *j = st->root->child; j; j = j->next) {
    if (strcmp(j->string, "__metadata__") == 0) {
      if (meta) return bm_status_make(BM_ERR_CORRUPT, "%s: \"__metadata__\" appears twice", path);
      meta = j;
    } else {
      n++;
    }
  }
  if (meta) {
    if (!cJSON_IsObject(meta))
      return bm_status_make(BM_ERR_CORRUPT, "%s: \"__metadata__\" is not an object", path);
    int m = cJSON_GetArraySize(meta);
    st->meta = calloc((size_t)m + 1, sizeof *st->meta);
    if (!st->meta) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "%s: metadata", path);
    for (const cJSON *j = meta->child; j; j = j->next) {
      if (!cJSON_IsString(j))
        return bm_status_make(BM_ERR_CORRUPT, "%s: \"__metadata__\" value '%s' is not a string",
                              path, j->string);
      st->meta[st->n_meta++] = j;
    }
  }

  uint64_t data_size = st->size - 8 - hlen;
  st->tensors = calloc((size_t)n + 1, sizeof *st->tensors);
  if (!st->tensors) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "%s: %d tensors", path, n);
  for (const cJSON *j = st->root->child; j; j = j->next) {
    if (j == meta) continue;
    bm_st_tensor *t = &st->tensors[st->n];
    BM_RETURN_IF_ERROR(parse_entry(path, j, data_size, t));
    t->offset += 8 + hlen;
    t->data = st->map + t->offset;
    st->n++;
  }
  qsort(st->tensors, (size_t)st->n, sizeof *st->tensors, cmp_tensor_name);
  for (int i = 1; i < st->n; i++)
    if (strcmp(st->tensors[i - 1].name, st->tensors[i].name) == 0)
      return bm_status_make(BM_ERR_CORRUPT, "%s: tensor '%s' appears twice in the header", path,
                            st->tensors[i].name);
  return NULL;
}

bm_status bm_st_open(const char *path, bm_st_file **out) {
  if (!out) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "bm_st_open: NULL output");
  *out = NULL;
  if (!path) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "bm_st_open: NULL path");
  bm_st_file *st = calloc(1, sizeof *st);
  if (!st || !(st->path = strdup(path))) {
    free(st);
    return bm_status_make(BM_ERR_OUT_OF_MEMORY, "%s: opening", path);
  }
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    bm_status s = bm_status_make(BM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    bm_st_close(st);
    return s;
  }
  struct stat sb;
  bm_status s = NULL;
  if (fstat(fd, &sb) != 0) {
    s = bm_status_make(BM_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
  } else if (!S_ISREG(sb.st_mode)) {
    s = bm_status_make(BM_ERR_IO, "%s: not a regular file", path);
  } else {
    st->size = (size_t)sb.st_size;
    if (st->size > 0) {
      void *m = mmap(NULL, st->size, PROT_READ, MAP_PRIVATE, fd, 0);
      if (m == MAP_FAILED)
        s = bm_status_make(BM_ERR_IO, "%s: cannot mmap %zu bytes: %s", path, st->size,
                           strerror(errno));
      else
        st->map = m;
    }
  }
  close(fd);
  if (!s) s = parse_file(st);
  if (s) {
    bm_st_close(st);
    return s;
  }
  *out = st;
  return NULL;
}

/* ------------------------------------------------------------ sharded sets */

typedef struct set_entry {
  const bm_st_tensor *t;
  int file;
} set_entry;

struct bm_st_set {
  char *path;
  int nfiles;
  bm_st_file **files;
  int n;
  set_entry *entries; /* sorted by name */
};

int bm_st_set_count(const bm_st_set *set) { return set ? set->n : 0; }
int bm_st_set_file_count(const bm_st_set *set) { return set ? set->nfiles : 0; }

const bm_st_file *bm_st_set_file(const bm_st_set *set, int i) {
  return set && i >= 0 && i < set->nfiles ? set->files[i] : NULL;
}

const bm_st_tensor *bm_st_set_tensor_at(const bm_st_set *set, int i) {
  return set && i >= 0 && i < set->n ? set->entries[i].t : NULL;
}

static int cmp_entry_key(const void *key, const void *elem) {
  return strcmp((const char *)key, ((const set_entry *)elem)->t->name);
}

static const set_entry *set_lookup(const bm_st_set *set, const char *name) {
  if (!set || !name || set->n == 0) return NULL;
  return bsearch(name, set->entries, (size_t)set->n, sizeof *set->entries, cmp_entry_key);
}

const bm_st_tensor *bm_st_set_find(const bm_st_set *set, const char *name) {
  const set_entry *e = set_lookup(set, name);
  return e ? e->t : NULL;
}

bm_status bm_st_set_get(const bm_st_set *set, const char *name, const bm_st_tensor **out,
                        const bm_st_file **file) {
  *out = NULL;
  if (file) *file = NULL;
  if (!set || !name) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "bm_st_set_get: NULL argument");
  const set_entry *e = set_lookup(set, name);
  if (!e) return bm_status_make(BM_ERR_NOT_FOUND, "%s: no tensor '%s'", set->path, name);
  *out = e->t;
  if (file) *file = set->files[e->file];
  return NULL;
}

void bm_st_set_close(bm_st_set *set) {
  if (!set) return;
  for (int i = 0; i < set->nfiles; i++) bm_st_close(set->files[i]);
  free(set->files);
  free(set->entries);
  free(set->path);
  free(set);
}

static int cmp_entry(const void *a, const void *b) {
  return strcmp(((const set_entry *)a)->t->name, ((const set_entry *)b)->t->name);
}

static int is_file(const char *p) {
  struct stat sb;
  return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

static int ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), m = strlen(suffix);
  return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Reads a whole (small) file into a NUL-terminated buffer. */
static bm_status read_text(const char *path, size_t limit, char **out) {
  *out = NULL;
  FILE *f = fopen(path, "rb");
  if (!f) return bm_status_make(BM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
  char *buf = NULL;
  size_t len = 0, cap = 0;
  for (;;) {
    if (len + 65536 + 1 > cap) {
      cap = cap ? cap * 2 : 65536 * 2;
      char *nb = realloc(buf, cap);
      if (!nb) {
        free(buf);
        fclose(f);
        return bm_status_make(BM_ERR_OUT_OF_MEMORY, "%s: reading", path);
      }
      buf = nb;
    }
    size_t got = fread(buf + len, 1, 65536, f);
    len += got;
    if (len > limit) {
      free(buf);
      fclose(f);
      return bm_status_make(BM_ERR_CORRUPT, "%s: larger than %zu bytes", path, limit);
    }
    if (got < 65536) break;
  }
  int err = ferror(f);
  fclose(f);
  if (err) {
    free(buf);
    return bm_status_make(BM_ERR_IO, "%s: read error", path);
  }
  buf[len] = 0;
  *out = buf;
  return NULL;
}

static int valid_shard_name(const char *s) {
  return s[0] && !strchr(s, '/') && !strchr(s, '\\') && strcmp(s, ".") != 0 &&
         strcmp(s, "..") != 0 && !strstr(s, "..");
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Opens an index.json: fills set (path already set). */
static bm_status open_index(bm_st_set *set, const char *index_path) {
  char *text = NULL;
  BM_RETURN_IF_ERROR(read_text(index_path, BM_ST_MAX_HEADER, &text));
  cJSON *root = cJSON_Parse(text);
  free(text);
  bm_status s = NULL;
  const char **shards = NULL;
  if (!root) return bm_status_make(BM_ERR_CORRUPT, "%s: not valid JSON", index_path);
  const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
  if (!cJSON_IsObject(root) || !cJSON_IsObject(wm)) {
    s = bm_status_make(BM_ERR_CORRUPT, "%s: no \"weight_map\" object", index_path);
    goto done;
  }
  int n = cJSON_GetArraySize(wm);
  if (n == 0) {
    s = bm_status_make(BM_ERR_CORRUPT, "%s: \"weight_map\" is empty", index_path);
    goto done;
  }
  /* The distinct shard names, sorted. */
  shards = calloc((size_t)n, sizeof *shards);
  set->entries = calloc((size_t)n, sizeof *set->entries);
  if (!shards || !set->entries) {
    s = bm_status_make(BM_ERR_OUT_OF_MEMORY, "%s: %d entries", index_path, n);
    goto done;
  }
  int ns = 0;
  for (const cJSON *j = wm->child; j; j = j->next) {
    if (!cJSON_IsString(j)) {
      s = bm_status_make(BM_ERR_CORRUPT, "%s: weight_map entry '%s' is not a string", index_path,
                         j->string);
      goto done;
    }
    if (!valid_shard_name(j->valuestring)) {
      s = bm_status_make(BM_ERR_CORRUPT,
                         "%s: tensor '%s' maps to shard '%s', which is not a plain file name",
                         index_path, j->string, j->valuestring);
      goto done;
    }
    shards[ns++] = j->valuestring;
  }
  qsort(shards, (size_t)ns, sizeof *shards, cmp_str);
  int u = 0;
  for (int i = 0; i < ns; i++)
    if (u == 0 || strcmp(shards[u - 1], shards[i]) != 0) shards[u++] = shards[i];
  ns = u;

  /* Open each shard once, next to the index. */
  set->files = calloc((size_t)ns, sizeof *set->files);
  if (!set->files) {
    s = bm_status_make(BM_ERR_OUT_OF_MEMORY, "%s: %d shards", index_path, ns);
    goto done;
  }
  const char *slash = strrchr(index_path, '/');
  int dirlen = slash ? (int)(slash - index_path) : 0;
  for (int i = 0; i < ns; i++) {
    char p[4096];
    if (slash)
      snprintf(p, sizeof p, "%.*s/%s", dirlen, index_path, shards[i]);
    else
      snprintf(p, sizeof p, "%s", shards[i]);
    s = bm_st_open(p, &set->files[i]);
    if (s) {
      s = bm_status_wrap(s, "%s: shard '%s'", index_path, shards[i]);
      goto done;
    }
    set->nfiles++;
  }

  /* Resolve every mapped tensor in its shard. */
  for (const cJSON *j = wm->child; j; j = j->next) {
    const char **hit = bsearch(&j->valuestring, shards, (size_t)ns, sizeof *shards, cmp_str);
    int fi = (int)(hit - shards);
    const bm_st_tensor *t = bm_st_find(set->files[fi], j->string);
    if (!t) {
      s = bm_status_make(BM_ERR_CORRUPT, "%s: tensor '%s' maps to shard '%s', which does not hold it",
                         index_path, j->string, shards[fi]);
      goto done;
    }
    set->entries[set->n].t = t;
    set->entries[set->n].file = fi;
    set->n++;
  }
  qsort(set->entries, (size_t)set->n, sizeof *set->entries, cmp_entry);
  for (int i = 1; i < set->n; i++)
    if (strcmp(set->entries[i - 1].t->name, set->entries[i].t->name) == 0) {
      s = bm_status_make(BM_ERR_CORRUPT, "%s: tensor '%s' appears twice in weight_map", index_path,
                         set->entries[i].t->name);
      goto done;
    }
done:
  free(shards);
  cJSON_Delete(root);
  return s;
}

static bm_status open_single(bm_st_set *set, const char *file) {
  set->files = calloc(1, sizeof *set->files);
  if (!set->files) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "%s: opening", file);
  BM_RETURN_IF_ERROR(bm_st_open(file, &set->files[0]));
  set->nfiles = 1;
  const bm_st_file *st = set->files[0];
  set->entries = calloc((size_t)st->n + 1, sizeof *set->entries);
  if (!set->entries) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "%s: %d tensors", file, st->n);
  for (int i = 0; i < st->n; i++) set->entries[i] = (set_entry){&st->tensors[i], 0};
  set->n = st->n;
  return NULL;
}

bm_status bm_st_open_dir(const char *path, bm_st_set **out) {
  if (!out) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "bm_st_open_dir: NULL output");
  *out = NULL;
  if (!path) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "bm_st_open_dir: NULL path");
  struct stat sb;
  if (stat(path, &sb) != 0)
    return bm_status_make(BM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
  bm_st_set *set = calloc(1, sizeof *set);
  if (!set || !(set->path = strdup(path))) {
    free(set);
    return bm_status_make(BM_ERR_OUT_OF_MEMORY, "%s: opening", path);
  }
  bm_status s = NULL;
  if (S_ISDIR(sb.st_mode)) {
    static const char *const names[] = {
        "model.safetensors.index.json", "diffusion_pytorch_model.safetensors.index.json",
        "model.safetensors", "diffusion_pytorch_model.safetensors"};
    size_t plen = strlen(path);
    while (plen > 1 && path[plen - 1] == '/') plen--;
    int found = 0;
    for (int i = 0; i < 4 && !found; i++) {
      char p[4096];
      snprintf(p, sizeof p, "%.*s/%s", (int)plen, path, names[i]);
      if (!is_file(p)) continue;
      found = 1;
      s = i < 2 ? open_index(set, p) : open_single(set, p);
    }
    if (!found)
      s = bm_status_make(BM_ERR_NOT_FOUND,
                         "%s: no model.safetensors[.index.json] or "
                         "diffusion_pytorch_model.safetensors[.index.json] in this folder",
                         path);
  } else if (ends_with(path, ".json")) {
    s = open_index(set, path);
  } else {
    s = open_single(set, path);
  }
  if (s) {
    bm_st_set_close(set);
    return s;
  }
  *out = set;
  return NULL;
}

/* ------------------------------------------------------------------ writer */

typedef struct strbuf {
  char *p;
  size_t len, cap;
  int oom;
} strbuf;

static void sb_put(strbuf *b, const char *s, size_t n) {
  if (b->oom) return;
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 1024;
    while (b->len + n + 1 > cap) cap *= 2;
    char *np = realloc(b->p, cap);
    if (!np) {
      b->oom = 1;
      return;
    }
    b->p = np;
    b->cap = cap;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = 0;
}

static void sb_puts(strbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_printf(strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(strbuf *b, const char *fmt, ...) {
  char tmp[256];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  if (n > 0) sb_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static void sb_json_string(strbuf *b, const char *s) {
  sb_puts(b, "\"");
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') {
      char e[2] = {'\\', (char)c};
      sb_put(b, e, 2);
    } else if (c < 0x20) {
      sb_printf(b, "\\u%04x", c);
    } else {
      sb_put(b, (const char *)&c, 1);
    }
  }
  sb_puts(b, "\"");
}

typedef struct wr_item {
  int idx;
  int elem_bytes;
  const char *name;
  uint64_t nbytes, begin;
} wr_item;

static int cmp_wr_layout(const void *a, const void *b) {
  const wr_item *x = a, *y = b;
  if (x->elem_bytes != y->elem_bytes) return y->elem_bytes - x->elem_bytes;
  return strcmp(x->name, y->name);
}

static int cmp_wr_name(const void *a, const void *b) {
  return strcmp(((const wr_item *)a)->name, ((const wr_item *)b)->name);
}

bm_status bm_st_write(const char *path, int n, const bm_tensor_info *infos,
                      const void *const *datas, const char *const *metadata) {
  if (!path || n < 0 || (n > 0 && (!infos || !datas)))
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "bm_st_write: bad arguments");
  wr_item *items = calloc((size_t)n + 1, sizeof *items);
  if (!items) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "%s: %d tensors", path, n);
  bm_status s = NULL;
  strbuf hb = {0};
  FILE *f = NULL;

  for (int i = 0; i < n; i++) {
    const bm_tensor_info *t = &infos[i];
    size_t bad;
    if (!t->name || !valid_utf8((const uint8_t *)t->name, strlen(t->name), &bad) ||
        strcmp(t->name, "__metadata__") == 0) {
      s = bm_status_make(BM_ERR_INVALID_ARGUMENT, "%s: tensor %d has a bad name", path, i);
      goto done;
    }
    const char *dn = st_name_of(t->dtype);
    if (!dn) {
      s = bm_status_make(BM_ERR_UNSUPPORTED, "%s: tensor '%s': dtype %s has no safetensors name",
                         path, t->name, bm_dtype_name(t->dtype));
      goto done;
    }
    if (t->ndim < 0 || t->ndim > BM_MAX_DIMS) {
      s = bm_status_make(BM_ERR_INVALID_ARGUMENT, "%s: tensor '%s': bad rank %d", path, t->name,
                         t->ndim);
      goto done;
    }
    int64_t numel = 1;
    for (int d = 0; d < t->ndim; d++)
      if (t->shape[d] < 0 || __builtin_mul_overflow(numel, t->shape[d], &numel)) {
        s = bm_status_make(BM_ERR_INVALID_ARGUMENT, "%s: tensor '%s': bad shape", path, t->name);
        goto done;
      }
    if (numel > 0 && !datas[i]) {
      s = bm_status_make(BM_ERR_INVALID_ARGUMENT, "%s: tensor '%s': NULL data", path, t->name);
      goto done;
    }
    items[i] = (wr_item){i, (int)bm_dtype_nbytes(t->dtype, 1), t->name,
                         bm_dtype_nbytes(t->dtype, numel), 0};
  }
  qsort(items, (size_t)n, sizeof *items, cmp_wr_name);
  for (int i = 1; i < n; i++)
    if (strcmp(items[i - 1].name, items[i].name) == 0) {
      s = bm_status_make(BM_ERR_INVALID_ARGUMENT, "%s: tensor '%s' given twice", path,
                         items[i].name);
      goto done;
    }

  /* Data layout: decreasing element size, then name. */
  qsort(items, (size_t)n, sizeof *items, cmp_wr_layout);
  uint64_t at = 0;
  for (int i = 0; i < n; i++) {
    items[i].begin = at;
    at += items[i].nbytes;
  }

  /* Header: __metadata__ first, then tensors by name. */
  qsort(items, (size_t)n, sizeof *items, cmp_wr_name);
  sb_puts(&hb, "{");
  int first = 1;
  if (metadata && metadata[0]) {
    sb_puts(&hb, "\"__metadata__\":{");
    for (int i = 0; metadata[i]; i += 2) {
      if (!metadata[i + 1]) {
        s = bm_status_make(BM_ERR_INVALID_ARGUMENT, "%s: metadata key '%s' has no value", path,
                           metadata[i]);
        goto done;
      }
      if (i) sb_puts(&hb, ",");
      sb_json_string(&hb, metadata[i]);
      sb_puts(&hb, ":");
      sb_json_string(&hb, metadata[i + 1]);
    }
    sb_puts(&hb, "}");
    first = 0;
  }
  for (int i = 0; i < n; i++) {
    const bm_tensor_info *t = &infos[items[i].idx];
    if (!first) sb_puts(&hb, ",");
    first = 0;
    sb_json_string(&hb, t->name);
    sb_printf(&hb, ":{\"dtype\":\"%s\",\"shape\":[", st_name_of(t->dtype));
    for (int d = 0; d < t->ndim; d++) sb_printf(&hb, "%s%lld", d ? "," : "", (long long)t->shape[d]);
    sb_printf(&hb, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)items[i].begin,
              (unsigned long long)(items[i].begin + items[i].nbytes));
  }
  sb_puts(&hb, "}");
  while (!hb.oom && hb.len % 8 != 0) sb_puts(&hb, " ");
  if (hb.oom) {
    s = bm_status_make(BM_ERR_OUT_OF_MEMORY, "%s: header", path);
    goto done;
  }

  f = fopen(path, "wb");
  if (!f) {
    s = bm_status_make(BM_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    goto done;
  }
  uint8_t len8[8];
  for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)hb.len >> (8 * i));
  int ok = fwrite(len8, 1, 8, f) == 8 && fwrite(hb.p, 1, hb.len, f) == hb.len;
  qsort(items, (size_t)n, sizeof *items, cmp_wr_layout);
  for (int i = 0; ok && i < n; i++)
    if (items[i].nbytes) ok = fwrite(datas[items[i].idx], 1, items[i].nbytes, f) == items[i].nbytes;
  if (fclose(f) != 0) ok = 0;
  f = NULL;
  if (!ok) s = bm_status_make(BM_ERR_IO, "%s: write failed: %s", path, strerror(errno));

done:
  free(hb.p);
  free(items);
  return s;
}
