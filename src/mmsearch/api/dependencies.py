"""Shared FastAPI dependencies: settings (cached, overridable), the running `SearchService`, and its pipeline.

Entry points: `get_settings`, `get_service`, `get_pipeline`. Tests replace settings with
`app.dependency_overrides[get_settings] = lambda: Settings(...)`; the app's lifespan reads the same override, so
what the routes see and what was loaded at start-up always agree.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Annotated, Any

from fastapi import Depends, Request

from mmsearch.api.batching import SearchScheduler
from mmsearch.api.errors import PipelineUnavailableError
from mmsearch.api.thumbnails import Thumbnailer
from mmsearch.api.worker import InferenceWorker
from mmsearch.config import Settings
from mmsearch.errors import MMSearchError, StoreError
from mmsearch.pipelines import SearchPipeline

log = logging.getLogger("mmsearch.api")

PipelineFactory = Callable[[Settings], SearchPipeline]
RETRY_INTERVAL_S = 10.0
HEALTH_TIMEOUT_S = 5.0


@lru_cache
def get_settings() -> Settings:
    """Settings from the environment (`MMSEARCH_*`), read once per process."""
    return Settings()


class SearchService:
    """What the app holds while it runs: settings, the inference worker, the pipeline (or why it is missing).

    The pipeline is built on the inference thread at start-up. When that fails with a domain error (Milvus Lite
    locked by another process, server unreachable, nothing indexed yet, a checkpoint missing), the app still
    starts: `/healthz` reports the error, searches answer with it, and the build is retried at most every
    `retry_interval_s` seconds, so the service recovers once the cause is gone.
    """

    def __init__(
        self,
        settings: Settings,
        factory: PipelineFactory,
        worker: InferenceWorker,
        thumbnails: Thumbnailer,
        *,
        scheduler: SearchScheduler | None = None,
        retry_interval_s: float = RETRY_INTERVAL_S,
    ):
        self.settings = settings
        self.factory = factory
        self.worker = worker
        self.thumbnails = thumbnails
        self.scheduler = scheduler or SearchScheduler(worker)
        self.retry_interval_s = retry_interval_s
        self.pipeline: SearchPipeline | None = None
        self.error: MMSearchError | None = None
        self._last_attempt: float | None = None
        self._last_store_info: dict[str, Any] | None = None

    def _build(self) -> None:
        """Runs on the inference thread, so concurrent callers never build twice."""
        if self.pipeline is not None:
            return
        self._last_attempt = time.monotonic()
        try:
            self.pipeline = self.factory(self.settings)
            self.error = None
        except MMSearchError as err:
            self.error = err
            log.error("search pipeline unavailable (%s): %s", err.code, err)
        except Exception as err:  # noqa: BLE001 - start-up must report, not crash the server
            log.exception("search pipeline failed to start")
            self.error = PipelineUnavailableError(
                f"the search pipeline failed to start ({type(err).__name__}); see the server log"
            )

    async def start(self) -> None:
        await self.worker.run(self._build)

    async def ensure_pipeline(self) -> SearchPipeline:
        """The loaded pipeline, retrying a failed start-up when the retry interval has passed."""
        if self.pipeline is None:
            due = self._last_attempt is None or time.monotonic() - self._last_attempt >= self.retry_interval_s
            if due:
                await self.worker.run(self._build)
        if self.pipeline is None:
            raise self.error or PipelineUnavailableError("the search pipeline is not loaded")
        return self.pipeline

    def _models(self) -> dict[str, Any]:
        pipeline = self.pipeline
        if pipeline is None:
            return {"encoder": None, "reranker": None}
        encoder = pipeline.retriever.encoder
        titles = getattr(pipeline.retriever, "title_encoder", None)
        reranker = pipeline.reranker
        return {
            "encoder": {
                "id": getattr(encoder, "model_id", None),
                "dim": getattr(encoder, "dim", None),
                "modes": sorted(getattr(encoder, "capabilities", ())),
            },
            "title_encoder": None
            if titles is None
            else {"id": getattr(titles, "model_id", None), "dim": getattr(titles, "dim", None)},
            "reranker": None
            if reranker is None
            else {
                "name": getattr(reranker, "name", type(reranker).__name__),
                "class": type(reranker).__name__,
                "source": getattr(reranker, "source", None),
            },
        }

    async def health(self) -> dict[str, Any]:
        """Milvus reachability and contents, the models loaded, and the worker's queue; `status` sums it up."""
        body: dict[str, Any] = {
            "status": "ok",
            "smoke": bool(self.settings.smoke),
            "milvus": {"uri": self.settings.milvus_uri, "collection": self.settings.collection},
            "models": {},
            "worker": self.worker.stats(),
            "queue": self.scheduler.stats(),
            "error": None,
        }
        try:
            pipeline = await self.ensure_pipeline()
        except MMSearchError as err:
            body.update(status="unavailable", error={"code": err.code, "message": err.message})
            body["milvus"]["reachable"] = None
            body["models"] = self._models()
            return body
        body["models"] = self._models()
        try:
            future = self.worker.submit(pipeline.info)
            info = await asyncio.wait_for(asyncio.wrap_future(future), HEALTH_TIMEOUT_S)
            self._last_store_info = info
            body["milvus"] = {**info, "reachable": True, "stale": False}
        except TimeoutError:
            # A long search holds the worker: report the last answer instead of queueing behind it.
            body["milvus"] = {**(self._last_store_info or body["milvus"]), "reachable": None, "stale": True}
        except StoreError as err:
            body["milvus"]["reachable"] = False
            body.update(status="unavailable", error={"code": err.code, "message": err.message})
        except MMSearchError as err:  # e.g. ServerBusyError
            body.update(status="busy", error={"code": err.code, "message": err.message})
        return body

    def close(self) -> None:
        self.scheduler.close()
        self.worker.close()
        self.thumbnails.close()
        if self.pipeline is not None:
            self.pipeline.close()


def get_service(request: Request) -> SearchService:
    service = getattr(request.app.state, "service", None)
    if service is None:
        raise PipelineUnavailableError("the app has not started (its lifespan did not run)")
    return service


ServiceDep = Annotated[SearchService, Depends(get_service)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


async def get_pipeline(service: ServiceDep) -> SearchPipeline:
    """The shared, already loaded search pipeline (models and Milvus opened once at start-up)."""
    return await service.ensure_pipeline()


PipelineDep = Annotated[SearchPipeline, Depends(get_pipeline)]


__all__ = [
    "PipelineDep",
    "PipelineFactory",
    "SearchService",
    "ServiceDep",
    "SettingsDep",
    "get_pipeline",
    "get_service",
    "get_settings",
]
