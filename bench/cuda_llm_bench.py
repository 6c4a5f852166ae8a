# cuda_llm_bench.py - LLaMA-3-8B-shaped decode and prefill on the GPU: bm vs
# transformers, against the HBM bound (scripts/cuda_device.sh llm-bench; docs/cuda.md).
#
#   python3 bench/cuda_llm_bench.py CARRY OUTDIR
#
# Runs on the GPU machine, in one go: writes a LLaMA-3-8B config.json (bf16),
# builds the model in transformers with random bf16 weights on the GPU, times
# greedy model.generate (batch 1) and a prefill forward, measures the device
# copy bandwidth; then compiles the same shape with the LLVM-less bmc carried
# in CARRY/bmc (scripts/cuda_device.sh pack-bmc; NVRTC from this machine, or
# CARRY/bmc/nvrtc/*.gz) and times bm's prefill and decode with
# `bm_cuda_check --llm-bench` (with CUDA graphs, and without to check that
# graphs change nothing and to show what they save; with BM_BENCH_COMPARE=1,
# the default, also without programmatic dependent launch (BM_CUDA_PDL=0) and
# with the logits copied to the host for the argmax as well (the generation
# loop before the device argmax); every run must give the same logits
# digest). Prints a table and writes OUTDIR/llm_bench.json.
#
# Environment: BM_BENCH_LAYERS (32; 2 for a smoke run), BM_BENCH_NEW (128 new
# tokens), BM_BENCH_PREFILL (2048), BM_BENCH_REPS (3 prefill runs),
# BM_BENCH_WEIGHTS (random: bmc --random-weights (default); hf: the
# transformers weights through save_pretrained), BM_BENCH_WORK (scratch
# folder for the model and the package, default /tmp/bm_llm_bench),
# BM_BENCH_GRAPHS_CHECK (1: also run bm with BM_CUDA_GRAPHS=0, default 1).
# BM_BENCH_DTYPE (bf16: bmc --dtype, the activations and KV cache; f32 for the
# f32-activation path). BM_BENCH_AB="VAR=VALUE [VAR2=VALUE2 ...]" (with BM_BENCH_AB_LAYERS, 4):
# a compile-time A/B after the main run: the model at BM_BENCH_AB_LAYERS
# layers compiled twice, as is and with VAR=VALUE in bmc's environment (e.g.
# BM_CUDA_GEMV_MINB=1), each timed by one bm_cuda_check run.
# BM_BENCH_PROFILE=1: also the per-kernel times (`bmrun --profile`, kernel by
# kernel, no graphs) of each A/B package's decode function at the benchmark's
# last position (kv_len = 8 + BM_BENCH_NEW keys), written to the log.
# BM_BENCH_PREFILL_PROFILE=1: the model at BM_BENCH_AB_LAYERS layers compiled
# once more and `bmrun --profile` of its prefill function (BM_BENCH_PREFILL
# tokens from position 0; kernels launched one by one, each timed with its
# launch and a synchronization, so a small kernel reads ~10 us high), written
# to the log and OUTDIR/prefill_profile_<label>.txt (with BM_BENCH_AB: of both
# A/B packages, labels as_is and with). BM_BENCH_PREFILL_ONLY=1: no
# transformers and no full-size run (only the profile, or the A/B with its
# profiles). BM_BENCH_HF=0 skips transformers.
import gc
import json
import os
import shutil
import subprocess
import sys
import time

import torch

from cuda_common import find_nvrtc  # noqa: E402 (bench/ is on sys.path)


def env_int(name, default):
    v = os.environ.get(name, "")
    return int(v) if v.strip() else default


LAYERS = env_int("BM_BENCH_LAYERS", 32)
NEW = env_int("BM_BENCH_NEW", 128)
PREFILL = env_int("BM_BENCH_PREFILL", 2048)
REPS = env_int("BM_BENCH_REPS", 3)
WEIGHTS = os.environ.get("BM_BENCH_WEIGHTS", "random")
DTYPE = os.environ.get("BM_BENCH_DTYPE", "bf16")  # bmc --dtype: activations and KV cache (f32, f16, bf16)
WORK = os.environ.get("BM_BENCH_WORK", "/tmp/bm_llm_bench")
GRAPHS_CHECK = env_int("BM_BENCH_GRAPHS_CHECK", 1)
COMPARE = env_int("BM_BENCH_COMPARE", 1)
AB = os.environ.get("BM_BENCH_AB", "")
AB_LAYERS = env_int("BM_BENCH_AB_LAYERS", 4)
PROFILE = env_int("BM_BENCH_PROFILE", 0)
PREFILL_PROFILE = env_int("BM_BENCH_PREFILL_PROFILE", 0)
PREFILL_ONLY = env_int("BM_BENCH_PREFILL_ONLY", 0)
HF = env_int("BM_BENCH_HF", 1)

