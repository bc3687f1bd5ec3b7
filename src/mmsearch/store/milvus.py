"""`ProductStore`: the one place that talks to Milvus (Lite file or server), in product and `Hit` terms.

Entry point: `ProductStore(uri, collection=...)` (`mmsearch.engine.build_store` maps settings to it). Callers never see
pymilvus types: vectors go in as numpy arrays, results come out as `mmsearch.types.Hit`.

This module holds the connection, the collection's lifecycle and writes; each other job has a module of its own:
`lite` (lock probing, process-wide reference count), `calls` (error translation), `rows` (row mapping and input
checks), `lookups` (reads by id), `dense` (search), `exact` (Lite-only exact search under selective filters) and
`hybrid` (hybrid search), `lexical` (BM25 title fused with the dense vector), `grouping` (one slot per product),
`features` (what the server can do) and `facets` (categories).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from pymilvus import MilvusClient, MilvusException

from mmsearch.errors import CollectionNotFoundError, EncoderMismatchError, StoreError, StoreUnavailableError
from mmsearch.store.calls import milvus_call, quiet
from mmsearch.store.dense import DenseSearchMixin
from mmsearch.store.exact import EXACT_FILTER_MAX_ROWS
from mmsearch.store.facets import FacetsMixin
from mmsearch.store.features import FeaturesMixin, add_bm25_index
from mmsearch.store.grouping import GroupingMixin
from mmsearch.store.hybrid import HybridSearchMixin
from mmsearch.store.lexical import LexicalSearchMixin
from mmsearch.store.lite import LITE_WRITE_TIMEOUT_S, open_lite, release_lite
from mmsearch.store.lookups import LookupMixin
from mmsearch.store.rows import as_matrix, product_to_row, row_to_hit
from mmsearch.store.schema import (
    DEFAULT_INDEX_TYPE,
    ID,
    IMAGE_VECTOR,
    MAX_DIM,
    PRODUCT_KEY,
    TEXT_VECTOR,
    VECTOR_FIELDS,
    EncoderStamp,
    IndexConfig,
    build_schema,
    vector_dim,
)
from mmsearch.types import Product

log = logging.getLogger(__name__)

SERVER_SCHEMES = ("http://", "https://", "tcp://", "grpc://")
_UPSERT_BATCH = 256  # rows per request: 256 x 2 x 1024-d float32 is 2 MiB, well under gRPC's 64 MiB cap
_COLLECTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")
_CONNECT_TIMEOUT_S = 10.0
# Milvus consistency levels a store may read at. Bounded reads see writes older than the server's
# `common.gracefulTime` (5 s by default); Session also sees this process's own writes; Strong waits for the
# server's next time tick (300-400 ms per search on the loopback 2.3.5 server, benchmarks/milvus_store.py).
# Milvus Lite accepts every level and always reads its own writes.
CONSISTENCY_LEVELS = ("Strong", "Session", "Bounded", "Eventually")
DEFAULT_CONSISTENCY = "Bounded"


def is_server_uri(uri: str) -> bool:
    return uri.startswith(SERVER_SCHEMES)


def _check_consistency(level: str) -> str:
    if level not in CONSISTENCY_LEVELS:
        raise StoreError(f"consistency must be one of {', '.join(CONSISTENCY_LEVELS)}, got {level!r}")
    return level


class ProductStore(
    LookupMixin,
    DenseSearchMixin,
    HybridSearchMixin,
    LexicalSearchMixin,
    GroupingMixin,
    FeaturesMixin,
    FacetsMixin,
):
    """Product images and their metadata in one Milvus collection.

    `uri` is a Milvus Lite path (default `./mmsearch.db`, one process at a time) or `http://host:19530` for a
    server. `index_type` is one of `schema.INDEX_DEFAULTS` and only matters when the collection is created.
    `consistency` is the level reads use unless a call names its own (see `CONSISTENCY_LEVELS`): Bounded by
    default, so a search may miss rows written in the last few seconds (5 s on a default server); pass
    "Session" to read this process's own writes, "Strong" where a read must see every write made so far.
    `create=False` refuses to make a missing Lite database (searches use it, so they never leave one behind).
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
        create: bool = True,
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
        self._client = self._connect_server(token) if self.is_server else self._open_lite(create)
        self._stamp: EncoderStamp | None = None
        self._loaded = False
        self._version: str | None = None

    # -- connection ---------------------------------------------------------------------------------------

    def _connect_server(self, token: str | None) -> MilvusClient:
        try:
            with quiet("pymilvus"):
                return MilvusClient(
                    self.uri, token=token or "", timeout=min(self.timeout, _CONNECT_TIMEOUT_S), dedicated=True
                )
        except MilvusException as err:
            raise StoreUnavailableError(
                f"cannot reach the Milvus server at {self.uri}: {err.message}. Start the server "
                "(see compose.yaml) or point MMSEARCH_MILVUS_URI / --milvus-uri at a reachable one."
            ) from None

    def _open_lite(self, create: bool) -> MilvusClient:
        client, self._lite_path = open_lite(self.uri, timeout=self.timeout, create=create)
        return client

    def _call(self, what: str) -> contextlib.AbstractContextManager[None]:
        return milvus_call(what, collection=self.collection, uri=self.uri)

    # -- collection lifecycle -----------------------------------------------------------------------------

    def _exists(self) -> bool:
        with self._call("has_collection"):
            return self._client.has_collection(self.collection, timeout=self.timeout)

    def _describe(self) -> dict[str, Any]:
        with self._call("describe_collection"):
            return self._client.describe_collection(self.collection, timeout=self.timeout)

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
        bm25 = self._bm25_on_create()
        stamp = EncoderStamp(
            encoder_id, dim, text_vector, title_encoder_id, title_dim, bm25=bm25, product_key=True
        )
        index_params = self._client.prepare_index_params()
        for name in VECTOR_FIELDS if text_vector else (IMAGE_VECTOR,):
            index_params.add_index(
                field_name=name,
                index_type=self.index.index_type,
                metric_type="COSINE",
                params=self.index.build,
            )
        if bm25:
            add_bm25_index(index_params)
        with self._call("create_collection"):
            self._client.create_collection(
                self.collection,
                schema=build_schema(
                    dim,
                    with_text_vector=text_vector,
                    with_bm25=bm25,
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

    def exists(self) -> bool:
        """Whether the collection exists (a cheap check before loading models)."""
        return self._exists()

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

    # -- writes -------------------------------------------------------------------------------

    def rows(
        self, products: Sequence[Product], image_vectors: np.ndarray, text_vectors: np.ndarray | None = None
    ) -> list[dict[str, Any]]:
        """The Milvus rows for `products` with their vectors, as `upsert` writes them (and bulk-import files hold
        them). Arguments as `upsert`; within one call the last duplicate id wins."""
        stamp = self._ready()
        n = len(products)
        images = as_matrix("image_vectors", image_vectors, n, stamp.dim)
        texts = None
        if stamp.text_vector:
            if text_vectors is None:
                raise ValueError(
                    f"text_vectors is required: collection {self.collection!r} has a {TEXT_VECTOR} field"
                )
            texts = as_matrix("text_vectors", text_vectors, n, int(stamp.title_dim))
        rows: dict[str, dict[str, Any]] = {}
        for i, product in enumerate(products):
            row = product_to_row(product)
            if stamp.product_key:
                row[PRODUCT_KEY] = row["parent_asin"] or row[ID]  # what `grouping.product_key` reads back
            row[IMAGE_VECTOR] = images[i].tolist()
            if texts is not None:
                row[TEXT_VECTOR] = texts[i].tolist()
            rows.pop(product.id, None)  # keep the last occurrence, in its position
            rows[product.id] = row
        return list(rows.values())

    def upsert(
        self, products: Sequence[Product], image_vectors: np.ndarray, text_vectors: np.ndarray | None = None
    ) -> int:
        """Insert or replace products by id (idempotent); returns the number of rows written.

        `image_vectors` and `text_vectors` have shape (len(products), dim). `text_vectors` is required when the
        collection has a title vector and ignored when it has none. Within one call the last duplicate id wins.
        """
        batch = self.rows(products, image_vectors, text_vectors)
        self._categories_cache = None
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

    # -- housekeeping -------------------------------------------------------------------------------------

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
            release_lite(self._lite_path)

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
