/* chat_template.c - the chat prompt formats of chat_template.h, written out
 * as C from the models' Jinja templates, and template detection. */
#include "chat_template.h"

#include <stdlib.h>
#include <string.h>

#include "tok_internal.h" /* bm_tok_buf */

static const char *const KIND_NAMES[BM_CHAT_KIND_COUNT] = {
    [BM_CHAT_NONE] = "none",     [BM_CHAT_LLAMA3] = "llama3", [BM_CHAT_LLAMA2] = "llama2",
    [BM_CHAT_MISTRAL] = "mistral", [BM_CHAT_CHATML] = "chatml", [BM_CHAT_GEMMA] = "gemma",
    [BM_CHAT_PHI3] = "phi3"};

const char *bm_chat_kind_name(bm_chat_kind k) { return (unsigned)k < BM_CHAT_KIND_COUNT ? KIND_NAMES[k] : "unknown"; }

bm_chat_kind bm_chat_kind_from_name(const char *name) {
  if (!name) return BM_CHAT_NONE;
  if (!strcmp(name, "qwen")) return BM_CHAT_CHATML;
  for (int k = 1; k < BM_CHAT_KIND_COUNT; k++)
    if (!strcmp(name, KIND_NAMES[k])) return (bm_chat_kind)k;
  return BM_CHAT_NONE;
}

bm_chat_kind bm_chat_detect(const char *t) {
  if (!t) return BM_CHAT_NONE;
  if (strstr(t, "<|start_header_id|>")) return BM_CHAT_LLAMA3;
  if (strstr(t, "<|im_start|>")) return BM_CHAT_CHATML;
  if (strstr(t, "<start_of_turn>")) return BM_CHAT_GEMMA;
  if (strstr(t, "<|user|>")) return BM_CHAT_PHI3;
  if (strstr(t, "<<SYS>>")) return BM_CHAT_LLAMA2;
  if (strstr(t, "[INST]")) return BM_CHAT_MISTRAL;
  return BM_CHAT_NONE;
}

typedef struct out {
  bm_tok_buf b;
  bool oom;
} out_t;

static void put(out_t *o, const char *s) {
  if (!o->oom && !bm_tok_buf_append(&o->b, s, strlen(s))) o->oom = true;
}
static void put_n(out_t *o, const char *s, size_t n) {
  if (!o->oom && !bm_tok_buf_append(&o->b, s, n)) o->oom = true;
}

static bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

/* Jinja `trim` / Python strip() (ASCII white space). */
static void put_trim(out_t *o, const char *s) {
  size_t n = strlen(s), a = 0;
  while (a < n && is_ws(s[a])) a++;
  while (n > a && is_ws(s[n - 1])) n--;
  put_n(o, s + a, n - a);
}

static int role_of(const char *r) {
  if (!r) return -1;
  if (!strcmp(r, "system")) return 0;
  if (!strcmp(r, "user")) return 1;
  if (!strcmp(r, "assistant")) return 2;
  return -1;
}

