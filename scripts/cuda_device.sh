#!/usr/bin/env bash
# cuda_device.sh - the CUDA tests (and later the benchmarks) on a GPU machine.
#
#   scripts/cuda_device.sh pack   # here (a build machine with NVRTC, no GPU needed):
#                                 # builds test_ops_cuda and bm_cuda_check, exports every
#                                 # case (package + inputs + interpreter outputs) and the
#                                 # runtime-only checker with its libraries to .cuda_carry/,
#                                 # and the 9 LLM golden families compiled for CUDA, and the SD
#                                 # goldens as 3 pipeline packages in $BM_CARRY/sd (BM_SD_CASES=none
#                                 # skips them) with a diffusers wheel for sd-bench
#   scripts/cuda_device.sh run    # on the GPU machine (carry .cuda_carry): runs every case
#                                 # from its cubin (and the bundle case from PTX too) and
#                                 # prints "N passed, N failed, N skipped"; logs to $OUT
#   scripts/cuda_device.sh bench  # on the GPU machine, after pack: bench/cuda_bench.py (bm's GEMM
#                                 # and attention vs torch.matmul / SDPA); BM_BENCH_REPS (20)
# BM_CARRY=DIR picks the carry folder (default .cuda_carry; .carry-* is git-ignored too).
#   scripts/cuda_device.sh pack-bmc  # here, after pack or alone: a bmc built without LLVM
#                                 # (-DBM_WITH_LLVM=OFF, its own build dir BM_BUILD_NOLLVM,
#                                 # default $BM_BUILD-nollvm) with its libraries in
#                                 # $BM_CARRY/bmc, so `bmc compile --target cuda` runs on the
#                                 # GPU machine (it needs NVRTC there; BM_PACK_NVRTC=1 also
#                                 # carries this machine's libnvrtc, gzip'd, about 45 MB);
#                                 # plus bm_cuda_check and bmrun in $BM_CARRY/bin
#   scripts/cuda_device.sh llm-bench  # on the GPU machine, after pack-bmc: bench/cuda_llm_bench.py
#                                 # (LLaMA-3-8B shape: bm vs transformers vs the HBM bound;
#                                 # BM_BENCH_LAYERS=2 for a smoke run; see the script)
#   scripts/cuda_device.sh sd     # on the GPU machine, after pack: only the Stable Diffusion
#                                 # goldens (bm_cuda_check --sd; `run` includes them)
#   scripts/cuda_device.sh sd-bench  # on the GPU machine, after pack and pack-bmc: SD 1.5 UNet
#                                 # step, 512x512 batch 2, bm vs diffusers fp16 (bench/cuda_sd_bench.py;
#                                 # BM_BENCH_REPS (20); diffusers from $BM_CARRY/sd/wheels if absent)
#   scripts/cuda_device.sh device # on the GPU machine: every part the carry holds (run, bench,
#                                 # sd-bench, llm-bench) in one call; nonzero if any failed
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
    # (each also with --dtype bf16, and llama2 and gemma2 with f16, as test_dtype does on
    # the CPU; BM_LLM_DTYPES=none: f32 only; BM_LLM_CASES=none: no LLM goldens)
    cases="${BM_LLM_CASES:-llama2 llama3 mistral qwen2 qwen3 gemma2 phi3 mixtral deepseek_v2}"
    [ "$cases" = none ] && cases=""
    for m in $cases; do
      variants="f32"
      if [ "${BM_LLM_DTYPES:-}" != none ]; then
        variants="f32 bf16"
        case "$m" in llama2|gemma2) variants="$variants f16" ;; esac
      fi
      for v in $variants; do
        if [ "$v" = f32 ]; then pkg="$m.bmpk" entry="$m" dt=(); else pkg="$m.$v.bmpk" entry="$m:$v" dt=(--dtype "$v"); fi
        if [ -f "$golden/$m/golden.safetensors" ] &&
          "$build/bmc" compile --model "$golden/$m" --target cuda --cpu "${BM_CUDA_ARCHS:-sm_90}" "${dt[@]}" \
            --max-ctx 64 --max-batch 2 --max-seq 48 --no-tokenizer -o "$carry/llm/$pkg"; then
          cp "$golden/$m/golden.safetensors" "$carry/llm/$m.golden.safetensors"
          echo "$entry" >>"$carry/llm/list.txt"
        else
          echo "cuda_device.sh: $entry: not compiled for cuda (see above)" >&2
        fi
      done
    done
    # the Stable Diffusion goldens (../shared/golden/diffusers, hf/clip_text*): test_sd_golden's
    # checks as three pipeline folders compiled for CUDA (bm_cuda_check --sd; see sd_checks there)
    if [ "${BM_SD_CASES:-all}" != none ]; then
      gd="$(cd "${BM_GOLDEN:-$root/../shared/golden/hf}/.." && pwd)"
      sdw="$(mktemp -d)" && mkdir -p "$carry/sd"
      for p in sd1:sd1_unet:clip_text sd2:sd2_unet:clip_text_proj; do
        IFS=: read -r name unet te <<<"$p"
        mkdir -p "$sdw/$name/scheduler"
        echo '{"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.39.0"}' >"$sdw/$name/model_index.json"
        echo '{"_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "steps_offset": 1, "prediction_type": "epsilon", "skip_prk_steps": true}' \
          >"$sdw/$name/scheduler/scheduler_config.json"
        ln -s "$gd/diffusers/$unet" "$sdw/$name/unet"
        ln -s "$gd/diffusers/vae_kl" "$sdw/$name/vae"
        ln -s "$gd/hf/$te" "$sdw/$name/text_encoder"
      done
      sdc=(--target cuda --cpu "${BM_CUDA_ARCHS:-sm_90}" --max-batch 2 --no-tokenizer)
      # package, folder, size, clip skip, dtype (sd1_f16: the UNet and VAE decoder checks in f16)
      for p in "sd1 sd1 32 1 f32" "sd2 sd2 32 1 f32" "sd1_64 sd1 64 2 f32" "sd1_f16 sd1 32 1 f16"; do
        read -r pkg name size skip dt <<<"$p"
        "$build/bmc" compile --model "$sdw/$name" "${sdc[@]}" --width "$size" --height "$size" --clip-skip "$skip" \
          --dtype "$dt" -o "$carry/sd/$pkg.bmpk" || echo "cuda_device.sh: sd golden $pkg: not compiled for cuda (see above)" >&2
      done
      for c in hf/clip_text hf/clip_text_proj diffusers/sd1_unet diffusers/sd2_unet diffusers/vae_kl; do
        cp "$gd/$c/golden.safetensors" "$carry/sd/$(basename "$c").golden.safetensors"
      done
      cp "$gd/hf/clip_text/model.safetensors" "$carry/sd/clip_text.model.safetensors" # final_layer_norm
      rm -rf "$sdw"
      # diffusers for sd-bench, if the GPU machine lacks it (a pure-python wheel, 5.6 MB;
      # BM_SD_WHEELS=DIR holds one, else pip downloads it here; BM_SD_WHEELS=none: none)
      mkdir -p "$carry/sd/wheels"
      if [ "${BM_SD_WHEELS:-}" = none ]; then
        :
      elif ls "${BM_SD_WHEELS:-/nonexistent}"/diffusers-*.whl >/dev/null 2>&1; then
        cp "${BM_SD_WHEELS}"/diffusers-*.whl "$carry/sd/wheels/"
      else
        timeout 120 python3 -m pip download --no-deps -q -d "$carry/sd/wheels" diffusers==0.39.0 ||
          echo "cuda_device.sh: no diffusers wheel (sd-bench needs diffusers on the GPU machine)" >&2
      fi
    fi
    cp "$build/bm_cuda_check" "$build/bmrun" "$carry/bin/"
    # their shared libraries beyond glibc (cjson, zstd, xxhash, png, z)
    ldd "$build/bm_cuda_check" "$build/bmrun" | awk '$3 ~ /^\// {print $3}' | sort -u |
      grep -vE '/lib(c|m|pthread|dl|rt)\.so' | while read -r lib; do cp -L "$lib" "$carry/lib/"; done
    du -sh "$carry"
    ;;
  pack-bmc)
    nb="${BM_BUILD_NOLLVM:-$build-nollvm}"
    cmake -S "$root" -B "$nb" -DCMAKE_BUILD_TYPE=Release -DBM_WITH_LLVM=OFF >/dev/null
    cmake --build "$nb" -j"${JOBS:-2}" --target bmc bmrun bm_cuda_check
    if ldd "$nb/bmc" | grep -qi llvm; then
      echo "cuda_device.sh: $nb/bmc links LLVM (is BM_WITH_LLVM=OFF?)" >&2
      exit 1
    fi
    rm -rf "$carry/bmc" && mkdir -p "$carry/bmc/bin" "$carry/bmc/lib" "$carry/bin" "$carry/lib"
    cp "$nb/bmc" "$carry/bmc/bin/"
    cp "$nb/bm_cuda_check" "$nb/bmrun" "$carry/bin/"
    ldd "$nb/bmc" | awk '$3 ~ /^\// {print $3}' | sort -u | grep -vE '/lib(c|m|pthread|dl|rt)\.so' |
      while read -r lib; do cp -L "$lib" "$carry/bmc/lib/"; done
    ldd "$nb/bm_cuda_check" "$nb/bmrun" | awk '$3 ~ /^\// {print $3}' | sort -u |
      grep -vE '/lib(c|m|pthread|dl|rt)\.so' | while read -r lib; do cp -L "$lib" "$carry/lib/"; done
    if [ "${BM_PACK_NVRTC:-0}" = 1 ]; then # NVRTC for a GPU machine without one
      mkdir -p "$carry/bmc/nvrtc"
      dir="$(dirname "$(readlink -f "${BM_NVRTC:-/usr/local/cuda/lib64/libnvrtc.so}")")"
      for f in "$dir"/libnvrtc.so.[0-9]* "$dir"/libnvrtc-builtins.so.[0-9]*; do
        case "$f" in *alt*) continue ;; esac
        [ -f "$f" ] && [ ! -L "$f" ] && gzip -6 -c "$f" >"$carry/bmc/nvrtc/$(basename "$f").gz"
      done
    fi
    echo "pack-bmc: $(ldd "$carry/bmc/bin/bmc" | grep -ci llvm) LLVM libraries needed by bmc; libs: $(ls "$carry/bmc/lib" | tr '\n' ' ')"
    du -sh "$carry"
    ;;
  llm-bench)
    out="${OUT:-$carry/out}"
    mkdir -p "$out"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee "$out/gpu.txt" || true
    PYTHONUNBUFFERED=1 python3 "$root/bench/cuda_llm_bench.py" "$carry" "$out" 2>&1 | tee "$out/llm_bench.txt"
    exit "${PIPESTATUS[0]}"
    ;;
  run)
    out="${OUT:-$carry/out}"
    mkdir -p "$out"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee "$out/gpu.txt" || true
    rc=0
    if [ -d "$carry/cases" ]; then # every op case against the interpreter's outputs
      LD_LIBRARY_PATH="$carry/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
        "$carry/bin/bm_cuda_check" "$carry/cases" 2>&1 | tee "$out/test_ops_cuda.txt"
      rc=${PIPESTATUS[0]}
    fi
    if [ -f "$carry/llm/list.txt" ]; then # the LLM golden suite vs transformers
      LD_LIBRARY_PATH="$carry/lib" "$carry/bin/bm_cuda_check" --llm "$carry/llm" 2>&1 | tee "$out/llm_golden.txt"
      [ "${PIPESTATUS[0]}" = 0 ] || rc=1
    fi
    if [ -f "$carry/sd/sd1_unet.golden.safetensors" ]; then # the Stable Diffusion goldens vs diffusers/transformers
      LD_LIBRARY_PATH="$carry/lib" "$carry/bin/bm_cuda_check" --sd "$carry/sd" 2>&1 | tee "$out/sd_golden.txt"
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
  sd)
    out="${OUT:-$carry/out}"
    mkdir -p "$out"
    LD_LIBRARY_PATH="$carry/lib" "$carry/bin/bm_cuda_check" --sd "$carry/sd" 2>&1 | tee "$out/sd_golden.txt"
    exit "${PIPESTATUS[0]}"
    ;;
  sd-bench)
    out="${OUT:-$carry/out}"
    mkdir -p "$out"
    PYTHONUNBUFFERED=1 python3 "$root/bench/cuda_sd_bench.py" "$carry" "$out" "${BM_BENCH_REPS:-20}" 2>&1 |
      tee "$out/sd_bench.txt"
    exit "${PIPESTATUS[0]}"
    ;;
  device)
    # everything the carry folder holds, in one call on the GPU machine: the op
    # cases, LLM and SD goldens and the built-in model (run), the kernel benchmarks
    # (bench), and with pack-bmc's bmc the SD 1.5 UNet step (sd-bench) and the
    # LLaMA-3-8B shape (llm-bench). A part whose files are not in the carry is
    # skipped (so the carry can be split across two calls under the 64 MiB limit);
    # the exit status is nonzero if any part that ran failed.
    rc=0
    part() { echo "=== cuda_device.sh $1"; "$0" "$1" || { echo "=== cuda_device.sh $1: FAILED"; rc=1; }; }
    if [ -d "$carry/cases" ] || [ -f "$carry/llm/list.txt" ] || [ -d "$carry/sd" ]; then part run; fi
    if [ -f "$carry/bench/list.txt" ]; then part bench; fi
    if [ -x "$carry/bmc/bin/bmc" ]; then
      [ "${BM_SKIP_SD_BENCH:-0}" = 1 ] || part sd-bench
      [ "${BM_SKIP_LLM_BENCH:-0}" = 1 ] || part llm-bench
    fi
    exit "$rc"
    ;;
  all)
    cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build "$build" -j"${JOBS:-8}" --target test_ops_cuda
    "$build/test_ops_cuda"
    ;;
  *)
    echo "usage: $0 pack|pack-bmc|run|bench|llm-bench|sd|sd-bench|device|all" >&2
    exit 2
    ;;
esac
