"""The Ray engine's stages, as plain functions and classes that Ray Data runs in its workers.

Entry points (all used by `pipelines.ray_engine`): `read_shards` (a generator UDF: source shards -> product
rows, duplicates and skipped ids), `fetch_decode` (CPU tasks: fetch, decode and crop each image),
`EncodeStage` (an actor holding the encoder), `ServerWriteStage` and `BulkWriteStage` (actors writing to a
Milvus server or to bulk-import files). Each record goes through the same per-record functions as the local
engine (`indexer.prepare`), so both engines fail the same records for the same reasons.

Every row of every stage has the same columns (`COLUMNS`): `status` is "ok", "failed", "skipped" (already
stored) or "duplicate" (repeated id in the shard); only "ok" rows carry a product and, later, pixels and
vectors. Failure rows travel to the driver, which alone writes the failure log.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import numpy as np

from mmsearch.indexer.boundary import Failure, run_isolated
from mmsearch.indexer.prepare import TitleVectors, failure_where, prepare_product
from mmsearch.types import Product

COLUMNS = (
    "id",
    "status",
    "where",
    "reason",
    "stage",
    "product",
    "pixels",
    "image_vector",
    "text_vector",
    "file",
    "fetch_s",
    "encode_s",
    "write_s",
)
_STR = ("id", "status", "where", "reason", "stage", "product", "file")
_BYTES = ("pixels", "image_vector", "text_vector")
_TIMES = ("fetch_s", "encode_s", "write_s")
LOOKUP_CHUNK = 512

# Per-worker-process caches: a fetcher (HTTP pool, disk cache), store connections, the existing-id snapshot.
_cache: dict[Any, Any] = {}


class Rows:
    """Builds one batch in the shared column layout."""

    def __init__(self) -> None:
        self.cols: dict[str, list[Any]] = {c: [] for c in COLUMNS}

    def __len__(self) -> int:
        return len(self.cols["id"])

    def add(
        self, id: str, status: str, *, where: str = "", reason: str = "", stage: str = "", product: str = ""
    ) -> None:
        for name, value in (
            ("id", id),
            ("status", status),
            ("where", where),
            ("reason", reason),
            ("stage", stage),
        ):
            self.cols[name].append(value)
        self.cols["product"].append(product)
        self.cols["file"].append("")
        for name in _BYTES:
            self.cols[name].append(b"")
        for name in _TIMES:
            self.cols[name].append(0.0)

    def fail(self, failure: Failure) -> None:
        self.add(failure.id, "failed", where=failure.where, reason=failure.reason, stage=failure.stage)

    def take(self) -> dict[str, np.ndarray]:
        out = to_batch(self.cols)
        self.cols = {c: [] for c in COLUMNS}
        return out


def to_batch(cols: dict[str, list[Any]]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name in COLUMNS:
        values = cols[name]
        if name in _TIMES:
            out[name] = np.asarray(values, dtype=np.float64)
        else:
            arr = np.empty(len(values), dtype=object)
            arr[:] = values
            out[name] = arr
    return out


def product_to_json(product: Product) -> str:
    return json.dumps(asdict(product), ensure_ascii=False, default=str)


def product_from_json(text: str) -> Product:
    return Product(**json.loads(text))


# -- read ------------------------------------------------------------------------------------------------------


def _existing_ids(lookup: dict[str, Any] | None, ids: list[str]) -> set[str]:
    """Ids already stored: from the driver's snapshot (Lite) or by asking the server (worker writes)."""
    if lookup is None:
        return set()
    if "snapshot" in lookup:
        key = ("snapshot", lookup["snapshot"][0].hex())
        if key not in _cache:
            import ray

            _cache[key] = ray.get(lookup["snapshot"][0])
        return _cache[key] & set(ids)
    return _store(lookup["store"]).existing_ids(ids)


def _store(spec: dict[str, Any]):
    key = ("store", tuple(sorted(spec.items())))
    if key not in _cache:
        from mmsearch.store import ProductStore

        _cache[key] = ProductStore(spec["uri"], collection=spec["collection"], token=spec.get("token"))
    return _cache[key]


