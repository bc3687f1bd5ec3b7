"""Assembles the FastAPI app: routes, error handlers, static page, and a lifespan that loads the models once.

Entry point: `create_app(settings, with_reranker=True)`; `mmsearch serve` runs it with uvicorn. Importing this
module loads nothing: the encoder, the reranker and the Milvus connection are opened in `lifespan`, on the
single inference thread (see `mmsearch.api.worker`), and kept on `app.state.service`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from mmsearch.api.batching import RerankQueue, SearchScheduler
from mmsearch.api.dependencies import RETRY_INTERVAL_S, PipelineFactory, SearchService, get_settings
from mmsearch.api.edge import EdgeGuard
from mmsearch.api.errors import install_error_handlers
from mmsearch.api.routes import router
from mmsearch.api.thumbnails import Thumbnailer
from mmsearch.api.worker import DEFAULT_MAX_PENDING, InferenceWorker
from mmsearch.config import Settings
from mmsearch.media.fetch import ImageFetcher
from mmsearch.pipelines import SearchPipeline
from mmsearch.pipelines.factory import (
    SMOKE_BANNER,
    build_encoder,
    build_reranker,
    build_store,
    build_title_encoder,
)
from mmsearch.retriever import QueryEncoder, Retriever

log = logging.getLogger("mmsearch.api")


class ModelCachingFactory:
    """Builds the pipeline from settings, keeping the models it loaded when opening Milvus fails.

    A start-up that fails on the store (server down, Lite file locked, nothing indexed yet) is retried later;
    the encoder and the reranker, which can take minutes to load, are loaded only once.
    """

    def __init__(self, *, with_reranker: bool = True):
        self.with_reranker = with_reranker
        self._encoder = None
        self._title_encoder = None
        self._reranker = None

    def __call__(self, settings: Settings) -> SearchPipeline:
        if self._encoder is None:
            self._encoder = build_encoder(settings)
        if self._title_encoder is None:
            self._title_encoder = build_title_encoder(settings, self._encoder)
        if self.with_reranker and self._reranker is None:
            reranker = build_reranker(settings)
            if hasattr(reranker, "load"):
                reranker.load()  # at start-up, not on the first search that asks for a rerank
            self._reranker = reranker
        store = build_store(settings)
        query_encoder = QueryEncoder(
            self._encoder,
            max_image_bytes=settings.max_image_bytes,
            max_image_pixels=settings.max_image_pixels,
        )
        try:
            retriever = Retriever(
                self._encoder, store, query_encoder=query_encoder, title_encoder=self._title_encoder
            )
        except BaseException:
            store.close()  # a Lite store left open would keep its file locked
            raise
        return SearchPipeline(retriever, self._reranker, max_k=settings.max_k, smoke=settings.smoke)


def create_app(
    settings: Settings | None = None,
    *,
    with_reranker: bool = True,
    pipeline_factory: PipelineFactory | None = None,
    max_pending: int | None = None,
    retry_interval_s: float = RETRY_INTERVAL_S,
) -> FastAPI:
    """The mmsearch HTTP API and web page.

    Args:
        settings: fixed settings; None reads `MMSEARCH_*` through the `get_settings` dependency (overridable).
        with_reranker: load the Phi-3 Vision reranker too (the default factory only).
        pipeline_factory: builds the `SearchPipeline` from settings at start-up (tests pass tiny parts).
        max_pending: searches queued or running before new ones get 503 (None: `settings.serve_max_queued`).
        retry_interval_s: after a failed start-up, the least time between two attempts to build the pipeline.
    """
    factory = pipeline_factory or ModelCachingFactory(with_reranker=with_reranker)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        resolved = app.dependency_overrides.get(get_settings, get_settings)()
        if resolved.smoke:
            log.warning(SMOKE_BANNER)
        fetcher = ImageFetcher.from_settings(resolved, retries=1, timeout=10.0, max_workers=4)
        limit = resolved.serve_max_queued if max_pending is None else max_pending
        worker = InferenceWorker(limit + DEFAULT_MAX_PENDING)  # batches, health checks and thumbnail lookups
        scheduler = SearchScheduler(
            worker,
            window_ms=resolved.serve_batch_window_ms,
            max_batch=resolved.serve_max_batch,
            max_queued=limit,
            rerank=RerankQueue(resolved.serve_max_rerank_queued),
        )
        service = SearchService(
            resolved,
            factory,
            worker,
            Thumbnailer(fetcher),
            scheduler=scheduler,
            retry_interval_s=retry_interval_s,
        )
        app.state.service = service
        await service.start()
        try:
            yield
        finally:
            app.state.service = None
            service.close()

    app = FastAPI(
        title="mmsearch",
        summary="Multimodal product search: Visualized BGE retrieval in Milvus, Phi-3 Vision reranking",
        version="0.1.0",
        lifespan=lifespan,
    )
    if settings is not None:
        app.dependency_overrides[get_settings] = lambda: settings
    install_error_handlers(app)
    edge_settings = settings or get_settings()
    app.add_middleware(
        EdgeGuard,
        max_header_bytes=edge_settings.serve_max_header_bytes,
        body_timeout_s=edge_settings.serve_body_timeout_s,
    )
    app.include_router(router)
    static_dir = resources.files("mmsearch.api") / "static"
    app.mount("/static", StaticFiles(directory=str(static_dir)), name="static")
    return app


__all__ = ["ModelCachingFactory", "create_app"]
