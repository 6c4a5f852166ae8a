# cuda_sd_bench.py - one SD 1.5 UNet step on the GPU, 512x512 (latents 2x4x64x64,
# encoder states 2x77x768, batch 2 = classifier-free guidance): bm vs diffusers'
# UNet2DConditionModel in fp16 (scripts/cuda_device.sh sd-bench; docs/cuda.md).
#
#   python3 bench/cuda_sd_bench.py CARRY OUTDIR [REPS]
#
# Runs on the GPU machine, in one go:
# 1. bm: writes a diffusers pipeline folder of configs only (SD 1.5's UNet and
#    VAE configs, a CLIP ViT-L/14 text encoder config, and the 1000-token CLIP
#    tokenizer of tests/data/sd_tiny_clip), compiles it with the LLVM-less bmc carried in
#    CARRY/bmc (scripts/cuda_device.sh pack-bmc) with --random-weights
#    --weight-dtype f16 (and --dtype f16 when that bmc has it), then times the
#    `unet` function with bmrun (REPS runs after a warm-up) and prints its per-op
#    profile (a second run with a synchronization after every kernel); then
#    times a whole `bmrun txt2img` at 512x512 (20 euler steps, CFG: text
#    encoder, 20 UNet steps at batch 2, VAE decode, PNG), minus the time of
#    opening the package (`bmrun --list`).
# 2. torch: diffusers' UNet2DConditionModel with the same config, random fp16
#    weights on the GPU, eager with the default attention processor (SDPA), and
#    with the classic AttnProcessor (no SDPA) for reference. diffusers is imported
#    as installed, else from CARRY/sd/wheels/diffusers-*.whl (pip install --no-deps
#    --no-index into a scratch folder; missing optional imports such as PIL are
#    stubbed: the UNet does not use them).
# 3. the VAE decoder alone (one 64x64 latent to a 512x512 image): bm's vae_decoder
#    function vs diffusers' AutoencoderKL.decode, fp16.
# Prints bm ms/step, torch ms/step and the ratios; writes OUTDIR/sd_bench.json.
#
# Environment: BM_SD_BENCH_WORK (scratch folder, default /tmp/bm_sd_bench).
import glob
import importlib.machinery
import json
import os
import re
import subprocess
import sys
import time
import types

import torch

from cuda_common import find_nvrtc, torch_ms  # noqa: E402 (bench/ is on sys.path)

WORK = os.environ.get("BM_SD_BENCH_WORK", "/tmp/bm_sd_bench")

# SD 1.5's unet/config.json (runwayml/stable-diffusion-v1-5), as bench/bench_sd.c
UNET = {
    "_class_name": "UNet2DConditionModel", "act_fn": "silu", "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4,
    "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32,
    "out_channels": 4, "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}
# SD 1.5's vae/config.json (its decoder timed alone against diffusers' AutoencoderKL, and in txt2img)
VAE = {
    "_class_name": "AutoencoderKL", "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
    "in_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32,
    "out_channels": 3, "sample_size": 512, "scaling_factor": 0.18215,
}
CLIP = {
    "architectures": ["CLIPTextModel"], "model_type": "clip_text_model", "hidden_act": "quick_gelu",
    "hidden_size": 768, "intermediate_size": 3072, "layer_norm_eps": 1e-05, "max_position_embeddings": 77,
    "num_attention_heads": 12, "num_hidden_layers": 12, "vocab_size": 49408, "bos_token_id": 998,
    "eos_token_id": 999, "pad_token_id": 1, "projection_dim": 768,
}
SCHEDULER = {
    "_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000, "steps_offset": 1, "prediction_type": "epsilon", "skip_prk_steps": True,
}


def log(msg):
    print(msg, flush=True)


def write_folder(d):
    for sub, cfg, name in (("unet", UNET, "config.json"), ("vae", VAE, "config.json"),
                           ("text_encoder", CLIP, "config.json"), ("scheduler", SCHEDULER, "scheduler_config.json")):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
        with open(os.path.join(d, sub, name), "w") as f:
            json.dump(cfg, f, indent=1)
    with open(os.path.join(d, "model_index.json"), "w") as f:
        json.dump({"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.39.0"}, f)
    tok = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "sd_tiny_clip")
    os.makedirs(os.path.join(d, "tokenizer"), exist_ok=True)
    for name in ("vocab.json", "merges.txt"):
        with open(os.path.join(tok, name), "rb") as src, open(os.path.join(d, "tokenizer", name), "wb") as dst:
            dst.write(src.read())


