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
from mmsearch.config import SMOKE_BANNER, Settings
from mmsearch.engine import Engine, build_fetcher
from mmsearch.engine.parts import resolve_ref

log = logging.getLogger("mmsearch.api")


def resolve_stored(service, ref: str) -> str:
    """A stored image ref as a fetchable one: relative refs under `--root`, else the root kept on the collection."""
    root = service.settings.catalogue_root
    if root is None and service.pipeline is not None:
        root = service.pipeline.retriever.store.catalogue_root()
    return resolve_ref(ref, root)


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
        pipeline_factory: builds the `SearchPipeline` from settings at start-up (tests pass tiny parts). Default:
            an `Engine` on the settings, which keeps its loaded models when opening Milvus fails and is retried.
        max_pending: searches queued or running before new ones get 503 (None: `settings.serve_max_queued`).
        retry_interval_s: after a failed start-up, the least time between two attempts to build the pipeline.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        resolved = app.dependency_overrides.get(get_settings, get_settings)()
        if resolved.smoke:
            log.warning(SMOKE_BANNER)
        engine = None
        factory = pipeline_factory
        if factory is None:
            engine = Engine(settings=resolved)

            def factory(_settings: Settings):
                # Models load once; a failed store open is retried by SearchService with the same engine.
                return engine.pipeline(rerank=with_reranker, load=True)

        fetcher = build_fetcher(resolved, retries=1, timeout=10.0, max_workers=4)
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
            Thumbnailer(fetcher, resolve=lambda ref: resolve_stored(service, ref)),
            scheduler=scheduler,
            retry_interval_s=retry_interval_s,
        )
        app.state.service = service
        app.state.engine = engine  # None when a pipeline_factory was given
        await service.start()
        try:
            yield
        finally:
            app.state.service = None
            service.close()
            if engine is not None:
                engine.close()

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


__all__ = ["create_app"]
