/* chat_template.h - chat prompt formats as C code (no Jinja): Llama 3,
 * Llama 2, Mistral [INST], ChatML (Qwen), Gemma and Phi-3, and detection of
 * the format from a tokenizer_config.json chat_template. Part of libbmrt.
 *
 * The output is the exact text the model's own template renders, including
 * its BOS text (<|begin_of_text|>, <s>, <bos>) where the template writes
 * one: encode it with BM_TOK_PARSE_SPECIAL and without BM_TOK_ADD_BOS. */
#ifndef BM_CHAT_TEMPLATE_H
#define BM_CHAT_TEMPLATE_H

#include <stdbool.h>

#include "bm_runtime.h"
#include "tokenizer.h" /* bm_chat_kind */

#ifdef __cplusplus
extern "C" {
#endif

/* One message: role is "system", "user" or "assistant". */
typedef struct bm_chat_msg {
  const char *role;
  const char *content;
} bm_chat_msg;

/* Renders the conversation; *out is malloc'd (free() it). Fails with
 * BM_ERR_INVALID_ARGUMENT for an unknown role or an order the template
 * rejects (Mistral and Gemma need user/assistant alternation).
 *   LLAMA3:  Meta-Llama-3-Instruct: <|begin_of_text|> then per message
 *            <|start_header_id|>role<|end_header_id|>\n\n trim(content) <|eot_id|>
 *   LLAMA2:  <s>[INST] <<SYS>>\nsys\n<</SYS>>\n\nuser [/INST] assistant </s>...
 *   MISTRAL: <s>[INST] user [/INST]assistant</s>[INST] ... (a system message
 *            is prepended to the first user message with "\n\n")
 *   CHATML:  Qwen3 without tools: <|im_start|>role\ncontent<|im_end|>\n; an
 *            assistant turn after the last user turn gets an empty
 *            <think>\n\n</think>\n\n block as Qwen3 renders it
 *   GEMMA:   <bos><start_of_turn>user\n...<end_of_turn>\n, assistant -> model;
 *            a system message is prepended to the first user turn ("\n\n")
 *   PHI3:    <|system|>\n...<|end|>\n<|user|>\n...<|end|>\n<|assistant|>\n */
bm_status bm_chat_format(bm_chat_kind kind, const bm_chat_msg *msgs, int n, bool add_generation_prompt,
                         char **out);

/* The format a Jinja chat_template implements (by its marker tokens), or BM_CHAT_NONE. */
bm_chat_kind bm_chat_detect(const char *chat_template);

const char *bm_chat_kind_name(bm_chat_kind kind); /* "llama3", "chatml", ... */
/* Parses a name ("llama3", "llama2", "mistral", "chatml" or "qwen", "gemma", "phi3"); BM_CHAT_NONE if unknown. */
bm_chat_kind bm_chat_kind_from_name(const char *name);

#ifdef __cplusplus
}
#endif
#endif
