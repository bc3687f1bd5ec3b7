"""The API's concurrency model: one inference thread runs every model and Milvus call, in arrival order.

Entry point: `InferenceWorker.run(fn, *args)`, awaited from async route handlers. Torch modules are not safe to
call from several threads at once without care, and Milvus Lite is an in-process engine; a single dedicated
thread makes both trivially safe and keeps torch's own intra-op threads busy on one request at a time, which is
also the fastest schedule on a CPU box. Requests queue (FIFO) behind it; the queue is bounded, and a request
arriving when it is full gets `ServerBusyError` (503) instead of waiting without limit. The event loop itself
never blocks, so health checks, static files and thumbnails keep answering while a search runs.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from mmsearch.api.errors import ServerBusyError

T = TypeVar("T")

DEFAULT_MAX_PENDING = 64


class InferenceWorker:
    """A single-thread executor with a bounded queue and a few counters for `/healthz`."""

    def __init__(self, max_pending: int = DEFAULT_MAX_PENDING):
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self.max_pending = max_pending
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mmsearch-inference")
        self._lock = threading.Lock()
        self._pending = 0  # queued + running
        self._completed = 0
        self._busy_since: float | None = None

    def _done(self, _future: Future) -> None:
        # Runs for finished and for cancelled futures alike (a client that hung up while queued).
        with self._lock:
            self._pending -= 1
            self._completed += 1

    def _timed(self, fn: Callable[..., T], args: tuple, kwargs: dict) -> T:
        self._busy_since = time.monotonic()
        try:
            return fn(*args, **kwargs)
        finally:
            self._busy_since = None

    def submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Future[T]:
        """Queue `fn(*args, **kwargs)` on the inference thread; raises `ServerBusyError` when the queue is full."""
        with self._lock:
            if self._pending >= self.max_pending:
                raise ServerBusyError(
                    f"{self._pending} searches are already queued (the limit is {self.max_pending}); "
                    "retry in a few seconds"
                )
            self._pending += 1
        try:
            future = self._executor.submit(self._timed, fn, args, kwargs)
        except RuntimeError:
            with self._lock:
                self._pending -= 1
            raise
        future.add_done_callback(self._done)
        return future

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn` on the inference thread and await its result (exceptions propagate unchanged)."""
        return await asyncio.wrap_future(self.submit(fn, *args, **kwargs))

    def stats(self) -> dict[str, Any]:
        with self._lock:
            pending, completed = self._pending, self._completed
        since = self._busy_since
        return {
            "threads": 1,
            "pending": pending,
            "max_pending": self.max_pending,
            "completed": completed,
            "busy_for_s": None if since is None else round(time.monotonic() - since, 3),
        }

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


__all__ = ["DEFAULT_MAX_PENDING", "InferenceWorker"]
