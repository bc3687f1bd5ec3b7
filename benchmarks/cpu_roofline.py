"""This machine's limits, measured now: matmul GFLOP/s at given shapes (bf16 and fp32) and memory read bandwidth.

Model benchmarks import it and measure the roofline in the same run as the model, before and after it, so the
share of the roofline survives the 2-3x swings a shared machine puts on absolute figures. Also counts a callable's
FLOPs with `torch.utils.flop_counter` (counted, not guessed).

Run alone: `python benchmarks/cpu_roofline.py --threads 2 --shape 3152 768 3072 --out benchmarks/out/roofline.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


def _timed(fn: Callable[[], object], seconds: float, min_reps: int = 3) -> float:
    """Best seconds per call over repeated calls lasting about `seconds` (best: the least disturbed by neighbours)."""
    fn()  # warm-up: kernel selection, weight reordering, page faults
    best, spent, reps = float("inf"), 0.0, 0
    while reps < min_reps or spent < seconds:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best, spent, reps = min(best, dt), spent + dt, reps + 1
    return best


def matmul_gflops(m: int, k: int, n: int, dtype: torch.dtype, seconds: float = 0.5) -> float:
    """GFLOP/s of `F.linear` (the models' GEMM path): (m, k) activations times an (n, k) weight."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(m, k, generator=gen).to(dtype)
    w = torch.randn(n, k, generator=gen).to(dtype)
    with torch.inference_mode():
        dt = _timed(lambda: F.linear(x, w), seconds)
    return 2.0 * m * k * n / dt / 1e9


def read_bandwidth_gbs(megabytes: int = 512, seconds: float = 0.5) -> float:
    """GB/s of reading a buffer far larger than the caches (a float32 sum on torch's threads: the fastest,
    purely streaming read torch does; a decode step streams its weights the same way)."""
    buf = torch.ones(megabytes * 2**20 // 4, dtype=torch.float32)
    with torch.inference_mode():
        dt = _timed(buf.sum, seconds)
    return buf.numel() * buf.element_size() / dt / 1e9


def measure(
    shapes: Iterable[Sequence[int]],
    dtypes: Iterable[str] = ("bfloat16", "float32"),
    *,
    seconds: float = 0.5,
    bandwidth: bool = True,
) -> dict:
    """One roofline reading: GFLOP/s per dtype (the best over the shapes) and per shape, plus read bandwidth."""
    out: dict = {"matmul_gflops": {}, "per_shape": [], "load_1min": round(os.getloadavg()[0], 2)}
    for dtype in dtypes:
        best = 0.0
        for m, k, n in shapes:
            g = matmul_gflops(m, k, n, DTYPES[dtype], seconds)
            out["per_shape"].append({"dtype": dtype, "m": m, "k": k, "n": n, "gflops": round(g, 1)})
            best = max(best, g)
        out["matmul_gflops"][dtype] = round(best, 1)
    if bandwidth:
        out["read_gbs"] = round(read_bandwidth_gbs(seconds=seconds), 2)
    return out


def combine(before: dict, after: dict) -> dict:
    """Mean of two readings taken around a model run: the roofline the run saw."""
    mean = {
        "matmul_gflops": {
            d: round((before["matmul_gflops"][d] + after["matmul_gflops"][d]) / 2, 1)
            for d in before["matmul_gflops"]
        },
        "before": before,
        "after": after,
    }
    if "read_gbs" in before and "read_gbs" in after:
        mean["read_gbs"] = round((before["read_gbs"] + after["read_gbs"]) / 2, 2)
    return mean


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs one call of `fn` performs, counted by `torch.utils.flop_counter` (matmuls, convolutions, SDPA)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        fn()
    return int(counter.get_total_flops())


def cpu_info() -> dict:
    """The CPU's matrix features and what PyTorch sees (oneDNN may use AMX even where /proc hides its flags)."""
    caps = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    keys = ("amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx512_fp16")
    return {
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_sees": {k: bool(caps.get(k)) for k in keys},
        "proc_flags": sorted(k for k in keys if k in flags),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shape",
        type=int,
        nargs=3,
        action="append",
        metavar=("M", "K", "N"),
        help="matmul shape (repeatable); default: Visualized BGE's MLP at batch 16 and Phi-3's prefill MLP",
    )
    parser.add_argument("--seconds", type=float, default=0.5, help="timing window per measurement")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = args.shape or [(16 * 197, 768, 3072), (1910, 3072, 8192)]
    result = {"benchmark": "cpu_roofline", **cpu_info(), **measure(shapes, seconds=args.seconds)}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
