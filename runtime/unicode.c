/* unicode.c - UTF-8 coding, category lookups, lowercase and NFC for the
 * tokenizers, over the tables generated from the UCD at build time. */
#include "unicode.h"

#include <stdlib.h>
#include <string.h>

#include "unicode_tables.h" /* generated: build dir, see CMakeLists.txt */

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* ------------------------------------------------------------------ UTF-8 */

size_t bm_utf8_valid_len(const uint8_t *s, size_t n) {
  uint8_t c = s[0];
  if (c < 0x80) return 1;
  size_t len;
  uint8_t lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) len = 2;
  else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else return 0;
  if (n < len) return 0;
  if (s[1] < lo || s[1] > hi) return 0;
  for (size_t i = 2; i < len; i++)
    if ((s[i] & 0xC0) != 0x80) return 0;
  return len;
}

size_t bm_utf8_decode(const uint8_t *s, size_t n, uint32_t *cp) {
  size_t len = bm_utf8_valid_len(s, n);
  if (len == 1) {
    *cp = s[0];
    return 1;
  }
  if (len == 0) {
    /* maximal invalid subpart: the lead byte plus the continuation bytes
     * that are still valid at their position */
    *cp = 0xFFFD;
    uint8_t c = s[0];
    size_t want = c >= 0xF0 && c <= 0xF4 ? 4 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xC2 && c <= 0xDF ? 2 : 1;
    size_t i = 1;
    for (; i < want && i < n; i++) {
      uint8_t lo = 0x80, hi = 0xBF;
      if (i == 1) {
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
      }
      if (s[i] < lo || s[i] > hi) break;
    }
    return i;
  }
  uint32_t v = s[0] & (0xFF >> (len + 1));
  for (size_t i = 1; i < len; i++) v = (v << 6) | (s[i] & 0x3F);
  *cp = v;
  return len;
}

size_t bm_utf8_encode(uint32_t c, char *out) {
  if (c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) c = 0xFFFD;
  if (c < 0x80) {
    out[0] = (char)c;
    return 1;
  }
  if (c < 0x800) {
    out[0] = (char)(0xC0 | (c >> 6));
    out[1] = (char)(0x80 | (c & 0x3F));
    return 2;
  }
  if (c < 0x10000) {
    out[0] = (char)(0xE0 | (c >> 12));
    out[1] = (char)(0x80 | ((c >> 6) & 0x3F));
    out[2] = (char)(0x80 | (c & 0x3F));
    return 3;
  }
  out[0] = (char)(0xF0 | (c >> 18));
  out[1] = (char)(0x80 | ((c >> 12) & 0x3F));
  out[2] = (char)(0x80 | ((c >> 6) & 0x3F));
  out[3] = (char)(0x80 | (c & 0x3F));
  return 4;
}

/* ------------------------------------------------------------------ properties */

static bool in_ranges(const uint32_t (*r)[2], size_t n, uint32_t c) {
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (c < r[mid][0]) hi = mid;
    else if (c > r[mid][1]) lo = mid + 1;
    else return true;
  }
  return false;
}

bool bm_uni_is_letter(uint32_t c) {
  if (c < 0x80) return (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
  return in_ranges(uni_letter, COUNT(uni_letter), c);
}
bool bm_uni_is_number(uint32_t c) {
  if (c < 0x80) return c >= '0' && c <= '9';
  return in_ranges(uni_number, COUNT(uni_number), c);
}
bool bm_uni_is_space(uint32_t c) {
  if (c < 0x80) return c == ' ' || (c >= 9 && c <= 13);
  return in_ranges(uni_space, COUNT(uni_space), c);
}

/* Binary search of a table sorted by its first column; returns the row or -1. */
static long find_pair(const uint32_t (*t)[2], size_t n, uint32_t c) {
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (c < t[mid][0]) hi = mid;
    else if (c > t[mid][0]) lo = mid + 1;
    else return (long)mid;
  }
  return -1;
}

uint32_t bm_uni_lower(uint32_t c) {
  if (c < 0x80) return c >= 'A' && c <= 'Z' ? c + 32 : c;
  long i = find_pair(uni_lower, COUNT(uni_lower), c);
  return i < 0 ? c : uni_lower[i][1];
}

uint32_t bm_uni_width_fold(uint32_t c) {
  if (c < 0x3000) return c;
  if (c == 0x3000) return ' ';
  long i = find_pair(uni_width, COUNT(uni_width), c);
  return i < 0 ? c : uni_width[i][1];
}

int bm_uni_ccc(uint32_t c) {
  if (c < 0x300) return 0;
  size_t lo = 0, hi = COUNT(uni_ccc);
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (c < uni_ccc[mid][0]) hi = mid;
    else if (c > uni_ccc[mid][1]) lo = mid + 1;
    else return (int)uni_ccc[mid][2];
  }
  return 0;
}

