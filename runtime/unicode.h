/* unicode.h - the Unicode pieces the tokenizers need: UTF-8 coding, general
 * category classes (L*, N*), White_Space, simple lowercase, NFC and the
 * full-/half-width folding that ftfy applies. Tables are generated at build
 * time from the UCD (runtime/gen/unicode_gen.c). Internal to libbmrt. */
#ifndef BM_UNICODE_H
#define BM_UNICODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Decodes one code point from s[0..n) (n >= 1). Returns the number of bytes
 * consumed (1..4). A malformed or truncated sequence yields U+FFFD and
 * consumes its maximal invalid subpart (at least one byte). */
size_t bm_utf8_decode(const uint8_t *s, size_t n, uint32_t *cp);
/* Length of a valid sequence starting at s[0..n), or 0 if not valid UTF-8. */
size_t bm_utf8_valid_len(const uint8_t *s, size_t n);
/* Writes cp as UTF-8 into out (4 bytes room); returns the length. */
size_t bm_utf8_encode(uint32_t cp, char *out);

bool bm_uni_is_letter(uint32_t c); /* general category L* */
bool bm_uni_is_number(uint32_t c); /* general category N* */
bool bm_uni_is_space(uint32_t c);  /* White_Space property */
uint32_t bm_uni_lower(uint32_t c); /* simple lowercase mapping */
int bm_uni_ccc(uint32_t c);        /* canonical combining class */
/* <wide>/<narrow> compatibility mapping (U+FF01 'ＡＢ' -> 'A'); c if none. */
uint32_t bm_uni_width_fold(uint32_t c);

/* A growable code point buffer used by the normalizers. */
typedef struct bm_cpbuf {
  uint32_t *v;
  size_t n, cap;
} bm_cpbuf;
bool bm_cpbuf_push(bm_cpbuf *b, uint32_t c); /* false on out of memory */
void bm_cpbuf_free(bm_cpbuf *b);

/* NFC-normalizes the code points of b in place. Returns false on out of memory. */
bool bm_uni_nfc(bm_cpbuf *b);
/* True when the UTF-8 text is certainly already NFC (all code points < U+0300). */
bool bm_uni_nfc_quick(const char *s, size_t n);

#endif
