"""Indexing throughput end to end (source -> fetch/decode -> encode -> Milvus Lite upsert), plus Milvus Lite
upsert/search/lookup latency at 10k and 100k rows.

Run: `python benchmarks/index_throughput.py --out bench_index.json`; `--engine both` compares the local and Ray
engines instead (benchmarks/index_engines.py). Otherwise (add `--full-size` for the full-size
random-weight Visualized BGE base model; `--sizes 10000` for a quick run; `--skip-end-to-end` for Milvus only). Writes one JSON object to stdout.
Random weights (tiny or full-size) measure speed only, never search quality.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import AutoTokenizer

from mmsearch.indexer.failures import FailureLog
from mmsearch.indexer.job import IndexJob
from mmsearch.indexer.sources import JsonlSource
from mmsearch.media.fetch import ImageFetcher
from mmsearch.models.encoder import VisualizedBGEEncoder
from mmsearch.models.visualized_bge import VisualizedBGE, VisualizedBGEConfig
from mmsearch.store import ProductStore
from mmsearch.testing import build_tiny_visual_bge, tiny_visual_bge_encoder
from mmsearch.types import Product


def build_full_size_encoder(batch_size: int, tmp: Path, device: str = "cpu") -> VisualizedBGEEncoder:
    """The official base geometry with PyTorch's random init; the tiny kit's tokenizer supplies the token ids
    (all below the real vocab size), so no hub access is needed. Speed only."""
    torch.manual_seed(0)
    model = VisualizedBGE(VisualizedBGEConfig.base())
    tokenizer = AutoTokenizer.from_pretrained(str(build_tiny_visual_bge(tmp / "tok").text_model_dir))
    return VisualizedBGEEncoder(
        model,
        tokenizer,
        model_id="random-full-size-base",
        device=device,
        dtype="float32" if device == "cpu" else "bfloat16",
        batch_size=batch_size,
    )


def write_images(folder: Path, n: int, side: int) -> list[Path]:
    """Product-photo-sized JPEGs (smooth gradients plus noise), so decoding costs what real files cost."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:side, 0:side]
    paths = []
    for i in range(n):
        base = (xx * rng.uniform(0.2, 1) + yy * rng.uniform(0.2, 1) + rng.uniform(0, 255)) % 256
        rgb = base[..., None] * rng.uniform(0.5, 1, size=3) + rng.normal(0, 20, size=(side, side, 3))
        path = folder / f"img_{i:05d}.jpg"
        Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def percentiles(samples_s: list[float]) -> dict[str, float]:
    ms = np.asarray(samples_s) * 1000
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
    }


