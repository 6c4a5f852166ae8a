/* image.h - 8-bit PNG images for the diffusion pipelines (libpng): reading
 * with validation (every header field and size is checked; corrupt files give
 * BM_ERR_CORRUPT naming the file), size checks against a compiled model's
 * width/height, and writing with a "parameters" tEXt chunk in the format
 * AUTOMATIC1111's webui writes (and reads back):
 *
 *   a photo of a cat
 *   Negative prompt: blurry
 *   Steps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: 42, Size: 512x512, Model: sd15
 *
 *   bm_image img;
 *   BM_CHECK(bm_image_read_png("init.png", &img));       // RGB/RGBA/gray, 8 bit
 *   BM_CHECK(bm_image_check_size(&img, 512, 512, "--init-img"));
 *   ...
 *   BM_CHECK(bm_image_write_png("out.png", rgb, 512, 512, 3, params));
 *   bm_image_free(&img);
 *
 * Images are not resized: a pipeline takes images of exactly the size its
 * package was compiled for. Part of libbmrt. */
#ifndef BM_IMAGE_H
#define BM_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "bm_runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Largest image accepted (each side) when reading. */
#define BM_IMAGE_MAX_SIDE 16384

typedef struct bm_image {
  int width, height;
  int channels;          /* 1 (gray), 3 (RGB) or 4 (RGBA), as stored in the file */
  uint8_t *pixels;       /* (height, width, channels), row-major; malloc'd */
  char *parameters;      /* the "parameters" text chunk (NUL-terminated), or NULL */
} bm_image;

/* Reads a PNG file. 8-bit gray, RGB and RGBA are returned as stored;
 * gray+alpha becomes gray (alpha dropped), palette images RGB (RGBA with a
 * transparency chunk), 16-bit samples are reduced to 8 bit and gray below
 * 8 bit is expanded. Interlaced files are accepted. Errors: BM_ERR_IO (cannot open),
 * BM_ERR_CORRUPT (not a PNG, truncated, bad CRC, bad header, sides above
 * BM_IMAGE_MAX_SIDE) with the file name and libpng's reason. */
bm_status bm_image_read_png(const char *path, bm_image *out);
/* The same from memory; `name` names the data in messages (may be NULL). */
bm_status bm_image_read_png_memory(const void *data, size_t size, const char *name, bm_image *out);
void bm_image_free(bm_image *img); /* clears *img; NULL is fine */

/* BM_ERR_INVALID_ARGUMENT "<what> is WxH but the model was compiled for
 * WxH ..." unless img is exactly width x height. */
bm_status bm_image_check_size(const bm_image *img, int width, int height, const char *what);

/* Pixel (x, y) as RGB (gray replicated, alpha ignored). */
void bm_image_rgb(const bm_image *img, int x, int y, uint8_t rgb[3]);
/* Pixel (x, y) as one 8-bit value: gray, or the mean of R, G, B (alpha
 * ignored). Used for masks. */
uint8_t bm_image_gray(const bm_image *img, int x, int y);

/* Writes an 8-bit PNG (channels 1, 3 or 4; pixels (height, width,
 * channels)), with a tEXt chunk "parameters" holding `parameters` when it is
 * not NULL (Latin-1 text; other bytes are written as they are). */
bm_status bm_image_write_png(const char *path, const uint8_t *pixels, int width, int height, int channels,
                             const char *parameters);

#ifdef __cplusplus
}
#endif
#endif
