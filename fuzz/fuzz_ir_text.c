/* fuzz_ir_text.c - libFuzzer target for the IR text parser (bm_graph_parse):
 * a graph that parses must verify, dump, and parse back to the same text. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "../ir/ir.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *text = bm_fuzz_strndup(data, size);
  bm_module *m = bm_module_create("fuzz");
  if (!m) abort();
  bm_graph *g = NULL;
  bm_status s = bm_graph_parse(m, text, &g);
  if (s) {
    bm_fuzz_check_status(s, "bm_graph_parse");
  } else {
    bm_status v = bm_graph_verify(g);
    if (v) {
      fprintf(stderr, "fuzz: a parsed graph fails verification: %s\n", bm_status_message(v));
      abort();
    }
    char *dump = NULL;
    bm_fuzz_check_status(bm_graph_to_text(g, &dump), "bm_graph_to_text");
    if (dump) {
      bm_module *m2 = bm_module_create("fuzz2");
      bm_graph *g2 = NULL;
      bm_status s2 = bm_graph_parse(m2, dump, &g2);
      if (s2) {
        fprintf(stderr, "fuzz: the dump of a parsed graph does not parse: %s\n%s\n", bm_status_message(s2), dump);
        abort();
      }
      char *dump2 = NULL;
      bm_fuzz_check_status(bm_graph_to_text(g2, &dump2), "bm_graph_to_text");
      if (dump2 && strcmp(dump, dump2) != 0) {
        fprintf(stderr, "fuzz: dump(parse(dump(g))) != dump(g)\n--- first\n%s\n--- second\n%s\n", dump, dump2);
        abort();
      }
      free(dump2);
      bm_module_destroy(m2);
    }
    free(dump);
  }
  bm_module_destroy(m);
  free(text);
  return 0;
}
