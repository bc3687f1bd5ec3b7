"""`ProductStore`: the one place that talks to Milvus (Lite file or server), in product and `Hit` terms.

Entry points: `ProductStore(uri, collection=...)` and `ProductStore.from_settings(settings)`. Callers never see
pymilvus types: vectors go in as numpy arrays, results come out as `mmsearch.types.Hit`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import math
import re
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import grpc
import numpy as np
from pymilvus import AnnSearchRequest, MilvusClient, MilvusException, RRFRanker, WeightedRanker

from mmsearch.errors import (
    CollectionNotFoundError,
    EncoderMismatchError,
    InvalidQueryError,
    StoreError,
    StoreLockedError,
    StoreUnavailableError,
)
from mmsearch.limits import MAX_K, MAX_RRF_K
from mmsearch.store.filters import ProductFilter, ids_expr
from mmsearch.store.schema import (
    DEFAULT_INDEX_TYPE,
    ID,
    ID_MAX_BYTES,
    IMAGE_VECTOR,
    MAX_DIM,
    MISSING,
    SCALAR_FIELDS,
    TEXT_VECTOR,
    VARCHAR_MAX_BYTES,
    VECTOR_FIELDS,
    EncoderStamp,
    IndexConfig,
    build_schema,
    vector_dim,
)
from mmsearch.types import Hit, Product

log = logging.getLogger(__name__)

SERVER_SCHEMES = ("http://", "https://", "tcp://", "grpc://")
_UPSERT_BATCH = 256  # rows per request: 256 x 2 x 1024-d float32 is 2 MiB, well under gRPC's 64 MiB cap
_LOOKUP_BATCH = 500  # ids per `id in [...]` expression
_COLLECTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")
_CONNECT_TIMEOUT_S = 10.0
# Lite only: a filtered search matching at most this many rows is scored exactly (see _exact_search_if_selective).
EXACT_FILTER_MAX_ROWS = 1000
LITE_WRITE_TIMEOUT_S = 900.0
LITE_MIN_EF = 1024
# Milvus consistency levels a store may read at. Bounded reads see writes older than the server's
# `common.gracefulTime` (5 s by default); Session also sees this process's own writes; Strong waits for the
# server's next time tick (300-400 ms per search on the loopback 2.3.5 server, benchmarks/milvus_store.py).
# Milvus Lite accepts every level and always reads its own writes.
CONSISTENCY_LEVELS = ("Strong", "Session", "Bounded", "Eventually")
DEFAULT_CONSISTENCY = "Bounded"


def is_server_uri(uri: str) -> bool:
    return uri.startswith(SERVER_SCHEMES)


def _lite_lock_files(path: Path) -> list[Path]:
    # milvus-lite 3.x: the .db is a directory holding LOCK; 2.5.x: a file beside a hidden `.name.lock`.
    return [path / "LOCK", path.parent / f".{path.name}.lock"]


def _lock_holder(path: Path) -> Path | None:
    """The lock file of Milvus Lite database `path` if another process holds it, else None."""
    for lock in _lite_lock_files(path):
        if not lock.is_file():
            continue
        # 3.x takes a flock(), 2.5.x a POSIX lockf(); the two do not see each other, so probe both.
        with open(lock, "ab") as fh:
            for take, release in ((fcntl.flock, fcntl.LOCK_UN), (fcntl.lockf, fcntl.LOCK_UN)):
                try:
                    take(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as err:
                    if err.errno in (errno.EAGAIN, errno.EACCES):
                        return lock
                    continue
                take(fh, release)
    return None


@contextlib.contextmanager
def _quiet(*names: str) -> Iterator[None]:
    """Silence library loggers (and their children) that print tracebacks for failures we report in one line."""
    loggers = [logging.getLogger(n) for n in names]
    saved = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for lg, level in zip(loggers, saved, strict=True):
            lg.setLevel(level)


# Milvus Lite keeps a database open (and locked) for the whole process, even after its clients close. We count
# our stores per path and release the database when the last one closes, so another process can open it.
_lite_open: dict[str, int] = {}
_lite_guard = threading.Lock()


def _release_lite(path: str) -> None:
    with _lite_guard:
        _lite_open[path] -= 1
        if _lite_open[path] > 0:
            return
        del _lite_open[path]
    with contextlib.suppress(Exception), _quiet("milvus_lite"):
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(path)


def _truncate_utf8(text: str, max_bytes: int) -> str:
    raw = text.encode("utf-8")
    return text if len(raw) <= max_bytes else raw[:max_bytes].decode("utf-8", errors="ignore")


def _number(value: float | int | None, *, integer: bool = False) -> float | int:
    if value is None:
        return MISSING
    number = int(value) if integer else float(value)
    return number if math.isfinite(number) and number >= 0 else MISSING


def _known(value: Any) -> Any:
    return None if value is None or value < 0 else value


def product_to_row(product: Product) -> dict[str, Any]:
    """The Milvus row (without vectors) for one product. Unknown numbers become the MISSING sentinel."""
    if not isinstance(product.id, str) or not product.id:
        raise ValueError(f"product id must be a non-empty string, got {product.id!r}")
    if len(product.id.encode("utf-8")) > ID_MAX_BYTES:
        raise ValueError(f"product id {product.id[:60]!r}... is longer than {ID_MAX_BYTES} UTF-8 bytes")
    try:
        json.dumps(product.meta)
    except (TypeError, ValueError) as err:
        raise ValueError(f"product {product.id!r}: meta is not JSON-serialisable ({err})") from None
    row: dict[str, Any] = {ID: product.id}
    for name, limit in VARCHAR_MAX_BYTES.items():
        row[name] = _truncate_utf8(getattr(product, name) or "", limit)
    row["price"] = _number(product.price)
    row["average_rating"] = _number(product.average_rating)
    row["rating_number"] = _number(product.rating_number, integer=True)
    row["meta"] = dict(product.meta)
    return row


def row_to_hit(row: dict[str, Any], score: float) -> Hit:
    """The single place a Milvus row becomes a `Hit`; the MISSING sentinel maps back to None."""
    entity = row.get("entity", row)
    rating_number = _known(entity.get("rating_number"))
    return Hit(
        id=str(row.get(ID, entity.get(ID))),
        score=float(score),
        title=entity.get("title") or "",
        main_category=entity.get("main_category") or "",
        price=_known(entity.get("price")),
        average_rating=_known(entity.get("average_rating")),
        rating_number=None if rating_number is None else int(rating_number),
        parent_asin=entity.get("parent_asin") or "",
        image_url=entity.get("image_url") or "",
        meta=dict(entity.get("meta") or {}),
    )


def _as_matrix(name: str, value: Any, rows: int, dim: int) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float32)
    if arr.ndim != 2 or arr.shape != (rows, dim):
        raise ValueError(f"{name} must have shape ({rows}, {dim}), got {tuple(arr.shape)}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _one_query(name: str, value: Any, dim: int) -> np.ndarray:
    """One query vector, (dim,) or (1, dim), as a (1, dim) batch."""
    arr = np.asarray(value, dtype=np.float32)
    if arr.shape not in ((dim,), (1, dim)):
        raise InvalidQueryError(f"{name} must have shape ({dim},), got {tuple(np.shape(value))}")
    return arr.reshape(1, dim)


def _as_queries(name: str, value: Any, dim: int) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise InvalidQueryError(f"{name} must have shape (nq, {dim}), got {tuple(np.shape(value))}")
    if not np.isfinite(arr).all():
        raise InvalidQueryError(f"{name} contains NaN or infinite values")
    return arr


def _ranker(ranker: str, weights: tuple[float, float], rrf_k: int) -> WeightedRanker | RRFRanker:
    if ranker == "weighted":
        if len(weights) != 2 or not all(isinstance(w, int | float) and math.isfinite(w) for w in weights):
            raise InvalidQueryError(f"weights must be two finite numbers, got {weights!r}")
        return WeightedRanker(float(weights[0]), float(weights[1]))
    if ranker == "rrf":
        if isinstance(rrf_k, bool) or not isinstance(rrf_k, int) or not 1 <= rrf_k <= MAX_RRF_K:
            raise InvalidQueryError(f"rrf_k must be an integer between 1 and {MAX_RRF_K}, got {rrf_k!r}")
        return RRFRanker(rrf_k)
    raise InvalidQueryError(f"ranker must be 'weighted' or 'rrf', got {ranker!r}")


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= MAX_K:
        raise InvalidQueryError(f"k must be an integer between 1 and {MAX_K}, got {k!r}")
    return int(k)


def _check_consistency(level: str) -> str:
    if level not in CONSISTENCY_LEVELS:
        raise StoreError(f"consistency must be one of {', '.join(CONSISTENCY_LEVELS)}, got {level!r}")
    return level


def _server_version_tuple(version: str) -> tuple[int, int] | None:
    match = re.match(r"v?(\d+)\.(\d+)", version)
    return (int(match.group(1)), int(match.group(2))) if match else None


class ProductStore:
    """Product images and their metadata in one Milvus collection.

    `uri` is a Milvus Lite path (default `./mmsearch.db`, one process at a time) or `http://host:19530` for a
    server. `index_type` is one of `schema.INDEX_DEFAULTS` and only matters when the collection is created.
    `consistency` is the level reads use unless a call names its own (see `CONSISTENCY_LEVELS`): Bounded by
    default, so a search may miss rows written in the last few seconds (5 s on a default server); pass
    "Session" to read this process's own writes, "Strong" where a read must see every write made so far.
    """

    def __init__(
        self,
        uri: str = "./mmsearch.db",
        *,
        collection: str = "amazon_products",
        token: str | None = None,
        timeout: float = 30.0,
        index_type: str = DEFAULT_INDEX_TYPE,
        consistency: str = DEFAULT_CONSISTENCY,
    ):
        if not isinstance(collection, str) or not _COLLECTION_NAME.fullmatch(collection):
            raise StoreError(
                f"collection name {collection!r} is invalid: expected letters, digits and underscores, "
                "starting with a letter or underscore, at most 255 characters"
            )
        if not timeout > 0:
            raise StoreError(f"timeout must be positive, got {timeout!r}")
        self.uri = uri
        self.collection = collection
        self.consistency = _check_consistency(consistency)
        self.timeout = float(timeout)
        self.index = IndexConfig.for_type(index_type)
        self.is_server = is_server_uri(uri)
        self._closed = False
        self._lite_path: str | None = None
        self._client = self._connect_server(token) if self.is_server else self._open_lite()
        self._stamp: EncoderStamp | None = None
        self._loaded = False

    @classmethod
    def from_settings(cls, settings) -> ProductStore:
        """The store named by `settings.milvus_uri`, `settings.milvus_token` and `settings.collection`."""
        return cls(
            settings.milvus_uri,
            collection=settings.collection,
            token=settings.milvus_token,
            consistency=getattr(settings, "milvus_consistency", DEFAULT_CONSISTENCY),
        )

    # -- connection ---------------------------------------------------------------------------------------

    def _connect_server(self, token: str | None) -> MilvusClient:
        try:
            with _quiet("pymilvus"):
                return MilvusClient(
                    self.uri, token=token or "", timeout=min(self.timeout, _CONNECT_TIMEOUT_S), dedicated=True
                )
        except MilvusException as err:
            raise StoreUnavailableError(
                f"cannot reach the Milvus server at {self.uri}: {err.message}. Start the server "
                "(see compose.yaml) or point MMSEARCH_MILVUS_URI / --milvus-uri at a reachable one."
            ) from None

    def _open_lite(self) -> MilvusClient:
        if not self.uri.endswith(".db"):
            raise StoreError(
                f"Milvus Lite path {self.uri!r} must end with .db; for a server use a URI like http://host:19530"
            )
        path = Path(self.uri).expanduser().resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        with _lite_guard:
            ours = str(path) in _lite_open
        # Probe before opening: a failed open can disturb the evidence (milvus-lite 2.5 recreates its lock file).
        # Never probe a database this process holds: that would trip over our own lock.
        lock = None if ours else _lock_holder(path)
        if lock is None:
            try:
                with _quiet("pymilvus", "milvus_lite", "grpc", "root"):
                    client = MilvusClient(str(path), timeout=self.timeout, dedicated=True)
            except MilvusException as err:
                lock = _lock_holder(path)
                if lock is None:
                    raise StoreError(f"cannot open Milvus Lite database {path}: {err.message}") from None
        if lock is not None:
            raise StoreLockedError(
                f"Milvus Lite database {path} is in use by another process (lock file {lock}). "
                "Milvus Lite allows one process per database: stop the other process, or serve the "
                f"database with `milvus-lite server --data-dir {path} --host 127.0.0.1 --port 19530` and "
                "use server mode: MMSEARCH_MILVUS_URI=http://127.0.0.1:19530"
            )
        with _lite_guard:
            _lite_open[str(path)] = _lite_open.get(str(path), 0) + 1
        self._lite_path = str(path)
        return client

    @contextlib.contextmanager
    def _call(self, what: str) -> Iterator[None]:
        """Turn pymilvus failures into one-line `StoreError`s that name the operation and the collection."""
        try:
            yield
        except MilvusException as err:
            message = f"Milvus {what} on collection {self.collection!r} at {self.uri} failed: {err.message}"
            if err.code in (2, 503) or "unavailable" in str(err.message).lower():
                raise StoreUnavailableError(message) from None
            raise StoreError(message) from None
        except grpc.RpcError as err:  # pymilvus lets some transport errors through unwrapped
            code = err.code() if callable(getattr(err, "code", None)) else None
            detail = err.details() if callable(getattr(err, "details", None)) else str(err)
            message = (
                f"Milvus {what} on collection {self.collection!r} at {self.uri} failed: {code}: {detail}"
            )
            raise StoreUnavailableError(message) from None

    # -- collection lifecycle -----------------------------------------------------------------------------

    def _exists(self) -> bool:
        with self._call("has_collection"):
            return self._client.has_collection(self.collection, timeout=self.timeout)

    def _describe(self) -> dict[str, Any]:
        with self._call("describe_collection"):
            return self._client.describe_collection(self.collection, timeout=self.timeout)

    def _supports_multi_vector(self) -> bool:
        """Milvus < 2.4 servers have one vector field per collection; every Lite build we support has more."""
        if not self.is_server:
            return True
        with self._call("get_server_version"):
            version = self._client.get_server_version(timeout=self.timeout)
        parsed = _server_version_tuple(version)
        return parsed is None or parsed >= (2, 4)

    def _read_stamp(self) -> EncoderStamp:
        described = self._describe()
        stamp = EncoderStamp.from_collection(described)
        if stamp is None:
            raise StoreError(
                f"collection {self.collection!r} at {self.uri} was not created by mmsearch (it has no encoder "
                "stamp); choose another collection name"
            )
        actual = vector_dim(described, IMAGE_VECTOR)
        if actual != stamp.dim:
            raise StoreError(
                f"collection {self.collection!r} at {self.uri}: {IMAGE_VECTOR} has dim {actual} but its stamp "
                f"says {stamp.dim}"
            )
        text_dim = vector_dim(described, TEXT_VECTOR)
        if text_dim is not None and text_dim != stamp.title_dim:
            raise StoreError(
                f"collection {self.collection!r} at {self.uri}: {TEXT_VECTOR} has dim {text_dim} but its stamp "
                f"says {stamp.title_dim}"
            )
        return stamp

    def _index_of_collection(self) -> IndexConfig:
        """Search with the parameters of the index the collection has, whatever this store was opened with."""
        with self._call("describe_index"):
            described = self._client.describe_index(self.collection, IMAGE_VECTOR, timeout=self.timeout) or {}
        try:
            return IndexConfig.for_type(str(described.get("index_type", "")))
        except ValueError:
            return IndexConfig(str(described.get("index_type", "unknown")))  # e.g. AUTOINDEX: server defaults

    def _verify(self, wanted: EncoderStamp) -> EncoderStamp:
        stamp = self._read_stamp()
        if (stamp.encoder_id, stamp.dim) != (wanted.encoder_id, wanted.dim):
            raise EncoderMismatchError(
                f"collection {self.collection!r} at {self.uri} was built with encoder {stamp.encoder_id!r} "
                f"(dim {stamp.dim}), but this run uses encoder {wanted.encoder_id!r} (dim {wanted.dim}). Use the "
                "same encoder, or index into another collection (--collection / MMSEARCH_COLLECTION)."
            )
        if stamp.text_vector and (stamp.title_encoder_id, stamp.title_dim) != (
            wanted.title_encoder_id,
            wanted.title_dim,
        ):
            raise EncoderMismatchError(
                f"collection {self.collection!r} at {self.uri} has title vectors from {stamp.title_encoder_id!r} "
                f"(dim {stamp.title_dim}), but this run uses title encoder {wanted.title_encoder_id!r} (dim "
                f"{wanted.title_dim}). Use the same --title-encoder, or index into another collection."
            )
        return stamp

    @property
    def _slow_timeout(self) -> float:
        # Milvus Lite flushes and indexes a full memtable inside the write that fills it, and builds missing
        # indexes on load: over 30 s for an HNSW segment of ~40k 768-d rows on 2 cores. Give those calls longer.
        return self.timeout if self.is_server else max(self.timeout, LITE_WRITE_TIMEOUT_S)

    def _load(self) -> None:
        # A reopened Lite database and a fresh server collection both need an explicit load before search.
        if not self._loaded:
            with self._call("load_collection"):
                self._client.load_collection(self.collection, timeout=self._slow_timeout)
            self._loaded = True
            self.index = self._index_of_collection()

    def ensure_collection(
        self,
        *,
        encoder_id: str,
        dim: int,
        with_text_vector: bool = True,
        title_encoder_id: str | None = None,
        title_dim: int | None = None,
    ) -> None:
        """Create the collection for this encoder, or check that an existing one was built with it.

        `title_encoder_id` / `title_dim` name the model behind `text_vector` (None: the image encoder itself).
        On a server without multi-vector collections (Milvus < 2.4) the title vector is left out; hybrid
        search then raises a `StoreError` saying so. Raises `EncoderMismatchError` naming both encoders.
        """
        for name, value in (("encoder_id", encoder_id), ("title_encoder_id", title_encoder_id or encoder_id)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a non-empty string, got {value!r}")
        for name, value in (("dim", dim), ("title_dim", title_dim or dim)):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_DIM:
                raise ValueError(f"{name} must be an integer between 1 and {MAX_DIM}, got {value!r}")
        wanted = EncoderStamp(encoder_id, dim, with_text_vector, title_encoder_id, title_dim)
        if self._exists():
            self._stamp = self._verify(wanted)
            self._load()
            return
        text_vector = with_text_vector and self._supports_multi_vector()
        if with_text_vector and not text_vector:
            log.warning(
                "Milvus at %s has no multi-vector collections (< 2.4); indexing without text_vector", self.uri
            )
        stamp = EncoderStamp(encoder_id, dim, text_vector, title_encoder_id, title_dim)
        index_params = self._client.prepare_index_params()
        for name in VECTOR_FIELDS if text_vector else (IMAGE_VECTOR,):
            index_params.add_index(
                field_name=name,
                index_type=self.index.index_type,
                metric_type="COSINE",
                params=self.index.build,
            )
        with self._call("create_collection"):
            self._client.create_collection(
                self.collection,
                schema=build_schema(
                    dim,
                    with_text_vector=text_vector,
                    description=stamp.description(),
                    text_dim=stamp.title_dim,
                ),
                consistency_level="Strong",  # servers default to Bounded: reads right after writes would miss rows
                properties=stamp.properties(),
                timeout=self.timeout,
            )
            # sync=False: the collection is empty, and waiting polls AllocTimestamp, which Milvus Lite lacks.
            self._client.create_index(self.collection, index_params, timeout=self.timeout, sync=False)
        self._loaded = False
        self._load()
        self._stamp = stamp

    def check_encoder(
        self, *, encoder_id: str, dim: int, title_encoder_id: str | None = None, title_dim: int | None = None
    ) -> None:
        """At query time: the collection must exist and have been built with these encoders."""
        if not self._exists():
            raise CollectionNotFoundError(
                f"collection {self.collection!r} does not exist at {self.uri}; run `mmsearch index` first"
            )
        self._stamp = self._verify(EncoderStamp(encoder_id, dim, True, title_encoder_id, title_dim))
        self._load()

    def _ready(self) -> EncoderStamp:
        if self._stamp is None:
            if not self._exists():
                raise CollectionNotFoundError(
                    f"collection {self.collection!r} does not exist at {self.uri}; run `mmsearch index` first"
                )
            self._stamp = self._read_stamp()
        self._load()
        return self._stamp

    @property
    def has_text_vector(self) -> bool:
        return self._ready().text_vector

    # -- writes and lookups -------------------------------------------------------------------------------

    def upsert(
        self, products: Sequence[Product], image_vectors: np.ndarray, text_vectors: np.ndarray | None = None
    ) -> int:
        """Insert or replace products by id (idempotent); returns the number of rows written.

        `image_vectors` and `text_vectors` have shape (len(products), dim). `text_vectors` is required when the
        collection has a title vector and ignored when it has none. Within one call the last duplicate id wins.
        """
        stamp = self._ready()
        n = len(products)
        images = _as_matrix("image_vectors", image_vectors, n, stamp.dim)
        texts = None
        if stamp.text_vector:
            if text_vectors is None:
                raise ValueError(
                    f"text_vectors is required: collection {self.collection!r} has a {TEXT_VECTOR} field"
                )
            texts = _as_matrix("text_vectors", text_vectors, n, int(stamp.title_dim))
        rows: dict[str, dict[str, Any]] = {}
        for i, product in enumerate(products):
            row = product_to_row(product)
            row[IMAGE_VECTOR] = images[i].tolist()
            if texts is not None:
                row[TEXT_VECTOR] = texts[i].tolist()
            rows.pop(product.id, None)  # keep the last occurrence, in its position
            rows[product.id] = row
        batch = list(rows.values())
        for start in range(0, len(batch), _UPSERT_BATCH):
            with self._call("upsert"):
                self._client.upsert(
                    self.collection, batch[start : start + _UPSERT_BATCH], timeout=self._slow_timeout
                )
        return len(batch)

    def flush(self) -> None:
        """Persist buffered writes and seal segments; call at the end of an indexing run.

        On a server, rows in unsealed (growing) segments are searched through a coarse interim index (Milvus
        2.3: recall@10 0.92 at 10k rows in benchmarks/milvus_store.py); sealing lets the HNSW/IVF index take
        over. Milvus Lite persists on its own schedule and on close.
        """
        self._ready()
        if self.is_server:
            with self._call("flush"):
                self._client.flush(self.collection, timeout=self._slow_timeout)

    def index_progress(self) -> dict[str, int]:
        """Rows covered by the image_vector index so far: {"indexed_rows", "total_rows", "pending_index_rows"}."""
        self._ready()
        with self._call("describe_index"):
            described = self._client.describe_index(self.collection, IMAGE_VECTOR, timeout=self.timeout) or {}
        return {
            key: int(described.get(key, 0)) for key in ("indexed_rows", "total_rows", "pending_index_rows")
        }

    def _level(self, consistency: str | None) -> str:
        return self.consistency if consistency is None else _check_consistency(consistency)

    def _query(self, expr: str, fields: list[str], consistency: str | None = None) -> list[dict[str, Any]]:
        with self._call("query"):
            return self._client.query(
                self.collection,
                filter=expr,
                output_fields=fields,
                timeout=self.timeout,
                consistency_level=self._level(consistency),
            )

    def existing_ids(self, ids: Sequence[str], *, consistency: str | None = None) -> set[str]:
        """The subset of `ids` already stored (used to skip work before encoding)."""
        self._ready()
        wanted = list(dict.fromkeys(ids))
        found: set[str] = set()
        for start in range(0, len(wanted), _LOOKUP_BATCH):
            rows = self._query(ids_expr(wanted[start : start + _LOOKUP_BATCH]), [ID], consistency)
            found.update(str(r[ID]) for r in rows)
        return found

    def get(self, ids: Sequence[str], *, consistency: str | None = None) -> list[Hit]:
        """Stored products by id, in the order asked (missing ids are left out); scores are NaN."""
        self._ready()
        wanted = list(dict.fromkeys(ids))
        by_id: dict[str, Hit] = {}
        fields = [ID, *SCALAR_FIELDS]
        for start in range(0, len(wanted), _LOOKUP_BATCH):
            for row in self._query(ids_expr(wanted[start : start + _LOOKUP_BATCH]), fields, consistency):
                hit = row_to_hit(row, math.nan)
                by_id[hit.id] = hit
        return [by_id[i] for i in wanted if i in by_id]

    def get_vectors(
        self, ids: Sequence[str], *, field: str = IMAGE_VECTOR, consistency: str | None = None
    ) -> dict[str, np.ndarray]:
        """Stored `field` vectors by id (missing ids are left out): queries by an indexed product."""
        if field not in VECTOR_FIELDS:
            raise InvalidQueryError(f"field must be one of {list(VECTOR_FIELDS)}, got {field!r}")
        self._ready()
        wanted = list(dict.fromkeys(ids))
        out: dict[str, np.ndarray] = {}
        for start in range(0, len(wanted), _LOOKUP_BATCH):
            for row in self._query(ids_expr(wanted[start : start + _LOOKUP_BATCH]), [ID, field], consistency):
                out[str(row[ID])] = np.asarray(row[field], dtype=np.float32)
        return out

    def count(self, *, consistency: str | None = None) -> int:
        """Live rows (deleted and overwritten rows excluded, unlike the server's segment statistics)."""
        self._ready()
        rows = self._query("", ["count(*)"], consistency)
        return int(rows[0]["count(*)"]) if rows else 0

    # -- search -------------------------------------------------------------------------------------------

    def _filter_expr(self, filters: ProductFilter | None) -> str:
        if filters is None:
            return ""
        if not isinstance(filters, ProductFilter):
            raise InvalidQueryError(f"filters must be a ProductFilter, got {type(filters).__name__}")
        return filters.to_expr()

    def search(
        self,
        vector: np.ndarray,
        *,
        k: int = 10,
        filters: ProductFilter | None = None,
        field: str = IMAGE_VECTOR,
        consistency: str | None = None,
    ) -> list[Hit]:
        """Top-k products by COSINE similarity of `field` to `vector` (shape (dim,)), best first."""
        k = _check_k(k)
        stamp = self._ready()
        query = _one_query("vector", vector, int(stamp.title_dim) if field == TEXT_VECTOR else stamp.dim)
        return self.search_batch(query, k=k, filters=filters, field=field, consistency=consistency)[0]

    def search_batch(
        self,
        vectors: np.ndarray,
        *,
        k: int = 10,
        filters: ProductFilter | None = None,
        field: str = IMAGE_VECTOR,
        consistency: str | None = None,
    ) -> list[list[Hit]]:
        """Top-k hits for each row of `vectors` (shape (nq, dim)) in one Milvus call; one list per query.

        All queries share `k`, `filters` and `field`; callers with mixed options group their queries first.
        `consistency` overrides the store's level for this call.
        """
        k = _check_k(k)
        if field not in VECTOR_FIELDS:
            raise InvalidQueryError(f"field must be one of {list(VECTOR_FIELDS)}, got {field!r}")
        expr = self._filter_expr(filters)
        level = self._level(consistency)
        stamp = self._ready()
        if field == TEXT_VECTOR and not stamp.text_vector:
            raise StoreError(f"collection {self.collection!r} at {self.uri} has no {TEXT_VECTOR} field")
        queries = _as_queries("vectors", vectors, int(stamp.title_dim) if field == TEXT_VECTOR else stamp.dim)
        if len(queries) == 0:
            return []
        if expr and not self.is_server and self.index.index_type != "FLAT":
            exact = self._exact_search_if_selective(queries, k, expr, field, level)
            if exact is not None:
                return exact
        with self._call("search"):
            results = self._client.search(
                self.collection,
                data=queries.tolist(),
                anns_field=field,
                limit=k,
                filter=expr,
                output_fields=list(SCALAR_FIELDS),
                search_params=self._search_params(k),
                timeout=self.timeout,
                consistency_level=level,
            )
        return [[row_to_hit(row, row["distance"]) for row in per_query] for per_query in results]

    def _search_params(self, k: int) -> dict[str, Any]:
        params = self.index.search_params(k)
        if not self.is_server and "ef" in params["params"]:
            # Milvus Lite's per-query Python overhead dwarfs the HNSW walk: at 100k rows ef 256 -> 1024 lifts
            # recall@10 from 0.86 to 0.95 for the same ~120 ms (benchmarks/milvus_store.py). Servers keep ef.
            params["params"]["ef"] = max(params["params"]["ef"], LITE_MIN_EF)
        return params

    def _exact_search_if_selective(
        self, queries: np.ndarray, k: int, expr: str, field: str, level: str
    ) -> list[list[Hit]] | None:
        """Score the matching rows exactly when a filter leaves few of them; None when it leaves many.

        Milvus Lite's HNSW/IVF search under a selective filter returns few of the true neighbours (recall@10
        0.40 at 0.4% selectivity, benchmarks/milvus_store.py): the graph walk rarely reaches the allowed rows.
        Milvus servers fall back to brute force themselves, so this runs for Lite only.
        """
        matched = self._query(expr, ["count(*)"], level)
        if not matched or int(matched[0]["count(*)"]) > EXACT_FILTER_MAX_ROWS:
            return None
        rows = self._query(expr, [ID, field, *SCALAR_FIELDS], level)
        if not rows:
            return [[] for _ in queries]
        vectors = np.asarray([r[field] for r in rows], dtype=np.float32)  # (m, dim)
        row_norms = np.linalg.norm(vectors, axis=1)  # (m,)
        query_norms = np.linalg.norm(queries, axis=1)  # (nq,)
        sims = (queries @ vectors.T) / np.maximum(np.outer(query_norms, row_norms), 1e-12)  # (nq, m) cosine
        out = []
        for q_sims in sims:
            order = np.argsort(-q_sims, kind="stable")[:k]
            out.append([row_to_hit(rows[i], float(q_sims[i])) for i in order])
        return out

    def hybrid_search(
        self,
        image_vector: np.ndarray,
        text_vector: np.ndarray,
        *,
        k: int = 10,
        filters: ProductFilter | None = None,
        ranker: Literal["weighted", "rrf"] = "weighted",
        weights: tuple[float, float] = (0.7, 0.3),
        rrf_k: int = 60,
        consistency: str | None = None,
    ) -> list[Hit]:
        """Fuse an `image_vector` search and a `text_vector` search in Milvus (needs Milvus >= 2.4 or Lite).

        `weighted` scores are w_img * sim_img + w_txt * sim_txt; `rrf` scores are sum of 1 / (rrf_k + rank).
        """
        stamp = self._ready()
        images, texts = (
            _one_query("image_vector", image_vector, stamp.dim),
            _one_query("text_vector", text_vector, int(stamp.title_dim)),
        )
        return self.hybrid_search_batch(
            images,
            texts,
            k=k,
            filters=filters,
            ranker=ranker,
            weights=weights,
            rrf_k=rrf_k,
            consistency=consistency,
        )[0]

    def hybrid_search_batch(
        self,
        image_vectors: np.ndarray,
        text_vectors: np.ndarray,
        *,
        k: int = 10,
        filters: ProductFilter | None = None,
        ranker: Literal["weighted", "rrf"] = "weighted",
        weights: tuple[float, float] = (0.7, 0.3),
        rrf_k: int = 60,
        consistency: str | None = None,
    ) -> list[list[Hit]]:
        """`hybrid_search` for nq queries at once (rows of both (nq, dim) arrays pair up), in one Milvus call."""
        stamp = self._ready()
        if not stamp.text_vector:
            raise StoreError(
                f"collection {self.collection!r} at {self.uri} has no {TEXT_VECTOR}: it was created on a Milvus "
                "server without multi-vector support (< 2.4). Hybrid search needs Milvus >= 2.4 or Milvus Lite."
            )
        image_q = _as_queries("image_vectors", image_vectors, stamp.dim)
        text_q = _as_queries("text_vectors", text_vectors, int(stamp.title_dim))
        if len(image_q) != len(text_q):
            raise InvalidQueryError(
                f"image_vectors and text_vectors must have the same number of rows, "
                f"got {len(image_q)} and {len(text_q)}"
            )
        k = _check_k(k)
        fuse = _ranker(ranker, weights, rrf_k)
        expr = self._filter_expr(filters)
        level = self._level(consistency)
        if len(image_q) == 0:
            return []
        params = self._search_params(k)
        requests = [
            AnnSearchRequest(data=q.tolist(), anns_field=name, param=params, limit=k, expr=expr or None)
            for name, q in ((IMAGE_VECTOR, image_q), (TEXT_VECTOR, text_q))
        ]
        with self._call("hybrid_search"):
            results = self._client.hybrid_search(
                self.collection,
                requests,
                fuse,
                limit=k,
                output_fields=list(SCALAR_FIELDS),
                timeout=self.timeout,
                consistency_level=level,
            )
        return [[row_to_hit(row, row["distance"]) for row in per_query] for per_query in results]

    # -- housekeeping -------------------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """Where the store is and what it holds (for `/healthz`, `mmsearch search` headers and logs)."""
        try:
            with self._call("get_server_version"):
                version = self._client.get_server_version(timeout=self.timeout)
        except StoreError:
            version = "unknown"  # milvus-lite 2.5 does not implement this call
        out: dict[str, Any] = {
            "uri": self.uri,
            "mode": "server" if self.is_server else "lite",
            "server_version": version,
            "collection": self.collection,
            "exists": self._exists(),
            "count": None,
            "encoder_id": None,
            "dim": None,
            "text_vector": None,
            "title_encoder_id": None,
            "title_dim": None,
            "index_type": self.index.index_type,
        }
        if out["exists"]:
            stamp = self._ready()
            out.update(
                count=self.count(),
                encoder_id=stamp.encoder_id,
                dim=stamp.dim,
                text_vector=stamp.text_vector,
                title_encoder_id=stamp.title_encoder_id if stamp.text_vector else None,
                title_dim=stamp.title_dim if stamp.text_vector else None,
            )
        return out

    def drop(self) -> None:
        """Delete the collection and everything in it."""
        with self._call("drop_collection"):
            self._client.drop_collection(self.collection, timeout=self.timeout)
        self._stamp = None
        self._loaded = False

    def close(self) -> None:
        """Close the connection; a Lite database is released once this process's last store on it closes."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._client.close()
        if self._lite_path is not None:
            _release_lite(self._lite_path)

    def __enter__(self) -> ProductStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ProductStore(uri={self.uri!r}, collection={self.collection!r})"


__all__ = [
    "CONSISTENCY_LEVELS",
    "DEFAULT_CONSISTENCY",
    "EXACT_FILTER_MAX_ROWS",
    "ProductStore",
    "is_server_uri",
    "product_to_row",
    "row_to_hit",
]
