/* image.c - PNG read/write through libpng for the diffusion pipelines
 * (image.h): validated 8-bit reads from files or memory, and writes with the
 * A1111-style "parameters" tEXt chunk. libpng reports errors by longjmp; each
 * entry point below owns one setjmp and frees everything on that path. */
#include "image.h"

#include <errno.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* libpng's error callback target: the message, then a longjmp. */
typedef struct png_ctx {
  char msg[256];
  const char *name;
  /* memory reads */
  const uint8_t *data;
  size_t size, pos;
} png_ctx;

static void on_error(png_structp png, png_const_charp msg) {
  png_ctx *c = png_get_error_ptr(png);
  snprintf(c->msg, sizeof c->msg, "%s", msg ? msg : "libpng error");
  png_longjmp(png, 1);
}

static void on_warning(png_structp png, png_const_charp msg) {
  (void)png;
  (void)msg; /* warnings (e.g. unknown chunks, sRGB profile notes) are not errors */
}

static void read_memory(png_structp png, png_bytep out, size_t n) {
  png_ctx *c = png_get_io_ptr(png);
  if (n > c->size - c->pos) png_error(png, "the file ends early (truncated)");
  memcpy(out, c->data + c->pos, n);
  c->pos += n;
}

void bm_image_free(bm_image *img) {
  if (!img) return;
  free(img->pixels);
  free(img->parameters);
  memset(img, 0, sizeof *img);
}

/* Copies the "parameters" text chunk of info (if any) into img. */
static void take_parameters(png_structp png, png_infop info, bm_image *img) {
  png_textp text = NULL;
  int n = 0;
  if (!info || img->parameters || png_get_text(png, info, &text, &n) <= 0) return;
  for (int i = 0; i < n; i++)
    if (text[i].key && !strcmp(text[i].key, "parameters") && text[i].text) {
      img->parameters = strdup(text[i].text);
      return;
    }
}

/* Reads through an initialised png struct (file or memory source). */
static bm_status read_png(png_structp png, png_infop info, png_infop end, png_ctx *c, bm_image *out) {
  /* everything that must survive a longjmp lives in out or is volatile */
  png_bytep *volatile rows = NULL;
  if (setjmp(png_jmpbuf(png))) {
    free((void *)rows);
    bm_image_free(out);
    return bm_status_make(BM_ERR_CORRUPT, "%s: not a valid PNG image: %s", c->name, c->msg);
  }
  png_set_user_limits(png, BM_IMAGE_MAX_SIDE, BM_IMAGE_MAX_SIDE);
  png_set_chunk_malloc_max(png, 8u << 20);
  png_read_info(png, info);
  png_uint_32 w = 0, h = 0;
  int depth = 0, color = 0, interlace = 0;
  png_get_IHDR(png, info, &w, &h, &depth, &color, &interlace, NULL, NULL);
  if (w < 1 || h < 1 || w > BM_IMAGE_MAX_SIDE || h > BM_IMAGE_MAX_SIDE)
    png_error(png, "image size out of range");
  /* deflate expands at most 1032:1, so a file of `size` bytes holds at most
   * ~1032 x size bytes of scanlines: refuse a header claiming more before
   * allocating the pixels (a 69-byte file could claim 16384x16384 RGBA) */
  if ((uint64_t)h * png_get_rowbytes(png, info) > (uint64_t)1100 * c->size + 4096)
    png_error(png, "the header's size is larger than the compressed data can hold (truncated)");
  if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (color == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (png_get_valid(png, info, PNG_INFO_tRNS) && color != PNG_COLOR_TYPE_GRAY) png_set_tRNS_to_alpha(png);
  if (depth == 16) png_set_strip_16(png);
  if (color == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_strip_alpha(png);
  if (interlace != PNG_INTERLACE_NONE) png_set_interlace_handling(png);
  png_read_update_info(png, info);
  int ch = png_get_channels(png, info);
  size_t rowbytes = png_get_rowbytes(png, info);
  if ((ch != 1 && ch != 3 && ch != 4) || png_get_bit_depth(png, info) != 8 || rowbytes != (size_t)w * (size_t)ch)
    png_error(png, "unsupported pixel layout");
  out->width = (int)w;
  out->height = (int)h;
  out->channels = ch;
  out->pixels = malloc(rowbytes * h);
  rows = malloc(sizeof(png_bytep) * h);
  if (!out->pixels || !rows) png_error(png, "out of memory for the pixels");
  for (png_uint_32 y = 0; y < h; y++) rows[y] = out->pixels + (size_t)y * rowbytes;
  png_read_image(png, rows);
  png_read_end(png, end);
  take_parameters(png, info, out);
  take_parameters(png, end, out);
  free((void *)rows);
  return NULL;
}

bm_status bm_image_read_png_memory(const void *data, size_t size, const char *name, bm_image *out) {
  if (!out) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "bm_image_read_png_memory: out is NULL");
  memset(out, 0, sizeof *out);
  png_ctx c = {.name = name ? name : "image", .data = data, .size = size};
  if (!data && size) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "%s: NULL data", c.name);
  if (size < 8 || png_sig_cmp((png_const_bytep)data, 0, 8))
    return bm_status_make(BM_ERR_CORRUPT, "%s: not a PNG file (bad signature)", c.name);
  /* libpng allocates a chunk's declared length before reading its data: refuse
   * a length past the end of the data first (a 100-byte file may declare a
   * 1 GiB text chunk) */
  const uint8_t *p = data;
  for (size_t at = 8; size - at >= 8;) {
    size_t len = (size_t)p[at] << 24 | (size_t)p[at + 1] << 16 | (size_t)p[at + 2] << 8 | p[at + 3];
    if (len > size - at - 8 || size - at - 8 - len < 4)
      return bm_status_make(BM_ERR_CORRUPT, "%s: the chunk at offset %zu declares %zu bytes, past the end of "
                            "the data (%zu bytes; truncated)", c.name, at, len, size);
    if (!memcmp(p + at + 4, "IEND", 4)) break;
    at += 12 + len;
  }
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &c, on_error, on_warning);
  png_infop info = png ? png_create_info_struct(png) : NULL;
  png_infop end = info ? png_create_info_struct(png) : NULL;
  if (!end) {
    png_destroy_read_struct(png ? &png : NULL, info ? &info : NULL, NULL);
    return bm_status_make(BM_ERR_OUT_OF_MEMORY, "%s: libpng structures", c.name);
  }
  png_set_read_fn(png, &c, read_memory);
  bm_status s = read_png(png, info, end, &c, out);
  png_destroy_read_struct(&png, &info, &end);
  return s;
}

