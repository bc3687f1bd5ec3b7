"""Dynamic batching for the API: concurrent searches are encoded in one forward pass and searched in one Milvus
call; reranking runs on a queue of its own, so retrieval-only searches never wait behind a rerank.

Entry point: `SearchScheduler(worker, ...)`, then `await scheduler.search(pipeline, request)`.

- Retrieval: a request joins a bounded queue. One collector task takes the first waiting request, gathers more
  for up to `window_ms` (or until `max_batch`), and runs `SearchPipeline.retrieve_many` for them on the inference
  thread. While that batch runs, new requests queue, and the next batch takes them at once: under load batches
  grow by themselves, and an idle server adds at most `window_ms` to a lone request.
- Rerank: results that asked for a rerank go to a second single thread with its own bounded queue.
- A full queue answers `ServerBusyError` (503) at once. `stats()` feeds `/healthz`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from mmsearch.api.errors import ServerBusyError
from mmsearch.api.worker import InferenceWorker
from mmsearch.errors import MMSearchError
from mmsearch.pipelines import SearchPipeline, SearchRequest, SearchResult

log = logging.getLogger("mmsearch.api")

DEFAULT_WINDOW_MS = 5.0
DEFAULT_MAX_BATCH = 16
DEFAULT_MAX_QUEUED = 64
DEFAULT_MAX_RERANK_QUEUED = 8


@dataclass
class _Pending:
    pipeline: SearchPipeline
    request: SearchRequest
    future: asyncio.Future


class RerankQueue:
    """One thread for the reranker, with a bounded number of waiting + running reranks."""

    def __init__(self, max_queued: int = DEFAULT_MAX_RERANK_QUEUED):
        if max_queued < 1:
            raise ValueError(f"max_queued must be >= 1, got {max_queued}")
        self.max_queued = max_queued
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mmsearch-rerank")
        self._lock = threading.Lock()
        self._pending = 0
        self.completed = 0

    def reserve(self, n: int = 1) -> None:
        """Claim slots before retrieval starts, so a rerank is refused up front rather than after retrieval."""
        with self._lock:
            if self._pending + n > self.max_queued:
                raise ServerBusyError(
                    f"{self._pending} reranks are already queued (the limit is {self.max_queued}); "
                    "retry in a few seconds, or search without rerank"
                )
            self._pending += n

    def release(self, n: int = 1) -> None:
        with self._lock:
            self._pending -= n

    async def run(self, pipeline: SearchPipeline, result: SearchResult) -> SearchResult:
        """Rerank on the rerank thread, in a slot reserved by the caller (released here)."""
        try:
            return await asyncio.wrap_future(self._executor.submit(pipeline.rerank, result))
        finally:
            with self._lock:
                self._pending -= 1
                self.completed += 1

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"pending": self._pending, "max_pending": self.max_queued, "completed": self.completed}

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


class SearchScheduler:
    """Batches retrieval on the inference worker and reranks on a `RerankQueue`; see the module docstring."""

    def __init__(
        self,
        worker: InferenceWorker,
        *,
        window_ms: float = DEFAULT_WINDOW_MS,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_queued: int = DEFAULT_MAX_QUEUED,
        rerank: RerankQueue | None = None,
    ):
        if window_ms < 0:
            raise ValueError(f"window_ms must be >= 0, got {window_ms}")
        if max_batch < 1 or max_queued < 1:
            raise ValueError(f"max_batch and max_queued must be >= 1, got {max_batch} and {max_queued}")
        self.worker = worker
        self.window_s = window_ms / 1e3
        self.max_batch = max_batch
        self.max_queued = max_queued
        self.rerank_queue = rerank or RerankQueue()
        self._queue: asyncio.Queue[_Pending] | None = None
        self._collector: asyncio.Task | None = None
        self._in_flight = 0  # queued + being retrieved
        self.batches = 0
        self.batched_requests = 0
        self.largest_batch = 0

    def _ensure_started(self) -> asyncio.Queue[_Pending]:
        if self._queue is None:
            self._queue = asyncio.Queue(maxsize=self.max_queued)
            self._collector = asyncio.get_running_loop().create_task(self._collect(), name="mmsearch-batcher")
        return self._queue

    async def search(self, pipeline: SearchPipeline, request: SearchRequest) -> SearchResult:
        """Retrieve (batched with concurrent requests), then rerank on the rerank queue if asked."""
        result = (await self.search_many(pipeline, [request]))[0]
        if isinstance(result, MMSearchError):
            raise result
        return result

    async def search_many(
        self, pipeline: SearchPipeline, requests: list[SearchRequest]
    ) -> list[SearchResult | MMSearchError]:
        """Several requests of one caller (`POST /search/batch`): retrieved in the shared batches, errors per slot."""
        queue = self._ensure_started()
        if self._in_flight + len(requests) > self.max_queued:
            raise ServerBusyError(
                f"{self._in_flight} searches are already queued (the limit is {self.max_queued}); "
                "retry in a few seconds"
            )
        reranks = sum(1 for r in requests if r.rerank)
        if reranks:
            self.rerank_queue.reserve(reranks)
        loop = asyncio.get_running_loop()
        pending = [_Pending(pipeline, r, loop.create_future()) for r in requests]
        self._in_flight += len(pending)
        for item in pending:
            queue.put_nowait(item)  # room was checked above, and nothing awaits in between
        try:
            retrieved = [await item.future for item in pending]
        except BaseException:
            for item in pending:
                item.future.cancel()  # a caller that went away: its requests still queued are skipped
            self.rerank_queue.release(reranks)
            raise
        finally:
            self._in_flight -= len(pending)
        out: list[Any] = []
        for request, result in zip(requests, retrieved, strict=True):
            if not request.rerank:
                out.append(result)
            elif isinstance(result, MMSearchError):
                self.rerank_queue.release()
                out.append(result)
            else:  # a task: it runs (and frees its slot) even if this caller goes away
                out.append(asyncio.ensure_future(self.rerank_queue.run(pipeline, result)))
        return [await r if isinstance(r, asyncio.Future) else r for r in out]

    async def _collect(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.window_s
            while len(batch) < self.max_batch:
                if not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            live = [p for p in batch if not p.future.done()]
            if live:
                await self._run(live)

    async def _run(self, batch: list[_Pending]) -> None:
        groups: dict[int, list[_Pending]] = {}
        for item in batch:
            groups.setdefault(id(item.pipeline), []).append(item)
        for items in groups.values():
            self.batches += 1
            self.batched_requests += len(items)
            self.largest_batch = max(self.largest_batch, len(items))
            requests = [p.request for p in items]
            try:
                results = await self.worker.run(items[0].pipeline.retrieve_many, requests)
            except MMSearchError as err:  # the whole batch failed (worker queue full, store down)
                results = [err] * len(items)
            except Exception as err:  # noqa: BLE001 - unexpected: re-raised by each waiting request
                for item in items:
                    if not item.future.done():
                        item.future.set_exception(err)
                continue
            for item, result in zip(items, results, strict=True):
                if not item.future.done():
                    item.future.set_result(result)

    def stats(self) -> dict[str, Any]:
        return {
            "queued": 0 if self._queue is None else self._queue.qsize(),
            "in_flight": self._in_flight,
            "max_queued": self.max_queued,
            "window_ms": self.window_s * 1e3,
            "max_batch": self.max_batch,
            "batches": self.batches,
            "mean_batch": round(self.batched_requests / self.batches, 2) if self.batches else None,
            "largest_batch": self.largest_batch,
            "rerank": self.rerank_queue.stats(),
        }

    def close(self) -> None:
        if self._collector is not None:
            self._collector.cancel()
        self.rerank_queue.close()


__all__ = [
    "DEFAULT_MAX_BATCH",
    "DEFAULT_MAX_QUEUED",
    "DEFAULT_MAX_RERANK_QUEUED",
    "DEFAULT_WINDOW_MS",
    "RerankQueue",
    "SearchScheduler",
]
