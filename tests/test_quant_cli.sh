#!/usr/bin/env bash
# test_quant_cli.sh - bmc --quant/--group/--quant-keep end to end on the
# llama2 golden folder: the options are recorded in the manifest, the
# package's weights shrink (bmc inspect reads them from the manifest), the
# kernels are qmatmul, and bad values are usage errors (exit 2).
# usage: test_quant_cli.sh BUILD_DIR SOURCE_DIR
set -uo pipefail
B=$1
S=$2
M="$S/../shared/golden/hf/llama2"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"  # $T, ok, bad, expect
# the manifest without whitespace, for patterns over its JSON
manifest() { "$B/bmc" inspect --json "$1" | tr -d ' \t\n'; }
# bytes of the weights line of `bmc inspect` ("weights   N tensors, X KiB ...")
wbytes() { "$B/bmc" inspect "$1" | awk '/^weights/ {v=$4; u=$5; sub(/,/,"",u); m=(u=="KiB")?1024:(u=="MiB")?1048576:1; print int(v*m)}'; }

expect 2 "not none, int8 or int4" "--quant bad value" -- "$B/bmc" compile --model "$M" --quant int3 -o "$T/x.bmpk"
expect 2 "not 32 or 64" "--group bad value" -- "$B/bmc" compile --model "$M" --quant int4 --group 48 -o "$T/x.bmpk"
expect 2 "int4 only" "--group without int4" -- "$B/bmc" compile --model "$M" --quant int8 --group 32 -o "$T/x.bmpk"
expect 2 "needs --quant" "--quant-keep without --quant" -- "$B/bmc" compile --model "$M" --quant-keep lm_head.weight -o "$T/x.bmpk"

expect 0 "wrote" "compile f32" -- "$B/bmc" compile --model "$M" --max-ctx 64 -o "$T/f32.bmpk"
expect 0 "wrote" "compile int8" -- "$B/bmc" compile --model "$M" --max-ctx 64 --quant int8 -o "$T/i8.bmpk"
expect 0 "wrote" "compile int4 g64, lm_head kept" -- "$B/bmc" compile --model "$M" --max-ctx 64 --quant int4 --group 64 --quant-keep 'lm_head.*' -o "$T/i4.bmpk"
expect 0 '"quant":"int8"' "manifest records int8" -- manifest "$T/i8.bmpk"
expect 0 '"quant":"int4","group":64,"quant_keep":"lm_head\.\*"' "manifest records int4, group, keep" -- manifest "$T/i4.bmpk"
expect 0 '"quant":"none"' "manifest records none" -- manifest "$T/f32.bmpk"
expect 0 "qmatmul 15" "int8 kernels are qmatmul" -- "$B/bmc" inspect "$T/i8.bmpk"
expect 0 "qmatmul 14 .*matmul 1" "int4 with the lm_head kept" -- "$B/bmc" inspect "$T/i4.bmpk"
expect 0 '"name":"lm_head\.weight","dtype":"f32"' "lm_head stays f32" -- manifest "$T/i4.bmpk"
expect 0 '"name":"model\.layers\.0\.mlp\.up_proj\.weight\.q","dtype":"i4"' "up_proj is i4" -- manifest "$T/i4.bmpk"
expect 0 '"name":"model\.embed_tokens\.weight","dtype":"f32"' "embeddings stay f32" -- manifest "$T/i8.bmpk"
f=$(wbytes "$T/f32.bmpk"); q8=$(wbytes "$T/i8.bmpk")
# llama2 golden: 128 KiB of embeddings (kept) + 417 KiB of matmul weights -> int8 ~1/4 of those
if [ -n "$f" ] && [ -n "$q8" ] && [ "$q8" -lt $((f / 2)) ]; then ok "int8 weights smaller ($q8 < $f / 2)"; else bad "int8 weights $q8 vs f32 $f"; fi
peak() { "$B/bmc" inspect "$1" | awk '/^peak mem/ {print $3 $4}'; }
pf=$(peak "$T/f32.bmpk"); p8=$(peak "$T/i8.bmpk")
[ "$pf" != "$p8" ] && ok "peak memory differs ($pf vs $p8)" || bad "peak memory unchanged: $pf"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
