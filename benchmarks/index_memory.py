"""Peak memory (RSS) of an indexing run at full Visualized BGE base size (official config, random weights) on a
catalogue holding extreme images: 60000x3 and 3x60000 strips, a 40-megapixel 40:1 banner, a 40-megapixel square,
and a 60000x60000 decompression-bomb header, beside ordinary 640x480 product photos.

Run: `python benchmarks/index_memory.py --out benchmarks/out/index_memory.json`

Each configuration runs `mmsearch.pipelines.index.run_index` (what `mmsearch index` calls) in a child process of
its own, since ru_maxrss only grows: the child reports its peak RSS after building the model and at the end.
- `normal-only`: the ordinary photos alone (the baseline);
- `bounded`: today's code; images beyond `MAX_IMAGE_ASPECT_RATIO` (50:1) are refused from their header.
- `unbounded-small-strip`: the aspect limit switched off (the behaviour before it) on a 10000x4 strip only; its
  shortest-side resize to 224 px makes a 224x560000 image. (A 60000x3 strip makes 224x4,480,000, 7.5x more pixels;
  it is not run here, where ~4 GiB of memory is free for everyone.)
Random weights: memory and speed only, never quality.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent
EXTREMES = {
    "normal-only": [],
    "bounded": [(60000, 3), (3, 60000), (40000, 1000), (6324, 6324), "bomb"],
    "unbounded-small-strip": [(10000, 4)],
}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _png(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (120, 60, 30)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def write_catalogue(root: Path, n_normal: int, extremes: list) -> Path:
    sys.path.insert(0, str(ROOT))
    from encode_throughput import write_images

    sys.path.insert(0, str(ROOT.parent / "tests"))
    from indexer_support import png_header_only

    (root / "img").mkdir(parents=True)
    refs = [p.relative_to(root).as_posix() for p in write_images(root / "img", n_normal, (640, 480))]
    for i, size in enumerate(extremes):
        data = png_header_only(60_000, 60_000) if size == "bomb" else _png(size)
        (root / "img" / f"extreme_{i}.png").write_bytes(data)
        refs.append(f"img/extreme_{i}.png")
    lines = [
        json.dumps({"parent_asin": f"M{i:04d}", "title": f"product {i}", "images": [ref]})
        for i, ref in enumerate(refs)
    ]
    path = root / "products.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def child(config: str, n_normal: int, batch_size: int) -> dict:
    sys.path.insert(0, str(ROOT))
    from encode_throughput import build_encoder

    import mmsearch.media.decode as decode
    from mmsearch.config import Settings
    from mmsearch.pipelines.index import run_index

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        catalogue = write_catalogue(tmp / "catalogue", n_normal, EXTREMES[config])
        rss_start = peak_rss_mb()
        encoder = build_encoder("cpu", "float32", batch_size, tmp)
        rss_model = peak_rss_mb()
        if config.startswith("unbounded"):
            decode.MAX_ASPECT_RATIO = float("inf")  # the behaviour before the limit
        settings = Settings(milvus_uri=str(tmp / "milvus.db"), collection="memory", cache_dir=tmp / "cache")
        t0 = time.perf_counter()
        report = run_index(
            settings,
            source=str(catalogue),
            encoder=encoder,
            batch_size=batch_size,
            workers=4,
            progress=False,
            failure_log=tmp / "failures.jsonl",
        )
        seconds = time.perf_counter() - t0
        failures = (
            [json.loads(line) for line in (tmp / "failures.jsonl").read_text().splitlines()]
            if (tmp / "failures.jsonl").exists()
            else []
        )
    return {
        "config": config,
        "extreme_images": [list(s) if isinstance(s, tuple) else s for s in EXTREMES[config]],
        "normal_images": n_normal,
        "indexed": report.indexed,
        "failed": report.failed,
        "failure_reasons": [f["reason"].split(": ", 1)[-1] for f in failures],
        "seconds": round(seconds, 2),
        "rss_start_mb": round(rss_start, 1),
        "rss_after_model_mb": round(rss_model, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "peak_over_model_mb": round(peak_rss_mb() - rss_model, 1),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--normal-images", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--configs", nargs="+", choices=list(EXTREMES), default=list(EXTREMES))
    parser.add_argument("--child", choices=list(EXTREMES), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.normal_images, args.batch_size)))
        return {}
    load_before = os.getloadavg()[0]
    runs = []
    for config in args.configs:
        proc = subprocess.run(
            [sys.executable, __file__, "--child", config, "--normal-images", str(args.normal_images)]
            + ["--batch-size", str(args.batch_size)],
            capture_output=True,
            text=True,
            check=True,
        )
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    result = {
        "benchmark": "index_peak_rss",
        "weights": "random (PyTorch default init), full official Visualized BGE base config; memory only",
        "device": "cpu",
        "dtype": "float32",
        "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "runs": runs,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
