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


def torch_ms(fn):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(reps):
        fn()
    e.record()
    torch.cuda.synchronize()
    return s.elapsed_time(e) / reps


print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}, {reps} reps (mean)")
print(f"{'case':34s} {'dtype':5s} {'bm ms':>9s} {'bm TF/s':>8s} {'torch ms':>9s} {'torch TF/s':>10s} {'bm/torch':>8s}")
for c in cases:
    kind, name, dt = c[0], c[1], DT[c[2]]
    if kind == "gemm":
        m, n, k, tb = map(int, c[3:7])
        a = torch.rand(m, k, device="cuda", dtype=dt) * 2 - 1
        b = torch.rand(n, k, device="cuda", dtype=dt) * 2 - 1 if tb else torch.rand(k, n, device="cuda", dtype=dt) * 2 - 1
        fn = (lambda: torch.matmul(a, b.t())) if tb else (lambda: torch.matmul(a, b))
        flop = 2.0 * m * n * k
    else:
        bsz, h, s, d, causal = map(int, c[3:8])
        q, kk, v = (torch.rand(bsz, h, s, d, device="cuda", dtype=dt) - 0.5 for _ in range(3))
        fn = lambda: torch.nn.functional.scaled_dot_product_attention(q, kk, v, is_causal=bool(causal))
        flop = 4.0 * bsz * h * s * s * d * (0.5 if causal else 1.0)
    t = torch_ms(fn)
    b = bm_ms.get(name)
    bm_s = f"{b:9.3f} {flop / b / 1e9:8.1f}" if b else f"{'FAIL':>9s} {'':8s}"
    ratio = f"{t / b:8.3f}" if b else ""
    print(f"{name:34s} {c[2]:5s} {bm_s} {t:9.3f} {flop / t / 1e9:10.1f} {ratio}")
    del fn
    torch.cuda.empty_cache()
