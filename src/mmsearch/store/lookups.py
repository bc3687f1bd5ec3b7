"""Lookups by id and counts: which ids are stored, stored products and vectors by id, live row count.

Entry point: `ProductStore.existing_ids(ids)`, `.iter_ids()`, `.get(ids)`, `.get_vectors(ids)` and `.count()`, which
`LookupMixin` provides. Ids go into `id in [...]` expressions in batches, escaped by `filters.ids_expr`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from mmsearch.errors import InvalidQueryError
from mmsearch.store.filters import ids_expr
from mmsearch.store.rows import row_to_hit
from mmsearch.store.schema import ID, IMAGE_VECTOR, SCALAR_FIELDS, VECTOR_FIELDS
from mmsearch.types import Hit

_LOOKUP_BATCH = 500  # ids per `id in [...]` expression


class LookupMixin:
    """Reads by id for `ProductStore` (uses its connection, consistency level and call wrapper)."""

    def _query(
        self, expr: str, fields: list[str], consistency: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        with self._call("query"):
            return self._client.query(
                self.collection,
                filter=expr,
                output_fields=fields,
                timeout=self.timeout,
                consistency_level=self._level(consistency),
                **({"limit": limit} if limit is not None else {}),
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

    def iter_ids(self, batch_size: int = 4096) -> Iterator[str]:
        """Every stored id, read at Strong consistency (a skip-existing snapshot for the Ray engine's workers,
        which cannot open a Milvus Lite file the driver holds)."""
        self._ready()
        with self._call("query_iterator"):
            it = self._client.query_iterator(
                self.collection,
                batch_size=batch_size,
                filter="",
                output_fields=[ID],
                timeout=self.timeout,
                consistency_level="Strong",
            )
        try:
            while True:
                with self._call("query_iterator"):
                    rows = it.next()
                if not rows:
                    return
                yield from (str(r[ID]) for r in rows)
        finally:
            it.close()

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


__all__ = ["LookupMixin"]
