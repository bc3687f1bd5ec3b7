"""Split a `Source` into shards that Ray read tasks can each stream on their own.

Entry point: `plan_shards(source, target_bytes=...) -> list[Source]`. Every shard is itself a `Source`, read
with the same record parser, fault boundary and `where` strings (`products.jsonl:123`) as the local engine:
- plain `.jsonl`: byte ranges cut at line starts, each knowing its first line number;
- `.parquet`: groups of row groups, each knowing its first row number;
- image folders: slices of the sorted file list;
- anything else (gzip, the hub stream, a run with `--limit`): one shard, the source itself.

Ray's own `read_json` does not fit hostile catalogues: one malformed line fails its whole block, and rows
lose their line numbers (the failure log's `where`). `read_text` keeps lines but not their numbers.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import IO, Any

from mmsearch.errors import DataSourceError
from mmsearch.indexer.jsonl import read_jsonl
from mmsearch.indexer.sources import ImageFolderSource, JsonlSource, ParquetSource, Source

DEFAULT_SHARD_BYTES = 64 << 20  # a jsonl shard; small catalogues stay one shard (exact first-wins dedup)
DEFAULT_FOLDER_SHARD = 4096  # image files per folder shard
_SCAN_CHUNK = 1 << 20


class JsonlRangeSource(JsonlSource):
    """Lines of a plain `.jsonl` file starting at byte `start` (a line start) and before byte `end`."""

    def __init__(self, path: Any, *, start: int, end: int, first_line: int, **kwargs: Any):
        super().__init__(path, **kwargs)
        self.start, self.end, self.first_line = start, end, first_line
        self.total = None

    def _records(self) -> Iterator[tuple[str, Any, Any]]:
        try:
            fh = open(self.path, "rb")  # noqa: SIM115 (closed by the with-block below)
        except OSError as e:
            raise DataSourceError(f"{self.name}: cannot read ({e.strerror or e})") from e
        with fh:
            fh.seek(self.start)
            try:
                yield from read_jsonl(
                    _Window(fh, self.end - self.start), self.name, first_line=self.first_line
                )
            except OSError as e:
                raise DataSourceError(f"{self.name}: cannot read further ({e})") from e


class _Window:
    """The next `size` bytes of a binary file, as a file (`read` only)."""

    def __init__(self, fh: IO[bytes], size: int):
        self.fh, self.left = fh, size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = self.fh.read(n) if n > 0 else b""
        self.left -= len(data)
        return data


class ParquetRangeSource(ParquetSource):
    """Row groups `row_groups` of a parquet file, the first of which starts at row `first_row` (1-based)."""

    def __init__(self, path: Any, *, row_groups: list[int], first_row: int, **kwargs: Any):
        super().__init__(path, **kwargs)
        self.row_groups, self.first_row = row_groups, first_row
        self.total = None

    def _records(self) -> Iterator[tuple[str, Any, Any]]:
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(self.path)
            row = self.first_row - 1
            for batch in pf.iter_batches(batch_size=1024, row_groups=self.row_groups):
                for record in batch.to_pylist():
                    row += 1
                    yield f"{self.name}:row {row}", record, None
        except (OSError, ValueError) as e:
            raise DataSourceError(f"{self.name}: not a readable parquet file ({e})") from e


def _line_starts(path: Any, target_bytes: int) -> list[tuple[int, int]]:
    """(byte offset, line number) of the first line at or after every `target_bytes` boundary."""
    cuts = [(0, 1)]
    lines_before = 0
    pos = 0
    next_cut = target_bytes
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(_SCAN_CHUNK)
            if not chunk:
                break
            start = 0
            while pos + len(chunk) > next_cut:
                nl = chunk.find(b"\n", max(next_cut - pos, start))
                if nl < 0:
                    break
                lines = lines_before + chunk.count(b"\n", 0, nl + 1)
                cuts.append((pos + nl + 1, lines + 1))
                next_cut = pos + nl + 1 + target_bytes
                start = nl + 1
            lines_before += chunk.count(b"\n")
            pos += len(chunk)
    return [c for c in cuts if c[0] < pos] or [(0, 1)]


def plan_shards(
    source: Source, *, target_bytes: int = DEFAULT_SHARD_BYTES, folder_shard: int = DEFAULT_FOLDER_SHARD
) -> list[Source]:
    """Shards of `source` that together yield exactly its products (see the module docstring)."""
    if source.limit is not None:
        return [source]  # the limit counts from the start of the source: read it in order, once
    if type(source) is JsonlSource and source.path.suffix == ".jsonl":
        size = source.path.stat().st_size
        if size <= target_bytes:
            return [source]
        cuts = _line_starts(source.path, target_bytes)
        ends = [c[0] for c in cuts[1:]] + [size]
        return [
            JsonlRangeSource(
                source.path,
                start=s,
                end=e,
                first_line=line,
                max_images_per_product=source.max_images,
                allow_paths=source.allow_paths,
            )
            for (s, line), e in zip(cuts, ends, strict=True)
        ]
    if type(source) is ParquetSource:
        import pyarrow.parquet as pq

        meta = pq.ParquetFile(source.path).metadata
        shards: list[Source] = []
        group: list[int] = []
        group_bytes, first_row, row = 0, 1, 1
        for i in range(meta.num_row_groups):
            rg = meta.row_group(i)
            group.append(i)
            group_bytes += rg.total_byte_size
            row += rg.num_rows
            if group_bytes >= target_bytes or i == meta.num_row_groups - 1:
                shards.append(
                    ParquetRangeSource(
                        source.path,
                        row_groups=group,
                        first_row=first_row,
                        max_images_per_product=source.max_images,
                        allow_paths=source.allow_paths,
                    )
                )
                group, group_bytes, first_row = [], 0, row
        return shards or [source]
    if isinstance(source, ImageFolderSource) and len(source.files) > folder_shard:
        out: list[Source] = []
        for start in range(0, len(source.files), folder_shard):
            shard = copy.copy(source)
            shard.files = source.files[start : start + folder_shard]
            shard.total = len(shard.files)
            out.append(shard)
        return out
    handle = getattr(source, "_handle", None)
    if handle is not None:  # an open hub stream cannot travel to a worker; the worker opens its own
        handle.close()
        source._handle = None
    return [source]


__all__ = ["DEFAULT_SHARD_BYTES", "JsonlRangeSource", "ParquetRangeSource", "plan_shards"]
