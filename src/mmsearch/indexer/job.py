"""The batch indexing job: source -> fetch/decode/preprocess -> batched encode -> upsert into Milvus.

Entry point: `IndexJob(encoder, store, fetcher, failure_log).run(source) -> IndexReport`.

- Ids already in the collection are skipped before any image is fetched or encoded (`store.existing_ids`).
- A background producer fetches, decodes and preprocesses images on the fetcher's thread pool and hands
  ready batches to the encoder through a bounded queue, so encoding overlaps with the network and decoding.
- Each batch is upserted as soon as it is encoded: ids are deterministic, so a crash or `kill -9` loses at most
  the batch in flight, and the next run picks up where this one stopped.
- Every record runs inside the fault boundary of `mmsearch.indexer.boundary`: whatever goes wrong with one
  record at any stage (read, parse, validate, resolve, fetch, decode, preprocess, encode, write) becomes one
  failure-log entry and the run goes on. A batched stage that raises (encoder forward, upsert) is split in halves
  until the bad records stand alone; the good ones are still written. Run-level errors (store unreachable, encoder
  mismatch, a source that cannot be read further) stop the run; so do `MAX_FAILED_BATCHES` batches in a row in
  which every record failed at encode or write, which means the model or the store is broken, not the data.
- One id met twice in a run: the later record wins (it is upserted after the earlier one); an id skipped because
  it is already stored stays skipped.

Per-record preparation and title vectors live in `indexer.prepare`, the fault boundary's pieces in
`indexer.boundary`; both are shared with the Ray engine.
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

from mmsearch.errors import ConfigError, IndexAbortedError
from mmsearch.indexer.boundary import Failure, run_isolated
from mmsearch.indexer.failures import FailureLog
from mmsearch.indexer.prepare import Ready, TitleVectors, failure_where, prepare_product
from mmsearch.indexer.sources import Source
from mmsearch.media.fetch import ImageFetcher
from mmsearch.models.base import SameSpaceTitles, TitleEncoder
from mmsearch.types import Product

log = logging.getLogger(__name__)

_DONE = object()
MAX_FAILED_BATCHES = (
    3  # whole batches failing at encode/write in a row: a broken model or store, not bad data
)


@dataclass
class IndexReport:
    """Counts and timings of one run. Stages overlap, so read_s + encode_s + write_s may exceed elapsed_s;
    `wait_s` is the time the encoder sat idle waiting for the next batch.

    `indexed` counts records written; an id met `1 + d` times is written each time (the later wins) and also
    counted in `duplicates`, so the collection grows by at most `indexed - duplicates`. `failed` counts
    failure-log entries (one per record or line).
    """

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
    engine: str = "local"
    # Ray engine: per stage, items, busy seconds summed over its workers, worker count, items/s per worker.
    stages: dict[str, dict[str, float]] = field(default_factory=dict)
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
            line += f", {self.duplicates} repeated ids (the later record wins)"
        line += f" in {self.elapsed_s:.1f} s, {self.items_per_s:.1f} items/s "
        if self.stages:
            parts = [
                f"{name} {st['items_per_s_per_worker']:.1f}/s x{st['workers']:g}"
                for name, st in self.stages.items()
            ]
            line += f"({self.engine}, per worker: {', '.join(parts)})"
        else:
            line += (
                f"(read {self.read_s:.1f} s, encode {self.encode_s:.1f} s, write {self.write_s:.1f} s, "
                f"encoder waited {self.wait_s:.1f} s)"
            )
        if self.stored is not None:
            line += f"; the collection holds {self.stored} products"
        return line

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class IndexJob:
    """Puts the parts together; builds none of them (`mmsearch.engine` does that).

    Args:
        encoder: has `model_id`, `dim`, `preprocess(images)`, `encode_pixels(pixels)`, `encode_texts(texts)`.
        store: a `ProductStore` (`ensure_collection`, `existing_ids`, `upsert`).
        fetcher: an `ImageFetcher`; its thread pool also runs preprocessing.
        failure_log: where bad items go.
        batch_size: images per encode and per upsert (the most a crash can lose).
        prefetch: ready batches buffered ahead of the encoder.
        lookup_chunk: ids per `existing_ids` call.
        text_vectors: also store a title vector per product (hybrid search).
        reindex: re-embed and overwrite ids already stored instead of skipping them.
        progress: show a tqdm bar (stderr).
        title_encoder: a `TitleEncoder` for the title vectors (default: the encoder's own text tower).
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
        reindex: bool = False,
        progress: bool = True,
        title_encoder: TitleEncoder | None = None,
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
        self.reindex = reindex
        self.progress = progress
        self._store_lock = threading.Lock()  # Milvus Lite clients are not known to be thread-safe
        self._count_lock = threading.Lock()
        self.title_encoder = title_encoder or SameSpaceTitles(encoder)
        self._titles = TitleVectors(self.title_encoder)

    # -- bookkeeping shared by both threads --------------------------------------------------------------------

    def _fail(self, report: IndexReport, bar: tqdm, failure: Failure) -> None:
        self.failures.record(failure.id, failure.where, failure.reason, stage=failure.stage)
        with self._count_lock:
            report.failed += 1
            if report.first_failure is None:
                reason, where = failure.reason, failure.where
                report.first_failure = reason if reason.startswith(where) else f"{where}: {reason}"
        bar.update(1)

    # -- producer: lookup, fetch, decode, preprocess ----------------------------------------------------------

    def _products(self, source: Source, report: IndexReport, bar: tqdm) -> Iterator[Product]:
        """The source's products; its failures (read, parse, validate, resolve) go straight to the log."""
        for item in source.stream():
            if isinstance(item, Failure):
                self._fail(report, bar, item)
            else:
                yield item

    def _new_products(self, products: Iterable[Product], report: IndexReport, bar: tqdm) -> Iterator[Product]:
        """Drop ids already stored (looked up in chunks); a repeated id is passed on again (the later wins)."""
        state: dict[str, str] = {}  # id -> "pending" (awaiting lookup) | "queued" | "skipped"
        chunk: list[Product] = []

        def flush() -> Iterator[Product]:
            lookup = list(dict.fromkeys(p.id for p in chunk if state[p.id] == "pending"))
            t0 = time.perf_counter()
            existing: set[str] = set()
            if lookup and not self.reindex:
                with self._store_lock:
                    existing = self.store.existing_ids(lookup)
            report.lookup_s += time.perf_counter() - t0
            for pid in lookup:
                state[pid] = "skipped" if pid in existing else "queued"
            for p in chunk:
                if state[p.id] == "skipped":
                    bar.update(1)
                else:
                    yield p
            with self._count_lock:
                report.skipped_existing += len(existing)
            chunk.clear()

        source_error: Exception | None = None
        try:
            for product in products:
                prior = state.get(product.id)
                if prior is not None:
                    with self._count_lock:
                        report.duplicates += 1
                    if prior == "skipped":
                        bar.update(1)
                        continue
                else:
                    state[product.id] = "pending"
                chunk.append(product)
                if len(chunk) >= self.lookup_chunk:
                    yield from flush()
        except Exception as e:  # e.g. a network drop mid-file: index what was read, then fail
            source_error = e
        if chunk:
            yield from flush()
        if source_error is not None:
            raise source_error

    def _prepare(self, product: Product) -> Ready | Failure:
        """Worker-thread task: resolve, fetch, decode, preprocess (see `prepare.prepare_product`)."""
        return prepare_product(product, self.fetcher, self.encoder.preprocess)

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

        try:
            products = self._new_products(self._products(source, report, bar), report, bar)
            buf: list[Ready] = []
            t0 = time.perf_counter()
            for future in self.fetcher.map(self._prepare, products):
                if stop.is_set():
                    return
                item = future.result()
                if isinstance(item, Failure):
                    self._fail(report, bar, item)
                    continue
                buf.append(item)
                if len(buf) >= self.batch_size:
                    report.read_s += time.perf_counter() - t0
                    batch, buf = buf, []
                    if not put(batch):
                        return
                    t0 = time.perf_counter()
            if buf:
                report.read_s += time.perf_counter() - t0
                put(buf)
            put(_DONE)
        except BaseException as e:  # hand any failure (bad source, bug) to the consumer to re-raise
            put(e)

    # -- consumer: encode and write ---------------------------------------------------------------------------

    def _title_vectors(
        self, products: list[Product], image_vectors: np.ndarray, errors: dict[int, Exception] | None = None
    ) -> np.ndarray:
        """(n, title_dim) title vectors; see `indexer.prepare.TitleVectors`."""
        return self._titles(products, image_vectors, errors)

    def _encode_images(self, items: list[Ready]) -> np.ndarray:
        pixels = torch.stack([item.pixels for item in items])  # (n, 3, S, S)
        vectors = np.asarray(self.encoder.encode_pixels(pixels), dtype=np.float32)  # (n, dim)
        if vectors.shape[0] != len(items) or not np.isfinite(vectors).all():
            raise ValueError(
                f"the encoder returned {vectors.shape} vectors with NaN/inf for {len(items)} images"
            )
        return vectors

    def _upsert(self, rows: list[tuple[Product, np.ndarray, np.ndarray | None]]) -> int:
        products = [p for p, _, _ in rows]
        image_vectors = np.stack([v for _, v, _ in rows])
        text_vectors = np.stack([t for _, _, t in rows]) if rows[0][2] is not None else None
        with self._store_lock:
            self.store.upsert(products, image_vectors, text_vectors)
        # Records written, whatever the store collapsed: a repeated id counts each time, whichever batch it is in.
        return len(rows)

    def _write(self, batch: list[Ready], report: IndexReport, bar: tqdm, with_text: bool) -> int:
        """Encode and upsert one batch, isolating the records that fail; returns the rows written."""
        t0 = time.perf_counter()
        done, failed = run_isolated(self._encode_images, batch)
        for item, err in failed:
            self._fail(report, bar, Failure.of("encode", item.product.id, failure_where(item.product), err))
        items = [item for chunk, _ in done for item in chunk]
        rows: list[tuple[Product, np.ndarray, np.ndarray | None]] = []
        if items:
            image_vectors = np.concatenate([vectors for _, vectors in done])
            products = [item.product for item in items]
            text_errors: dict[int, Exception] = {}
            text_vectors = self._title_vectors(products, image_vectors, text_errors) if with_text else None
            for i, product in enumerate(products):
                if i in text_errors:
                    reason = f"title embedding failed: {type(text_errors[i]).__name__}: {text_errors[i]}"
                    self._fail(report, bar, Failure.of("encode", product.id, failure_where(product), reason))
                    continue
                rows.append((product, image_vectors[i], None if text_vectors is None else text_vectors[i]))
        t1 = time.perf_counter()
        written = 0
        if rows:
            done_rows, failed_rows = run_isolated(self._upsert, rows)
            written = sum(n for _, n in done_rows)
            for (product, _, _), err in failed_rows:
                self._fail(report, bar, Failure.of("write", product.id, failure_where(product), err))
            bar.update(sum(len(chunk) for chunk, _ in done_rows))
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
            encoder_id=self.encoder.model_id,
            dim=self.encoder.dim,
            with_text_vector=self.text_vectors,
            title_encoder_id=self.title_encoder.model_id,
            title_dim=self.title_encoder.dim,
        )
        with_text = bool(self.text_vectors and self.store.has_text_vector)
        roots = getattr(source, "allowed_roots", None)
        if roots is not None and self.fetcher.allowed_roots is None:
            # Local images are read only under the catalogue's folders (the source knows which they are).
            self.fetcher.allowed_roots = list(roots)
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
        failed_in_a_row = 0
        try:
            while True:
                t0 = time.perf_counter()
                item = batches.get()
                report.wait_s += time.perf_counter() - t0
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    raise item
                written = self._write(item, report, bar, with_text)
                report.indexed += written
                failed_in_a_row = 0 if written else failed_in_a_row + 1
                if failed_in_a_row >= MAX_FAILED_BATCHES:
                    raise IndexAbortedError(
                        f"stopped: every record of the last {failed_in_a_row} batches failed at encode or write "
                        f"(last: {self.failures.last['reason'] if self.failures.last else 'unknown'}); "
                        "the model or the store is broken, not the data"
                    )
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
