"""Image-encoding throughput of Visualized BGE at full model size (official config, random weights): batched
`encode_images` vs a one-image-at-a-time loop like the bootcamp notebook's (`encode(image=path).tolist()[0]`).

Run: `python benchmarks/encode_throughput.py --device cpu --threads 2 --n-images 64 --also-dtype float32
--out bench_encode.json` (GPU: `--device cuda --dtype bfloat16`). On CPU the machine's roofline (matmul GFLOP/s at
the model's GEMM shapes, bf16 and fp32, and read bandwidth; `cpu_roofline.py`) is measured before and after the
model runs, and each path reports its achieved GFLOP/s (FLOPs counted by `torch.utils.flop_counter`) as a share of
its dtype's roofline.
With `--encoder NAME` (repeatable: visualized-bge-base, visualized-bge-m3, clip, siglip) it instead times batched
`encode_images` of each encoder at full size in one run, with speed ratios between them (`full_size_encoders`).
Writes one JSON object to stdout and, with --out, to a file. Random weights: speed only, never quality.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import AutoTokenizer

from mmsearch.models.encoder import VisualizedBGEEncoder
from mmsearch.models.visualized_bge import VisualizedBGE, VisualizedBGEConfig
from mmsearch.testing.visual_bge import build_tiny_visual_bge

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `mmsearch bench` runs this file by path
import cpu_roofline  # noqa: E402
from full_size_encoders import ENCODERS, compare_encoders  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def write_images(folder: Path, n: int, size: tuple[int, int], seed: int = 0) -> list[Path]:
    """Product-photo-sized JPEGs: smooth colour fields plus noise, so decoding costs what real files cost."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    paths = []
    for i in range(n):
        base = np.stack(
            [(xx * rng.uniform(0.2, 1) + yy * rng.uniform(0.2, 1) + rng.uniform(0, 255)) % 256] * 3, -1
        )
        noise = rng.normal(0, 20, size=(h, w, 3))
        arr = np.clip(base * rng.uniform(0.5, 1, size=3) + noise, 0, 255).astype(np.uint8)
        path = folder / f"img_{i:04d}.jpg"
        Image.fromarray(arr).save(path, quality=90)
        paths.append(path)
    return paths


def build_encoder(device: str, dtype: str, batch_size: int, tmp: Path) -> VisualizedBGEEncoder:
    """Full-size base model (official config) with PyTorch's default random init.

    Image-only encoding needs only [CLS]/[SEP]/[PAD] from the tokenizer, which the tiny kit tokenizer has with
    the same roles, so no hub access is needed.
    """
    torch.manual_seed(0)
    model = VisualizedBGE(VisualizedBGEConfig.base()).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(build_tiny_visual_bge(tmp / "tok").text_model_dir))
    return VisualizedBGEEncoder(
        model, tokenizer, model_id="random-base", device=device, dtype=dtype, batch_size=batch_size
    )


def gemm_shapes(encoder: VisualizedBGEEncoder, batch: int) -> list[tuple[int, int, int]]:
    """(M, K, N) of the model's big GEMMs at this batch size: EVA's attention/SwiGLU and BERT's MLP."""
    cfg = encoder.model.config
    eva_tokens = batch * (cfg.vision.num_patches + 1)
    bert_tokens = batch * (cfg.vision.num_patches + 2)  # [CLS] + image tokens + [SEP]
    w, h = cfg.vision.width, cfg.vision.mlp_hidden
    return [
        (eva_tokens, w, w),
        (eva_tokens, w, h),
        (eva_tokens, h, w),
        (bert_tokens, cfg.text.hidden_size, cfg.text.intermediate_size),
    ]


def efficiency(flops_per_image: int, images_per_s: float, dtype: torch.dtype, roofline: dict | None) -> dict:
    """Achieved GFLOP/s and, on CPU, its share of the same run's matmul roofline for that dtype."""
    achieved = flops_per_image * images_per_s / 1e9
    out = {"achieved_gflops": round(achieved, 1)}
    if roofline is not None:
        peak = roofline["matmul_gflops"][str(dtype).removeprefix("torch.")]
        out["roofline_gflops"] = peak
        out["share_of_roofline"] = round(achieved / peak, 3)
    return out


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 2) if b else None


