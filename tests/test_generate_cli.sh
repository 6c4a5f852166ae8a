#!/usr/bin/env bash
# test_generate_cli.sh - text generation end to end: a tiny Llama folder with
# generated weights and the real Llama 2 SentencePiece tokenizer is compiled
# by bmc (the tokenizer embedded), then `bmrun generate` and `bmrun chat`
# stream valid UTF-8, report tokens/s, are deterministic for a seed, batch
# consistently and reuse the KV cache across chat turns; bad arguments exit 2,
# runtime errors 1.
# usage: test_generate_cli.sh BUILD_DIR SOURCE_DIR
set -uo pipefail
B=$1
S=$2
SHARED=$(cd "$S/../shared" && pwd)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"  # $T, ok, bad, expect

utf8() { iconv -f UTF-8 -t UTF-8 "$1" >/dev/null 2>&1; }

# ---- a Hugging Face style folder: tiny Llama, vocab 32000, Llama 2 tokenizer
M=$T/tinyllama
mkdir -p "$M"
cat > "$M/config.json" <<'EOF'
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
 "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
 "num_hidden_layers": 2, "vocab_size": 32000, "max_position_embeddings": 256,
 "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "bos_token_id": 1, "eos_token_id": 2,
 "hidden_act": "silu", "tie_word_embeddings": false}
EOF
cp "$SHARED/tokenizers/llama2_spm/tokenizer.model" "$M/"
cat > "$M/tokenizer_config.json" <<'EOF'
{"bos_token": "<s>", "eos_token": "</s>",
 "chat_template": "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}<<SYS>>\n{{ m['content'] }}\n<</SYS>>{% endif %}[INST] {{ m['content'] }} [/INST]{% endfor %}"}
EOF

P=$T/m.bmpk
expect 0 "wrote" "bmc compile an HF folder with generated weights" -- \
  "$B/bmc" compile --model "$M" --random-weights --seed 3 -O 0 --max-ctx 96 --max-batch 2 --max-seq 32 -o "$P"
expect 0 "tokenizer/tokenizer.model" "bmc inspect lists the embedded tokenizer" -- "$B/bmc" inspect "$P"
expect 0 "llama2 template" "bmc inspect shows the chat template" -- "$B/bmc" inspect "$P"
expect 0 '"chat_template":"llama2"' "extra records the chat template" -- "$B/bmc" inspect --json "$P"

# ---- generate
"$B/bmrun" "$P" generate -p "Once upon a time" -n 24 --seed 42 --threads 2 > "$T/g1" 2> "$T/e1"; rc=$?
[ $rc -eq 0 ] && ok "generate runs" || bad "generate exit $rc: $(cat "$T/e1")"
[ -s "$T/g1" ] && ok "generate printed text" || bad "generate printed nothing"
utf8 "$T/g1" && ok "generate output is valid UTF-8" || bad "generate output is not UTF-8"
grep -qE "prefill [0-9]+ tokens .*tokens/s.*decode [0-9]+ tokens .*tokens/s" "$T/e1" \
  && ok "generate reports prefill and decode tokens/s" || bad "no tokens/s report: $(cat "$T/e1")"
grep -q "decode 23 tokens" "$T/e1" && grep -q "stop: max_tokens" "$T/e1" \
  && ok "generate stops after -n tokens" || bad "wrong token count: $(cat "$T/e1")"
"$B/bmrun" "$P" generate -p "Once upon a time" -n 24 --seed 42 --threads 1 > "$T/g2" 2>/dev/null
cmp -s "$T/g1" "$T/g2" && ok "same seed, same text (1 and 2 threads)" || bad "same seed gave different text"
"$B/bmrun" "$P" generate -p "Once upon a time" -n 24 --seed 43 > "$T/g3" 2>/dev/null
cmp -s "$T/g1" "$T/g3" && bad "another seed gave the same text" || ok "another seed, other text"
"$B/bmrun" "$P" generate -p "Once upon a time" -n 12 --temp 0 > "$T/gr1" 2>/dev/null
"$B/bmrun" "$P" generate -p "Once upon a time" -n 12 --temp 0 --seed 5 --top-k 3 --repeat-penalty 1.0 > "$T/gr2" 2>/dev/null
cmp -s "$T/gr1" "$T/gr2" && ok "temperature 0 is greedy whatever the seed" || bad "greedy runs differ"
expect 0 "" "generate with every sampling option" -- "$B/bmrun" "$P" generate -p "Ünïcödé ✓ 日本語" -n 8 \
  --temp 0.7 --top-k 20 --top-p 0.9 --min-p 0.02 --repeat-penalty 1.3 --repeat-last-n 16 --seed 1
