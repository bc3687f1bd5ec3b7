"""Milvus bulk import for a first load of an empty server collection: rows -> parquet files (pymilvus' bulk
writer) -> `do_bulk_insert` tasks -> wait until the rows are searchable.

Entry points: `BulkFileWriter(uri, collection, out_dir)` writes one batch of rows per call and returns the
file; `drop_rows(file, rows)` removes duplicates before the import; `bulk_import(uri, collection, files)`.

Milvus import does not de-duplicate primary keys, so callers remove repeated ids first. The files must be
readable by the server: absolute local paths for a server on the same machine (the `milvus` wheel), or
paths inside the server's object-storage bucket for a cluster (see docs/SCALING.md).
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmsearch.errors import StoreError

log = logging.getLogger(__name__)

_POLL_S = 1.0


@contextlib.contextmanager
def _orm_api() -> Iterator[None]:
    """Silence pymilvus' ORM deprecation: bulk import on Milvus < 2.4 servers exists only in the ORM API
    (`utility.do_bulk_insert`; MilvusClient has no import call, the REST import job needs >= 2.4). pyproject caps
    pymilvus below 3.1, where that API is removed."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*ORM-style PyMilvus API", category=FutureWarning)
        yield


def _connect(uri: str, token: str | None, alias: str):
    from pymilvus import connections

    with _orm_api():
        connections.connect(alias=alias, uri=uri, token=token or "", timeout=10)
    return alias


def collection_schema(uri: str, collection: str, token: str | None = None):
    """The collection's pymilvus `CollectionSchema`, as the bulk writer needs it."""
    from pymilvus import CollectionSchema, MilvusClient

    client = MilvusClient(uri, token=token or "", timeout=10)
    try:
        return CollectionSchema.construct_from_dict(client.describe_collection(collection))
    finally:
        client.close()


class BulkFileWriter:
    """Writes batches of products with their vectors as parquet files in `out_dir` (one or more per batch)."""

    def __init__(self, uri: str, collection: str, out_dir: str | Path, *, token: str | None = None):
        from pymilvus.bulk_writer import BulkFileType, LocalBulkWriter

        self._writer_cls, self._file_type = LocalBulkWriter, BulkFileType.PARQUET
        self.schema = collection_schema(uri, collection, token)
        self.fields = {f.name for f in self.schema.fields}
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)

    def write(self, rows: Sequence[dict[str, Any]]) -> list[str]:
        """Absolute paths of the files holding these rows (`ProductStore.rows` output), in the order given."""
        if not rows:
            return []
        writer = self._writer_cls(
            schema=self.schema, local_path=str(self.out_dir / uuid.uuid4().hex), file_type=self._file_type
        )
        for row in rows:
            writer.append_row(row)
        writer.commit()
        files = [str(Path(f).resolve()) for group in writer.batch_files for f in group]
        if len(files) != 1:
            # One file per batch keeps (file, row) addresses simple for de-duplication; the writer's chunk
            # size (128 MiB) is far above one batch.
            raise StoreError(f"bulk writer produced {len(files)} files for one batch; expected 1")
        return files


def drop_rows(path: str | Path, rows: Sequence[int]) -> int:
    """Rewrite parquet file `path` without the given row positions; returns the rows left."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    keep = np.ones(table.num_rows, dtype=bool)
    keep[list(rows)] = False
    kept = table.filter(pa.array(keep))
    pq.write_table(kept, path)
    return kept.num_rows


def bulk_import(
    uri: str,
    collection: str,
    files: Sequence[str],
    *,
    expected_rows: int,
    token: str | None = None,
    timeout_s: float = 1800.0,
) -> float:
    """Start one import task per file, wait for all to complete, then until `expected_rows` are queryable.

    Returns the seconds spent. Raises `StoreError` naming the file of a failed task.
    """
    from pymilvus import BulkInsertState, MilvusClient, connections, utility

    start = time.perf_counter()
    alias = _connect(uri, token, f"mmsearch-bulk-{uuid.uuid4().hex[:8]}")
    try:
        with _orm_api():
            tasks = {utility.do_bulk_insert(collection, files=[f], using=alias): f for f in files}
        deadline = time.monotonic() + timeout_s
        pending = dict(tasks)
        while pending:
            for task_id, file in list(pending.items()):
                with _orm_api():
                    state = utility.get_bulk_insert_state(task_id, using=alias)
                if state.state in (BulkInsertState.ImportFailed, BulkInsertState.ImportFailedAndCleaned):
                    raise StoreError(f"Milvus bulk import of {file} failed: {state.failed_reason}")
                if state.state == BulkInsertState.ImportCompleted:
                    del pending[task_id]
            if pending and time.monotonic() > deadline:
                raise StoreError(
                    f"Milvus bulk import still running after {timeout_s:.0f} s ({len(pending)} files)"
                )
            if pending:
                time.sleep(_POLL_S)
    finally:
        with contextlib.suppress(Exception), _orm_api():
            connections.disconnect(alias)
    # Imported segments become visible once the query nodes load them (~14 s on Milvus 2.3.5).
    client = MilvusClient(uri, token=token or "", timeout=10)
    try:
        while True:
            rows = client.query(collection, filter="", output_fields=["count(*)"], consistency_level="Strong")
            count = int(rows[0]["count(*)"]) if rows else 0
            if count >= expected_rows:
                break
            if time.monotonic() > deadline:
                raise StoreError(
                    f"Milvus bulk import completed but only {count} of {expected_rows} rows are visible "
                    f"after {timeout_s:.0f} s"
                )
            time.sleep(_POLL_S)
    finally:
        client.close()
    return time.perf_counter() - start


__all__ = ["BulkFileWriter", "bulk_import", "collection_schema", "drop_rows"]
