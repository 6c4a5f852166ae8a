/* status.c - bm_status: heap-allocated error objects (NULL = OK). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bm_runtime.h"

struct bm_status_s {
  bm_code code;
  int is_static;
  char msg[];
};

/* The status returned when making one runs out of memory: static (never
 * freed), its message kept apart (a flexible array member has no storage in
 * a static object). */
static struct bm_status_s oom_status = {BM_ERR_OUT_OF_MEMORY, 1};
static const char oom_message[] = "out of memory (while reporting an error)";

static bm_status status_vmake(bm_code code, const char *prefix, const char *fmt, va_list ap) {
  if (code == BM_OK) return NULL;
  char tmp[1024];
  vsnprintf(tmp, sizeof tmp, fmt, ap);
  size_t plen = prefix ? strlen(prefix) : 0, tlen = strlen(tmp);
  bm_status s = malloc(sizeof *s + plen + tlen + 1);
  if (!s) return &oom_status;
  s->code = code;
  s->is_static = 0;
  if (plen) memcpy(s->msg, prefix, plen);
  memcpy(s->msg + plen, tmp, tlen + 1);
  return s;
}

bm_status bm_status_make(bm_code code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  bm_status s = status_vmake(code, NULL, fmt, ap);
  va_end(ap);
  return s;
}

bm_status bm_status_wrap(bm_status s, const char *fmt, ...) {
  if (!s) return NULL;
  char prefix[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(prefix, sizeof prefix - 2, fmt, ap);
  va_end(ap);
  strcat(prefix, ": ");
  bm_status r = bm_status_make(s->code, "%s%s", prefix, bm_status_message(s));
  bm_status_free(s);
  return r;
}

bm_code bm_status_code(bm_status s) { return s ? s->code : BM_OK; }
const char *bm_status_message(bm_status s) { return !s ? "ok" : s == &oom_status ? oom_message : s->msg; }

const char *bm_code_name(bm_code c) {
  static const char *const names[BM_CODE_COUNT] = {
      [BM_OK] = "ok",
      [BM_ERR_INVALID_ARGUMENT] = "invalid argument",
      [BM_ERR_IO] = "i/o error",
      [BM_ERR_CORRUPT] = "corrupt",
      [BM_ERR_INCOMPATIBLE] = "incompatible",
      [BM_ERR_UNSUPPORTED] = "unsupported",
      [BM_ERR_NOT_FOUND] = "not found",
      [BM_ERR_OUT_OF_MEMORY] = "out of memory",
      [BM_ERR_PERMISSION] = "permission denied",
      [BM_ERR_INTERNAL] = "internal error",
  };
  _Static_assert(BM_CODE_COUNT == 10, "update the code names");
  return (unsigned)c < BM_CODE_COUNT ? names[c] : "unknown";
}

void bm_status_free(bm_status s) {
  if (s && !s->is_static) free(s);
}
