"""Batch query script vs a per-query loop: the same N queries through `QueryFileRunner` (chunks encoded in one
pass, one Milvus call per chunk) and through `SearchPipeline.run` one at a time. Reports both wall times and the ratio.

Run: `python benchmarks/batch_queries.py --queries 200 --full-size --out benchmarks/out/batch_queries.json`
(without `--full-size`: the tiny random encoder). Queries are the synthetic swatch + instruction pairs, written to
a jsonl file; the collection is Milvus Lite in a temp dir filled with random vectors and reopened. The two paths
take turns in rounds so load drift affects both alike. Random weights: speed only, never search quality.
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
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from query_latency import fill_collection, full_size_encoder  # noqa: E402

from mmsearch.evaluation.synthetic import generate_synthetic_set  # noqa: E402
from mmsearch.media.fetch import ImageFetcher  # noqa: E402
from mmsearch.pipelines import SearchPipeline  # noqa: E402
from mmsearch.pipelines.batch import QueryFileRunner, parse_query  # noqa: E402
from mmsearch.retriever import Retriever  # noqa: E402
from mmsearch.store import ProductStore  # noqa: E402
from mmsearch.testing import tiny_visual_bge_encoder  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--n-vectors", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds of each path")
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument(
        "--full-size", action="store_true", help="full-size random-weight encoder (base geometry)"
    )
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    load_start = round(os.getloadavg()[0], 2)
    with tempfile.TemporaryDirectory(prefix="mmsearch-batchq-") as tmp_name:
        tmp = Path(tmp_name)
        encoder = (
            full_size_encoder(tmp, args.device)
            if args.full_size
            else tiny_visual_bge_encoder(tmp / "bge", device=args.device)
        )
        encoder.batch_size = args.batch_size
        syn = generate_synthetic_set(tmp / "queries", n_products=1, n_queries=args.queries)
        lines = [
            json.dumps({"image": str(q.image), "instruction": q.instruction, "k": args.k})
            for q in syn.eval_set.queries
        ]
        queries_file = tmp / "queries.jsonl"
        queries_file.write_text("\n".join(lines) + "\n")
        db = str(tmp / "bench.db")
        with ProductStore(db, collection="batch_queries") as writer:
            fill_collection(writer, encoder, args.n_vectors)
        store = ProductStore(db, collection="batch_queries")
        fetcher = ImageFetcher(max_workers=4)
        try:
            pipeline = SearchPipeline(Retriever(encoder, store), None, max_k=max(args.k, 50), smoke=True)
            runner = QueryFileRunner(pipeline, fetcher, base_dir=tmp, batch_size=args.batch_size)

            def batched() -> float:
                t = time.perf_counter()
                with queries_file.open("rb") as fh:
                    report = runner.run(fh, io.StringIO(), progress=False)
                if report.failed:
                    raise RuntimeError(report.summary())
                return time.perf_counter() - t

            def loop() -> float:
                t = time.perf_counter()
                for line in lines:
                    spec = parse_query(json.loads(line))
                    request = replace(spec.request, image=fetcher.fetch_bytes(spec.image))
                    pipeline.run(request)
                return time.perf_counter() - t

            batched(), loop()  # warm-up (first-call allocations, Lite loading)
            rounds = [{"batched_s": batched(), "loop_s": loop()} for _ in range(args.rounds)]
        finally:
            store.close()
            fetcher.close()
    batched_s = min(r["batched_s"] for r in rounds)
    loop_s = min(r["loop_s"] for r in rounds)
    report = {
        "benchmark": "batch_queries",
        "note": "random weights: speed only, never search quality",
        "encoder": "full-size random (base geometry)" if args.full_size else "tiny random",
        "queries": args.queries,
        "batch_size": args.batch_size,
        "n_vectors": args.n_vectors,
        "k": args.k,
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "rounds": [{key: round(v, 2) for key, v in r.items()} for r in rounds],
        "batched_s": round(batched_s, 2),
        "loop_s": round(loop_s, 2),
        "batched_queries_per_s": round(args.queries / batched_s, 2),
        "loop_queries_per_s": round(args.queries / loop_s, 2),
        "speedup": round(loop_s / batched_s, 2),
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_1m": {"start": load_start, "end": round(os.getloadavg()[0], 2)},
            "python": platform.python_version(),
        },
        "command": "python benchmarks/batch_queries.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