def profile(bmrun, pkg, fn, renv, what, kernels=False):
    """bmrun --profile of function fn (a synchronization after every kernel): the per-op lines (with
    `kernels` also each op's slowest kernels), logged"""
    p = subprocess.run([bmrun, pkg, "--function", fn, "--random-inputs", "1", "--repeat", "2", "--profile"],
                       env=renv, capture_output=True, text=True)
    prof = (p.stdout + p.stderr).strip()
    ops = [l for l in prof.splitlines() if re.match(r"^  [a-z_0-9]+ +\d+ +[0-9.]+ +[0-9.]+%", l) or "profile of" in l
           or "op / kernel" in l or (kernels and re.match(r"^    \S+ +[0-9.]+ +[0-9.]+%", l))]
    log(f"bm per-op profile of {what}:\n" + "\n".join(ops))
    return ops


def bm_part(carry, res, reps, arch):
    folder = os.path.join(WORK, "sd15")
    write_folder(folder)
    nvrtc = find_nvrtc(carry, WORK)
    log(f"NVRTC: {nvrtc}")
    env = dict(os.environ, LD_LIBRARY_PATH=os.path.join(carry, "bmc/lib"))
    if nvrtc:
        env["BM_NVRTC"] = nvrtc
        env["LD_LIBRARY_PATH"] += ":" + os.path.dirname(nvrtc)  # its libnvrtc-builtins
    bmc = os.path.join(carry, "bmc/bin/bmc")
    helptext = subprocess.run([bmc, "compile", "--help"], env=env, capture_output=True, text=True)
    has_dtype = "--dtype" in (helptext.stdout + helptext.stderr)
    pkg = os.path.join(WORK, "sd15.bmpk")
    for act in (["f16", "f32"] if has_dtype else ["f32"]):
        cmd = [bmc, "compile", "--model", folder, "--random-weights", "--target", "cuda", "--cpu", arch,
               "--weight-dtype", "f16", "--max-batch", "2", "-o", pkg]
        if act == "f16":
            cmd[-2:-2] = ["--dtype", "f16"]
        res["bm_activations"] = act
        t0 = time.perf_counter()
        p = subprocess.run(cmd, env=env, capture_output=True, text=True)
        res["bmc_seconds"] = time.perf_counter() - t0
        log(f"bmc {' '.join(cmd[2:])}\n  {(p.stdout + p.stderr).strip()}\n  ({res['bmc_seconds']:.1f} s)")
        if p.returncode == 0:
            break
        if act == "f16":  # f16 activations refused: keep why, then f16 weights only
            res["bm_dtype_f16_error"] = (p.stdout + p.stderr).strip()[-1000:]
    if p.returncode:
        res["bm_error"] = (p.stdout + p.stderr).strip()[-2000:]
        return
    renv = dict(os.environ, LD_LIBRARY_PATH=os.path.join(carry, "lib"))
    bmrun = os.path.join(carry, "bin/bmrun")
    p = subprocess.run([bmrun, pkg, "--function", "unet", "--random-inputs", "1", "--repeat", str(reps + 1)],
                       env=renv, capture_output=True, text=True)
    out = (p.stdout + p.stderr).strip()
    log(f"bmrun (timing):\n{out}")
    m = re.search(r"mean of the other \d+: ([0-9.]+) ms \(best ([0-9.]+) ms\)", out)
    if p.returncode or not m:
        res["bm_error"] = out[-2000:]
        return
    res["bm_ms"], res["bm_best_ms"] = float(m.group(1)), float(m.group(2))
    m = re.search(r"run 1: ([0-9.]+) ms", out)
    res["bm_first_ms"] = float(m.group(1)) if m else None
    # the per-op breakdown (a synchronization after every kernel)
    res["bm_profile"] = profile(bmrun, pkg, "unet", renv, "one step")
    # the VAE decoder alone: one 64x64 latent -> a 512x512 image (what txt2img decodes)
    p = subprocess.run([bmrun, pkg, "--function", "vae_decoder", "--random-inputs", "1", "--repeat", str(reps + 1)],
                       env=renv, capture_output=True, text=True)
    out = (p.stdout + p.stderr).strip()
    m = re.search(r"mean of the other \d+: ([0-9.]+) ms \(best ([0-9.]+) ms\)", out)
    if p.returncode or not m:
        log(f"bmrun vae_decoder FAILED:\n{out[-2000:]}")
        res["bm_vae_error"] = out[-2000:]
    else:
        res["bm_vae_ms"], res["bm_vae_best_ms"] = float(m.group(1)), float(m.group(2))
        log(f"bmrun vae_decoder (1x4x64x64 -> 1x3x512x512): {res['bm_vae_ms']:.2f} ms (best {res['bm_vae_best_ms']:.2f})")
        res["bm_vae_profile"] = profile(bmrun, pkg, "vae_decoder", renv, "the VAE decode", kernels=True)
    # a whole txt2img, minus the package open (bmrun --list opens and verifies it)
    t0 = time.perf_counter()
    p = subprocess.run([bmrun, pkg, "--list"], env=renv, capture_output=True, text=True)
    t_open = time.perf_counter() - t0
    png = os.path.join(WORK, "cat.png")
    cmd = [bmrun, pkg, "txt2img", "-p", "a photo of a cat", "-n", "blurry", "--steps", "20", "--sampler", "euler",
           "--cfg", "7.5", "--seed", "1", "--quiet", "-o", png]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=renv, capture_output=True, text=True)
    t_all = time.perf_counter() - t0
    out = (p.stdout + p.stderr).strip()
    if p.returncode or not os.path.exists(png):
        log(f"bmrun txt2img FAILED:\n{out[-2000:]}")
        res["txt2img_error"] = out[-2000:]
    else:
        res["txt2img_s"], res["open_s"] = t_all - t_open, t_open
        log(f"bmrun txt2img 512x512, 20 euler steps, CFG 7.5 (batch 2 UNet): {t_all - t_open:.2f} s "
            f"(+ {t_open:.2f} s to open the package); {out.splitlines()[-1] if out else ''}")
    try:
        os.remove(pkg)
    except OSError:
        pass


