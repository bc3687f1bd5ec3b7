"""HTTP API latency: `POST /search` through uvicorn on loopback, one client at a time vs N concurrent clients.

The server runs the tiny smoke encoder over the generated demo catalog in a temporary Milvus Lite, so this measures
the serving overhead (form parsing, decoding, the single inference worker's queue, JSON) rather than model speed.
Run: `python benchmarks/api_latency.py --requests 40 --concurrency 8 --out bench_api.json`. Writes one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from api_support import index_demo_catalog, running_server  # noqa: E402

from mmsearch.api.app import create_app  # noqa: E402


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {
        "p50_ms": round(pick(0.5), 2),
        "p95_ms": round(pick(0.95), 2),
        "mean_ms": round(statistics.fmean(ordered), 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--out")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        catalog, settings = index_demo_catalog(root, smoke_cache=root / "cache")
        image = catalog.image_path("B0LEOPCASE1").read_bytes()
        with (
            running_server(create_app(settings, with_reranker=False)) as url,
            httpx.Client(timeout=120) as http,
        ):

            def one(i: int) -> float:
                t0 = time.perf_counter()
                resp = http.post(
                    url + "/search",
                    files={"image": ("q.jpg", image, "image/jpeg")},
                    data={"instruction": "phone case with this image theme", "k": "9"},
                )
                resp.raise_for_status()
                return (time.perf_counter() - t0) * 1e3

            for i in range(3):  # warm-up
                one(i)
            sequential = [one(i) for i in range(args.requests)]
            t0 = time.perf_counter()
            with ThreadPoolExecutor(args.concurrency) as pool:
                concurrent = list(pool.map(one, range(args.requests)))
            wall = time.perf_counter() - t0
    report = {
        "benchmark": "api_latency",
        "note": "tiny random smoke encoder, 18-product catalog, Milvus Lite; serving overhead, not model speed",
        "requests": args.requests,
        "concurrency": args.concurrency,
        "sequential": percentiles(sequential),
        "concurrent": {**percentiles(concurrent), "throughput_rps": round(args.requests / wall, 2)},
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()},
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
