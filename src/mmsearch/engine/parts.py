"""Builders of the heavy parts from `Settings`: the one place that chooses between smoke and real models.

Entry points: `build_encoder`, `build_store`, `build_reranker`, `build_retriever`, `build_pipeline`; `Engine` uses
them and so do the CLI's `eval` and the API (through `Engine`). Smoke mode (`MMSEARCH_SMOKE=1`, `--smoke`) builds
tiny random-weight checkpoints in the official formats under the cache dir (`mmsearch.testing`, used nowhere else)
and loads them through the same loaders real users use. Its output is not search quality and is labelled as such.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from mmsearch.config import SMOKE_BANNER, Settings
from mmsearch.media import ImageFetcher

log = logging.getLogger(__name__)


def smoke_dir(settings: Settings) -> Path:
    """Where smoke mode keeps its tiny checkpoints (built once, reused by later runs)."""
    return Path(settings.cache_dir) / "smoke"


def build_encoder(settings: Settings):
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


def build_title_encoder(settings: Settings, encoder):
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


def build_store(settings: Settings, *, create: bool = True):
    """A `ProductStore` on `settings.milvus_uri` / `settings.collection`; `create=False` for readers (search, serve),
    so a missing Milvus Lite database is an error instead of a new empty one."""
    from mmsearch.store import ProductStore

    return ProductStore(
        settings.milvus_uri,
        collection=settings.collection,
        token=settings.milvus_token,
        consistency=settings.milvus_consistency,
        create=create,
    )


def build_fetcher(settings: Settings, **overrides: Any) -> ImageFetcher:
    """An `ImageFetcher` with the settings' byte and pixel bounds and its cache under `cache_dir/images`."""
    options: dict[str, Any] = {
        "cache_dir": Path(settings.cache_dir) / "images",
        "max_bytes": settings.max_image_bytes,
        "max_pixels": settings.max_image_pixels,
        "timeout": settings.fetch_timeout_s,
        "retries": settings.fetch_retries,
    }
    return ImageFetcher(**(options | overrides))


def hit_image_loader(settings: Settings, *, root: Any = None):
    """Hit -> PIL image for the reranker's panel, through one lazily created `ImageFetcher`.

    `root` (a path, or a callable returning one) is the catalogue root relative local refs resolve against.
    """
    from mmsearch.errors import InvalidImageError

    fetcher: ImageFetcher | None = None

    def load(hit):
        nonlocal fetcher
        if not hit.image_url:
            raise InvalidImageError(f"hit {hit.id!r} has no image_url")
        if fetcher is None:
            fetcher = build_fetcher(settings, retries=1, timeout=10.0, max_workers=4)
        return fetcher.open(resolve_ref(hit.image_url, root() if callable(root) else root))

    return load


def resolve_ref(ref: str, root: str | Path | None) -> str:
    """A stored image reference made usable: URLs and absolute paths as they are, relative paths under `root`.

    Raises:
        InvalidImageError: a relative ref with no root, or whose file is missing (a moved catalogue: `--root`).
        PathNotAllowedError: a relative ref that resolves outside `root` (`..`, symlinks out).
    """
    from mmsearch.errors import InvalidImageError
    from mmsearch.media.decode import confine

    if "://" in ref or Path(ref).is_absolute():
        return ref
    if root is None:
        raise InvalidImageError(
            f"image {ref!r} is relative and the collection keeps no catalogue root; pass --root DIR "
            "(MMSEARCH_CATALOGUE_ROOT) with the catalogue's folder"
        )
    path = confine(Path(root) / ref, [root])
    if not path.is_file():
        raise InvalidImageError(
            f"image {ref!r} not found under catalogue root {root}; if the catalogue moved, pass --root DIR "
            "(MMSEARCH_CATALOGUE_ROOT) with its new folder"
        )
    return str(path)


def build_reranker(settings: Settings, *, image_loader=None):
    """The Phi-3 Vision reranker named by `settings` (a tiny random checkpoint in smoke mode); loads lazily."""
    from mmsearch.reranker.phi3 import Phi3VisionReranker

    model = settings.reranker_model
    if settings.smoke:
        from mmsearch.testing import build_tiny_phi3_vision

        log.info(SMOKE_BANNER)
        model = str(build_tiny_phi3_vision(smoke_dir(settings) / "phi3_vision"))
    return Phi3VisionReranker.from_pretrained(
        model,
        device=settings.device,
        dtype=settings.dtype,
        num_crops=settings.reranker_num_crops,
        max_new_tokens=settings.reranker_max_new_tokens,
        image_loader=image_loader or hit_image_loader(settings),
        quantize=settings.reranker_quantize,
    )


def build_retriever(settings: Settings, encoder, store, title_encoder=None):
    """A `Retriever` over built parts, with the settings' image bounds on query images."""
    from mmsearch.retriever import QueryEncoder, Retriever

    query_encoder = QueryEncoder(
        encoder, max_image_bytes=settings.max_image_bytes, max_image_pixels=settings.max_image_pixels
    )
    return Retriever(encoder, store, query_encoder=query_encoder, title_encoder=title_encoder)


def build_pipeline(settings: Settings, encoder, store, reranker=None, title_encoder=None):
    """A `SearchPipeline` over built parts (the store is checked against the encoders here)."""
    from mmsearch.pipelines import SearchPipeline

    retriever = build_retriever(settings, encoder, store, title_encoder)
    return SearchPipeline(retriever, reranker, max_k=settings.max_k, smoke=settings.smoke)


__all__ = [
    "build_encoder",
    "build_fetcher",
    "build_pipeline",
    "build_reranker",
    "build_retriever",
    "build_store",
    "build_title_encoder",
    "hit_image_loader",
    "resolve_ref",
    "smoke_dir",
]
