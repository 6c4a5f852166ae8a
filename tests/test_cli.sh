#!/usr/bin/env bash
# test_cli.sh - bmc and bmrun end to end: the default model compiles, runs,
# inspects, builds reproducibly; bad arguments and bad files give clear
# errors and the documented exit codes (2 usage, 1 error), never a crash.
# usage: test_cli.sh BUILD_DIR SOURCE_DIR
set -uo pipefail
B=$1
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"  # $T, ok, bad, expect

expect 0 "usage: bmc" "bmc --help" -- "$B/bmc" --help
expect 0 "usage" "bmrun --help" -- "$B/bmrun" --help
expect 0 "tiny" "bmc models" -- "$B/bmc" models
expect 2 "unknown command" "bmc bad command" -- "$B/bmc" frobnicate
expect 2 "unknown option" "bmc compile bad option" -- "$B/bmc" compile --bogus -o "$T/x.bmpk"
expect 2 "missing -o" "bmc compile without -o" -- "$B/bmc" compile --model tiny
expect 2 "needs a value" "bmc compile --model without value" -- "$B/bmc" compile -o "$T/x.bmpk" --model
expect 2 "not 0, 1, 2 or 3" "bmc -O out of range" -- "$B/bmc" compile -O 9 -o "$T/x.bmpk"
expect 2 "unknown pass" "bmc --print-after unknown pass" -- "$B/bmc" compile --print-after nopass -o "$T/x.bmpk"
expect 1 "unknown model 'nosuch'" "bmc unknown model" -- "$B/bmc" compile --model nosuch -o "$T/x.bmpk"
expect 1 "" "bmc missing weights file" -- "$B/bmc" compile --model tiny --weights "$T/none.safetensors" -o "$T/x.bmpk"
[ ! -e "$T/x.bmpk" ] && ok "failed compile leaves no file" || bad "failed compile left a file"
expect 1 "" "bmc unknown target" -- "$B/bmc" compile --target nosuch -o "$T/x.bmpk"
expect 1 "" "bmc unknown cpu" -- "$B/bmc" compile --cpu not-a-cpu -o "$T/x.bmpk"

expect 0 "wrote" "bmc compile tiny" -- "$B/bmc" compile --model tiny -o "$T/a.bmpk"
expect 0 "wrote" "bmc compile tiny again" -- "$B/bmc" compile --model tiny -o "$T/b.bmpk"
cmp -s "$T/a.bmpk" "$T/b.bmpk" && ok "reproducible build" || bad "two builds differ"
expect 0 "wrote" "bmc compile tiny compressed" -- "$B/bmc" compile --model tiny --compress -o "$T/c.bmpk"
expect 0 "group_norm|matmul" "bmc --print-after fuse_epilogue" -- "$B/bmc" compile --print-after fuse_epilogue -o "$T/d.bmpk"
expect 0 "attention" "tiny's attention is fused" -- "$B/bmc" compile --print-ir -o "$T/d.bmpk"
expect 0 "function +main" "bmc inspect" -- "$B/bmc" inspect "$T/a.bmpk"
expect 0 "peak mem" "bmc inspect shows peak memory" -- "$B/bmc" inspect "$T/a.bmpk"
expect 0 '"functions"' "bmc inspect --json" -- "$B/bmc" inspect --json "$T/a.bmpk"
expect 2 "missing FILE" "bmc inspect without file" -- "$B/bmc" inspect

expect 0 "logits" "bmrun tiny" -- "$B/bmrun" "$T/a.bmpk" --random-inputs 1 --output "$T/out"
[ -s "$T/out/logits.npy" ] && ok "bmrun wrote logits.npy" || bad "no logits.npy"
expect 0 "logits" "bmrun compressed tiny" -- "$B/bmrun" "$T/c.bmpk" --random-inputs 1 --output "$T/outc"
cmp -s "$T/out/logits.npy" "$T/outc/logits.npy" && ok "compressed package gives the same output" || bad "compressed output differs"
expect 0 "logits" "bmrun --threads 1" -- "$B/bmrun" "$T/a.bmpk" --random-inputs 1 --threads 1 --output "$T/out1"
cmp -s "$T/out/logits.npy" "$T/out1/logits.npy" && ok "1 and N threads agree" || bad "thread count changes the output"
expect 0 "image" "bmrun --list" -- "$B/bmrun" "$T/a.bmpk" --list
expect 1 "image" "bmrun with a wrongly shaped .npy input" -- "$B/bmrun" "$T/a.bmpk" --input "image=$T/out/logits.npy"
expect 2 "threads" "bmrun --threads 0" -- "$B/bmrun" "$T/a.bmpk" --threads 0
expect 2 "unknown option" "bmrun unknown option" -- "$B/bmrun" "$T/a.bmpk" --bogus
expect 2 "" "bmrun bad --input" -- "$B/bmrun" "$T/a.bmpk" --input noequals
expect 1 "" "bmrun missing package" -- "$B/bmrun" "$T/none.bmpk"
expect 2 "no function" "bmrun unknown function" -- "$B/bmrun" "$T/a.bmpk" --function nope --random-inputs 1

# corrupted and truncated packages
head -c 100 "$T/a.bmpk" > "$T/trunc.bmpk"
expect 1 "corrupt|truncated" "bmrun truncated package" -- "$B/bmrun" "$T/trunc.bmpk" --random-inputs 1
expect 1 "corrupt|truncated" "bmc inspect truncated package" -- "$B/bmc" inspect "$T/trunc.bmpk"
echo "hello, I am not a package" > "$T/text.bmpk"
expect 1 "not a bm package" "bmrun on a text file" -- "$B/bmrun" "$T/text.bmpk"
cp "$T/a.bmpk" "$T/flip.bmpk"
size=$(stat -c %s "$T/flip.bmpk")
printf '\xff' | dd of="$T/flip.bmpk" bs=1 seek=$((size - 10)) conv=notrunc 2>/dev/null
expect 1 "checksum|corrupt" "bmrun bit-flipped package" -- "$B/bmrun" "$T/flip.bmpk" --random-inputs 1

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
