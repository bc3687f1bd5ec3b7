"""Many queries at once: a JSON query object → `SearchRequest`, and the batch query script over a jsonl file.

Entry points: `parse_query(obj)` (shared by `mmsearch search --queries` and `POST /search/batch`) and
`run_query_file(pipeline, queries, out)`. Queries are read in chunks of `batch_size`; each chunk's images are
fetched concurrently, encoded in one pass and searched in one Milvus call per group of equal options, then
reranked one by one if asked. Every output line carries its input line number and is written as soon as its chunk
finishes; a bad line gets an error line and the others go on.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

from mmsearch.errors import InvalidQueryError, MMSearchError
from mmsearch.pipelines.search import SearchPipeline, SearchRequest, SearchResult
from mmsearch.store import ProductFilter

QUERY_FIELDS = (
    "image",
    "image_id",
    "instruction",
    "k",
    "filters",
    "mode",
    "weights",
    "ranker",
    "rrf_k",
    "rerank",
)
MAX_LINE_BYTES = 64 * 1024


@dataclass(frozen=True)
class QuerySpec:
    """A parsed query: the request without its image, and where the image comes from (a path/URL or an id)."""

    request: SearchRequest
    image: str | None = None
    image_id: str | None = None


def _typed(obj: dict, name: str, kind: type | tuple[type, ...], what: str) -> Any:
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, bool) and kind is not bool:
        raise InvalidQueryError(f"{name} must be {what}, got {value!r}")
    if not isinstance(value, kind):
        raise InvalidQueryError(f"{name} must be {what}, got {type(value).__name__}")
    return value


def parse_query(obj: Any, *, default_k: int = 9, rerank: bool = False) -> QuerySpec:
    """Validate one query object; raises `InvalidQueryError`/`InvalidFilterError` naming the field.

    Fields: `image` (path or http(s) URL), `image_id` (an indexed product's id: its stored image), `instruction`,
    `k`, `filters` ({category, min_price, max_price, min_rating}), `mode`, `weights` ([image, text]), `ranker`,
    `rrf_k`, `rerank`. `rerank` defaults to the caller's `rerank`.
    """
    if not isinstance(obj, dict):
        raise InvalidQueryError(f"a query must be a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - set(QUERY_FIELDS))
    if unknown:
        raise InvalidQueryError(f"unknown field {unknown[0]!r}; expected any of {', '.join(QUERY_FIELDS)}")
    image = _typed(obj, "image", str, "a path or URL string")
    image_id = _typed(obj, "image_id", str, "a product id string")
    if image is not None and image_id is not None:
        raise InvalidQueryError("give image or image_id, not both")
    filters = _typed(obj, "filters", dict, "an object")
    weights = _typed(obj, "weights", list, "a list [image, text]")
    numbers = weights is not None and all(
        isinstance(w, int | float) and not isinstance(w, bool) for w in weights
    )
    if weights is not None and (len(weights) != 2 or not numbers):
        raise InvalidQueryError(f"weights must be two numbers [image, text], got {weights!r}")
    k = _typed(obj, "k", int, "an integer")
    request = SearchRequest(
        instruction=_typed(obj, "instruction", str, "a string") or "",
        k=default_k if k is None else k,
        filters=ProductFilter(**filters) if filters else None,
        mode=_typed(obj, "mode", str, "a string") or None,  # None: the encoder's default
        weights=tuple(float(w) for w in weights) if weights else SearchRequest.weights,
        ranker=_typed(obj, "ranker", str, "a string") or "weighted",
        rrf_k=SearchRequest.rrf_k if obj.get("rrf_k") is None else _typed(obj, "rrf_k", int, "an integer"),
        rerank=rerank if obj.get("rerank") is None else _typed(obj, "rerank", bool, "true or false"),
    )
    if image is None and image_id is None and not request.instruction.strip():
        raise InvalidQueryError("a query needs an image, an image_id, an instruction, or a combination")
    return QuerySpec(request, image, image_id)


def error_line(err: MMSearchError) -> dict[str, str]:
    return {"error": err.code, "message": err.message}


@dataclass
class BatchReport:
    """Counts and timings of one batch query run."""

    queries: int = 0
    ok: int = 0
    failed: int = 0
    elapsed_s: float = 0.0
    first_failure: str | None = None

    @property
    def queries_per_s(self) -> float:
        return self.queries / self.elapsed_s if self.elapsed_s > 0 else math.nan

    def summary(self) -> str:
        line = f"searched {self.ok} queries, {self.failed} failed"
        if self.first_failure:
            line += f" (first: {self.first_failure})"
        return line + f" in {self.elapsed_s:.1f} s, {self.queries_per_s:.1f} queries/s"


def _lines(stream: IO[bytes]) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON or the error) for each non-blank line; a line is read at most MAX_LINE_BYTES."""
    number = 0
    while True:
        raw = stream.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        number += 1
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while raw and not raw.endswith(b"\n"):  # skip the rest of the over-long line
                raw = stream.readline(MAX_LINE_BYTES)
            yield number, InvalidQueryError(f"line is longer than {MAX_LINE_BYTES} bytes")
            continue
        if not raw.strip():
            continue
        try:
            yield number, json.loads(raw)
        except (ValueError, RecursionError) as err:
            yield number, InvalidQueryError(f"not valid JSON ({str(err).split(':')[0]})")


class QueryFileRunner:
    """Runs a jsonl file of queries through a pipeline in chunks; see the module docstring."""

    def __init__(
        self,
        pipeline: SearchPipeline,
        fetcher,
        *,
        base_dir: Path,
        batch_size: int = 32,
        rerank=False,
        resolve=None,
    ):
        if batch_size < 1:
            raise InvalidQueryError(f"batch_size must be >= 1, got {batch_size}")
        self.pipeline = pipeline
        self.fetcher = fetcher
        self.base_dir = base_dir
        self.batch_size = batch_size
        self.rerank = rerank
        self.resolve = resolve  # stored image_url -> fetchable ref (relative refs under the catalogue root)

    def _load(self, spec: QuerySpec) -> SearchRequest:
        """The request with its image fetched (URL) or read (path, relative to the queries file) as bytes."""
        if spec.image_id is not None:
            hits = self.pipeline.get([spec.image_id])
            if not hits or not hits[0].image_url:
                raise InvalidQueryError(f"image_id {spec.image_id!r} is not an indexed product with an image")
            stored = hits[0].image_url
            ref = self.resolve(stored) if self.resolve is not None else stored
            return replace(spec.request, image=self.fetcher.fetch_bytes(ref))
        if spec.image is None:
            return spec.request
        ref = spec.image
        if not ref.startswith(("http://", "https://")) and not Path(ref).is_absolute():
            ref = str(self.base_dir / ref)
        return replace(spec.request, image=self.fetcher.fetch_bytes(ref))

    def _prepare(self, item: tuple[int, Any]) -> tuple[int, SearchRequest | MMSearchError]:
        number, parsed = item
        if isinstance(parsed, MMSearchError):
            return number, parsed
        try:
            return number, self._load(parse_query(parsed, rerank=self.rerank))
        except MMSearchError as err:
            return number, err

    def _chunk(self, items: list[tuple[int, Any]]) -> list[tuple[int, SearchResult | MMSearchError]]:
        prepared = [f.result() for f in self.fetcher.map(self._prepare, items)]
        good = [(n, r) for n, r in prepared if isinstance(r, SearchRequest)]
        results = dict(prepared)
        for (number, _), result in zip(good, self.pipeline.run_many([r for _, r in good]), strict=True):
            results[number] = result
        return [(n, results[n]) for n, _ in items]

    def run(
        self, queries: IO[bytes], out: IO[str], *, total: int | None = None, progress: bool = True
    ) -> BatchReport:
        report = BatchReport()
        start = time.perf_counter()
        bar = tqdm(total=total, unit="query", desc="searching", disable=not progress, dynamic_ncols=True)
        lines = _lines(queries)
        try:
            while chunk := [item for _, item in zip(range(self.batch_size), lines, strict=False)]:
                for number, result in self._chunk(chunk):
                    report.queries += 1
                    if isinstance(result, MMSearchError):
                        report.failed += 1
                        report.first_failure = report.first_failure or f"line {number}: {result.message}"
                        body: dict[str, Any] = error_line(result)
                    else:
                        report.ok += 1
                        body = result.to_dict()
                    out.write(json.dumps({"line": number, **body}, default=str) + "\n")
                out.flush()
                bar.update(len(chunk))
                bar.set_postfix(failed=report.failed)
        finally:
            bar.close()
        report.elapsed_s = time.perf_counter() - start
        return report


__all__ = [
    "MAX_LINE_BYTES",
    "QUERY_FIELDS",
    "BatchReport",
    "QueryFileRunner",
    "QuerySpec",
    "error_line",
    "parse_query",
]