class _Any:
    """a stand-in for anything a missing optional module would provide"""

    def __init__(self, *a, **k):
        pass

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Any()

    def __call__(self, *a, **k):
        return _Any()

    def __getitem__(self, k):
        return _Any()

    def __iter__(self):
        return iter(())

    def __mro_entries__(self, bases):
        return (object,)


class _Stub(types.ModuleType):
    __version__ = "10.0.0"

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Any()


def import_diffusers(carry, res):
    """diffusers (for UNet2DConditionModel and AutoencoderKL): installed, else the carried wheel"""
    try:
        import diffusers
        res["diffusers"] = "installed"
        return diffusers
    except ImportError as e:
        log(f"diffusers not importable ({e}); trying the carried wheel")
    wheels = sorted(glob.glob(os.path.join(carry, "sd/wheels/diffusers-*.whl")))
    if not wheels:
        raise RuntimeError("no diffusers and no CARRY/sd/wheels/diffusers-*.whl")
    target = os.path.join(WORK, "py")
    p = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", target,
                        wheels[-1]], capture_output=True, text=True)
    log(f"pip install {os.path.basename(wheels[-1])}: exit {p.returncode} {p.stderr.strip()[-300:]}")
    sys.path.insert(0, target if p.returncode == 0 else wheels[-1])  # a pure-python wheel imports as a zip
    stubbed = []
    for _ in range(40):
        try:
            import diffusers
            from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: F401 (import errors show here)
            res["diffusers"] = f"wheel {os.path.basename(wheels[-1])}" + (f", stubbed {stubbed}" if stubbed else "")
            return diffusers
        except ModuleNotFoundError as e:
            name = e.name or ""
            if not name or name.split(".")[0] in ("torch", "diffusers", "numpy") or name in stubbed:
                raise
            stubbed.append(name)
            log(f"stubbing missing module {name}")
            for k in [k for k in sys.modules if k == "diffusers" or k.startswith("diffusers.")]:
                del sys.modules[k]
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                sub = ".".join(parts[:i])
                if sub in sys.modules and i < len(parts):
                    continue  # a real parent package, or a stub already
                mod = _Stub(sub)
                mod.__path__ = []
                mod.__spec__ = importlib.machinery.ModuleSpec(sub, None, is_package=True)
                sys.modules[sub] = mod
                if i > 1:
                    setattr(sys.modules[".".join(parts[:i - 1])], parts[i - 1], mod)
    raise RuntimeError(f"diffusers still not importable after stubbing {stubbed}")


