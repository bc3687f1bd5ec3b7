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
    """The image-text encoder named by `settings.encoder` (tiny random weights of the same kind in smoke mode)."""
    spec = settings.encoder_spec
    options = {
        "device": settings.device,
        "dtype": settings.dtype,
        "batch_size": settings.encode_batch_size,
        "max_image_pixels": settings.max_image_pixels,
        "max_image_bytes": settings.max_image_bytes,
    }
    if settings.smoke:
        from mmsearch.testing import tiny_dual_encoder, tiny_visual_bge_encoder

        log.info(SMOKE_BANNER)
        tiny = {"batch_size": settings.encode_batch_size}  # tiny models run on CPU in float32
        if spec.kind == "visualized-bge":
            return tiny_visual_bge_encoder(smoke_dir(settings) / "visual_bge", **tiny)
        return tiny_dual_encoder(spec.kind, smoke_dir(settings) / spec.kind, **tiny)
    if spec.kind == "visualized-bge":
        from mmsearch.models.encoder import VisualizedBGEEncoder

        return VisualizedBGEEncoder.from_pretrained(
            spec.ref, settings.encoder_weights, settings.encoder_text_model, **options
        )
    from mmsearch.models.dual_encoder import DualEncoder

    return DualEncoder.from_pretrained(spec.kind, spec.ref, **options)


def build_title_encoder(settings, encoder):
    """The model behind `text_vector` named by `settings.title_encoder`: the encoder's own text tower ("same")
    or EmbeddingGemma at the chosen Matryoshka size (a tiny random one in the real layout in smoke mode)."""
    from mmsearch.models.base import SameSpaceTitles

    spec = settings.title_encoder_spec
    if spec.kind == "same":
        return SameSpaceTitles(encoder)
    options = {"device": settings.device, "dtype": settings.dtype, "batch_size": settings.encode_batch_size}
    if settings.smoke:
        from mmsearch.testing import tiny_embeddinggemma

        return tiny_embeddinggemma(
            smoke_dir(settings) / "embeddinggemma", dim=spec.dim, batch_size=settings.encode_batch_size
        )
    from mmsearch.models.title_encoder import SentenceTransformerTitleEncoder

    return SentenceTransformerTitleEncoder.from_pretrained(
        settings.title_encoder_model, dim=spec.dim, **options
    )


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


__all__ = [
    "SMOKE_BANNER",
    "build_encoder",
    "build_reranker",
    "build_store",
    "build_title_encoder",
    "smoke_dir",
]