def read_shards(
    batch: dict[str, np.ndarray], *, shards: list[Any], lookup: dict[str, Any] | None, block_rows: int
) -> Iterator[dict[str, np.ndarray]]:
    """Stream each shard's products as rows, with the same rules as the local engine (`IndexJob`): source
    failures become "failed" rows; stored ids become "skipped"; a repeated id is passed on again (the later
    record wins) with reason "repeat", unless its first copy was skipped ("duplicate")."""
    for index in batch["shard"]:
        rows = Rows()
        state: dict[str, str] = {}  # id -> "pending" | "queued" | "skipped", as IndexJob._new_products
        pending: list[tuple[Product, bool]] = []

        def flush(pending: list[tuple[Product, bool]] = pending, rows: Rows = rows, state=state) -> None:
            lookup_ids = list(dict.fromkeys(p.id for p, _ in pending if state[p.id] == "pending"))
            existing = _existing_ids(lookup, lookup_ids) if lookup_ids else set()
            for pid in lookup_ids:
                state[pid] = "skipped" if pid in existing else "queued"
            reported: set[str] = set()
            for p, repeat in pending:
                if state[p.id] != "skipped":
                    rows.add(p.id, "ok", reason="repeat" if repeat else "", product=product_to_json(p))
                elif repeat:
                    rows.add(p.id, "duplicate")
                elif p.id not in reported:
                    reported.add(p.id)
                    rows.add(p.id, "skipped")
            pending.clear()

        source_error: Exception | None = None
        try:
            for item in shards[int(index)].stream():
                if isinstance(item, Failure):
                    rows.fail(item)
                    continue
                prior = state.get(item.id)
                if prior == "skipped":
                    rows.add(item.id, "duplicate")
                    continue
                if prior is None:
                    state[item.id] = "pending"
                pending.append((item, prior is not None))
                # Hand rows on in blocks of about one batch: a block is the unit a downstream task streams.
                if len(pending) >= min(LOOKUP_CHUNK, block_rows):
                    flush()
                if len(rows) >= block_rows:
                    yield rows.take()
        except Exception as e:  # e.g. a network drop mid-file: hand on what was read, then fail
            source_error = e
        flush()
        if len(rows):
            yield rows.take()
        if source_error is not None:
            raise source_error


# -- fetch and decode ------------------------------------------------------------------------------------------


def _fetcher(options: dict[str, Any]):
    key = ("fetcher", tuple(sorted((k, str(v)) for k, v in options.items())))
    if key not in _cache:
        from mmsearch.media.fetch import ImageFetcher

        _cache[key] = ImageFetcher(**options)
    return _cache[key]


def fetch_decode(
    batch: dict[str, np.ndarray], *, fetch: dict[str, Any], image_size: int
) -> dict[str, np.ndarray]:
    """Resolve, fetch, decode, validate and crop the images of the "ok" rows on the fetcher's threads, through
    the local engine's `prepare_product`: a failing image becomes a "failed" row with the same stage and reason.
    Pixels travel as (S, S, 3) uint8, a quarter of the float tensor; the encoder normalises them.
    """
    from mmsearch.models.preprocess import to_rgb_uint8

    t0 = time.perf_counter()
    cols = {name: list(batch[name]) for name in COLUMNS}
    todo = [i for i, s in enumerate(cols["status"]) if s == "ok"]
    fetcher = _fetcher(fetch)

    def crop(images: list[Any]) -> np.ndarray:
        return to_rgb_uint8(images[0], image_size)[None]  # (1, S, S, 3)

    def task(i: int):
        return i, prepare_product(product_from_json(cols["product"][i]), fetcher, crop)

    for future in fetcher.map(task, todo):
        i, item = future.result()
        if isinstance(item, Failure):
            _set_failed(cols, i, item)
        else:
            cols["pixels"][i] = np.ascontiguousarray(item.pixels).tobytes()
    share = (time.perf_counter() - t0) / max(1, len(todo))
    fetched = set(todo)
    cols["fetch_s"] = [share if i in fetched else 0.0 for i in range(len(cols["id"]))]
    return to_batch(cols)


