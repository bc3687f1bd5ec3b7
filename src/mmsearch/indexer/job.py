"""The batch indexing job: source -> fetch/decode/preprocess -> batched encode -> upsert into Milvus.

Entry point: `IndexJob(encoder, store, fetcher, failure_log).run(source) -> IndexReport`.

- Ids already in the collection are skipped before any image is fetched or encoded (`store.existing_ids`).
- A background producer fetches, decodes and preprocesses images on the fetcher's thread pool and hands
  ready batches to the encoder through a bounded queue, so encoding overlaps with the network and decoding.
- Each batch is upserted as soon as it is encoded: ids are deterministic, so a crash or `kill -9` loses at most
  the batch in flight, and the next run picks up where this one stopped.
- A bad image or record goes to the failure log and never stops the job.

Per-record preparation and title vectors live in `indexer.prepare`, shared with the Ray engine.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mmsearch.errors import ConfigError
from mmsearch.indexer.failures import FailureLog
from mmsearch.indexer.prepare import TitleVectors, failure_where, prepare_image
from mmsearch.indexer.sources import Source
from mmsearch.media.fetch import ImageFetcher
from mmsearch.types import Product

log = logging.getLogger(__name__)

_DONE = object()


@dataclass
class IndexReport:
    """Counts and timings of one run. Stages overlap, so read_s + encode_s + write_s may exceed elapsed_s;
    `wait_s` is the time the encoder sat idle waiting for the next batch."""

    indexed: int = 0
    skipped_existing: int = 0
    failed: int = 0
    duplicates: int = 0
    elapsed_s: float = 0.0
    items_per_s: float = 0.0
    read_s: float = 0.0
    encode_s: float = 0.0
    write_s: float = 0.0
    wait_s: float = 0.0
    lookup_s: float = 0.0
    batches: int = 0
    source: str = ""
    failure_log: str | None = None
    first_failure: str | None = None
    fetch_stats: dict[str, int] = field(default_factory=dict)
    smoke: bool = False
    stored: int | None = None  # rows in the collection after the run, read at Strong consistency

    def summary(self) -> str:
        """One line: counts, failures (and where they are logged), seconds, throughput."""
        head = "[SMOKE: tiny random-weight models, not search quality] " if self.smoke else ""
        line = (
            f"{head}indexed {self.indexed}, skipped {self.skipped_existing} (already present), "
            f"failed {self.failed}"
        )
        if self.failed:
            where = f"; see {self.failure_log}" if self.failure_log else ""
            line += f" (first: {self.first_failure}{where})"
        if self.duplicates:
            line += f", {self.duplicates} duplicate ids ignored"
        line += (
            f" in {self.elapsed_s:.1f} s, {self.items_per_s:.1f} items/s "
            f"(read {self.read_s:.1f} s, encode {self.encode_s:.1f} s, write {self.write_s:.1f} s, "
            f"encoder waited {self.wait_s:.1f} s)"
        )
        if self.stored is not None:
            line += f"; the collection holds {self.stored} products"
        return line

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Batch:
    products: list[Product]
    pixels: torch.Tensor  # (n, 3, H, W)


class IndexJob:
    """Puts the parts together; builds none of them (see `mmsearch.pipelines.index.run_index` for that).

    Args:
        encoder: has `model_id`, `dim`, `preprocess(images)`, `encode_pixels(pixels)`, `encode_texts(texts)`.
        store: a `ProductStore` (`ensure_collection`, `existing_ids`, `upsert`).
        fetcher: an `ImageFetcher`; its thread pool also runs preprocessing.
        failure_log: where bad items go.
        batch_size: images per encode and per upsert (the most a crash can lose).
        prefetch: ready batches buffered ahead of the encoder.
        lookup_chunk: ids per `existing_ids` call.
        text_vectors: also store a title vector per product (hybrid search).
        progress: show a tqdm bar (stderr).
    """

    def __init__(
        self,
        encoder: Any,
        store: Any,
        fetcher: ImageFetcher,
        failure_log: FailureLog,
        *,
        batch_size: int = 32,
        prefetch: int = 4,
        lookup_chunk: int = 512,
        text_vectors: bool = True,
        progress: bool = True,
    ):
        for name, value in (
            ("batch_size", batch_size),
            ("prefetch", prefetch),
            ("lookup_chunk", lookup_chunk),
        ):
            if value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        self.encoder = encoder
        self.store = store
        self.fetcher = fetcher
        self.failures = failure_log
        self.batch_size = batch_size
        self.prefetch = prefetch
        self.lookup_chunk = lookup_chunk
        self.text_vectors = text_vectors
        self.progress = progress
        self._store_lock = threading.Lock()  # Milvus Lite clients are not known to be thread-safe
        self._count_lock = threading.Lock()
        self._titles = TitleVectors(encoder)

    # -- bookkeeping shared by both threads --------------------------------------------------------------------

    def _fail(self, report: IndexReport, bar: tqdm, id: str, where: str, reason: str) -> None:
        self.failures.record(id, where, reason)
        with self._count_lock:
            report.failed += 1
            if report.first_failure is None:
                report.first_failure = reason if reason.startswith(where) else f"{where}: {reason}"
        bar.update(1)

    # -- producer: lookup, fetch, decode, preprocess ----------------------------------------------------------

    def _new_products(self, products: Iterable[Product], report: IndexReport, bar: tqdm) -> Iterator[Product]:
        """Drop ids seen earlier in this run and ids already stored, looking them up in chunks."""
        seen: set[str] = set()
        chunk: list[Product] = []

        def flush() -> Iterator[Product]:
            t0 = time.perf_counter()
            with self._store_lock:
                existing = self.store.existing_ids([p.id for p in chunk])
            report.lookup_s += time.perf_counter() - t0
            if existing:
                with self._count_lock:
                    report.skipped_existing += len(existing)
                bar.update(len(existing))
            yield from (p for p in chunk if p.id not in existing)
            chunk.clear()

        source_error: Exception | None = None
        try:
            for product in products:
                if product.id in seen:
                    with self._count_lock:
                        report.duplicates += 1
                    bar.update(1)
                    continue
                seen.add(product.id)
                chunk.append(product)
                if len(chunk) >= self.lookup_chunk:
                    yield from flush()
        except Exception as e:  # e.g. a network drop mid-file: index what was read, then fail
            source_error = e
        if chunk:
            yield from flush()
        if source_error is not None:
            raise source_error

    def _prepare(self, product: Product) -> tuple[Product, torch.Tensor | None, str | None]:
        """Worker-thread task: (product, pixels (3, H, W) or None, failure reason or None)."""
        product, pixels, reason = prepare_image(self.fetcher, self.encoder.preprocess, product)
        return product, None if pixels is None else pixels[0], reason

    def _produce(
        self, source: Source, out: queue.Queue, stop: threading.Event, report: IndexReport, bar: tqdm
    ) -> None:
        def put(item: object) -> bool:
            while not stop.is_set():
                try:
                    out.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def on_source_error(id: str, where: str, reason: str) -> None:
            self._fail(report, bar, id, where, reason)

        try:
            products = self._new_products(source.products(on_error=on_source_error), report, bar)
            buf: list[tuple[Product, torch.Tensor]] = []
            t0 = time.perf_counter()
            for future in self.fetcher.map(self._prepare, products):
                if stop.is_set():
                    return
                product, pixels, reason = future.result()
                if reason is not None:
                    self._fail(report, bar, product.id, failure_where(product), reason)
                    continue
                buf.append((product, pixels))
                if len(buf) >= self.batch_size:
                    batch = _Batch([p for p, _ in buf], torch.stack([x for _, x in buf]))
                    report.read_s += time.perf_counter() - t0
                    buf = []
                    if not put(batch):
                        return
                    t0 = time.perf_counter()
            if buf:
                report.read_s += time.perf_counter() - t0
                put(_Batch([p for p, _ in buf], torch.stack([x for _, x in buf])))
            put(_DONE)
        except BaseException as e:  # hand any failure (bad source, bug) to the consumer to re-raise
            put(e)

    # -- consumer: encode and write ---------------------------------------------------------------------------

    def _title_vectors(self, products: list[Product], image_vectors: np.ndarray) -> np.ndarray:
        """(n, dim) title vectors; see `indexer.prepare.TitleVectors`."""
        return self._titles(products, image_vectors)

    def _write(self, batch: _Batch, report: IndexReport, with_text: bool) -> int:
        t0 = time.perf_counter()
        image_vectors = np.asarray(self.encoder.encode_pixels(batch.pixels), dtype=np.float32)  # (n, dim)
        text_vectors = self._title_vectors(batch.products, image_vectors) if with_text else None
        t1 = time.perf_counter()
        with self._store_lock:
            written = self.store.upsert(batch.products, image_vectors, text_vectors)
        t2 = time.perf_counter()
        report.encode_s += t1 - t0
        report.write_s += t2 - t1
        report.batches += 1
        log.info("upserted batch %d (%d rows)", report.batches, written)
        return written

    def run(self, source: Source) -> IndexReport:
        """Index every product of `source` not yet in the collection; returns the report."""
        report = IndexReport(
            source=getattr(source, "name", type(source).__name__),
            failure_log=str(self.failures.path) if self.failures.path else None,
        )
        start = time.perf_counter()
        self.store.ensure_collection(
            encoder_id=self.encoder.model_id, dim=self.encoder.dim, with_text_vector=self.text_vectors
        )
        with_text = bool(self.text_vectors and self.store.has_text_vector)
        batches: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        bar = tqdm(
            total=source.total,
            unit="img",
            desc="indexing",
            disable=not self.progress,
            dynamic_ncols=True,
            smoothing=0.1,
        )
        producer = threading.Thread(
            target=self._produce, args=(source, batches, stop, report, bar), name="mmsearch-index-producer"
        )
        producer.start()
        try:
            while True:
                t0 = time.perf_counter()
                item = batches.get()
                report.wait_s += time.perf_counter() - t0
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    raise item
                report.indexed += self._write(item, report, with_text)
                bar.update(len(item.products))
                bar.set_postfix(indexed=report.indexed, skipped=report.skipped_existing, failed=report.failed)
        finally:
            stop.set()
            producer.join()
            bar.close()
        if report.indexed:
            # On a server, seal the new segments so searches use the real index rather than the interim one.
            self.store.flush()
        # The final check reads at Strong consistency: it must see every row this run wrote.
        report.stored = self.store.count(consistency="Strong")
        report.elapsed_s = time.perf_counter() - start
        report.items_per_s = report.indexed / report.elapsed_s if report.elapsed_s > 0 else 0.0
        report.fetch_stats = dict(self.fetcher.stats)
        return report


__all__ = ["IndexJob", "IndexReport"]
