/* fuzz_elf.c - libFuzzer target for the ELF loader (bm_elf_load on
 * arbitrary bytes). Loaded code is never called. */
#include "fuzz_common.h"
#include "../runtime/elf_loader.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  bm_elf_image *img = NULL;
  bm_status s = bm_elf_load(data, size, NULL, &img);
  if (s) {
    bm_fuzz_check_status(s, "bm_elf_load");
    return 0;
  }
  (void)bm_elf_image_size(img);
  (void)bm_elf_lookup(img, "k_fma");
  (void)bm_elf_lookup(img, "");
  bm_elf_unload(img);
  return 0;
}