def _set_failed(cols: dict[str, list[Any]], i: int, failure: Failure) -> None:
    cols["status"][i], cols["where"][i], cols["reason"][i] = "failed", failure.where, failure.reason
    cols["stage"][i], cols["product"][i], cols["pixels"][i] = failure.stage, "", b""


# -- encode ----------------------------------------------------------------------------------------------------


def normalise_uint8(rgb: np.ndarray):
    """(n, S, S, 3) uint8 -> (n, 3, S, S) float32, the same arithmetic as `models.preprocess.eval_transform`."""
    import torch

    from mmsearch.models.preprocess import CLIP_MEAN, CLIP_STD

    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=torch.float32).view(3, 1, 1)
    pixels = torch.from_numpy(rgb).permute(0, 3, 1, 2).float().div(255.0)  # (n, 3, S, S) in [0, 1]
    return pixels.sub(mean).div(std)


class EncodeStage:
    """An actor holding one encoder (GPU or CPU) and its title encoder: pixels -> image vectors, titles -> title
    vectors, inside the same fault boundary as the local engine (`run_isolated`, "encode" failures)."""

    def __init__(
        self, encoder_factory: Any, title_factory: Any, *, text_vectors: bool, threads: int | None = None
    ):
        import torch

        if threads:
            # Ray pins a CPU actor to one thread (OMP_NUM_THREADS=1); a CPU encoder wants the node's cores.
            torch.set_num_threads(threads)
        self.encoder = encoder_factory()
        self.text_vectors = text_vectors
        self.titles = TitleVectors(title_factory(self.encoder) if title_factory else self.encoder)

    def _encode(self, rgb: list[np.ndarray]) -> np.ndarray:
        vectors = np.asarray(self.encoder.encode_pixels(normalise_uint8(np.stack(rgb))), dtype=np.float32)
        if vectors.shape[0] != len(rgb) or not np.isfinite(vectors).all():
            raise ValueError(
                f"the encoder returned {vectors.shape} vectors with NaN/inf for {len(rgb)} images"
            )
        return vectors

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        cols = {name: list(batch[name]) for name in COLUMNS}
        ok = [i for i, s in enumerate(cols["status"]) if s == "ok"]
        size = self.encoder.image_size
        images = {i: np.frombuffer(cols["pixels"][i], dtype=np.uint8).reshape(size, size, 3) for i in ok}
        done, failed = run_isolated(lambda rows: self._encode([images[i] for i in rows]), ok)
        for i, err in failed:
            product = product_from_json(cols["product"][i])
            _set_failed(cols, i, Failure.of("encode", product.id, failure_where(product), err))
        encoded = [i for rows, _ in done for i in rows]
        if encoded:
            image_vectors = np.concatenate([vectors for _, vectors in done])
            text_vectors = None
            errors: dict[int, Exception] = {}
            if self.text_vectors:
                products = [product_from_json(cols["product"][i]) for i in encoded]
                text_vectors = np.asarray(self.titles(products, image_vectors, errors), dtype=np.float32)
            share = (time.perf_counter() - t0) / len(encoded)
            for j, i in enumerate(encoded):
                cols["encode_s"][i] = share
                if j in errors:
                    product = product_from_json(cols["product"][i])
                    reason = f"title embedding failed: {type(errors[j]).__name__}: {errors[j]}"
                    _set_failed(cols, i, Failure.of("encode", product.id, failure_where(product), reason))
                    continue
                cols["image_vector"][i] = image_vectors[j].tobytes()
                if text_vectors is not None:
                    cols["text_vector"][i] = text_vectors[j].tobytes()
        cols["pixels"] = [b""] * len(cols["id"])  # nothing downstream needs them
        return to_batch(cols)


