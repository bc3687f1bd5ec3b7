"""`mmsearch index --engine ray`: the index job on Ray Data, on one machine or a cluster.

Entry point: `run_index_ray(settings, source=..., options=RayOptions(...)) -> IndexReport` (the same report,
summary line and exit codes as the local engine; `pipelines.index.run_index` picks the engine).

Stages (see `pipelines.ray_stages`): read source shards -> skip stored and repeated ids -> fetch + decode
(CPU tasks, bounded concurrency) -> encode (an actor pool holding the encoder, one GPU per actor when the
cluster has GPUs) -> write. Writes depend on the target:
- a Milvus server: worker actors upsert in parallel; `--write bulk-import` instead writes parquet files that
  the driver de-duplicates and hands to Milvus bulk import (first load of an empty collection);
- Milvus Lite (one process per file): the driver upserts each batch as it arrives, in source order.
The driver alone writes the failure log. Ids are deterministic and every batch is written as soon as it is
encoded, so after a `kill -9` the same command resumes, skipping what is stored.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmsearch.config import SMOKE_BANNER, Settings
from mmsearch.errors import ConfigError, MMSearchError
from mmsearch.indexer.boundary import Failure
from mmsearch.indexer.failures import FailureLog
from mmsearch.indexer.job import IndexReport
from mmsearch.indexer.sources import open_source
from mmsearch.pipelines.ray_cluster import WRITE_MODES, RayOptions, connect
from mmsearch.pipelines.ray_shards import plan_shards
from mmsearch.pipelines.ray_stages import (
    BulkWriteStage,
    EncodeStage,
    ServerWriteStage,
    default_threads,
    fetch_decode,
    read_shards,
    write_isolated,
)
from mmsearch.store import ProductStore

log = logging.getLogger(__name__)


def _reserve_little_cpu(ds: Any) -> None:
    """Re-slicing blocks costs next to no CPU, but Ray reserves a whole core per task by default, which on a
    small cluster starves fetch or encode of theirs (a 2-CPU cluster with writers deadlocks). Ray 2.60's
    `repartition` takes no resource arguments, so set them on its logical operator."""
    op = getattr(getattr(ds, "_logical_plan", None), "dag", None)
    args = getattr(op, "ray_remote_args", None)
    if isinstance(args, dict):
        args.setdefault("num_cpus", 0.1)


def _describe(factories: tuple[Any, Any]) -> dict[str, Any]:
    """What the driver needs to create or check the collection, read off the models in one worker."""
    encoder = factories[0]()
    titles = factories[1](encoder)
    return {  # the models themselves are dropped on return
        "encoder_id": encoder.model_id,
        "dim": int(encoder.dim),
        "image_size": int(encoder.image_size),
        "title_encoder_id": titles.model_id,
        "title_dim": int(titles.dim),
    }


def _user_error(err: BaseException) -> MMSearchError | None:
    """The mmsearch error a Ray task raised, dug out of Ray's wrappers, if any."""
    seen = set()
    todo: list[Any] = [err]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, MMSearchError):
            return e
        todo += [getattr(e, "cause", None), e.__cause__, e.__context__]
    return None


# -- the run ---------------------------------------------------------------------------------------------------


@dataclass
class _Tally:
    stage_s: dict[str, float]
    stage_items: dict[str, int]

    @classmethod
    def new(cls) -> _Tally:
        return cls(defaultdict(float), defaultdict(int))

    def add(self, cols: dict[str, Any], rows: list[int]) -> None:
        for stage in ("fetch", "encode", "write"):
            times = cols[f"{stage}_s"]
            busy = [float(times[i]) for i in rows if times[i] > 0]
            self.stage_s[stage] += sum(busy)
            self.stage_items[stage] += len(busy)


def same_space_titles(encoder: Any) -> Any:
    """The default title encoder in each actor: the image-text encoder's own text tower (picklable by name)."""
    from mmsearch.models.base import SameSpaceTitles

    return SameSpaceTitles(encoder)


