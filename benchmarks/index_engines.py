"""The local and Ray index engines on the same catalogue, in one run: items/s each and their ratio, stage timings,
peak memory (this process and its children, i.e. the local Ray cluster too).

Run through `python benchmarks/index_throughput.py --engine both [--full-size]` (or `--engine ray|local`).
Each run builds its encoder inside the timed span (the Ray engine in its actors), writes to a fresh Milvus Lite
database and uses a fresh image cache, so the HTTP runs pay the per-image delay every time. Starting the local
Ray cluster is timed apart: a deployment starts it once for many runs.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import threading
import time
import uuid
from pathlib import Path

import psutil

from mmsearch.config import Settings
from mmsearch.engine import Engine
from mmsearch.testing import tiny_visual_bge_encoder


class PeakMemory:
    """Samples the resident memory of this process plus all its descendants every 0.2 s."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    continue
            self.peak = max(self.peak, total)
            self._stop.wait(0.2)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_engine(engine: str, factory, catalog: Path, work: Path, args) -> dict:
    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        milvus_uri=str(work / f"bench_{tag}.db"), collection="bench", cache_dir=work / f"cache_{tag}"
    )
    with PeakMemory() as mem:
        start = time.perf_counter()
        if engine == "local":
            with Engine(settings=settings, encoder=factory()) as local:
                report = local.index(str(catalog), batch_size=args.batch_size, workers=args.workers)
        else:
            from mmsearch.pipelines.ray_engine import RayOptions, run_index_ray

            report = run_index_ray(
                settings,
                source=str(catalog),
                batch_size=args.batch_size,
                progress=False,
                options=RayOptions(
                    fetch_tasks=args.fetch_tasks,
                    fetch_threads=args.workers,
                    writers=1,
                    encode_actors=args.encode_actors,
                ),
                encoder_factory=factory,
            )
        wall = time.perf_counter() - start
    shutil.rmtree(work / f"bench_{tag}.db", ignore_errors=True)
    shutil.rmtree(work / f"cache_{tag}", ignore_errors=True)
    row = {
        "engine": engine,
        "indexed": report.indexed,
        "failed": report.failed,
        "wall_s": round(wall, 2),
        "items_per_s": round(report.indexed / wall, 3),
        "peak_rss_mib": round(mem.peak / 2**20),
    }
    if engine == "local":
        row["stages_s"] = {
            k: round(getattr(report, k), 2) for k in ("read_s", "encode_s", "write_s", "wait_s")
        }
    else:
        row["stages"] = report.stages
    return row


def compare_engines(args, work: Path, helpers) -> dict:
    """`helpers`: index_throughput's write_images, write_catalog, serve_folder and build_full_size_encoder."""
    engines = ["local", "ray"] if args.engine == "both" else [args.engine]
    out: dict = {"engines": engines, "runs": []}
    n = max(args.n_images, args.full_size_images if args.full_size else 0)
    images_dir = work / "images"
    images_dir.mkdir(exist_ok=True)
    images = helpers.write_images(images_dir, n, args.image_size)
    if "ray" in engines:
        import ray

        t0 = time.perf_counter()
        ray.init(
            num_cpus=os.cpu_count(),
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            logging_level=logging.WARNING,
            log_to_driver=False,
        )
        out["ray_cluster_start_s"] = round(time.perf_counter() - t0, 2)
    models = [
        (
            "tiny (random, 2+2 layers, 64 px)",
            functools.partial(tiny_visual_bge_encoder, work / "tiny"),
            args.n_images,
        )
    ]
    if args.full_size:
        models.append(
            (
                "full-size base (random weights, 224 px)",
                functools.partial(helpers.build_full_size_encoder, args.batch_size, work, args.device),
                args.full_size_images,
            )
        )
    models[0][1]()  # build the tiny checkpoint once, outside the timings
    for name, factory, count in models:
        local_catalog = helpers.write_catalog(work, images[:count], None)
        sources = [("local jpeg files", local_catalog, None)]
        sources.append((f"loopback HTTP, {args.http_latency_ms} ms per image", None, args.http_latency_ms))
        for source_name, catalog, latency in sources:
            rows = {}
            if latency is None:
                for engine in engines:
                    rows[engine] = run_engine(engine, factory, catalog, work, args)
            else:
                with helpers.serve_folder(images_dir, latency / 1000) as base:
                    remote = helpers.write_catalog(work, images[:count], base)
                    for engine in engines:
                        rows[engine] = run_engine(engine, factory, remote, work, args)
            entry = {
                "encoder": name,
                "source": source_name,
                "images": count,
                "loadavg_1m": round(os.getloadavg()[0], 2),
            }
            entry.update(rows)
            if len(rows) == 2:
                entry["ray_over_local"] = round(rows["ray"]["items_per_s"] / rows["local"]["items_per_s"], 3)
            print(entry, flush=True)
            out["runs"].append(entry)
    if "ray" in engines:
        import ray

        ray.shutdown()
    return out


__all__ = ["PeakMemory", "compare_engines", "run_engine"]