expect 0 "stop: context" "generate until the context is full" -- \
  "$B/bmrun" "$P" generate -p "a" -n -1 --temp 0 --ignore-eos

# ---- batch: three prompts, max_batch 2 (two rounds); a row equals its prompt alone
printf 'Once upon a time\n\nThe capital of France is\nHello\n' > "$T/prompts"
"$B/bmrun" "$P" generate --batch-prompts "$T/prompts" -n 12 --temp 0 > "$T/b" 2> "$T/eb"; rc=$?
[ $rc -eq 0 ] && ok "batch generate runs" || bad "batch exit $rc: $(cat "$T/eb")"
grep -q -- "--- prompt 3 ---" "$T/b" && ok "batch prints every prompt" || bad "batch output: $(cat "$T/b")"
grep -q "prompts 1-2" "$T/eb" && grep -q "prompts 3-3" "$T/eb" && ok "batch runs in rounds of max_batch" \
  || bad "batch rounds: $(cat "$T/eb")"
utf8 "$T/b" && ok "batch output is valid UTF-8" || bad "batch output is not UTF-8"
row1=$(awk '/^--- prompt 1 ---$/{f=1;next} /^--- prompt 2 ---$/{f=0} f' "$T/b")
alone=$(cat "$T/gr1")
[ "$row1" == "$alone" ] && ok "batch row equals the prompt alone" || bad "batch row 1 '$row1' vs alone '$alone'"

# ---- chat: two turns, reset, one more; the second turn reuses the cache
printf 'Hi there!\nWhat is 2+2?\n/reset\nHello again\n/bogus\n/exit\nnot read\n' > "$T/chat_in"
"$B/bmrun" "$P" chat -n 10 --seed 7 --system "You are terse." < "$T/chat_in" > "$T/c1" 2> "$T/ec1"; rc=$?
[ $rc -eq 0 ] && ok "chat runs" || bad "chat exit $rc: $(cat "$T/ec1")"
[ "$(grep -c "bmrun: chat:" "$T/ec1")" -eq 3 ] && ok "chat answered three messages" || bad "chat turns: $(cat "$T/ec1")"
grep -q "cached" "$T/ec1" && ok "chat keeps the conversation in the KV cache" || bad "no cache reuse: $(cat "$T/ec1")"
grep -q "conversation reset" "$T/ec1" && ok "chat /reset" || bad "no reset message"
grep -q "unknown command '/bogus'" "$T/ec1" && ok "chat unknown command" || bad "no unknown-command message"
grep -q "tokens/s" "$T/ec1" && ok "chat reports tokens/s" || bad "chat reports no speed"
utf8 "$T/c1" && ok "chat output is valid UTF-8" || bad "chat output is not UTF-8"
[ "$(wc -l < "$T/c1")" -eq 3 ] && ok "chat printed one line per answer" || bad "chat output: $(cat "$T/c1")"
"$B/bmrun" "$P" chat -n 10 --seed 7 --system "You are terse." < "$T/chat_in" > "$T/c2" 2>/dev/null
cmp -s "$T/c1" "$T/c2" && ok "chat is deterministic for a seed" || bad "chat runs differ"
expect 0 "chat:" "chat with another template" -- bash -c "echo hi | '$B/bmrun' '$P' chat -n 4 --template chatml --temp 0"
expect 0 "" "chat on empty input" -- bash -c "'$B/bmrun' '$P' chat < /dev/null"