def run_index_ray(
    settings: Settings,
    *,
    source: str = "bootcamp",
    limit: int | None = None,
    failure_log: str | Path | None = None,
    batch_size: int | None = None,
    max_images_per_product: int | None = None,
    text_vectors: bool = True,
    progress: bool = True,
    options: RayOptions | None = None,
    allow_paths: Any = (),
    encoder_factory: Any = None,
    title_factory: Any = None,
    fetch_overrides: dict[str, Any] | None = None,
    store: Any = None,
) -> IndexReport:
    """Index `source` into `settings.collection` on Ray Data; arguments as `pipelines.index.run_index`.

    `encoder_factory()` and `title_factory(encoder)` are picklable callables that build the encoder and the
    title encoder in each actor (`mmsearch.Engine` passes its builders; no title factory: the encoder's own text
    tower). `store` is an open `ProductStore` the caller owns (default: one opened on the settings' URI).
    """
    from mmsearch.pipelines.index import default_failure_log

    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError as e:
        raise ConfigError(f"--engine ray needs Ray Data: pip install 'mmsearch[ray]' ({e})") from None
    options = options or RayOptions()
    batch = batch_size or settings.encode_batch_size
    if options.write == "bulk-import" and not settings.is_server_uri:
        raise ConfigError(
            "--write bulk-import needs a Milvus server (http://host:19530); Milvus Lite takes upserts"
        )
    src = open_source(
        source,
        cache_dir=settings.cache_dir,
        limit=limit,
        max_images_per_product=max_images_per_product,
        allow_paths=allow_paths,
    )
    src.prepare()  # a missing file or an offline hub fails here, before the cluster starts
    if settings.smoke:
        print(f"*** {SMOKE_BANNER} ***", file=sys.stderr, flush=True)
    if encoder_factory is None:
        raise ConfigError(
            "run_index_ray needs encoder_factory (mmsearch.Engine.index(engine='ray') passes it)"
        )
    factories = (encoder_factory, title_factory or same_space_titles)
    log_path = Path(failure_log) if failure_log is not None else default_failure_log(settings)
    started = connect(options)
    try:
        owned = store is None
        if owned:
            store = ProductStore(
                settings.milvus_uri,
                collection=settings.collection,
                token=settings.milvus_token,
                consistency=settings.milvus_consistency,
            )
        with contextlib.ExitStack() as stack, FailureLog(log_path) as failures:
            if owned:
                stack.enter_context(store)
            return _run(
                settings,
                src,
                store,
                failures,
                factories,
                options,
                batch,
                text_vectors,
                progress,
                fetch_overrides,
            )
    except MMSearchError:
        raise
    except Exception as e:
        user = _user_error(e)
        if user is not None:
            raise user from None
        raise
    finally:
        if started:
            import ray

            ray.shutdown()


