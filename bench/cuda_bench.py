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
# BM_BENCH_VARIANTS="a b": bm's packages of each in CARRY/bench-a, CARRY/bench-b (the same
# cases compiled with other kernel configurations), each timed against the same torch run
variants = os.environ.get("BM_BENCH_VARIANTS", "").split()
vdirs = [(v, os.path.join(carry, "bench-" + v)) for v in variants] or [("", bdir)]
cases = [l.split() for l in open(os.path.join(vdirs[0][1], "list.txt")) if l.strip()]
env = dict(os.environ, LD_LIBRARY_PATH=os.path.join(carry, "lib"))
bm_vms, vreps = {}, {}
for v, vd in vdirs:
    pkgs = [os.path.join(vd, c[1] + ".bmpk") for c in cases]
    # decode: NAME_x2 chains CHAIN2 (list.txt's 11th field) attentions (bench_cuda_gemm.c)
    pkgs += [os.path.join(vd, c[1] + "_x2.bmpk") for c in cases if c[0] == "attn" and len(c) > 10 and int(c[10]) > 0]
    # each variant's REPS per run (attn: list.txt's 9th field, gemm: 8th)
    vreps[v] = {l.split()[1]: l.split() for l in open(os.path.join(vd, "list.txt")) if l.strip()}
    bm_vms[v] = {}
    try:  # BM_BENCH_TIMEOUT seconds per variant (a hung kernel fails its variant only)
        out = subprocess.run([os.path.join(carry, "bin", "bm_cuda_check"), "--bench", str(reps)] + pkgs, env=env,
                             capture_output=True, text=True, timeout=float(os.environ.get("BM_BENCH_TIMEOUT", "0")) or None)
    except subprocess.TimeoutExpired as e:
        so = e.stdout or ""
        print(v, "bm_cuda_check --bench: timed out;", (so.decode(errors="replace") if isinstance(so, bytes) else so)[-2000:])
        continue
    for line in out.stdout.splitlines():
        f = line.split()
        if len(f) >= 4 and f[0] == "bench" and f[2] != "FAIL":
            bm_vms[v][f[1].removesuffix(".bmpk")] = float(f[2])
        elif line.strip():
            print(f"{v} {line}" if v else line)
    if out.returncode:
        print(f"{v} {out.stderr}" if v else out.stderr)
bm_ms = bm_vms[vdirs[0][0]]

DT = {"f16": torch.float16, "bf16": torch.bfloat16, "f32": torch.float32}


print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}, {reps} reps (mean)")
print(f"{'case':34s} {'dtype':5s} {'bm ms':>9s} {'bm TF/s':>8s} {'torch ms':>9s} {'torch TF/s':>10s} {'bm/torch':>8s}")
gemv_cases = []  # printed after the loop, with bandwidth columns
dec_rows, dec_t = [], {}  # decode attention: (name, dtype, K/V bytes), torch ms (GB/s after the loop)
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
        hkv = int(c[9]) if len(c) > 9 else h  # KV heads (GQA: SDPA's enable_gqa)
        dec = s < 0
        sq = 1 if s < 0 else s  # s < 0: the decode step, one query row over -s keys
        s = abs(s)
        q = torch.rand(bsz, h, sq, d, device="cuda", dtype=dt) - 0.5
        # decode with REPS > 1: bm chains REPS attentions over distinct K/V copies; torch cycles
        # over as many copies (eager, and replayed from a CUDA graph: the faster counts)
        ncopy = int(c[8]) if dec and len(c) > 8 else 1
        kvs = [[torch.rand(bsz, hkv, s, d, device="cuda", dtype=dt) - 0.5 for _ in range(2)] for _ in range(ncopy)]
        gqa = {"enable_gqa": True} if hkv != h else {}
        kk, v = kvs[0]
        if ncopy > 1:
            def fn():
                for kc, vc_ in kvs:
                    torch.nn.functional.scaled_dot_product_attention(q, kc, vc_, is_causal=bool(causal), **gqa)
        else:
            fn = lambda: torch.nn.functional.scaled_dot_product_attention(q, kk, v, is_causal=bool(causal), **gqa)
        flop = 4.0 * bsz * h * sq * s * d * (0.5 if causal else 1.0)
        if dec:  # the K/V bytes one attention reads (GB/s below)
            dec_rows.append((name, c[2], 2.0 * bsz * hkv * s * d * dt.itemsize))
        # bm runs REPS chained attentions per session run (list.txt's 9th field)
    t = torch_ms(fn, reps)
    if kind == "attn" and dec and ncopy > 1:
        try:  # the copies' attentions captured once, replayed
            torch.cuda.synchronize()
            cg = torch.cuda.CUDAGraph()
            with torch.cuda.graph(cg):
                fn()
            t = min(t, torch_ms(cg.replay, reps))
            del cg
        except Exception as e:  # noqa: BLE001 (report and keep the eager time)
            print(f"{name}: torch CUDA graph failed: {e}")
        t /= ncopy
        del kvs
    if kind == "attn" and dec:
        dec_t[name] = t
    for v, _ in vdirs:
        b = bm_vms[v].get(name)
        vc = vreps[v].get(name, c)
        if b and kind == "gemm":
            b /= int(vc[7]) if len(vc) > 7 else 1
        elif b and kind == "attn":
            b /= int(vc[8]) if len(vc) > 8 else 1
        bm_s = f"{b:9.3f} {flop / b / 1e9:8.1f}" if b else f"{'FAIL':>9s} {'':8s}"
        ratio = f"{t / b:8.3f}" if b else ""
        label = f"{name}[{v}]" if v else name
        print(f"{label:34s} {c[2]:5s} {bm_s} {t:9.3f} {flop / t / 1e9:10.1f} {ratio}")
    del fn
    torch.cuda.empty_cache()

