"""Query latency through `SearchPipeline`: p50/p95 of embed, search, rerank and total per retrieval mode.

Run: `python benchmarks/query_latency.py --n-vectors 10000 --queries 30 --out benchmarks/out/query_latency.json`
(add `--full-size` for the full-size random-weight Visualized BGE base encoder, `--rerank baseline|phi3` to add a
reranker: the retrieval-order baseline or the tiny random Phi-3 Vision). The collection is Milvus Lite in a temp
dir, filled with N random unit vectors (the stored vectors' values don't change search cost) and reopened, as a
server would open it; queries are the
synthetic swatch + instruction pairs. Prints the JSON on stdout and a table on stderr.
Random weights measure speed only, never search quality.

Issue 13: `--modes` takes `MODE` (one slot per product, the default) and `MODE/images` (every image), e.g.
`joint/images,joint,hybrid-bm25/images,hybrid-bm25`; `--images-per-product 3` gives products several rows, so
grouping has work to do, and titles carry brand and model words for BM25. `--start-server` runs the same on the
loopback Milvus 2.3.5 server (tests/conftest.py) instead of Lite; modes that server cannot serve are skipped with
the reason. `ratios` then also holds each run's p50 search and total against `--baseline`'s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from mmsearch.config import Settings
from mmsearch.evaluation.synthetic import generate_synthetic_set
from mmsearch.pipelines import SearchPipeline, SearchRequest
from mmsearch.retriever import Retriever
from mmsearch.store import ProductStore
from mmsearch.testing import tiny_visual_bge_encoder
from mmsearch.types import Product

STAGES = ("encode_ms", "search_ms", "rerank_ms", "rerank_prefill_ms", "rerank_decode_ms", "total_ms")


def full_size_encoder(tmp: Path, device: str):
    """The official base geometry with random init (built like benchmarks/encode_throughput.py does)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from encode_throughput import build_encoder

    return build_encoder(device, "auto", 32, tmp)


BRANDS = ("OtterBox", "Spigen", "Anker", "Belkin", "Yeti", "Uniqlo", "Samsung", "Apple")
NOUNS = ("phone case", "charger", "cable", "mug", "shirt", "screen protector", "power bank", "earbuds")
MODELS = ("iPhone 15", "Galaxy S24", "Pixel 8", "USB-C", "20 oz", "XL")