def torch_part(carry, res, reps):
    diffusers = import_diffusers(carry, res)
    UNet = diffusers.UNet2DConditionModel
    cfg = {k: v for k, v in UNET.items() if not k.startswith("_")}
    torch.manual_seed(0)
    unet = UNet(**cfg).to("cuda", torch.float16).eval()
    res["torch_params_M"] = sum(p.numel() for p in unet.parameters()) / 1e6
    g = torch.Generator(device="cuda").manual_seed(1)
    x = torch.randn(2, 4, 64, 64, device="cuda", dtype=torch.float16, generator=g)
    ctx = torch.randn(2, 77, 768, device="cuda", dtype=torch.float16, generator=g)
    t = torch.tensor([500, 500], device="cuda")
    with torch.inference_mode():
        out = unet(x, t, encoder_hidden_states=ctx).sample
        res["torch_out_finite"] = bool(torch.isfinite(out).all())
        res["torch_sdpa_ms"] = torch_ms(lambda: unet(x, t, encoder_hidden_states=ctx), reps)
        log(f"torch eager fp16, SDPA (default processor): {res['torch_sdpa_ms']:.2f} ms/step")
        try:
            from diffusers.models.attention_processor import AttnProcessor
            unet.set_attn_processor(AttnProcessor())
            res["torch_classic_ms"] = torch_ms(lambda: unet(x, t, encoder_hidden_states=ctx), reps)
            log(f"torch eager fp16, classic AttnProcessor: {res['torch_classic_ms']:.2f} ms/step")
        except Exception as e:  # the reference number is optional
            log(f"classic AttnProcessor: skipped ({e})")
    del unet
    # the VAE decoder: one 64x64 latent -> 512x512 (post_quant_conv + decoder, as bm's vae_decoder)
    vae = diffusers.AutoencoderKL(**{k: v for k, v in VAE.items() if not k.startswith("_")}).to("cuda", torch.float16).eval()
    z = torch.randn(1, 4, 64, 64, device="cuda", dtype=torch.float16, generator=g)
    with torch.inference_mode():
        res["torch_vae_ms"] = torch_ms(lambda: vae.decode(z).sample, reps)
    log(f"torch eager fp16 VAE decode (1x4x64x64 -> 1x3x512x512): {res['torch_vae_ms']:.2f} ms")


def main():
    if len(sys.argv) < 3:
        print("usage: cuda_sd_bench.py CARRY OUTDIR [REPS] (see the comment at the top)", file=sys.stderr)
        return 2
    carry, outdir = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    reps = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    os.makedirs(outdir, exist_ok=True)
    os.makedirs(WORK, exist_ok=True)
    major, minor = torch.cuda.get_device_capability(0)
    res = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "reps": reps,
           "shape": "latents 2x4x64x64, encoder states 2x77x768 (SD 1.5, 512x512, batch 2)"}
    log(f"GPU: {res['gpu']} (sm_{major}{minor}), torch {torch.__version__}; SD 1.5 UNet step, {reps} reps")
    try:
        bm_part(carry, res, reps, f"sm_{major}{minor}")
    except Exception as e:
        res["bm_error"] = repr(e)
    try:
        torch_part(carry, res, reps)
    except Exception as e:
        res["torch_error"] = repr(e)
        log(f"torch: {e!r}")
    b, t = res.get("bm_ms"), res.get("torch_sdpa_ms")
    log("")
    log(f"SD 1.5 UNet step, 512x512, batch 2, on {res['gpu']}:")
    log(f"  bm (f16 weights, {res.get('bm_activations', '?')} activations): "
        + (f"{b:.2f} ms/step (best {res['bm_best_ms']:.2f}, first run {res['bm_first_ms']:.1f})" if b
           else f"FAIL {res.get('bm_error', '')[-400:]}"))
    log(f"  torch fp16 eager (SDPA):        " + (f"{t:.2f} ms/step" if t else f"FAIL {res.get('torch_error', '')}"))
    if res.get("torch_classic_ms"):
        log(f"  torch fp16 eager (classic attn): {res['torch_classic_ms']:.2f} ms/step")
    bv, tv = res.get("bm_vae_ms"), res.get("torch_vae_ms")
    if bv and tv:
        res["bm_vae_over_torch"] = bv / tv
        log(f"  VAE decode 512x512: bm {bv:.2f} ms, torch {tv:.2f} ms, bm time / torch time = {bv / tv:.2f}")
    if b and t:
        res["bm_over_torch"] = b / t
        log(f"  bm time / torch time = {b / t:.2f} (torch is {b / t:.2f}x faster)" if b > t
            else f"  bm time / torch time = {b / t:.2f} (bm is {t / b:.2f}x faster)")
    with open(os.path.join(outdir, "sd_bench.json"), "w") as f:
        json.dump(res, f, indent=1)
    return 0 if b and t else 1


if __name__ == "__main__":
    sys.exit(main())
