#!/usr/bin/env bash
# setup.sh - install what bm needs on Debian 12 (idempotent: installs only
# what is missing). Run as root or with sudo available.
set -euo pipefail

PKGS=(build-essential cmake pkg-config llvm-19-dev libcjson-dev libxxhash-dev libzstd-dev
      libpng-dev libopenblas-dev zlib1g-dev unicode-data
      clang libclang-rt-14-dev valgrind) # fuzz targets (libFuzzer) and tests/test_leaks.sh

missing=()
for p in "${PKGS[@]}"; do
  [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all packages present"
  exit 0
fi
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "setup: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup: done"