/* ------------------------------------------------------------------ NFC */

bool bm_cpbuf_push(bm_cpbuf *b, uint32_t c) {
  if (b->n == b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 64;
    uint32_t *v = realloc(b->v, cap * sizeof *v);
    if (!v) return false;
    b->v = v;
    b->cap = cap;
  }
  b->v[b->n++] = c;
  return true;
}

void bm_cpbuf_free(bm_cpbuf *b) {
  free(b->v);
  memset(b, 0, sizeof *b);
}

bool bm_uni_nfc_quick(const char *s, size_t n) {
  /* U+0300 is 0xCC 0x80: every lead byte below 0xCC encodes < U+0300 */
  for (size_t i = 0; i < n; i++)
    if ((uint8_t)s[i] >= 0xCC) return false;
  return true;
}

enum { SBASE = 0xAC00, LBASE = 0x1100, VBASE = 0x1161, TBASE = 0x11A7, LCOUNT = 19, VCOUNT = 21,
       TCOUNT = 28, NCOUNT = VCOUNT * TCOUNT, SCOUNT = LCOUNT * NCOUNT };

static bool decompose(uint32_t c, bm_cpbuf *out, int depth) {
  if (c >= SBASE && c < SBASE + SCOUNT) {
    uint32_t s = c - SBASE;
    if (!bm_cpbuf_push(out, LBASE + s / NCOUNT) || !bm_cpbuf_push(out, VBASE + (s % NCOUNT) / TCOUNT))
      return false;
    if (s % TCOUNT) return bm_cpbuf_push(out, TBASE + s % TCOUNT);
    return true;
  }
  if (c >= 0xC0 && depth < 8) {
    size_t lo = 0, hi = COUNT(uni_decomp);
    while (lo < hi) {
      size_t mid = (lo + hi) / 2;
      if (c < uni_decomp[mid][0]) hi = mid;
      else if (c > uni_decomp[mid][0]) lo = mid + 1;
      else {
        if (!decompose(uni_decomp[mid][1], out, depth + 1)) return false;
        return uni_decomp[mid][2] ? decompose(uni_decomp[mid][2], out, depth + 1) : true;
      }
    }
  }
  return bm_cpbuf_push(out, c);
}

static uint32_t compose_pair(uint32_t a, uint32_t b) {
  if (a >= LBASE && a < LBASE + LCOUNT && b >= VBASE && b < VBASE + VCOUNT)
    return SBASE + ((a - LBASE) * VCOUNT + (b - VBASE)) * TCOUNT;
  if (a >= SBASE && a < SBASE + SCOUNT && (a - SBASE) % TCOUNT == 0 && b > TBASE && b < TBASE + TCOUNT)
    return a + (b - TBASE);
  size_t lo = 0, hi = COUNT(uni_comp);
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (a < uni_comp[mid][0] || (a == uni_comp[mid][0] && b < uni_comp[mid][1])) hi = mid;
    else if (a > uni_comp[mid][0] || b > uni_comp[mid][1]) lo = mid + 1;
    else return uni_comp[mid][2];
  }
  return 0;
}

bool bm_uni_nfc(bm_cpbuf *b) {
  bm_cpbuf d = {0};
  for (size_t i = 0; i < b->n; i++)
    if (!decompose(b->v[i], &d, 0)) {
      bm_cpbuf_free(&d);
      return false;
    }
  /* canonical ordering: stable insertion sort of each run of non-starters */
  for (size_t i = 1; i < d.n; i++) {
    int ci = bm_uni_ccc(d.v[i]);
    if (!ci) continue;
    size_t j = i;
    uint32_t c = d.v[i];
    while (j > 0 && bm_uni_ccc(d.v[j - 1]) > ci) {
      d.v[j] = d.v[j - 1];
      j--;
    }
    d.v[j] = c;
  }
  /* canonical composition: last_ccc is -1 while c directly follows the starter */
  size_t out = 0;
  long starter = -1;
  int last_ccc = -1;
  for (size_t i = 0; i < d.n; i++) {
    uint32_t c = d.v[i];
    int cc = bm_uni_ccc(c);
    if (starter >= 0 && (last_ccc == -1 || last_ccc < cc)) {
      uint32_t comp = compose_pair(d.v[starter], c);
      if (comp) {
        d.v[starter] = comp;
        continue;
      }
    }
    if (cc == 0) {
      starter = (long)out;
      last_ccc = -1;
    } else {
      last_ccc = cc;
    }
    d.v[out++] = c;
  }
  d.n = out;
  free(b->v);
  *b = d;
  return true;
}
