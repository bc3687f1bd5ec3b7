"""What the Milvus behind a store is and can do (`info()`), and the errors that say so: multi-vector collections
(>= 2.4), `group_by_field` (search >= 2.4, hybrid search >= 2.5) and BM25 functions (>= 2.5). Milvus Lite 3.x has
them all.

Entry point: `FeaturesMixin` (part of `ProductStore`), `add_bm25_index`.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from mmsearch.errors import FeatureUnavailableError, StoreError
from mmsearch.store.schema import TITLE_SPARSE, EncoderStamp

# The catalogue root kept beside the encoder stamp: local image refs under it are stored relative to it.
PROP_CATALOGUE_ROOT = "mmsearch.catalogue_root"

log = logging.getLogger(__name__)


def server_version_tuple(version: str) -> tuple[int, int] | None:
    match = re.match(r"v?(\d+)\.(\d+)", version)
    return (int(match.group(1)), int(match.group(2))) if match else None


def add_bm25_index(index_params) -> None:
    """The sparse inverted index that BM25 search on `title_sparse` needs."""
    index_params.add_index(field_name=TITLE_SPARSE, index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")


class FeaturesMixin:
    """Version checks for `ProductStore` (uses its connection and call wrapper; caches the server version)."""

    _version: str | None = None

    def _server_at_least(self, wanted: tuple[int, int]) -> bool:
        """True on Milvus Lite and on servers of version >= `wanted` (an unparsable version counts as new)."""
        if not self.is_server:
            return True
        if self._version is None:
            with self._call("get_server_version"):
                self._version = self._client.get_server_version(timeout=self.timeout)
        parsed = server_version_tuple(self._version)
        return parsed is None or parsed >= wanted

    def _supports_multi_vector(self) -> bool:
        """Milvus < 2.4 servers have one vector field per collection; every Lite build we support has more."""
        return self._server_at_least((2, 4))

    def _bm25_on_create(self) -> bool:
        """Whether a new collection gets the BM25 title field: Milvus Lite and servers >= 2.5."""
        if self._server_at_least((2, 5)):
            return True
        log.warning("Milvus at %s has no BM25 functions (< 2.5); indexing without %s", self.uri, TITLE_SPARSE)
        return False

    def lexical_problem(self) -> str | None:
        """Why BM25 title search (mode hybrid-bm25) cannot run on this store, or None when it can."""
        try:
            self._check_bm25(self._ready())
        except FeatureUnavailableError as err:
            return err.message
        return None

    def _check_bm25(self, stamp: EncoderStamp) -> None:
        """Raise `FeatureUnavailableError`, saying how to fix it, when BM25 title search cannot run."""
        if not self._server_at_least((2, 5)):
            raise FeatureUnavailableError(
                f"the Milvus server at {self.uri} is version {self._version}; BM25 title search (mode "
                "hybrid-bm25) needs Milvus >= 2.5 or Milvus Lite. Use mode joint, weighted or fused."
            )
        if not stamp.bm25:
            raise FeatureUnavailableError(
                f"collection {self.collection!r} at {self.uri} has no BM25 title field ({TITLE_SPARSE}): it was "
                "indexed before mmsearch added lexical search. Re-index it to add the field: drop the collection "
                "(or delete the Milvus Lite .db) and run `mmsearch index` again, or index into a new collection "
                "with --collection NAME."
            )

    def catalogue_root(self) -> str | None:
        """The folder relative local image references are stored against (set by the indexer), or None."""
        if not self._exists():
            return None
        with self._call("describe_collection"):
            described = self._client.describe_collection(self.collection, timeout=self.timeout)
        root = (described.get("properties") or {}).get(PROP_CATALOGUE_ROOT)
        return str(root) if root else None

    def set_catalogue_root(self, root: str) -> None:
        """Keep `root` on the collection, so a moved catalogue can be found again (`--root`)."""
        with self._call("alter_collection_properties"):
            self._client.alter_collection_properties(
                self.collection, properties={PROP_CATALOGUE_ROOT: str(root)}, timeout=self.timeout
            )

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
            "bm25": None,
            "product_key": None,
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
                bm25=stamp.bm25,
                product_key=stamp.product_key,
            )
        return out


__all__ = ["PROP_CATALOGUE_ROOT", "FeaturesMixin", "add_bm25_index", "server_version_tuple"]