# decode attention: the K/V bytes read per attention / time, against a 1 GiB device-to-device copy
if dec_rows:
    src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    copy_gbs = 2 * (1 << 30) / torch_ms(lambda: dst.copy_(src), reps) / 1e6
    del src, dst
    torch.cuda.empty_cache()
    print(f"decode attention bandwidth (K/V bytes / time; device-to-device copy {copy_gbs:.0f} GB/s, 1 GiB, read + write)")
    for name, dtn, nb in dec_rows:
        tt = dec_t.get(name)
        for v, _ in vdirs:
            b = bm_vms[v].get(name)
            vc = vreps[v].get(name)
            if not b or not tt:
                continue
            n1 = int(vc[8]) if vc and len(vc) > 8 else 1
            n2 = int(vc[10]) if vc and len(vc) > 10 else 0
            b2 = bm_vms[v].get(name + "_x2")
            b /= n1
            label = f"{name}[{v}]" if v else name
            print(f"{label:42s} {dtn:4s} bm {b * 1e3:8.1f} us {nb / b / 1e6:6.0f} GB/s {100 * nb / b / 1e6 / copy_gbs:4.0f}% copy"
                  f"  torch {tt * 1e3:8.1f} us {nb / tt / 1e6:6.0f} GB/s  bm/torch {tt / b:6.3f}")
            if b2 and n2 > n1:  # one attention on the device: the slope of the run time over the chain length
                bd = (b2 - b * n1) / (n2 - n1)
                if bd > 0:
                    print(f"{label + ' (device)':42s} {dtn:4s} bm {bd * 1e3:8.1f} us {nb / bd / 1e6:6.0f} GB/s "
                          f"{100 * nb / bd / 1e6 / copy_gbs:4.0f}% copy  (runs of {n1} and {n2}: {b * n1 * 1e3:.1f} and "
                          f"{b2 * 1e3:.1f} us)  bm/torch {tt / bd:6.3f}")

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
    # torch: eager calls (as before) and the same calls replayed from a CUDA graph (no
    # Python launch cost: cuBLAS's kernel time for small shapes); bm/torch is against
    # the faster of the two. BM_BENCH_VARIANTS: one bm line per variant.
    print(f"{'case':42s} {'w':4s} {'M':>3s} {'bm us':>8s} {'bm GB/s':>8s} {'% copy':>6s} "
          f"{'torch us':>8s} {'graph us':>8s} {'torch GB/s':>10s} {'% copy':>6s} {'bm/torch':>8s}")
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
        tg = t
        try:  # the copies' matmuls captured once, replayed
            torch.cuda.synchronize()
            cg = torch.cuda.CUDAGraph()
            with torch.cuda.graph(cg):
                for wc in ws:
                    torch.matmul(a, wc.t())
            tg = torch_ms(cg.replay, reps) / copies
            del cg
        except Exception as e:  # noqa: BLE001 (report and keep the eager time)
            print(f"{name}: torch CUDA graph failed: {e}")
        tb_ = min(t, tg)
        tgb = tb / tb_ / 1e6
        for v, _ in vdirs:
            b = bm_vms[v].get(name)
            if b:
                bu = b / nrep
                bgb = wbytes / bu / 1e6
                bm_s = f"{bu * 1e3:8.1f} {bgb:8.0f} {100 * bgb / copy_gbs:5.0f}%"
                ratio = f"{tb_ / bu:8.3f}"
            else:
                bm_s, ratio = f"{'FAIL':>8s} {'':8s} {'':6s}", ""
            label = f"{name}[{v}]" if v else name
            print(f"{label:42s} {wdt:4s} {m:3d} {bm_s} {t * 1e3:8.1f} {tg * 1e3:8.1f} {tgb:10.0f} "
                  f"{100 * tgb / copy_gbs:5.0f}% {ratio}")
        del ws, a
        torch.cuda.empty_cache()
