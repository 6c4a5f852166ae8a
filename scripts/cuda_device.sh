#!/usr/bin/env bash
# cuda_device.sh - the CUDA tests (and later the benchmarks) on a GPU machine.
#
#   scripts/cuda_device.sh pack   # here (a build machine with NVRTC, no GPU needed):
#                                 # builds test_ops_cuda and bm_cuda_check, exports every
#                                 # case (package + inputs + interpreter outputs) and the
#                                 # runtime-only checker with its libraries to .cuda_carry/,
#                                 # and the 9 LLM golden families compiled for CUDA
#   scripts/cuda_device.sh run    # on the GPU machine (carry .cuda_carry): runs every case
#                                 # from its cubin (and the bundle case from PTX too) and
#                                 # prints "N passed, N failed, N skipped"; logs to $OUT
#   scripts/cuda_device.sh bench  # on the GPU machine, after pack: bench/cuda_bench.py (bm's GEMM
#                                 # and attention vs torch.matmul / SDPA); BM_BENCH_REPS (20)
# BM_CARRY=DIR picks the carry folder (default .cuda_carry; .carry-* is git-ignored too).
#   scripts/cuda_device.sh all    # both, on a machine that can build and has a GPU:
#                                 # runs test_ops_cuda in-process (compile + run + compare)
#
# The GPU machine needs only the NVIDIA driver (libcuda.so.1): packages carry their
# cubins, so nothing is compiled there. BM_CUDA_ARCHS (default sm_90) picks the
# architecture of the exported cases.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${BM_BUILD:-$root/build-cuda}"
carry="${BM_CARRY:-$root/.cuda_carry}"
mode="${1:-run}"

case "$mode" in
  pack)
    cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DBM_BUILD_BENCH=ON >/dev/null
    cmake --build "$build" -j"${JOBS:-2}" --target test_ops_cuda bm_cuda_check bench_cuda_gemm
    rm -rf "$carry" && mkdir -p "$carry/bin" "$carry/lib"
    BM_CUDA_ARCHS="${BM_CUDA_ARCHS:-sm_90}" BM_CUDA_EXPORT="$carry/cases" "$build/test_ops_cuda"
    # the benchmarks' packages (timed there by bench/cuda_bench.py)
    mkdir -p "$carry/bench" && "$build/bench_cuda_gemm" "$carry/bench" "${BM_CUDA_ARCHS:-sm_90}"
    # end to end: the built-in model for the CPU (portable x86-64-v3) and for CUDA
    cmake --build "$build" -j"${JOBS:-2}" --target bmc bmrun
    "$build/bmc" compile --model tiny --cpu x86-64-v3 -o "$carry/tiny_cpu.bmpk"
    "$build/bmc" compile --model tiny --target cuda --cpu "${BM_CUDA_ARCHS:-sm_90}" -o "$carry/tiny_cuda.bmpk"
    # the LLM golden suite (../shared/golden/hf): each family compiled for CUDA with
    # test_llm_golden's bounds, plus transformers' goldens (bm_cuda_check --llm)
    golden="${BM_GOLDEN:-$root/../shared/golden/hf}"
    mkdir -p "$carry/llm" && : >"$carry/llm/list.txt"
    for m in ${BM_LLM_CASES:-llama2 llama3 mistral qwen2 qwen3 gemma2 phi3 mixtral deepseek_v2}; do
      if [ -f "$golden/$m/golden.safetensors" ] &&
        "$build/bmc" compile --model "$golden/$m" --target cuda --cpu "${BM_CUDA_ARCHS:-sm_90}" \
          --max-ctx 64 --max-batch 2 --max-seq 48 --no-tokenizer -o "$carry/llm/$m.bmpk"; then
        cp "$golden/$m/golden.safetensors" "$carry/llm/$m.golden.safetensors"
        echo "$m" >>"$carry/llm/list.txt"
      else
        echo "cuda_device.sh: $m: not compiled for cuda (see above)" >&2
      fi
    done
    cp "$build/bm_cuda_check" "$build/bmrun" "$carry/bin/"
    # their shared libraries beyond glibc (cjson, zstd, xxhash, png, z)
    ldd "$build/bm_cuda_check" "$build/bmrun" | awk '$3 ~ /^\// {print $3}' | sort -u |
      grep -vE '/lib(c|m|pthread|dl|rt)\.so' | while read -r lib; do cp -L "$lib" "$carry/lib/"; done
    du -sh "$carry"
    ;;
  run)
    out="${OUT:-$carry/out}"
    mkdir -p "$out"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee "$out/gpu.txt" || true
    LD_LIBRARY_PATH="$carry/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
      "$carry/bin/bm_cuda_check" "$carry/cases" 2>&1 | tee "$out/test_ops_cuda.txt"
    rc=${PIPESTATUS[0]}
    if [ -f "$carry/llm/list.txt" ]; then # the LLM golden suite vs transformers
      LD_LIBRARY_PATH="$carry/lib" "$carry/bin/bm_cuda_check" --llm "$carry/llm" 2>&1 | tee "$out/llm_golden.txt"
      [ "${PIPESTATUS[0]}" = 0 ] || rc=1
    fi
    if [ -f "$carry/tiny_cuda.bmpk" ]; then # the built-in model: CUDA against the CPU
      for t in cpu cuda; do
        LD_LIBRARY_PATH="$carry/lib" "$carry/bin/bmrun" "$carry/tiny_$t.bmpk" --random-inputs 42 \
          --output "$out/tiny_$t" --repeat 20 2>&1 | tail -2
      done
      python3 - "$out" <<'PY' || rc=1
import sys, numpy as np
d = sys.argv[1]
worst = 0.0
for name in ("logits", "probs"):
    a, b = np.load(f"{d}/tiny_cuda/{name}.npy"), np.load(f"{d}/tiny_cpu/{name}.npy")
    e = float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))
    worst = max(worst, e)
    print(f"tiny {name}: shape {a.shape}, rel err cuda vs cpu {e:.3g}")
print("tiny model on CUDA vs CPU:", "ok" if worst < 1e-4 else "FAIL")
sys.exit(0 if worst < 1e-4 else 1)
PY
    fi
    exit "$rc"
    ;;
  bench)
    out="${OUT:-$carry/out}"
    mkdir -p "$out"
    PYTHONUNBUFFERED=1 python3 "$root/bench/cuda_bench.py" "$carry" "${BM_BENCH_REPS:-20}" 2>&1 | tee "$out/bench.txt"
    exit "${PIPESTATUS[0]}"
    ;;
  all)
    cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build "$build" -j"${JOBS:-8}" --target test_ops_cuda
    "$build/test_ops_cuda"
    ;;
  *)
    echo "usage: $0 pack|run|bench|all" >&2
    exit 2
    ;;
esac
