"""Builds the heavy parts (encoder, store, reranker) from `Settings`; the only place that chooses smoke vs real models.

Smoke mode (`MMSEARCH_SMOKE=1`) builds tiny random-weight checkpoints in the official formats under the cache dir and
loads them through the same loaders real users use. Its output is not search quality and is labelled as such.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

SMOKE_BANNER = "SMOKE MODE: tiny random-weight models; results show the plumbing works, not search quality"


def smoke_dir(settings) -> Path:
    return Path(settings.cache_dir) / "smoke"


def build_encoder(settings):
    """The Visualized BGE encoder named by `settings` (tiny random weights in smoke mode)."""
    if settings.smoke:
        from mmsearch.testing import tiny_visual_bge_encoder

        log.info(SMOKE_BANNER)
        return tiny_visual_bge_encoder(smoke_dir(settings) / "visual_bge")
    from mmsearch.models.encoder import VisualizedBGEEncoder

    return VisualizedBGEEncoder.from_settings(settings)


def build_store(settings):
    """A `ProductStore` on `settings.milvus_uri` / `settings.collection`."""
    from mmsearch.store import ProductStore

    return ProductStore.from_settings(settings)


def build_reranker(settings):
    """The Phi-3 Vision reranker named by `settings` (a tiny random checkpoint in smoke mode); loads lazily."""
    from mmsearch.reranker import Phi3VisionReranker

    if settings.smoke:
        from mmsearch.testing import build_tiny_phi3_vision

        log.info(SMOKE_BANNER)
        model_dir = build_tiny_phi3_vision(smoke_dir(settings) / "phi3_vision")
        return Phi3VisionReranker.from_pretrained(
            str(model_dir),
            device=settings.device,
            dtype=settings.dtype,
            max_new_tokens=settings.reranker_max_new_tokens,
        )
    return Phi3VisionReranker.from_settings(settings)


__all__ = ["SMOKE_BANNER", "build_encoder", "build_reranker", "build_store", "smoke_dir"]