@contextmanager
def serve_folder(folder: Path, latency_s: float):
    """Serve `folder` on 127.0.0.1 with a fixed delay per request (a stand-in for a CDN)."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            time.sleep(latency_s)
            path = folder / self.path.lstrip("/")
            body = path.read_bytes() if path.is_file() else b""
            self.send_response(200 if body else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def write_catalog(folder: Path, images: list[Path], base_url: str | None) -> Path:
    """One product per 4 images, in the Amazon schema; images as local paths or URLs."""
    lines = []
    for p in range(0, len(images), 4):
        refs = [f"{base_url}/{img.name}" if base_url else str(img) for img in images[p : p + 4]]
        record = {
            "parent_asin": f"B{p:08d}",
            "title": f"Benchmark product {p}",
            "main_category": "Cell Phones & Accessories",
            "price": "$9.99",
            "images": [{"large": r, "thumb": None, "hi_res": None, "variant": "MAIN"} for r in refs],
        }
        lines.append(json.dumps(record))
    path = folder / ("products_http.jsonl" if base_url else "products.jsonl")
    path.write_text("\n".join(lines) + "\n")
    return path


def index_once(encoder, catalog: Path, work: Path, *, batch_size: int, workers: int) -> dict:
    db = work / f"bench_{time.monotonic_ns()}.db"
    with (
        ProductStore(str(db), collection="bench") as store,
        ImageFetcher(cache_dir=None, max_workers=workers) as fetcher,
        FailureLog(None) as failures,
    ):
        job = IndexJob(encoder, store, fetcher, failures, batch_size=batch_size, progress=False)
        report = job.run(JsonlSource(catalog))
    shutil.rmtree(db, ignore_errors=True)
    keys = ("indexed", "failed", "elapsed_s", "items_per_s", "read_s", "encode_s", "write_s", "wait_s")
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in report.to_dict().items() if k in keys}


def encoder_only(name: str, encoder, images: list[Path], batch_size: int) -> dict:
    """The ceiling for the pipeline: image encoding alone on already preprocessed batches."""
    pixels = encoder.preprocess([str(p) for p in images])  # (n, 3, S, S), not timed
    encoder.encode_pixels(pixels[:2])  # warm-up (first-call allocations), not timed
    start = time.perf_counter()
    for i in range(0, len(images), batch_size):
        encoder.encode_pixels(pixels[i : i + batch_size])
    elapsed = time.perf_counter() - start
    return {
        "encoder": name,
        "source": "encode_pixels only (no fetch, decode, title or write)",
        "images": len(images),
        "elapsed_s": round(elapsed, 3),
        "items_per_s": round(len(images) / elapsed, 3),
    }


def end_to_end(args, work: Path) -> list[dict]:
    images_dir = work / "images"
    images_dir.mkdir()
    n = max(args.n_images, args.full_size_images if args.full_size else 0)
    images = write_images(images_dir, n, args.image_size)
    results = []
    encoders = [("tiny (random, 2+2 layers, 64 px)", tiny_visual_bge_encoder(work / "tiny"), args.n_images)]
    if args.full_size:
        full = build_full_size_encoder(args.batch_size, work)
        encoders.append(("full-size base (random weights, 224 px)", full, args.full_size_images))
    for name, encoder, count in encoders:
        results.append(encoder_only(name, encoder, images[:count], args.batch_size))
        print(json.dumps(results[-1]), file=sys.stderr)
        local = write_catalog(work, images[:count], None)
        row = {"encoder": name, "source": "local jpeg files", "images": count, "image_px": args.image_size}
        row.update(index_once(encoder, local, work, batch_size=args.batch_size, workers=args.workers))
        results.append(row)
        print(json.dumps(row), file=sys.stderr)
        with serve_folder(images_dir, args.http_latency_ms / 1000) as base:
            remote = write_catalog(work, images[:count], base)
            row = {
                "encoder": name,
                "source": f"loopback HTTP, {args.http_latency_ms} ms per image, {args.workers} workers",
                "images": count,
                "image_px": args.image_size,
            }
            row.update(index_once(encoder, remote, work, batch_size=args.batch_size, workers=args.workers))
            results.append(row)
            print(json.dumps(row), file=sys.stderr)
    return results


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    v = rng.normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def products(start: int, n: int) -> list[Product]:
    return [
        Product(
            id=f"B{i:08d}:0",
            image="",
            title=f"product {i}",
            main_category="Electronics",
            price=float(i % 100),
        )
        for i in range(start, start + n)
    ]


def milvus_latency(size: int, args, work: Path) -> dict:
    """Fill a Lite collection to `size` rows; time what the indexer does (32-row upserts, 512-id lookups) in the
    writing process, then what `mmsearch search` does in a fresh process (reopen + load, top-10 searches)."""
    rng = np.random.default_rng(0)
    dim, db = args.dim, work / f"lite_{size}.db"
    row: dict = {"rows": size, "dim": dim, "text_vector": True, "index": "store default"}
    with ProductStore(str(db), collection="bench") as store:
        store.ensure_collection(encoder_id="bench-random", dim=dim, with_text_vector=True)
        row["index"] = store.index.index_type
        t0 = time.perf_counter()
        for start in range(0, size, 2000):
            n = min(2000, size - start)
            store.upsert(products(start, n), unit_rows(rng, n, dim), unit_rows(rng, n, dim))
        row["fill_rows_per_s"] = round(size / (time.perf_counter() - t0), 1)
        upserts = []
        for r in range(args.repeats):
            batch = products(size + r * args.batch_size, args.batch_size)
            vecs = unit_rows(rng, args.batch_size, dim)
            t = time.perf_counter()
            store.upsert(batch, vecs, vecs)
            upserts.append(time.perf_counter() - t)
        row[f"upsert_{args.batch_size}_rows"] = percentiles(upserts)
        lookups = []
        for _ in range(max(5, args.repeats // 3)):
            ids = [f"B{int(i):08d}:0" for i in rng.integers(0, size * 2, size=512)]  # about half present
            t = time.perf_counter()
            store.existing_ids(ids)
            lookups.append(time.perf_counter() - t)
        row["existing_ids_512"] = percentiles(lookups)
    # A search process opens the database afresh (Lite seals and indexes the data on reopen).
    t = time.perf_counter()
    with ProductStore(str(db), collection="bench") as store:
        queries = unit_rows(rng, args.repeats + 1, dim)
        store.search(queries[0], k=10)
        row["reopen_load_first_search_s"] = round(time.perf_counter() - t, 2)
        searches = []
        for q in queries[1:]:
            t = time.perf_counter()
            store.search(q, k=10)
            searches.append(time.perf_counter() - t)
        row["search_top10_after_reopen"] = percentiles(searches)
    shutil.rmtree(db, ignore_errors=True)
    print(json.dumps(row), file=sys.stderr)
    return row


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-images", type=int, default=256, help="images for the tiny-encoder runs")
    parser.add_argument("--image-size", type=int, default=500, help="JPEG side in px (Amazon 'large' ~500)")
    parser.add_argument("--full-size", action="store_true", help="also run the full-size random-weight model")
    parser.add_argument("--full-size-images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--http-latency-ms", type=int, default=50)
    parser.add_argument("--sizes", default="10000,100000", help="Milvus Lite row counts, comma-separated")
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--skip-milvus", action="store_true")
    parser.add_argument("--skip-end-to-end", action="store_true")
    parser.add_argument(
        "--engine",
        choices=["local", "ray", "both"],
        help="compare the index engines on the same catalogue instead (benchmarks/index_engines.py)",
    )
    parser.add_argument("--fetch-tasks", type=int, default=2, help="Ray engine: fetch/decode tasks at once")
    parser.add_argument(
        "--encode-actors", type=int, default=1, help="Ray engine: encoder actors (one GPU each)"
    )
    parser.add_argument(
        "--device", default="cpu", help="full-size encoder device for --engine runs (cuda: GPU)"
    )
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)

    result: dict = {
        "benchmark": "index_throughput",
        "note": "random weights: speed only, never search quality",
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpu_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "loadavg_1m_start": round(os.getloadavg()[0], 2),  # other work on a shared machine skews rates
        },
    }
    work = Path(tempfile.mkdtemp(prefix="mmsearch-bench-index-"))
    try:
        if args.engine:
            import index_engines

            result["engines"] = index_engines.compare_engines(args, work, sys.modules[__name__])
            args.skip_end_to_end = args.skip_milvus = True
        if not args.skip_end_to_end:
            result["end_to_end"] = end_to_end(args, work)
        if not args.skip_milvus:
            sizes = [int(s) for s in args.sizes.split(",") if s]
            result["milvus_lite"] = [milvus_latency(size, args, work) for size in sizes]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["machine"]["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