bm_status bm_chat_format(bm_chat_kind kind, const bm_chat_msg *m, int n, bool gen, char **result) {
  if (!result || (!m && n) || n < 0) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "chat_format: bad argument");
  *result = NULL;
  for (int i = 0; i < n; i++) {
    if (role_of(m[i].role) < 0 || !m[i].content)
      return bm_status_make(BM_ERR_INVALID_ARGUMENT, "chat_format: message %d has role '%s' (system/user/assistant) or no content",
                            i, m[i].role ? m[i].role : "(null)");
    if (role_of(m[i].role) == 0 && i > 0 && kind != BM_CHAT_CHATML && kind != BM_CHAT_PHI3 && kind != BM_CHAT_LLAMA3)
      return bm_status_make(BM_ERR_INVALID_ARGUMENT, "chat_format %s: a system message must come first", bm_chat_kind_name(kind));
  }
  out_t o = {{0}, false};
  put(&o, ""); /* an empty conversation still gives a string */
  /* formats that fold a leading system message into the first user turn */
  const char *sys = NULL;
  int first = 0;
  if ((kind == BM_CHAT_LLAMA2 || kind == BM_CHAT_MISTRAL || kind == BM_CHAT_GEMMA) && n && role_of(m[0].role) == 0) {
    sys = m[0].content;
    first = 1;
  }
  if (kind == BM_CHAT_MISTRAL || kind == BM_CHAT_GEMMA || kind == BM_CHAT_LLAMA2)
    for (int i = first; i < n; i++)
      if ((role_of(m[i].role) == 1) != ((i - first) % 2 == 0)) {
        free(o.b.v);
        return bm_status_make(BM_ERR_INVALID_ARGUMENT, "chat_format %s: roles must alternate user/assistant (message %d)",
                              bm_chat_kind_name(kind), i);
      }
  switch (kind) {
  case BM_CHAT_LLAMA3:
    put(&o, "<|begin_of_text|>");
    for (int i = 0; i < n; i++) {
      put(&o, "<|start_header_id|>");
      put(&o, m[i].role);
      put(&o, "<|end_header_id|>\n\n");
      put_trim(&o, m[i].content);
      put(&o, "<|eot_id|>");
    }
    if (gen) put(&o, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    break;
  case BM_CHAT_LLAMA2:
    for (int i = first; i < n; i++) {
      if (role_of(m[i].role) == 1) {
        put(&o, "<s>[INST] ");
        if (i == first && sys) {
          put(&o, "<<SYS>>\n");
          put(&o, sys);
          put(&o, "\n<</SYS>>\n\n");
          put_trim(&o, m[i].content); /* (system + content).strip(): only the end can change */
        } else {
          put_trim(&o, m[i].content);
        }
        put(&o, " [/INST]");
      } else {
        put(&o, " ");
        put_trim(&o, m[i].content);
        put(&o, " </s>");
      }
    }
    break;
  case BM_CHAT_MISTRAL:
    put(&o, "<s>");
    for (int i = first; i < n; i++) {
      if (role_of(m[i].role) == 1) {
        put(&o, "[INST] ");
        if (i == first && sys) {
          put(&o, sys);
          put(&o, "\n\n");
        }
        put(&o, m[i].content);
        put(&o, " [/INST]");
      } else {
        put(&o, m[i].content);
        put(&o, "</s>");
      }
    }
    break;
  case BM_CHAT_CHATML: {
    int last_user = n - 1;
    for (int i = n - 1; i >= 0; i--)
      if (role_of(m[i].role) == 1) {
        last_user = i;
        break;
      }
    for (int i = 0; i < n; i++) {
      int r = role_of(m[i].role);
      if (r != 2) {
        put(&o, "<|im_start|>");
        put(&o, m[i].role);
        put(&o, "\n");
        put(&o, m[i].content);
        put(&o, "<|im_end|>\n");
        continue;
      }
      /* assistant: split off a <think> block like the Qwen3 template */
      const char *c = m[i].content, *reason = "";
      size_t reason_n = 0;
      const char *end_think = NULL;
      for (const char *p = strstr(c, "</think>"); p; p = strstr(p + 1, "</think>")) end_think = p;
      if (end_think) {
        const char *first_end = strstr(c, "</think>");
        const char *rs = c, *re = first_end;
        for (const char *p = strstr(c, "<think>"); p && p < first_end; p = strstr(p + 1, "<think>")) rs = p + 7;
        while (re > rs && re[-1] == '\n') re--;
        while (rs < re && *rs == '\n') rs++;
        reason = rs;
        reason_n = (size_t)(re - rs);
        c = end_think + 8;
        while (*c == '\n') c++;
      }
      put(&o, "<|im_start|>assistant\n");
      if (i > last_user && (i == n - 1 || reason_n)) {
        put(&o, "<think>\n");
        put_n(&o, reason, reason_n);
        put(&o, "\n</think>\n\n");
      }
      put(&o, c);
      put(&o, "<|im_end|>\n");
    }
    if (gen) put(&o, "<|im_start|>assistant\n");
    break;
  }
  case BM_CHAT_GEMMA:
    put(&o, "<bos>");
    for (int i = first; i < n; i++) {
      put(&o, "<start_of_turn>");
      put(&o, role_of(m[i].role) == 2 ? "model" : "user");
      put(&o, "\n");
      if (i == first && sys) {
        put(&o, sys);
        put(&o, "\n\n");
      }
      put_trim(&o, m[i].content);
      put(&o, "<end_of_turn>\n");
    }
    if (gen) put(&o, "<start_of_turn>model\n");
    break;
  case BM_CHAT_PHI3:
    for (int i = 0; i < n; i++) {
      put(&o, "<|");
      put(&o, m[i].role);
      put(&o, "|>\n");
      put(&o, m[i].content);
      put(&o, "<|end|>\n");
    }
    put(&o, gen ? "<|assistant|>\n" : "<|endoftext|>");
    break;
  default:
    free(o.b.v);
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "chat_format: unknown chat kind %d", (int)kind);
  }
  if (o.oom) {
    free(o.b.v);
    return bm_status_make(BM_ERR_OUT_OF_MEMORY, "chat_format");
  }
  *result = o.b.v;
  return NULL;
}