# LLaMA-3-8B (meta-llama/Meta-Llama-3-8B config.json), the layer count aside
CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": LAYERS,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "vocab_size": 128256,
    "max_position_embeddings": 8192,
    "rope_theta": 500000.0,
    "rms_norm_eps": 1e-5,
    "hidden_act": "silu",
    "attention_bias": False,
    "mlp_bias": False,
    "tie_word_embeddings": False,
    "bos_token_id": 128000,
    "eos_token_id": 128001,
    "torch_dtype": "bfloat16",
    "use_cache": True,
}


def log(*a):
    print(*a, flush=True)


def sync_time(fn, reps=1):
    """best and mean seconds of fn() over reps runs (after the caller's warm-up)"""
    ts = []
    for _ in range(reps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ts.append(time.perf_counter() - t0)
    return min(ts), sum(ts) / len(ts)


def copy_bandwidth():
    """device-to-device copy of 2 GiB: (read + write bytes) / time, GB/s"""
    n = 1 << 30  # bf16 elements = 2 GiB
    x = torch.empty(n, dtype=torch.bfloat16, device="cuda").uniform_()
    y = torch.empty_like(x)
    for _ in range(3):
        y.copy_(x)
    best, _ = sync_time(lambda: y.copy_(x), 20)
    del x, y
    torch.cuda.empty_cache()
    return 2 * 2 * n / best / 1e9


def transformers_part(model_dir, res):
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM

    res["transformers_version"] = transformers.__version__
    cfg = AutoConfig.from_pretrained(model_dir)
    t0 = time.perf_counter()
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(cfg)
    torch.set_default_dtype(old)
    model.eval()
    torch.cuda.synchronize()
    log(f"transformers: built {LAYERS}-layer model on the GPU in {time.perf_counter() - t0:.1f} s")
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    embed = model.get_input_embeddings().weight
    res["weight_bytes"] = params
    # a decode step streams every weight but the embedding table (one row of it)
    res["decode_bytes"] = params - embed.numel() * embed.element_size()

    g = torch.Generator(device="cpu").manual_seed(0)
    prompt = torch.randint(0, CONFIG["vocab_size"], (1, 16), generator=g).cuda()
    gen = dict(do_sample=False, use_cache=True, pad_token_id=0)
    with torch.inference_mode():
        model.generate(prompt, max_new_tokens=8, min_new_tokens=8, **gen)  # warm-up
        t1, _ = sync_time(lambda: model.generate(prompt, max_new_tokens=1, min_new_tokens=1, **gen), 2)
        tn, _ = sync_time(lambda: model.generate(prompt, max_new_tokens=NEW, min_new_tokens=NEW, **gen), 2)
        res["hf_generate_tok_s"] = NEW / tn  # whole generate call (16-token prompt included)
        res["hf_decode_tok_s"] = (NEW - 1) / (tn - t1)  # decode steps only
        log(f"transformers: generate {NEW} tokens in {tn:.3f} s ({NEW / tn:.1f} tokens/s; "
            f"decode only {res['hf_decode_tok_s']:.1f} tokens/s)")

        ids = torch.randint(0, CONFIG["vocab_size"], (1, PREFILL), generator=g).cuda()

        def prefill():
            try:
                return model(ids, use_cache=True, logits_to_keep=1)
            except TypeError:  # transformers before logits_to_keep
                return model(ids, use_cache=True)

        prefill()
        best, mean = sync_time(prefill, REPS)
        res["hf_prefill_ms"] = best * 1e3
        log(f"transformers: prefill {PREFILL} tokens best {best * 1e3:.1f} ms, mean {mean * 1e3:.1f} ms")
    if WEIGHTS == "hf":
        t0 = time.perf_counter()
        model.save_pretrained(model_dir, safe_serialization=True)
        log(f"transformers: saved the weights in {time.perf_counter() - t0:.1f} s")
    del model
    gc.collect()
    torch.cuda.empty_cache()


def bmrun_profile(carry, pkg, fn, ins, repeat, timeout):
    """`bmrun --profile` of pkg's function fn on the inputs ins (name -> numpy array, saved as
    .npy under WORK/<fn>_inputs); returns its stdout + stderr"""
    import numpy as np

    d = os.path.join(WORK, fn + "_inputs")
    os.makedirs(d, exist_ok=True)
    args = []
    for name, v in ins.items():
        np.save(os.path.join(d, name + ".npy"), v)
        args += ["--input", f"{name}={os.path.join(d, name + '.npy')}"]
    env = dict(os.environ, LD_LIBRARY_PATH=os.path.join(carry, "lib"))
    cmd = [os.path.join(carry, "bin/bmrun"), pkg, "--function", fn, "--repeat", str(repeat), "--profile"] + args
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    return (p.stdout + p.stderr).strip()


def bm_profile(carry, pkg, label):
    """bmrun --profile of pkg's decode at kv_len = 8 + NEW (batch 1); returns the output"""
    import numpy as np

    kv = 8 + NEW
    ins = {"input_ids": np.array([[1]], np.int32), "positions": np.array([[kv - 1]], np.int32),
           "start": np.array([kv - 1], np.int32), "kv_len": np.array([kv], np.int32)}
    out = bmrun_profile(carry, pkg, "decode", ins, 20, 120)[-3000:]
    log(f"profile ({label}, decode, kv_len {kv}):\n{out}")
    return out


def bm_prefill_profile(carry, pkg, outdir, label):
    """bmrun --profile of pkg's prefill of PREFILL tokens from position 0; returns the output"""
    import numpy as np

    ins = {"input_ids": ((np.arange(PREFILL) * 7919 + 13) % CONFIG["vocab_size"]).astype(np.int32)[None],
           "positions": np.arange(PREFILL, dtype=np.int32)[None], "start": np.array([0], np.int32),
           "kv_len": np.array([PREFILL], np.int32), "last": np.array([PREFILL - 1], np.int32)}
    out = bmrun_profile(carry, pkg, "prefill", ins, 3, 300)
    log(f"profile ({label}, prefill {PREFILL} tokens, {AB_LAYERS} layers):\n{out[-12000:]}")
    with open(os.path.join(outdir, f"prefill_profile_{label}.txt"), "w") as f:
        f.write(out + "\n")
    return out


def bm_run(carry, pkg, graphs, label=None, extra=None):
    env = dict(os.environ, LD_LIBRARY_PATH=os.path.join(carry, "lib"), BM_CUDA_GRAPHS=str(graphs), **(extra or {}))
    cmd = [os.path.join(carry, "bin/bm_cuda_check"), "--llm-bench", pkg, str(PREFILL), str(NEW), str(REPS)]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    out = {}
    for line in (p.stdout + p.stderr).splitlines():
        log(f"  bm ({label or f'graphs {graphs}'}): {line}")
        w = line.split()
        if len(w) >= 3 and w[0] == "llm-bench":
            if w[1] == "open":
                out["open_ms"] = float(w[2])
            elif w[1] == "prefill":
                out["prefill_ms"] = float(w[4])
            elif w[1] == "decode":
                out["decode_tok_s"] = float(w[6])
            elif w[1] == "decode_fn":
                out["decode_fn_ms"] = float(w[3])
            elif w[1] == "digest":
                out["digest"] = " ".join(w[2:])
    if p.returncode:
        out["error"] = f"bm_cuda_check exited {p.returncode}"
    return out


def main():
    if len(sys.argv) != 3:
        print("usage: cuda_llm_bench.py CARRY OUTDIR (see the comment at the top)", file=sys.stderr)
        return 2
    carry, outdir = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    os.makedirs(outdir, exist_ok=True)
    shutil.rmtree(WORK, ignore_errors=True)
    model_dir = os.path.join(WORK, "llama3_8b")
    os.makedirs(model_dir)
    with open(os.path.join(model_dir, "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=2)
    gpu = torch.cuda.get_device_name(0)
    major, minor = torch.cuda.get_device_capability(0)
    res = {"gpu": gpu, "layers": LAYERS, "new_tokens": NEW, "prefill_tokens": PREFILL, "torch": torch.__version__}
    log(f"GPU: {gpu} (sm_{major}{minor}); LLaMA-3-8B shape, {LAYERS} layers, bf16")

    res["copy_gb_s"] = copy_bandwidth()
    log(f"device copy bandwidth: {res['copy_gb_s']:.0f} GB/s (read + write)")
    if HF and not PREFILL_ONLY:
        transformers_part(model_dir, res)
    else:  # BM_BENCH_HF=0: no transformers; the decode bytes from the config (bf16, no embedding table)
        c, h = CONFIG, CONFIG["hidden_size"]
        kv = c["num_key_value_heads"] * c["head_dim"]
        layer = h * (h + 2 * kv) + h * h + 3 * h * c["intermediate_size"] + 2 * h
        res["decode_bytes"] = 2 * (LAYERS * layer + h + h * c["vocab_size"])
        res["hf_decode_tok_s"] = res["hf_prefill_ms"] = float("nan")
    res["bound_tok_s"] = res["copy_gb_s"] * 1e9 / res["decode_bytes"]

    # bm: compile here with the LLVM-less bmc, then time
    nvrtc = find_nvrtc(carry, WORK)
    log(f"NVRTC: {nvrtc}")
    env = dict(os.environ, LD_LIBRARY_PATH=os.path.join(carry, "bmc/lib"))
    if nvrtc:
        env["BM_NVRTC"] = nvrtc
        env["LD_LIBRARY_PATH"] += ":" + os.path.dirname(nvrtc)  # its libnvrtc-builtins
    pkg = os.path.join(WORK, "llama3_8b.bmpk")

    def bmc_cmd(model, out):
        c = [os.path.join(carry, "bmc/bin/bmc"), "compile", "--model", model, "--target", "cuda",
             "--cpu", f"sm_{major}{minor}", "--weight-dtype", "bf16", "--dtype", DTYPE, "--max-ctx", "4096",
             "--max-seq", str(max(PREFILL, 16)), "--max-batch", "1", "--no-tokenizer", "-o", out]
        return c + ["--random-weights"] if WEIGHTS != "hf" or model != model_dir else c

    if PREFILL_PROFILE and not AB:  # the prefill's per-kernel times at AB_LAYERS layers
        pdir = os.path.join(WORK, "profile_model")
        os.makedirs(pdir, exist_ok=True)
        with open(os.path.join(pdir, "config.json"), "w") as f:
            json.dump(dict(CONFIG, num_hidden_layers=AB_LAYERS), f, indent=2)
        ppkg = os.path.join(WORK, "profile.bmpk")
        p = subprocess.run(bmc_cmd(pdir, ppkg), env=env, capture_output=True, text=True)
        if p.returncode:
            log(f"prefill profile: bmc failed: {(p.stdout + p.stderr).strip()[-1000:]}")
        else:
            try:
                res["prefill_profile"] = bm_prefill_profile(carry, ppkg, outdir, "as_is")[-6000:]
            except (OSError, subprocess.SubprocessError) as e:
                log(f"prefill profile: {e}")
            os.remove(ppkg)
        if PREFILL_ONLY:
            with open(os.path.join(outdir, "llm_bench.json"), "w") as f:
                json.dump(res, f, indent=2)
            shutil.rmtree(WORK, ignore_errors=True)
            return 0 if "prefill_profile" in res else 1

    ok = True
    if not PREFILL_ONLY:  # the full-size model: compile and time
        cmd = bmc_cmd(model_dir, pkg)
        t0 = time.perf_counter()
        p = subprocess.run(cmd, env=env, capture_output=True, text=True)
        res["bmc_seconds"] = time.perf_counter() - t0
        log(f"bmc: {' '.join(cmd[1:])}\n  {(p.stdout + p.stderr).strip()}\n  ({res['bmc_seconds']:.1f} s)")
        ok = p.returncode == 0
        if ok:
            res["package_bytes"] = os.path.getsize(pkg)
            res["bm"] = bm_run(carry, pkg, 1)
            if GRAPHS_CHECK:
                res["bm_no_graphs"] = bm_run(carry, pkg, 0)
                same = res["bm"].get("digest") is not None and res["bm"].get("digest") == res["bm_no_graphs"].get("digest")
                res["graphs_identical"] = same
                log(f"bm decode logits with and without CUDA graphs: {'identical' if same else 'DIFFER'}")
                ok = ok and same
            if COMPARE:
                res["bm_no_pdl"] = bm_run(carry, pkg, 1, "graphs, no PDL", {"BM_CUDA_PDL": "0"})
                res["bm_host_argmax"] = bm_run(carry, pkg, 1, "graphs, no PDL, host argmax",
                                               {"BM_CUDA_PDL": "0", "BM_BENCH_HOST_ARGMAX": "1"})
                same = all(res[k].get("digest") == res["bm"].get("digest") for k in ("bm_no_pdl", "bm_host_argmax"))
                res["variants_identical"] = same
                log(f"bm decode logits with and without PDL / device argmax: {'identical' if same else 'DIFFER'}")
                ok = ok and same
            ok = ok and "error" not in res["bm"]
        else:
            res["bmc_error"] = (p.stdout + p.stderr).strip()[-2000:]
    if ok and AB and "=" in AB:
        # compile-time A/B at AB_LAYERS layers (random weights), same bm_cuda_check run each
        if os.path.exists(pkg):
            os.remove(pkg)
        # one or more space-separated VAR=VALUE assignments
        ab_env = dict(a.split("=", 1) for a in AB.split() if "=" in a)
        ab_dir = os.path.join(WORK, "ab_model")
        os.makedirs(ab_dir, exist_ok=True)
        with open(os.path.join(ab_dir, "config.json"), "w") as f:
            json.dump(dict(CONFIG, num_hidden_layers=AB_LAYERS), f, indent=2)
        ab = {"var": AB, "layers": AB_LAYERS}
        for label, extra in (("as_is", {}), ("with", ab_env)):
            apkg = os.path.join(WORK, f"ab_{label}.bmpk")
            p = subprocess.run(bmc_cmd(ab_dir, apkg), env=dict(env, **extra), capture_output=True, text=True)
            if p.returncode:
                log(f"A/B {label}: bmc failed: {(p.stdout + p.stderr).strip()[-500:]}")
                continue
            ab[label] = bm_run(carry, apkg, 1, f"A/B {AB_LAYERS} layers, {label} {AB if extra else ''}")
            if PROFILE:
                try:
                    ab[label + "_profile"] = bm_profile(carry, apkg, label)
                except (OSError, subprocess.SubprocessError) as e:
                    log(f"profile ({label}): {e}")
            if PREFILL_PROFILE:
                try:
                    ab[label + "_prefill_profile"] = bm_prefill_profile(carry, apkg, outdir, label)[-6000:]
                except (OSError, subprocess.SubprocessError) as e:
                    log(f"prefill profile ({label}): {e}")
            os.remove(apkg)
        res["ab"] = ab
        for label in ("as_is", "with"):
            v = ab.get(label, {})
            if "decode_tok_s" in v:
                log(f"  A/B ({AB_LAYERS} layers) {label:6s} {AB if label == 'with' else '':28s} decode "
                    f"{v['decode_tok_s']:.1f} tok/s, function {v.get('decode_fn_ms', float('nan')):.3f} ms, "
                    f"prefill {v.get('prefill_ms', float('nan')):.1f} ms, digest {v.get('digest', '?')[:16]}")

    # the table
    bm = res.get("bm", {})
    ng = res.get("bm_no_graphs", {})
    hf_tok = res["hf_decode_tok_s"]
    log("")
    log(f"LLaMA-3-8B shape ({LAYERS} layers, bf16 weights, bm activations {DTYPE}, batch 1) on {gpu}")
    log(f"  HBM copy bandwidth {res['copy_gb_s']:.0f} GB/s; {res['decode_bytes'] / 1e9:.2f} GB of weights per decode "
        f"token -> bound {res['bound_tok_s']:.1f} tokens/s")
    log(f"  {'':28s} {'decode tok/s':>12s} {'% of bound':>10s} {'prefill ' + str(PREFILL) + ' ms':>16s}")
    rows = [("transformers (eager, dyn. cache)", hf_tok, res["hf_prefill_ms"])]
    if "decode_tok_s" in bm:
        rows.append(("bm (CUDA graphs)", bm["decode_tok_s"], bm.get("prefill_ms", float("nan"))))
    if "decode_tok_s" in ng:
        rows.append(("bm (no graphs)", ng["decode_tok_s"], ng.get("prefill_ms", float("nan"))))
    for key, name in (("bm_no_pdl", "bm (graphs, no PDL)"), ("bm_host_argmax", "bm (no PDL, host argmax)")):
        v = res.get(key, {})
        if "decode_tok_s" in v:
            rows.append((name, v["decode_tok_s"], v.get("prefill_ms", float("nan"))))
    for name, tok, pre in rows:
        log(f"  {name:28s} {tok:12.1f} {100 * tok / res['bound_tok_s']:9.1f}% {pre:16.1f}")
    for key in ("bm", "bm_no_pdl"):
        if "decode_fn_ms" in res.get(key, {}):
            ms = res[key]["decode_fn_ms"]
            log(f"  {key}: the decode function alone {ms:.3f} ms per run "
                f"({100 * 1e3 / ms / res['bound_tok_s']:.1f}% of the bound)")
    if "decode_tok_s" in bm:
        res["bm_vs_hf_decode"] = bm["decode_tok_s"] / hf_tok
        res["bm_vs_hf_prefill"] = res["hf_prefill_ms"] / bm["prefill_ms"]
        log(f"  bm / transformers: decode {res['bm_vs_hf_decode']:.2f}x, prefill {res['bm_vs_hf_prefill']:.2f}x "
            "(>1: bm faster)")
    with open(os.path.join(outdir, "llm_bench.json"), "w") as f:
        json.dump(res, f, indent=2)
    shutil.rmtree(WORK, ignore_errors=True)  # 16 + 16 GB at full size
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