# ---- usage errors: exit 2
expect 2 "prompt" "generate without a prompt" -- "$B/bmrun" "$P" generate
expect 2 "unknown option" "generate unknown option" -- "$B/bmrun" "$P" generate -p x --bogus
expect 2 "needs a value" "generate option without value" -- "$B/bmrun" "$P" generate -p
expect 2 "temp" "generate bad --temp" -- "$B/bmrun" "$P" generate -p x --temp abc
expect 2 "top-p" "generate --top-p 0" -- "$B/bmrun" "$P" generate -p x --top-p 0
expect 2 "min-p" "generate --min-p 2" -- "$B/bmrun" "$P" generate -p x --min-p 2
expect 2 "repeat-penalty" "generate --repeat-penalty 0" -- "$B/bmrun" "$P" generate -p x --repeat-penalty 0
expect 2 "n-predict|-n" "generate -n 0" -- "$B/bmrun" "$P" generate -p x -n 0
expect 2 "seed" "generate --seed -1" -- "$B/bmrun" "$P" generate -p x --seed -1
expect 2 "exclude" "generate -p and --ids" -- "$B/bmrun" "$P" generate -p x --ids 1,2
expect 2 "chat reads stdin" "chat with -p" -- "$B/bmrun" "$P" chat -p x
expect 2 "template" "chat --template bogus" -- "$B/bmrun" "$P" chat --template bogus
expect 2 "ids" "generate bad --ids" -- "$B/bmrun" "$P" generate --ids 1,x
expect 0 "usage: bmrun FILE.bmpk generate" "generate --help" -- "$B/bmrun" "$P" generate --help
expect 2 "chat-template" "bmc --chat-template bogus" -- "$B/bmc" compile --model "$M" --chat-template bogus -o "$T/x.bmpk"
expect 2 "exclude" "bmc --tokenizer with --no-tokenizer" -- "$B/bmc" compile --model "$M" --tokenizer "$M" --no-tokenizer -o "$T/x.bmpk"

# ---- runtime errors: exit 1
expect 1 "cannot open" "generate on a missing package" -- "$B/bmrun" "$T/none.bmpk" generate -p x
expect 1 "cannot open" "batch prompts file missing" -- "$B/bmrun" "$P" generate --batch-prompts "$T/none.txt"
expect 1 "outside the vocabulary" "generate with an id out of range" -- "$B/bmrun" "$P" generate --ids 1,99999
expect 1 "tokenizer" "bmc --tokenizer missing" -- "$B/bmc" compile --model "$M" --random-weights --tokenizer "$T/none" -o "$T/x.bmpk"
expect 1 "vocab_size" "bmc tokenizer larger than the model's vocabulary" -- \
  "$B/bmc" compile --model "$M" --random-weights -O 0 --tokenizer "$SHARED/tokenizers/llama3/tokenizer.model" -o "$T/x.bmpk"
[ ! -e "$T/x.bmpk" ] && ok "failed compiles leave no file" || bad "a failed compile left a file"
expect 0 "wrote" "bmc compile tiny" -- "$B/bmc" compile --model tiny -O 0 -o "$T/tiny.bmpk"
expect 1 "causal_lm" "generate on a package that is no LLM" -- "$B/bmrun" "$T/tiny.bmpk" generate -p x

# ---- a package without a tokenizer: token ids only
expect 0 "wrote" "bmc --no-tokenizer" -- \
  "$B/bmc" compile --model "$M" --random-weights --no-tokenizer -O 0 --max-ctx 32 --max-batch 1 --max-seq 16 -o "$T/nt.bmpk"
expect 1 "no tokenizer" "generate text without a tokenizer" -- "$B/bmrun" "$T/nt.bmpk" generate -p hello
expect 1 "no tokenizer" "chat without a tokenizer" -- bash -c "echo hi | '$B/bmrun' '$T/nt.bmpk' chat"
expect 0 "^ [0-9]+ [0-9]+ [0-9]+ [0-9]+$" "generate --ids prints ids" -- \
  bash -c "'$B/bmrun' '$T/nt.bmpk' generate --ids 1,450,4996 -n 4 --temp 0 2>/dev/null"

# ---- compute dtype: the same folder with bf16 activations, cache and weights
# generates through the unchanged runtime (logits stay f32)
PB=$T/bf16.bmpk
expect 0 "wrote" "bmc compile --dtype bf16" -- \
  "$B/bmc" compile --model "$M" --random-weights --seed 3 -O 0 --max-ctx 96 --max-batch 2 --max-seq 32 --dtype bf16 -o "$PB"
expect 0 '"dtype":"bf16"' "the manifest records the compute dtype" -- "$B/bmc" inspect --json "$PB"
expect 0 '"weight_dtype":"bf16"' "weights follow --dtype" -- "$B/bmc" inspect --json "$PB"
expect 0 "out logits +f32" "bf16 package keeps f32 logits" -- "$B/bmc" inspect "$PB"
expect 0 "decode 7 tokens" "generate with a bf16 package" -- "$B/bmrun" "$PB" generate -p "Once upon a time" -n 8 --temp 0
expect 2 "--dtype: 'f8' is not f32, f16 or bf16" "bmc --dtype f8" -- \
  "$B/bmc" compile --model "$M" --random-weights --dtype f8 -o "$T/x.bmpk"
expect 1 "runs in f32 only" "bmc --dtype on the built-in model" -- "$B/bmc" compile --dtype f16 -o "$T/x.bmpk"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
