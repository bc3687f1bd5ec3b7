"""The assembly point: `Engine` (the library entry point) and the builders that turn `Settings` into parts.

Entry point: `mmsearch.Engine(...)`. Only this package chooses between smoke and real models, and only it
imports `mmsearch.testing`.
"""

from mmsearch.engine.engine import Engine
from mmsearch.engine.parts import (
    build_encoder,
    build_fetcher,
    build_pipeline,
    build_reranker,
    build_retriever,
    build_store,
    hit_image_loader,
    smoke_dir,
)

__all__ = [
    "Engine",
    "build_encoder",
    "build_fetcher",
    "build_pipeline",
    "build_reranker",
    "build_retriever",
    "build_store",
    "hit_image_loader",
    "smoke_dir",
]