def _run(settings, src, store, failures, factories, options, batch, text_vectors, progress, fetch_overrides):
    import ray
    import ray.data

    start = time.perf_counter()
    report = IndexReport(
        source=getattr(src, "name", type(src).__name__), failure_log=str(failures.path or "") or None
    )
    report.engine = "ray"
    if len(ray.nodes()) == 1:
        # One machine: read the models' ids here; torch is already imported, a fresh worker would import it again.
        models = _describe(factories)
    else:  # the driver may have no GPU, no weights and little memory: ask a worker
        models = ray.get(ray.remote(_describe).remote(factories))
    image_size = models.pop("image_size")
    store.ensure_collection(**models, with_text_vector=text_vectors)
    with_text = bool(text_vectors and store.has_text_vector)
    spec = {"uri": settings.milvus_uri, "collection": settings.collection, "token": settings.milvus_token}
    bulk = options.write == "bulk-import"
    if bulk and store.count():
        raise ConfigError(
            f"--write bulk-import is for a first load, but collection {settings.collection!r} already holds "
            f"{store.count()} rows (Milvus import does not replace rows): use --write upsert"
        )
    if store.is_server:
        lookup = None if bulk else {"store": spec}
    else:  # Lite: workers cannot open the file, so they check ids against the driver's snapshot
        existing = set(store.iter_ids()) if store.count() else set()
        lookup = {"snapshot": [ray.put(existing)]} if existing else None

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = progress
    # Driver writes (Lite) and bulk files keep source order, so a repeated id's later record wins, as locally.
    ctx.execution_options.preserve_order = not store.is_server or bulk
    shards = plan_shards(src)
    gpus = options.gpus_per_actor
    if gpus is None:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
    threads = options.encode_threads or (None if gpus else default_threads(options.encode_actors))
    fetch = {
        "cache_dir": str(Path(settings.cache_dir) / "images"),
        "max_bytes": settings.max_image_bytes,
        "max_pixels": settings.max_image_pixels,
        "max_workers": options.fetch_threads,
        "allowed_roots": None if src.allowed_roots is None else [str(r) for r in src.allowed_roots],
        **(fetch_overrides or {}),
    }
    ds = ray.data.from_items([{"shard": i} for i in range(len(shards))], override_num_blocks=len(shards))
    ds = ds.map_batches(
        read_shards,
        batch_size=1,
        fn_kwargs={"shards": shards, "lookup": lookup, "block_rows": batch},
        num_cpus=0.1,
    )
    # A task's output leaves it as one block (up to 128 MiB), and the next stage runs one task per block: cut
    # the records into blocks of one batch, so every stage after this one streams batch by batch.
    ds = ds.repartition(target_num_rows_per_block=batch)
    _reserve_little_cpu(ds)
    ds = ds.map_batches(
        fetch_decode,
        batch_size=batch,
        fn_kwargs={"fetch": fetch, "image_size": image_size},
        compute=ray.data.TaskPoolStrategy(size=options.fetch_tasks),
        num_cpus=options.fetch_cpus,
    )
    ds = ds.map_batches(
        EncodeStage,
        batch_size=batch,
        fn_constructor_args=factories,
        fn_constructor_kwargs={"text_vectors": with_text, "threads": threads},
        compute=ray.data.ActorPoolStrategy(size=options.encode_actors),
        num_gpus=gpus,
        num_cpus=1,
    )
    out_dir = None
    if bulk:
        out_dir = Path(options.bulk_dir or tempfile.mkdtemp(prefix="mmsearch-bulk-")).resolve()
        ds = ds.map_batches(
            BulkWriteStage,
            batch_size=options.bulk_rows,
            fn_constructor_kwargs={"store": spec, "out_dir": str(out_dir)},
            compute=ray.data.ActorPoolStrategy(size=options.writers),
            num_cpus=0.1,
        )
    elif store.is_server:
        ds = ds.map_batches(
            ServerWriteStage,
            batch_size=batch,
            fn_constructor_kwargs={"store": spec},
            compute=ray.data.ActorPoolStrategy(size=options.writers),
            num_cpus=0.1,
        )
    tally = _Tally.new()
    files: dict[str, str] = {}  # bulk: id -> "path#row" of the copy that will be imported (the later wins)
    drops: dict[str, list[int]] = defaultdict(list)
    for out in ds.iter_batches(batch_size=None, batch_format="numpy"):
        cols = {k: list(v) for k, v in out.items()}
        ok = [i for i, status in enumerate(cols["status"]) if status == "ok"]
        if ok and not store.is_server:
            t0 = time.perf_counter()
            ok = write_isolated(
                cols, ok, lambda p, image, text: store.upsert(p, image, text if with_text else None)
            )
            tally.stage_s["write"] += time.perf_counter() - t0
            tally.stage_items["write"] += len(ok)
        for i, status in enumerate(cols["status"]):
            pid = str(cols["id"][i])
            if status == "failed":
                _fail(
                    report,
                    failures,
                    Failure(pid, str(cols["where"][i]), str(cols["stage"][i]), str(cols["reason"][i])),
                )
            elif status == "skipped":
                report.skipped_existing += 1
            elif status == "duplicate":
                report.duplicates += 1
            elif status == "ok":
                report.duplicates += cols["reason"][i] == "repeat"
                if bulk:
                    if pid in files:  # Milvus import keeps every copy: drop the earlier one
                        path, _, row = files[pid].rpartition("#")
                        drops[path].append(int(row))
                    files[pid] = str(cols["file"][i])
        tally.add(cols, ok)
        if not ok:
            continue
        report.indexed += len(ok)
        report.batches += 1
        log.info("batch %d: %d rows written (%d so far)", report.batches, len(ok), report.indexed)
    if bulk and out_dir is not None:
        _bulk_import(spec, files, drops, tally)
        if options.bulk_dir is None:
            shutil.rmtree(out_dir, ignore_errors=True)
    elif report.indexed:
        store.flush()
    report.stored = store.count(consistency="Strong")
    report.elapsed_s = time.perf_counter() - start
    report.items_per_s = report.indexed / report.elapsed_s if report.elapsed_s > 0 else 0.0
    workers = {"fetch": options.fetch_tasks, "encode": options.encode_actors, "write": options.writers}
    if not store.is_server:
        workers["write"] = 1  # the driver
    report.stages = {
        stage: {
            "items": tally.stage_items[stage],
            "busy_s": round(tally.stage_s[stage], 3),
            "workers": workers[stage],
            "items_per_s_per_worker": round(tally.stage_items[stage] / tally.stage_s[stage], 2)
            if tally.stage_s[stage] > 0
            else 0.0,
        }
        for stage in ("fetch", "encode", "write")
    }
    report.read_s, report.encode_s, report.write_s = (tally.stage_s[s] for s in ("fetch", "encode", "write"))
    return report


def _fail(report: IndexReport, failures: FailureLog, failure: Failure) -> None:
    failures.record(failure.id, failure.where, failure.reason, stage=failure.stage)
    report.failed += 1
    if report.first_failure is None:
        reason, where = failure.reason, failure.where
        report.first_failure = reason if reason.startswith(where) else f"{where}: {reason}"


def _bulk_import(
    spec: dict[str, Any], files: dict[str, str], drops: dict[str, list[int]], tally: _Tally
) -> None:
    """Drop repeated ids from the files (Milvus import keeps every copy), then import them all."""
    from mmsearch.store.bulk import bulk_import, drop_rows

    for path, rows in drops.items():
        drop_rows(path, rows)
    paths = sorted({f.rpartition("#")[0] for f in files.values()})
    if not paths:
        return
    seconds = bulk_import(
        spec["uri"], spec["collection"], paths, expected_rows=len(files), token=spec["token"]
    )
    tally.stage_s["import"] = seconds
    log.info("bulk import of %d files (%d rows) took %.1f s", len(paths), len(files), seconds)


__all__ = ["WRITE_MODES", "RayOptions", "connect", "run_index_ray"]
