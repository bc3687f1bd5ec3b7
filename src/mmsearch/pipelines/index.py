"""The index pipeline: builds the source, encoder, store, fetcher and failure log from `Settings` and runs the job.

Entry point: `run_index(settings, source="bootcamp", limit=..., engine="local") -> IndexReport`; `mmsearch index`
calls it. This is the one place that picks the engine: "local" (one process, the default for small catalogues)
or "ray" (Ray Data on a local or remote cluster, `pipelines.ray_engine`; needs `pip install mmsearch[ray]`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mmsearch.config import Settings
from mmsearch.errors import ConfigError
from mmsearch.indexer.failures import FailureLog
from mmsearch.indexer.job import IndexJob, IndexReport
from mmsearch.indexer.sources import open_source
from mmsearch.media.fetch import ImageFetcher
from mmsearch.pipelines.factory import SMOKE_BANNER, build_encoder, build_store, build_title_encoder

ENGINES = ("local", "ray")


def default_failure_log(settings: Settings) -> Path:
    """`<cache_dir>/failures/<collection>-<UTC time>.jsonl`: one file per run, created only on a failure."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return Path(settings.cache_dir) / "failures" / f"{settings.collection}-{stamp}.jsonl"


def run_index(
    settings: Settings,
    *,
    source: str = "bootcamp",
    limit: int | None = None,
    failure_log: str | Path | None = None,
    batch_size: int | None = None,
    workers: int = 8,
    prefetch: int = 4,
    max_images_per_product: int | None = None,
    text_vectors: bool = True,
    progress: bool = True,
    encoder: Any = None,
    allow_paths: Sequence[str | Path] = (),
    title_encoder: Any = None,
    engine: str = "local",
    ray_options: Any = None,
) -> IndexReport:
    """Index `source` into `settings.collection` at `settings.milvus_uri`.

    Args:
        source: `bootcamp`, `bootcamp:<tarball|folder>`, `hub:<Category>`, or a .jsonl/.parquet/folder/.tar.gz path.
        limit: index at most this many images (counting from the start of the source, so a re-run with the
            same limit resumes the same set).
        failure_log: jsonl path for items that could not be indexed (default under the cache dir).
        batch_size: images per encode/upsert (default `settings.encode_batch_size`).
        workers: concurrent fetch/decode threads.
        encoder: an already built encoder (benchmarks, tests); default: built from `settings`.
        allow_paths: folders, beyond the catalogue's own, that local image paths may resolve to.
        title_encoder: an already built title encoder; default: built from `settings.title_encoder`.
        engine: "local" or "ray"; `ray_options` is a `pipelines.ray_engine.RayOptions` (ray only).
    """
    if engine not in ENGINES:
        raise ConfigError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "ray":
        return _run_ray(
            settings,
            source=source,
            limit=limit,
            failure_log=failure_log,
            batch_size=batch_size,
            max_images_per_product=max_images_per_product,
            text_vectors=text_vectors,
            progress=progress,
            allow_paths=allow_paths,
            options=ray_options,
        )
    src = open_source(
        source,
        cache_dir=settings.cache_dir,
        limit=limit,
        max_images_per_product=max_images_per_product,
        allow_paths=allow_paths,
    )
    src.prepare()  # a missing file or an offline hub fails here, before the model loads
    if settings.smoke:
        print(f"*** {SMOKE_BANNER} ***", file=sys.stderr, flush=True)
    encoder = encoder if encoder is not None else build_encoder(settings)
    if title_encoder is None:
        title_encoder = build_title_encoder(settings, encoder)
    log_path = Path(failure_log) if failure_log is not None else default_failure_log(settings)
    with (
        build_store(settings) as store,
        ImageFetcher.from_settings(settings, max_workers=workers, allowed_roots=src.allowed_roots) as fetcher,
        FailureLog(log_path) as failures,
    ):
        job = IndexJob(
            encoder,
            store,
            fetcher,
            failures,
            batch_size=batch_size or settings.encode_batch_size,
            prefetch=prefetch,
            text_vectors=text_vectors,
            progress=progress,
            title_encoder=title_encoder,
        )
        report = job.run(src)
    report.smoke = settings.smoke
    return report


def _run_ray(settings: Settings, **kwargs: Any) -> IndexReport:
    from mmsearch.pipelines.ray_engine import run_index_ray  # imports ray only when it runs

    return run_index_ray(settings, **kwargs)


__all__ = ["ENGINES", "default_failure_log", "run_index"]
