/* fuzz_png.c - libFuzzer target for the PNG reader of the diffusion
 * pipelines (bm_image_read_png_memory, runtime/image.c, through libpng). */
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "../runtime/image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  bm_image img;
  memset(&img, 0x55, sizeof img);
  bm_status s = bm_image_read_png_memory(data, size, "fuzz.png", &img);
  if (s) {
    bm_code c = bm_status_code(s);
    if (c != BM_ERR_CORRUPT && c != BM_ERR_INVALID_ARGUMENT && c != BM_ERR_OUT_OF_MEMORY) abort();
    bm_fuzz_check_status(s, "bm_image_read_png_memory");
    /* nothing is left behind on failure */
    if (img.pixels || img.parameters || img.width || img.height || img.channels) abort();
    return 0;
  }
  if (img.width < 1 || img.height < 1 || img.width > BM_IMAGE_MAX_SIDE || img.height > BM_IMAGE_MAX_SIDE ||
      (img.channels != 1 && img.channels != 3 && img.channels != 4) || !img.pixels)
    abort();
  /* the buffer is (height, width, channels): touch its first and last byte
   * of every row, and read every pixel through the accessors */
  size_t row = (size_t)img.width * (size_t)img.channels;
  volatile uint8_t x = 0;
  for (int y = 0; y < img.height; y++) x ^= img.pixels[(size_t)y * row] ^ img.pixels[(size_t)y * row + row - 1];
  if ((size_t)img.width * (size_t)img.height <= 65536)
    for (int y = 0; y < img.height; y++)
      for (int i = 0; i < img.width; i++) x ^= bm_image_gray(&img, i, y);
  if (img.parameters) x ^= (uint8_t)img.parameters[strlen(img.parameters)];
  (void)x;
  bm_image_free(&img);
  return 0;
}
