"""Assembles the FastAPI app: routes, error handlers, static page, and a lifespan that loads the models once.

Entry point: `create_app(settings, with_reranker=True)`; `mmsearch serve` runs it with uvicorn. Importing this
module loads nothing: the encoder, the reranker and the Milvus connection are opened in `lifespan`, on the
single inference thread (see `mmsearch.api.worker`), and kept on `app.state.service`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from importlib import resources

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from mmsearch.api.dependencies import PipelineFactory, SearchService, get_settings
from mmsearch.api.errors import install_error_handlers
from mmsearch.api.routes import router
from mmsearch.api.thumbnails import Thumbnailer
from mmsearch.api.worker import DEFAULT_MAX_PENDING, InferenceWorker
from mmsearch.config import Settings
from mmsearch.indexer.images import ImageFetcher
from mmsearch.pipelines import SearchPipeline
from mmsearch.pipelines.factory import SMOKE_BANNER

log = logging.getLogger("mmsearch.api")


def default_pipeline_factory(settings: Settings, *, with_reranker: bool = True) -> SearchPipeline:
    return SearchPipeline.from_settings(settings, with_reranker=with_reranker)


def create_app(
    settings: Settings | None = None,
    *,
    with_reranker: bool = True,
    pipeline_factory: PipelineFactory | None = None,
    max_pending: int = DEFAULT_MAX_PENDING,
) -> FastAPI:
    """The mmsearch HTTP API and web page.

    Args:
        settings: fixed settings; None reads `MMSEARCH_*` through the `get_settings` dependency (overridable).
        with_reranker: load the Phi-3 Vision reranker too (the default factory only).
        pipeline_factory: builds the `SearchPipeline` from settings at start-up (tests pass tiny parts).
        max_pending: searches that may wait for the inference worker before new ones get 503.
    """
    factory = pipeline_factory or partial(default_pipeline_factory, with_reranker=with_reranker)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        resolved = app.dependency_overrides.get(get_settings, get_settings)()
        if resolved.smoke:
            log.warning(SMOKE_BANNER)
        fetcher = ImageFetcher.from_settings(resolved, retries=1, timeout=10.0, max_workers=4)
        service = SearchService(resolved, factory, InferenceWorker(max_pending), Thumbnailer(fetcher))
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
    app.include_router(router)
    static_dir = resources.files("mmsearch.api") / "static"
    app.mount("/static", StaticFiles(directory=str(static_dir)), name="static")
    return app


__all__ = ["create_app", "default_pipeline_factory"]