bm_status bm_image_read_png(const char *path, bm_image *out) {
  if (!out || !path) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "bm_image_read_png: NULL argument");
  memset(out, 0, sizeof *out);
  FILE *f = fopen(path, "rb");
  if (!f) return bm_status_make(BM_ERR_IO, "cannot open image %s: %s", path, strerror(errno));
  if (fseek(f, 0, SEEK_END) != 0) {
    fclose(f);
    return bm_status_make(BM_ERR_IO, "%s: not a regular file", path);
  }
  long n = ftell(f);
  if (n < 0 || n > (1l << 30)) {
    fclose(f);
    return bm_status_make(BM_ERR_IO, "%s: not a regular file of at most 1 GiB", path);
  }
  rewind(f);
  uint8_t *buf = malloc((size_t)n + 1);
  if (!buf) {
    fclose(f);
    return bm_status_make(BM_ERR_OUT_OF_MEMORY, "%s: %ld bytes", path, n);
  }
  size_t got = fread(buf, 1, (size_t)n, f);
  fclose(f);
  if (got != (size_t)n) {
    free(buf);
    return bm_status_make(BM_ERR_IO, "%s: short read (%zu of %ld bytes)", path, got, n);
  }
  bm_status s = bm_image_read_png_memory(buf, (size_t)n, path, out);
  free(buf);
  return s;
}

bm_status bm_image_check_size(const bm_image *img, int width, int height, const char *what) {
  if (!img || !img->pixels) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "%s: no image", what ? what : "image");
  if (img->width != width || img->height != height)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT,
                          "%s is %dx%d but the model was compiled for %dx%d images (bm does not resize: "
                          "resize the image, or compile with bmc --width %d --height %d)",
                          what ? what : "image", img->width, img->height, width, height, img->width, img->height);
  return NULL;
}

void bm_image_rgb(const bm_image *img, int x, int y, uint8_t rgb[3]) {
  const uint8_t *p = img->pixels + ((size_t)y * (size_t)img->width + (size_t)x) * (size_t)img->channels;
  if (img->channels == 1) rgb[0] = rgb[1] = rgb[2] = p[0];
  else memcpy(rgb, p, 3);
}

uint8_t bm_image_gray(const bm_image *img, int x, int y) {
  uint8_t c[3];
  bm_image_rgb(img, x, y, c);
  return (uint8_t)(((unsigned)c[0] + c[1] + c[2] + 1) / 3);
}

bm_status bm_image_write_png(const char *path, const uint8_t *pixels, int width, int height, int channels,
                             const char *parameters) {
  if (!path || !pixels) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "bm_image_write_png: NULL argument");
  if (width < 1 || height < 1 || width > BM_IMAGE_MAX_SIDE || height > BM_IMAGE_MAX_SIDE ||
      (channels != 1 && channels != 3 && channels != 4))
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "%s: cannot write a %dx%d image with %d channels", path, width,
                          height, channels);
  FILE *volatile f = fopen(path, "wb");
  if (!f) return bm_status_make(BM_ERR_IO, "cannot create %s: %s", path, strerror(errno));
  png_ctx c = {.name = path};
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &c, on_error, on_warning);
  png_infop info = png ? png_create_info_struct(png) : NULL;
  if (!info) {
    png_destroy_write_struct(png ? &png : NULL, NULL);
    fclose(f);
    return bm_status_make(BM_ERR_OUT_OF_MEMORY, "%s: libpng structures", path);
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    fclose(f);
    remove(path);
    return bm_status_make(BM_ERR_IO, "writing %s: %s", path, c.msg);
  }
  png_init_io(png, f);
  int color = channels == 1 ? PNG_COLOR_TYPE_GRAY : channels == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_RGBA;
  png_set_IHDR(png, info, (png_uint_32)width, (png_uint_32)height, 8, color, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  if (parameters) {
    png_text t;
    memset(&t, 0, sizeof t);
    t.compression = PNG_TEXT_COMPRESSION_NONE;
    t.key = (png_charp) "parameters";
    t.text = (png_charp)parameters;
    t.text_length = strlen(parameters);
    png_set_text(png, info, &t, 1);
  }
  png_write_info(png, info);
  size_t stride = (size_t)width * (size_t)channels;
  for (int y = 0; y < height; y++) png_write_row(png, (png_const_bytep)(pixels + (size_t)y * stride));
  png_write_end(png, info);
  png_destroy_write_struct(&png, &info);
  if (fclose(f) != 0) return bm_status_make(BM_ERR_IO, "writing %s: %s", path, strerror(errno));
  return NULL;
}