def fill_collection(
    store: ProductStore, encoder, n: int, batch: int = 2000, images_per_product: int = 1
) -> float:
    """Create the collection for `encoder` and upsert `n` random unit vectors with product-like rows (brand and
    model words in titles; `images_per_product` rows share a parent_asin); seconds."""
    store.ensure_collection(encoder_id=encoder.model_id, dim=encoder.dim, with_text_vector=True)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for lo in range(0, n, batch):
        m = min(batch, n - lo)
        vecs = rng.normal(size=(2, m, encoder.dim)).astype(np.float32)  # (image|title, m, dim)
        vecs /= np.linalg.norm(vecs, axis=2, keepdims=True)
        products = [
            Product(
                id=f"R{(lo + i) // images_per_product:07d}:{(lo + i) % images_per_product}",
                image="",
                title=_title((lo + i) // images_per_product),
                main_category=("Cell Phones & Accessories", "Amazon Home", "AMAZON FASHION")[(lo + i) % 3],
                price=float(5 + (lo + i) % 50),
                parent_asin=f"R{(lo + i) // images_per_product:07d}",
            )
            for i in range(m)
        ]
        store.upsert(products, vecs[0], vecs[1])
    return time.perf_counter() - start


def _title(p: int) -> str:
    return f"{BRANDS[p % 8]} {NOUNS[(p // 8) % 8]} for {MODELS[(p // 64) % 6]}, item {p}"


def build_reranker(kind: str, tmp: Path):
    if kind == "none":
        return None
    if kind == "baseline":
        from mmsearch.reranker.base import RetrievalOrderReranker

        return RetrievalOrderReranker()
    from mmsearch.engine import build_reranker as factory_reranker

    return factory_reranker(Settings(smoke=True, cache_dir=tmp / "cache", device="cpu"))


def summarise(rows: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    out = {}
    for stage in STAGES:
        values = [r[stage] for r in rows if stage in r]
        if values:
            out[stage] = {
                "p50": round(float(np.percentile(values, 50)), 2),
                "p95": round(float(np.percentile(values, 95)), 2),
                "mean": round(float(np.mean(values)), 2),
            }
    return out


def ratios(results: dict[str, dict], baseline: str = "joint") -> dict[str, float]:
    """Within-run ratios: each mode's p50 total against joint's, and each stage's share of its mode's p50 total."""
    out: dict[str, float] = {}
    p50 = {mode: r["timings_ms"]["total_ms"]["p50"] for mode, r in results.items()}
    if "joint" in p50:
        for mode, total in p50.items():
            if mode != "joint":
                out[f"{mode}_vs_joint_total_p50"] = round(total / p50["joint"], 2)
    if baseline in results:
        base = results[baseline]["timings_ms"]
        for mode, r in results.items():
            if mode != baseline:
                for stage in ("search_ms", "total_ms"):
                    key = f"{mode}_vs_{baseline}_{stage.removesuffix('_ms')}_p50"
                    out[key] = round(r["timings_ms"][stage]["p50"] / base[stage]["p50"], 2)
    for mode, r in results.items():
        for stage in ("encode_ms", "search_ms", "rerank_ms"):
            if stage in r["timings_ms"]:
                share = r["timings_ms"][stage]["p50"] / p50[mode]
                out[f"{mode}_{stage.removesuffix('_ms')}_share_of_total_p50"] = round(share, 3)
    return out


def table(report: dict) -> str:
    """p50 / p95 per stage and mode, for the terminal."""
    stages = [s for s in STAGES if any(s in r["timings_ms"] for r in report["modes"].values())]
    head = f"{'mode':<20}" + "".join(f"{s.removesuffix('_ms'):>22}" for s in stages)
    lines = [
        f"query latency, ms p50 / p95 ({report['encoder']} encoder, reranker {report['reranker']}, "
        f"{report['n_vectors']} vectors on {report['store']}, k={report['k']}; random weights: speed only)",
        head,
        "-" * len(head),
    ]
    for mode, r in report["modes"].items():
        cells = []
        for s in stages:
            t = r["timings_ms"].get(s)
            cells.append(f"{t['p50']:>10.1f} / {t['p95']:<9.1f}" if t else f"{'-':>22}")
        lines.append(f"{mode:<20}" + "".join(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-vectors", type=int, default=10_000, help="rows in the Lite collection")
    parser.add_argument("--queries", type=int, default=30, help="timed queries per mode")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--modes", default="joint,weighted,fused")
    parser.add_argument(
        "--full-size", action="store_true", help="full-size random-weight encoder (base geometry)"
    )
    parser.add_argument("--rerank", choices=["none", "baseline", "phi3"], default="none")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--images-per-product", type=int, default=1, help="rows sharing one parent_asin")
    parser.add_argument("--baseline", default="joint", help="the run the search/total ratios divide by")
    parser.add_argument(
        "--start-server", action="store_true", help="use a loopback Milvus 2.3.5 server instead of Lite"
    )
    args = parser.parse_args(argv)
    if args.start_server:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from conftest import run_milvus_server

        with run_milvus_server(Path(tempfile.mkdtemp(prefix="mmsearch-milvus-"))) as server:
            return _main(args, argv, server.uri)
    return _main(args, argv, None)


def _main(args: argparse.Namespace, argv: list[str] | None, server_uri: str | None) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    load_start = round(os.getloadavg()[0], 2)

    with tempfile.TemporaryDirectory(prefix="mmsearch-qlat-") as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        if args.full_size:
            encoder = full_size_encoder(tmp, args.device)
        else:
            encoder = tiny_visual_bge_encoder(tmp / "bge", device=args.device)
        build_s = time.perf_counter() - t0
        syn = generate_synthetic_set(tmp / "queries", n_products=1, n_queries=args.queries + args.warmup)
        db = server_uri or str(tmp / "bench.db")
        with ProductStore(db, collection="query_latency", consistency="Strong") as writer:
            fill_s = fill_collection(
                writer, encoder, args.n_vectors, images_per_product=args.images_per_product
            )
            writer.flush()
        # Time queries the way a server meets them: a freshly opened database. Milvus Lite 3.2.2 searches rows
        # upserted in the same session without their index (~1.3 s at 10k rows here) until it is reopened.
        t1 = time.perf_counter()
        store = ProductStore(db, collection="query_latency")
        try:
            store.check_encoder(encoder_id=encoder.model_id, dim=encoder.dim)
            reopen_s = time.perf_counter() - t1
            pipeline = SearchPipeline(
                Retriever(encoder, store), build_reranker(args.rerank, tmp), max_k=max(args.k, 50), smoke=True
            )
            # Modes take turns on each query, so a change in machine load affects them alike and the
            # within-run ratios stay fair.
            skipped = {}
            if any(m.split("/")[0] == "hybrid-bm25" for m in modes) and store.lexical_problem():
                skipped = {m: store.lexical_problem() for m in modes if m.split("/")[0] == "hybrid-bm25"}
                modes = [m for m in modes if m not in skipped]
            rows = {mode: [] for mode in modes}
            statuses = {mode: Counter() for mode in modes}
            for i, q in enumerate(syn.eval_set.queries):
                for mode in modes:
                    request = SearchRequest(
                        image=q.image,
                        instruction=q.instruction + " OtterBox iPhone 15",  # words the BM25 side can match
                        k=args.k,
                        mode=mode.split("/")[0],
                        one_per_product=not mode.endswith("/images"),
                        rerank=args.rerank != "none",
                    )
                    result = pipeline.run(request)
                    if i >= args.warmup:
                        rows[mode].append(result.timings)
                        statuses[mode][result.rerank_status] += 1
            results = {
                mode: {
                    "n": len(rows[mode]),
                    "timings_ms": summarise(rows[mode]),
                    "rerank_status": dict(statuses[mode]),
                }
                for mode in modes
            }
        finally:
            store.close()

    report = {
        "benchmark": "query_latency",
        "note": "random weights: speed only, never search quality",
        "encoder": "full-size random (base geometry)" if args.full_size else "tiny random",
        "encoder_id": encoder.model_id,
        "dim": encoder.dim,
        "reranker": args.rerank,
        "n_vectors": args.n_vectors,
        "images_per_product": args.images_per_product,
        "store": "loopback Milvus server " + str(server_uri) if server_uri else "Milvus Lite",
        "skipped_modes": skipped,
        "k": args.k,
        "queries_per_mode": args.queries,
        "warmup": args.warmup,
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_1m": {"start": load_start, "end": round(os.getloadavg()[0], 2)},
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "setup_s": {
            "encoder_build": round(build_s, 2),
            "fill_collection": round(fill_s, 2),
            "reopen_and_load": round(reopen_s, 2),
        },
        "modes": results,
        "ratios": ratios(results, args.baseline),
        "command": "python benchmarks/query_latency.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    text = json.dumps(report, indent=2)
    print(text)
    print(table(report), file=sys.stderr)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
