"""Image-encoding throughput of Visualized BGE at full model size (official config, random weights): batched
`encode_images` vs a one-image-at-a-time loop like the bootcamp notebook's (`encode(image=path).tolist()[0]`).

Run: `python benchmarks/encode_throughput.py --device cpu --n-images 64 --out bench_encode.json`.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
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
        "--loop-images", type=int, default=None, help="images for the per-image loop (default: all)"
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
        loop_paths = paths[: args.loop_images or len(paths)]
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

        loop, batched, model_only = Clock(sync), Clock(sync), Clock(sync)
        load_before = os.getloadavg()[0]
        emb = None
        for _ in range(args.rounds):  # alternating, so a change in machine load hits both sides
            loop.run(notebook_loop)
            emb = batched.run(lambda: encoder.encode_images(paths))
        rss_after_runs = peak_rss_mb()
        pixels = encoder.preprocess(paths)
        model_only.run(lambda: encoder.encode_pixels(pixels))

        extra = None
        if args.also_dtype:
            other = build_encoder(args.device, args.also_dtype, args.batch_size, tmp)
            other.encode_images(paths[: min(len(paths), args.batch_size)])
            other_clock = Clock(sync)
            other_emb = other_clock.run(lambda: other.encode_images(paths))
            extra = {
                "dtype": str(other.dtype).removeprefix("torch."),
                **other_clock.report(len(paths)),
                "speedup_vs_loop": round(
                    (len(paths) / other_clock.wall) / (len(loop_paths) * args.rounds / loop.wall), 2
                ),
                "max_abs_diff_vs_main_dtype": float(np.abs(other_emb - emb).max()),
                "min_cosine_vs_main_dtype": float((other_emb * emb).sum(axis=1).min()),
            }
        load_after = os.getloadavg()[0]

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
        "batched": batched.report(n_batched),
        "per_image_loop": loop.report(n_loop),
        "speedup_batched_vs_loop": round((n_batched / batched.wall) / (n_loop / loop.wall), 2),
        "speedup_batched_vs_loop_cpu_time": round((n_batched / batched.cpu) / (n_loop / loop.cpu), 2),
        "model_only_batched": model_only.report(len(paths)),
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
