#!/usr/bin/env bash
# demo.sh - set up, build, compile the built-in default model with bmc and
# run it with bmrun. Usage: scripts/demo.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
scripts/setup.sh
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target bmc bmrun bmrt
"$BUILD"/bmc compile --model tiny -o "$BUILD"/tiny.bmpk
"$BUILD"/bmc inspect "$BUILD"/tiny.bmpk
"$BUILD"/bmrun "$BUILD"/tiny.bmpk --random-inputs 42 --repeat 5 --output "$BUILD"/tiny_out
