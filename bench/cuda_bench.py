# cuda_bench.py - the CUDA benchmarks on the GPU machine: times bm's packages
# (written here by bench_cuda_gemm, timed by `bm_cuda_check --bench`) and the
# same shapes in PyTorch (torch.matmul = cuBLAS, scaled_dot_product_attention),
# and prints TFLOP/s and bm / torch. Run through scripts/cuda_device.sh bench.
#
#   python3 bench/cuda_bench.py CARRY_DIR [REPS]
import os
import subprocess
import sys

import torch

from cuda_common import torch_ms  # noqa: E402 (bench/ is on sys.path)

carry = sys.argv[1]
reps = int(sys.argv[2]) if len(sys.argv) > 2 else 20
bdir = os.path.join(carry, os.environ.get("BM_BENCH_SUBDIR", "bench"))  # packages and list.txt
cases = [l.split() for l in open(os.path.join(bdir, "list.txt")) if l.strip()]
env = dict(os.environ, LD_LIBRARY_PATH=os.path.join(carry, "lib"))
pkgs = [os.path.join(bdir, c[1] + ".bmpk") for c in cases]
out = subprocess.run([os.path.join(carry, "bin", "bm_cuda_check"), "--bench", str(reps)] + pkgs,
                     env=env, capture_output=True, text=True)
bm_ms = {}
for line in out.stdout.splitlines():
    f = line.split()
    if len(f) >= 4 and f[0] == "bench" and f[2] != "FAIL":
        bm_ms[f[1].removesuffix(".bmpk")] = float(f[2])
    elif line.strip():
        print(line)
if out.returncode:
    print(out.stderr)

DT = {"f16": torch.float16, "bf16": torch.bfloat16, "f32": torch.float32}


print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}, {reps} reps (mean)")
print(f"{'case':34s} {'dtype':5s} {'bm ms':>9s} {'bm TF/s':>8s} {'torch ms':>9s} {'torch TF/s':>10s} {'bm/torch':>8s}")
gemv_cases = []  # printed after the loop, with bandwidth columns
for c in cases:
    kind, name = c[0], c[1]
    if kind == "gemv":
        gemv_cases.append(c)
        continue
    dt = DT[c[2]]
    if kind == "conv":  # x (n, c, h, w) * w (o, c, kh, kw), f16, vs cuDNN
        n, ci, h, w, o, kh, kw, st, pd = map(int, c[3:12])
        x = torch.rand(n, ci, h, w, device="cuda", dtype=dt) * 2 - 1
        wt = torch.rand(o, ci, kh, kw, device="cuda", dtype=dt) * 2 - 1
        fn = lambda: torch.nn.functional.conv2d(x, wt, stride=st, padding=pd)
        oh, ow = (h + 2 * pd - kh) // st + 1, (w + 2 * pd - kw) // st + 1
        flop = 2.0 * n * o * oh * ow * ci * kh * kw
    elif kind == "gemm":  # bm runs REPS GEMMs per session run (over distinct B): its time per GEMM is run / REPS
        m, n, k, tb = map(int, c[3:7])
        greps = int(c[7]) if len(c) > 7 else 1
        a = torch.rand(m, k, device="cuda", dtype=dt) * 2 - 1
        b = torch.rand(n, k, device="cuda", dtype=dt) * 2 - 1 if tb else torch.rand(k, n, device="cuda", dtype=dt) * 2 - 1
        fn = (lambda: torch.matmul(a, b.t())) if tb else (lambda: torch.matmul(a, b))
        flop = 2.0 * m * n * k
    else:
        bsz, h, s, d, causal = map(int, c[3:8])
        sq = 1 if s < 0 else s  # s < 0: the decode step, one query row over -s keys
        s = abs(s)
        q = torch.rand(bsz, h, sq, d, device="cuda", dtype=dt) - 0.5
        kk, v = (torch.rand(bsz, h, s, d, device="cuda", dtype=dt) - 0.5 for _ in range(2))
        fn = lambda: torch.nn.functional.scaled_dot_product_attention(q, kk, v, is_causal=bool(causal))
        flop = 4.0 * bsz * h * sq * s * d * (0.5 if causal else 1.0)
    t = torch_ms(fn, reps)
    b = bm_ms.get(name)
    if b and kind == "gemm":
        b /= greps
    bm_s = f"{b:9.3f} {flop / b / 1e9:8.1f}" if b else f"{'FAIL':>9s} {'':8s}"
    ratio = f"{t / b:8.3f}" if b else ""
    print(f"{name:34s} {c[2]:5s} {bm_s} {t:9.3f} {flop / t / 1e9:10.1f} {ratio}")
    del fn
    torch.cuda.empty_cache()

# decode GEMV: bm runs REPS GEMVs over distinct weights per session run (about
# 1 GiB, so launch + synchronization are amortized and L2 holds none of them);
# torch: bf16 x @ W.t() of the same shape (for i8/i4 too: the bf16 baseline),
# cycling over enough weight copies that L2 holds none. GB/s counts each
# side's weight bytes (bm: the quantized bytes with their scales); "% copy" is
# against a 1 GiB device-to-device copy ((read + write) / time) measured here.
if gemv_cases:
    src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    copy_ms = torch_ms(lambda: dst.copy_(src), reps)
    copy_gbs = 2 * (1 << 30) / copy_ms / 1e6
    del src, dst
    torch.cuda.empty_cache()
    print(f"device-to-device copy: {copy_gbs:.0f} GB/s (1 GiB, read + write)")
    print(f"{'case':34s} {'w':4s} {'M':>3s} {'bm us':>8s} {'bm GB/s':>8s} {'% copy':>6s} "
          f"{'torch us':>8s} {'torch GB/s':>10s} {'% copy':>6s} {'bm/torch':>8s}")
    for c in gemv_cases:
        name, wdt = c[1], c[2]
        m, n, k, nrep, wbytes = map(int, c[3:8])
        tb = 2 * n * k
        copies = max(1, -(-(256 << 20) // tb))
        a = torch.rand(m, k, device="cuda", dtype=torch.bfloat16) * 2 - 1
        ws = [torch.rand(n, k, device="cuda", dtype=torch.bfloat16) * 2 - 1 for _ in range(copies)]
        it = [0]

        def step():
            torch.matmul(a, ws[it[0] % copies].t())
            it[0] += 1

        t = torch_ms(step, reps)
        b = bm_ms.get(name)
        tgb = tb / t / 1e6
        if b:
            bu = b / nrep
            bgb = wbytes / bu / 1e6
            bm_s = f"{bu * 1e3:8.1f} {bgb:8.0f} {100 * bgb / copy_gbs:5.0f}%"
            ratio = f"{t / bu:8.3f}"
        else:
            bm_s, ratio = f"{'FAIL':>8s} {'':8s} {'':6s}", ""
        print(f"{name:34s} {wdt:4s} {m:3d} {bm_s} {t * 1e3:8.1f} {tgb:10.0f} {100 * tgb / copy_gbs:5.0f}% {ratio}")
        del ws, a
        torch.cuda.empty_cache()