def write_isolated(cols: dict[str, list[Any]], rows: list[int], write: Any) -> list[int]:
    """Write the given "ok" rows with `write(products, image, text)`, bisecting to fail bad rows alone
    ("write" failures); returns the rows written."""

    def upsert(chunk: list[int]) -> int:
        products, image, text = decode_vectors(cols, chunk)
        write(products, image, text)
        return len(chunk)

    done, failed = run_isolated(upsert, rows)
    for i, err in failed:
        product = product_from_json(cols["product"][i])
        _set_failed(cols, i, Failure.of("write", product.id, failure_where(product), err))
    return [i for chunk, _ in done for i in chunk]


def decode_vectors(
    cols: dict[str, Any], rows: list[int]
) -> tuple[list[Product], np.ndarray, np.ndarray | None]:
    """The products and (n, dim) vectors of the given "ok" rows, as `ProductStore.upsert` takes them."""
    products = [product_from_json(cols["product"][i]) for i in rows]
    image = np.stack([np.frombuffer(cols["image_vector"][i], dtype=np.float32) for i in rows])
    has_text = rows and len(cols["text_vector"][rows[0]]) > 0
    text = (
        np.stack([np.frombuffer(cols["text_vector"][i], dtype=np.float32) for i in rows])
        if has_text
        else None
    )
    return products, image, text


# -- write -----------------------------------------------------------------------------------------------------


class ServerWriteStage:
    """An actor upserting "ok" rows into a Milvus server; passes on only ids, statuses and failures."""

    def __init__(self, store: dict[str, Any]):
        self.store = _store(store)
        self.with_text = self.store.has_text_vector

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        cols = {name: list(batch[name]) for name in COLUMNS}
        ok = [i for i, s in enumerate(cols["status"]) if s == "ok"]
        if ok:
            written = write_isolated(
                cols, ok, lambda p, image, text: self.store.upsert(p, image, text if self.with_text else None)
            )
            share = (time.perf_counter() - t0) / len(ok)
            for i in written:
                cols["write_s"][i] = share
        return _slim(cols)


class BulkWriteStage:
    """An actor writing "ok" rows to one parquet file per batch for Milvus bulk import; rows name their file
    as `path#row` so the driver can drop repeated ids before the import."""

    def __init__(self, store: dict[str, Any], out_dir: str):
        from mmsearch.store.bulk import BulkFileWriter

        self.writer = BulkFileWriter(store["uri"], store["collection"], out_dir, token=store.get("token"))
        self.store = _store(store)  # builds the rows exactly as upserts would
        self.with_text = self.store.has_text_vector

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        cols = {name: list(batch[name]) for name in COLUMNS}
        ok = [i for i, s in enumerate(cols["status"]) if s == "ok"]
        if ok:
            products, image, text = decode_vectors(cols, ok)
            # One row per "ok" row: repeated ids within the batch are resolved by the driver, not here.
            rows = [
                self.store.rows(
                    [p], image[j : j + 1], None if text is None or not self.with_text else text[j : j + 1]
                )[0]
                for j, p in enumerate(products)
            ]
            (path,) = self.writer.write(rows)
            share = (time.perf_counter() - t0) / len(ok)
            for row, i in enumerate(ok):
                cols["file"][i] = f"{path}#{row}"
                cols["write_s"][i] = share
        return _slim(cols)


def _slim(cols: dict[str, list[Any]]) -> dict[str, np.ndarray]:
    """Drop the heavy columns once written: only ids, statuses, reasons and timings go back to the driver."""
    n = len(cols["id"])
    cols["product"] = [""] * n
    for name in _BYTES:
        cols[name] = [b""] * n
    return to_batch(cols)


def default_threads(actors: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(1, actors))


__all__ = [
    "COLUMNS",
    "BulkWriteStage",
    "EncodeStage",
    "Rows",
    "ServerWriteStage",
    "decode_vectors",
    "default_threads",
    "fetch_decode",
    "normalise_uint8",
    "product_from_json",
    "product_to_json",
    "read_shards",
    "write_isolated",
]
