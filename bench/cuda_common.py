# cuda_common.py - helpers shared by the GPU benchmark scripts (cuda_bench.py,
# cuda_llm_bench.py, cuda_sd_bench.py), which run on the GPU machine from bench/.
import glob
import os
import subprocess
import sys


def torch_ms(fn, reps):
    """mean CUDA-event milliseconds of reps back-to-back calls of fn, after 3 warm-ups"""
    import torch

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


def find_nvrtc(carry, work):
    """a libnvrtc for bmc: BM_NVRTC, this machine's (CUDA toolkit, pip's
    nvidia-cuda-nvrtc), else the one `cuda_device.sh pack-bmc` carried (gzip'd,
    unpacked into work/nvrtc)"""
    if os.environ.get("BM_NVRTC"):
        return os.environ["BM_NVRTC"]
    pats = ["/usr/local/cuda*/lib64/libnvrtc.so.1[0-9]*", "/usr/lib/x86_64-linux-gnu/libnvrtc.so.1[0-9]*"]
    for p in sys.path:
        pats.append(os.path.join(p, "nvidia/cuda_nvrtc/lib/libnvrtc.so.1[0-9]*"))
        pats.append(os.path.join(p, "nvidia/cu1[0-9]/lib/libnvrtc.so.1[0-9]*"))
    for pat in pats:
        hits = sorted(h for h in glob.glob(pat) if "alt" not in h and "builtins" not in h)
        if hits:
            return hits[-1]
    gz = sorted(glob.glob(os.path.join(carry, "bmc/nvrtc/*.gz")))
    if gz:
        d = os.path.join(work, "nvrtc")
        os.makedirs(d, exist_ok=True)
        for f in gz:
            subprocess.run(f"gzip -dc '{f}' > '{d}/{os.path.basename(f)[:-3]}'", shell=True, check=True)
        hits = sorted(glob.glob(os.path.join(d, "libnvrtc.so.*")))
        if hits:
            return hits[-1]
    return None