class Clock:
    """Wall and process-CPU seconds of a phase. CPU time is less sensitive to other processes on a shared machine."""

    def __init__(self, sync) -> None:
        self.sync = sync
        self.wall = 0.0
        self.cpu = 0.0

    def run(self, fn):
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn()
        self.sync()
        self.wall += time.perf_counter() - wall
        self.cpu += time.process_time() - cpu
        return out

    def report(self, images: int) -> dict:
        return {
            "images": images,
            "seconds": round(self.wall, 3),
            "images_per_s": round(images / self.wall, 3),
            "cpu_seconds": round(self.cpu, 3),
            "images_per_cpu_s": round(images / self.cpu, 3),
        }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto")
    parser.add_argument(
        "--also-dtype",
        choices=["float32", "bfloat16", "float16"],
        default=None,
        help="also time the batched path in this dtype and report its deviation from --dtype's embeddings",
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--n-images", type=int, default=64, help="images encoded by the batched path per round"
    )
    parser.add_argument(
        "--loop-images",
        type=int,
        default=None,
        help="images for the per-image loop (default: all; 0: skip it)",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="alternate loop and batched runs this many times"
    )
    parser.add_argument("--source-size", type=int, nargs=2, default=(640, 480), metavar=("W", "H"))
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--encoder",
        action="append",
        choices=ENCODERS,
        help="compare these encoders (repeat the option) instead of batched vs per-image Visualized BGE",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.encoder:
        return _compare(args)

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        paths = write_images(tmp, args.n_images, tuple(args.source_size))
        loop_paths = paths[: len(paths) if args.loop_images is None else args.loop_images]
        encoder = build_encoder(args.device, args.dtype, args.batch_size, tmp)
        rss_loaded = peak_rss_mb()
        is_cuda = encoder.device.type == "cuda"

        def sync() -> None:
            if is_cuda:
                torch.cuda.synchronize()

        # Warm-up: first calls pay for allocator growth and kernel selection.
        encoder.encode_images(paths[: min(len(paths), args.batch_size)])
        encoder.encode_images(paths[:1])
        sync()
        if is_cuda:
            torch.cuda.reset_peak_memory_stats()

        def notebook_loop() -> None:
            for path in loop_paths:  # the notebook: one file, one forward pass, one .tolist()
                encoder.encode_images([path])[0].tolist()

        other, other_clock = None, Clock(sync)
        if args.also_dtype:  # timed in the same rounds as the main dtype
            other = build_encoder(args.device, args.also_dtype, args.batch_size, tmp)
            other.encode_images(paths[: min(len(paths), args.batch_size)])
        flops_per_image = cpu_roofline.count_flops(
            lambda: encoder.encode_pixels(encoder.preprocess(paths[:1]))
        )
        on_cpu = encoder.device.type == "cpu"
        dtypes = sorted({str(encoder.dtype).removeprefix("torch."), args.also_dtype or "float32"})
        shapes = gemm_shapes(encoder, args.batch_size)
        roof_before = cpu_roofline.measure(shapes, dtypes) if on_cpu else None

        loop, batched, model_only = Clock(sync), Clock(sync), Clock(sync)
        load_before = os.getloadavg()[0]
        emb = other_emb = None
        for _ in range(args.rounds):  # alternating, so a change in machine load hits every side
            if loop_paths:
                loop.run(notebook_loop)
            emb = batched.run(lambda: encoder.encode_images(paths))
            if other is not None:
                other_emb = other_clock.run(lambda: other.encode_images(paths))
        rss_after_runs = peak_rss_mb()
        pixels = encoder.preprocess(paths)
        model_only.run(lambda: encoder.encode_pixels(pixels))

        load_after = os.getloadavg()[0]
        roofline = cpu_roofline.combine(roof_before, cpu_roofline.measure(shapes, dtypes)) if on_cpu else None

    extra = None
    if other is not None:
        extra = {
            "dtype": str(other.dtype).removeprefix("torch."),
            **other_clock.report(len(paths) * args.rounds),
            "speedup_vs_loop": ratio(
                len(paths) / other_clock.wall, len(loop_paths) / loop.wall if loop.wall else 0
            ),
            **efficiency(flops_per_image, len(paths) * args.rounds / other_clock.wall, other.dtype, roofline),
            "max_abs_diff_vs_main_dtype": float(np.abs(other_emb - emb).max()),
            "min_cosine_vs_main_dtype": float((other_emb * emb).sum(axis=1).min()),
        }
    n_loop, n_batched = len(loop_paths) * args.rounds, len(paths) * args.rounds
    result = {
        "benchmark": "visualized_bge_encode_images",
        "weights": "random (PyTorch default init), full official config; speed only",
        "variant": "base",
        "image_size": encoder.image_size,
        "source_images": f"{len(paths)} JPEG {args.source_size[0]}x{args.source_size[1]}",
        "device": str(encoder.device),
        "device_name": torch.cuda.get_device_name()
        if is_cuda
        else platform.processor() or platform.machine(),
        "dtype": str(encoder.dtype).removeprefix("torch."),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": {"before": round(load_before, 2), "after": round(load_after, 2)},
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "gflop_per_image": round(flops_per_image / 1e9, 2),
        "roofline": roofline,
        "batched": {
            **batched.report(n_batched),
            **efficiency(flops_per_image, n_batched / batched.wall, encoder.dtype, roofline),
        },
        "per_image_loop": loop.report(n_loop) if n_loop else None,
        "speedup_batched_vs_loop": ratio(n_batched / batched.wall, n_loop / loop.wall if n_loop else 0),
        "speedup_batched_vs_loop_cpu_time": ratio(
            n_batched / batched.cpu, n_loop / loop.cpu if n_loop else 0
        ),
        "model_only_batched": {
            **model_only.report(len(paths)),
            **efficiency(flops_per_image, len(paths) / model_only.wall, encoder.dtype, roofline),
        },
        "peak_rss_mb": {"after_load": round(rss_loaded, 1), "after_runs": round(rss_after_runs, 1)},
    }
    if extra:
        result["batched_other_dtype"] = extra
    if is_cuda:
        result["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return result


def _compare(args: argparse.Namespace) -> dict:
    names = list(dict.fromkeys(args.encoder))
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        paths = write_images(tmp, args.n_images, tuple(args.source_size))
        load_before = os.getloadavg()[0]
        encoders = compare_encoders(
            names,
            paths,
            tmp,
            device=args.device,
            dtype=args.dtype,
            batch_size=args.batch_size,
            rounds=args.rounds,
        )
        load_after = os.getloadavg()[0]
    result = {
        "benchmark": "encoder_compare_encode_images",
        "weights": "random (PyTorch default init), full official configs; speed only",
        "what": "batched encode_images: decode + preprocess + forward, per encoder, round-robin",
        "source_images": f"{len(paths)} JPEG {args.source_size[0]}x{args.source_size[1]}",
        "device_name": torch.cuda.get_device_name()
        if torch.cuda.is_available() and args.device != "cpu"
        else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": {"before": round(load_before, 2), "after": round(load_after, 2)},
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "encoders": encoders,
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
