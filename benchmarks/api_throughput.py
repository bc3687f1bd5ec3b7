"""API throughput under concurrency vs the encoder's own batched throughput, in the same run.

`POST /search` (photo + instruction, retrieval only) through uvicorn on loopback with the full-size random-weight
Visualized BGE base encoder (or `--tiny`), a Milvus Lite collection of random vectors, and the server's dynamic
batching. For each concurrency c: requests/s, p50 and p95 latency, the batches the server formed, and the encoder's
own throughput on `encode_multimodal` at batch size c over the same decoded image and text. The ratio
api_rps / encoder_items_per_s says what the serving path (HTTP, form parsing, decoding, queueing, Milvus, JSON)
costs on top of the model; the issue-12 target is >= 0.9 at c = 8.

Run: `python benchmarks/api_throughput.py --concurrency 1 8 32 --out benchmarks/out/api_throughput.json`
(`--device cuda` on a GPU). Random weights: speed only, never search quality.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from api_support import running_server  # noqa: E402
from query_latency import fill_collection, full_size_encoder  # noqa: E402

from mmsearch.api.app import create_app  # noqa: E402
from mmsearch.config import Settings  # noqa: E402
from mmsearch.engine import build_store  # noqa: E402
from mmsearch.pipelines import SearchPipeline  # noqa: E402
from mmsearch.retriever import Retriever  # noqa: E402
from mmsearch.store import ProductStore  # noqa: E402
from mmsearch.testing import tiny_visual_bge_encoder  # noqa: E402

INSTRUCTION = "phone case with this image theme"


def query_jpeg(size: int = 512) -> bytes:
    rng = np.random.default_rng(0)
    pixels = (rng.random((size, size, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def pct(samples: list[float], q: float) -> float:
    return round(float(np.percentile(samples, q)), 2)


def encoder_throughput(encoder, image, batch: int, seconds: float, sync) -> float:
    """items/s of encode_multimodal at `batch` (one warm-up call, then repeated for about `seconds`)."""
    encoder.encode_multimodal([image] * batch, [INSTRUCTION] * batch)
    sync()
    n, t0 = 0, time.perf_counter()
    while True:
        encoder.encode_multimodal([image] * batch, [INSTRUCTION] * batch)
        sync()
        n += batch
        if time.perf_counter() - t0 >= seconds and n >= 2 * batch:
            return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--requests-per-client", type=int, default=4)
    ap.add_argument("--n-vectors", type=int, default=10_000)
    ap.add_argument("--window-ms", type=float, default=5.0)
    ap.add_argument(
        "--encoder-seconds", type=float, default=10.0, help="time spent on each encoder measurement"
    )
    ap.add_argument("--tiny", action="store_true", help="tiny random encoder (plumbing check)")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    load_start = round(os.getloadavg()[0], 2)
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    max_c = max(args.concurrency)
    with tempfile.TemporaryDirectory(prefix="mmsearch-apithr-") as tmp_name:
        tmp = Path(tmp_name)
        if args.tiny:
            encoder = tiny_visual_bge_encoder(tmp / "bge", device=args.device)
        else:
            encoder = full_size_encoder(tmp, args.device)
        encoder.batch_size = max_c
        settings = Settings(
            milvus_uri=str(tmp / "bench.db"),
            collection="api_throughput",
            cache_dir=tmp / "cache",
            serve_batch_window_ms=args.window_ms,
            serve_max_batch=max_c,
            serve_max_queued=4 * max_c,
        )
        with ProductStore(settings.milvus_uri, collection=settings.collection) as writer:
            fill_collection(writer, encoder, args.n_vectors)

        def factory(s: Settings) -> SearchPipeline:
            return SearchPipeline(Retriever(encoder, build_store(s)), None, smoke=args.tiny)

        jpeg = query_jpeg()
        image = Image.open(io.BytesIO(jpeg))
        image.load()
        levels = []
        with (
            running_server(create_app(settings, pipeline_factory=factory), timeout_s=300) as url,
            httpx.Client(timeout=600, limits=httpx.Limits(max_connections=max_c + 4)) as http,
        ):

            def one(_: int) -> float:
                t0 = time.perf_counter()
                resp = http.post(
                    url + "/search",
                    files={"image": ("q.jpg", jpeg, "image/jpeg")},
                    data={"instruction": INSTRUCTION, "k": "10"},
                )
                resp.raise_for_status()
                return (time.perf_counter() - t0) * 1e3

            for _ in range(3):
                one(0)  # warm-up
            for c in args.concurrency:
                before = http.get(url + "/healthz").json()["queue"]
                n = c * args.requests_per_client
                t0 = time.perf_counter()
                with ThreadPoolExecutor(c) as pool:
                    latencies = list(pool.map(one, range(n)))
                wall = time.perf_counter() - t0
                after = http.get(url + "/healthz").json()["queue"]
                batches = after["batches"] - before["batches"]
                api_rps = n / wall
                enc = encoder_throughput(encoder, image, c, args.encoder_seconds, sync)
                level = {
                    "concurrency": c,
                    "requests": n,
                    "throughput_rps": round(api_rps, 2),
                    "p50_ms": pct(latencies, 50),
                    "p95_ms": pct(latencies, 95),
                    "server_batches": batches,
                    "mean_batch": round(n / batches, 2) if batches else None,
                    "encoder_items_per_s_at_batch_c": round(enc, 2),
                    "api_over_encoder": round(api_rps / enc, 3),
                }
                levels.append(level)
                print(json.dumps(level), file=sys.stderr, flush=True)
    report = {
        "benchmark": "api_throughput",
        "note": "random weights: speed only, never search quality; client, server and model share the machine",
        "encoder": "tiny random" if args.tiny else "full-size random (Visualized BGE base geometry)",
        "device": "cuda" if cuda else "cpu",
        "torch_threads": torch.get_num_threads(),
        "n_vectors": args.n_vectors,
        "window_ms": args.window_ms,
        "levels": levels,
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_1m": {"start": load_start, "end": round(os.getloadavg()[0], 2)},
            "python": platform.python_version(),
            "gpu": torch.cuda.get_device_name(0) if cuda else None,
        },
        "command": "python benchmarks/api_throughput.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
