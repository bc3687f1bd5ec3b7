"""The index pipeline: opens the source, the fetcher and the failure log, and runs the job over built parts.

Entry point: `run_index(settings, encoder=..., store=..., source="bootcamp", limit=...) -> IndexReport`;
`mmsearch.Engine.index` (and so `mmsearch index`) calls it with the parts it assembled.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mmsearch.config import SMOKE_BANNER, Settings
from mmsearch.indexer.failures import FailureLog
from mmsearch.indexer.job import IndexJob, IndexReport
from mmsearch.indexer.sources import Source, open_source
from mmsearch.media.fetch import ImageFetcher

# Index engines: "local" (one process, `run_index`) or "ray" (Ray Data, `pipelines.ray_engine.run_index_ray`);
# `mmsearch.Engine.index` picks one.
ENGINES = ("local", "ray")


def default_failure_log(settings: Settings) -> Path:
    """`<cache_dir>/failures/<collection>-<UTC time>.jsonl`: one file per run, created only on a failure."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return Path(settings.cache_dir) / "failures" / f"{settings.collection}-{stamp}.jsonl"


def run_index(
    settings: Settings,
    *,
    encoder: Any,
    store: Any,
    source: str | Source = "bootcamp",
    limit: int | None = None,
    failure_log: str | Path | None = None,
    batch_size: int | None = None,
    workers: int = 8,
    prefetch: int = 4,
    max_images_per_product: int | None = None,
    text_vectors: bool = True,
    reindex: bool = False,
    progress: bool = True,
    allow_paths: Sequence[str | Path] = (),
    title_encoder: Any = None,
) -> IndexReport:
    """Index `source` into the open `store` with `encoder`.

    Args:
        encoder, store: the built encoder and an open `ProductStore` (the caller owns and closes it).
        source: a `Source` the caller opened (and prepared), or its spec: `bootcamp`, `bootcamp:<tarball|folder>`,
            `hub:<Category>`, or a .jsonl/.parquet/folder/.tar.gz path.
        limit: index at most this many images (counting from the start of the source, so a re-run with the
            same limit resumes the same set).
        failure_log: jsonl path for items that could not be indexed (default under the cache dir).
        batch_size: images per encode/upsert (default `settings.encode_batch_size`).
        workers: concurrent fetch/decode threads.
        reindex: re-embed ids already stored (after a model or catalogue change) instead of skipping them.
        allow_paths: folders, beyond the catalogue's own, that local image paths may resolve to.
        title_encoder: the model behind `text_vector` (None: the encoder's own text tower).
        title_encoder: an already built title encoder; default: built from `settings.title_encoder`.
    """
    if isinstance(source, Source):
        src = source
    else:
        src = open_source(
            source,
            cache_dir=settings.cache_dir,
            limit=limit,
            max_images_per_product=max_images_per_product,
            allow_paths=allow_paths,
        )
        src.prepare()  # a missing file or an offline hub fails here
    root = _claim_root(store, src)
    if settings.smoke:
        print(f"*** {SMOKE_BANNER} ***", file=sys.stderr, flush=True)
    log_path = Path(failure_log) if failure_log is not None else default_failure_log(settings)
    with (
        ImageFetcher(
            cache_dir=Path(settings.cache_dir) / "images",
            max_bytes=settings.max_image_bytes,
            max_pixels=settings.max_image_pixels,
            timeout=settings.fetch_timeout_s,
            retries=settings.fetch_retries,
            max_workers=workers,
            allowed_roots=src.allowed_roots,
        ) as fetcher,
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
            reindex=reindex,
            progress=progress,
            title_encoder=title_encoder,
        )
        report = job.run(src)
    if root is not None and store.exists():
        store.set_catalogue_root(str(root))
    report.smoke = settings.smoke
    return report


def _claim_root(store, src: Source) -> Path | None:
    """Store this source's local image refs relative to its folder, unless the collection already holds another
    catalogue's root (then refs stay absolute, so both keep resolving)."""
    root = src.catalogue_root()
    stored = store.catalogue_root()
    if root is None or (stored is not None and Path(stored) != root):
        return None
    src.relative_to = root
    return root


__all__ = ["ENGINES", "default_failure_log", "run_index"]
