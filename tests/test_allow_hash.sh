#!/usr/bin/env bash
# test_allow_hash.sh - bmrun --allow-hash (bm_open_options.allowed_hashes):
# the package's own hash (from bmc inspect) lets it run; any other hash is
# refused with a permission error before the package is used; a malformed
# hash is a usage error.
# usage: test_allow_hash.sh BUILD_DIR SOURCE_DIR
set -uo pipefail
B=$1
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"  # $T, ok, bad, expect

"$B/bmc" compile --model tiny -O 0 -o "$T/a.bmpk" >/dev/null 2>&1 || { echo "FAIL cannot compile tiny"; exit 1; }
h=$("$B/bmc" inspect "$T/a.bmpk" | grep -oE 'xxh3 [0-9a-f]{16}' | head -1 | cut -d' ' -f2)
[ ${#h} -eq 16 ] && ok "bmc inspect prints the hash ($h)" || bad "no hash in bmc inspect"
other=0123456789abcdef
[ "$h" = "$other" ] && other=fedcba9876543210
expect 0 "logits" "--allow-hash with the package's hash" -- "$B/bmrun" "$T/a.bmpk" --allow-hash "$h" --random-inputs 1
expect 0 "logits" "--allow-hash 0x-prefixed, among others" -- "$B/bmrun" "$T/a.bmpk" --allow-hash "$other" --allow-hash "0x$h" --random-inputs 1
expect 1 "permission|allow-list" "--allow-hash with another hash" -- "$B/bmrun" "$T/a.bmpk" --allow-hash "$other" --random-inputs 1
expect 1 "allow-list" "--allow-hash=HEX form, wrong hash" -- "$B/bmrun" "$T/a.bmpk" "--allow-hash=$other" --list
expect 2 "not a 64-bit hex hash" "--allow-hash not hex" -- "$B/bmrun" "$T/a.bmpk" --allow-hash xyz
expect 2 "not a 64-bit hex hash" "--allow-hash too long" -- "$B/bmrun" "$T/a.bmpk" --allow-hash 0123456789abcdef0
expect 2 "needs a value" "--allow-hash without a value" -- "$B/bmrun" "$T/a.bmpk" --allow-hash
# a changed package is refused even with --no-verify (the hash covers every byte)
cp "$T/a.bmpk" "$T/b.bmpk"
size=$(stat -c %s "$T/b.bmpk")
printf '\x55' | dd of="$T/b.bmpk" bs=1 seek=$((size - 3)) conv=notrunc 2>/dev/null
expect 1 "allow-list" "a modified package is not on the list" -- "$B/bmrun" "$T/b.bmpk" --allow-hash "$h" --no-verify --list
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
