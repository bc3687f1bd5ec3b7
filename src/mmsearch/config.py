"""Settings for every mmsearch entry point, read from the environment (`MMSEARCH_*`) and overridable in code.

Entry point: `Settings()`; e.g. `MMSEARCH_MILVUS_URI=http://milvus:19530 mmsearch serve`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mmsearch.limits import DEFAULT_MAX_K, MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS, MAX_K

# Official Visualized BGE releases: weights file inside the hub repo `BAAI/bge-visualized`, text model repo, dim.
ENCODER_VARIANTS: dict[str, dict[str, object]] = {
    "base": {
        "weights_file": "Visualized_base_en_v1.5.pth",
        "text_model": "BAAI/bge-base-en-v1.5",
        "dim": 768,
    },
    "m3": {"weights_file": "Visualized_m3.pth", "text_model": "BAAI/bge-m3", "dim": 1024},
}


# `--encoder` names: Visualized BGE variants, or a dual encoder kind with an optional hub id / local path.
VISUALIZED_BGE_ENCODERS = {"visualized-bge-base": "base", "visualized-bge-m3": "m3"}
DUAL_ENCODER_KINDS = ("clip", "siglip")
ENCODER_CHOICES = "visualized-bge-base|visualized-bge-m3|clip[:<hub id or path>]|siglip[:<hub id or path>]"
# `--title-encoder` names and EmbeddingGemma's Matryoshka sizes.
TITLE_ENCODER_CHOICES = "same|embeddinggemma[:768|512|256|128]"
EMBEDDINGGEMMA_DIMS = (768, 512, 256, 128)


@dataclass(frozen=True)
class EncoderSpec:
    """A parsed `--encoder`: kind "visualized-bge" (ref = variant) or "clip"/"siglip" (ref = hub id, path or None)."""

    kind: str
    ref: str | None = None

    @classmethod
    def parse(cls, text: str) -> EncoderSpec:
        """`"clip:/models/clip"` -> EncoderSpec("clip", "/models/clip"); an unknown name is a ValueError."""
        name = (text or "").strip()
        if name in VISUALIZED_BGE_ENCODERS:
            return cls("visualized-bge", VISUALIZED_BGE_ENCODERS[name])
        kind, sep, ref = name.partition(":")
        if kind in DUAL_ENCODER_KINDS:
            if sep and not ref.strip():
                raise ValueError(
                    f"encoder {text!r} names no checkpoint after ':'; expected {kind}:<hub id or path>"
                )
            return cls(kind, ref.strip() or None)
        raise ValueError(f"unknown encoder {text!r}; expected {ENCODER_CHOICES}")

    def __str__(self) -> str:
        if self.kind == "visualized-bge":
            return f"visualized-bge-{self.ref}"
        return self.kind if self.ref is None else f"{self.kind}:{self.ref}"


@dataclass(frozen=True)
class TitleEncoderSpec:
    """A parsed `--title-encoder`: "same" (the image-text encoder's text tower) or "embeddinggemma" at `dim`."""

    kind: str = "same"
    dim: int | None = None

    @classmethod
    def parse(cls, text: str) -> TitleEncoderSpec:
        name = (text or "").strip()
        if name == "same":
            return cls()
        kind, sep, dim = name.partition(":")
        if kind == "embeddinggemma":
            if not sep:
                return cls(kind, EMBEDDINGGEMMA_DIMS[0])
            if dim.strip().isdigit() and int(dim) in EMBEDDINGGEMMA_DIMS:
                return cls(kind, int(dim))
            raise ValueError(
                f"title encoder {text!r}: EmbeddingGemma sizes are {', '.join(map(str, EMBEDDINGGEMMA_DIMS))}"
            )
        raise ValueError(f"unknown title encoder {text!r}; expected {TITLE_ENCODER_CHOICES}")

    def __str__(self) -> str:
        return self.kind if self.dim is None else f"{self.kind}:{self.dim}"


SMOKE_BANNER = "SMOKE MODE: tiny random-weight models; results show the plumbing works, not search quality"


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "mmsearch"


class Settings(BaseSettings):
    """All knobs, with production defaults. Env vars are the field names upper-cased with the `MMSEARCH_` prefix."""

    model_config = SettingsConfigDict(env_prefix="MMSEARCH_", extra="ignore")

    # Milvus: a file path means embedded Milvus Lite; http(s)://host:19530 means a server.
    milvus_uri: str = "./mmsearch.db"
    milvus_token: str | None = None
    collection: str = "amazon_products"
    # Read consistency for searches (Strong, Session, Bounded, Eventually). Bounded may miss rows written in the
    # last `common.gracefulTime` (5 s on a default server) and costs no wait; Strong waits for the server's
    # next time tick (hundreds of ms per search under load). Milvus Lite always reads its own writes.
    milvus_consistency: Literal["Strong", "Session", "Bounded", "Eventually"] = "Bounded"

    # Visualized BGE. `encoder_weights` is a hub repo id (file picked by variant), a local .pth, or a local dir.
    encoder_variant: Literal["base", "m3"] = "base"
    encoder_weights: str = "BAAI/bge-visualized"
    encoder_text_model: str | None = None  # None: the variant's official BGE repo
    # Which image-text encoder (ENCODER_CHOICES); None: visualized-bge-<encoder_variant>.
    encoder: str | None = None
    # Which model fills `text_vector` (TITLE_ENCODER_CHOICES), and where EmbeddingGemma is (hub id or local dir).
    title_encoder: str = "same"
    title_encoder_model: str = "google/embeddinggemma-300m"
    encode_batch_size: int = Field(default=32, ge=1, le=1024)

    # Phi-3 Vision reranker: hub id or local dir with config.json + model*.safetensors + tokenizer.
    reranker_model: str = "microsoft/Phi-3-vision-128k-instruct"
    reranker_num_crops: int = Field(default=4, ge=1, le=16)
    reranker_max_new_tokens: int = Field(default=160, ge=16, le=1024)
    # "int8": weight-only int8 decoder (about half the decode time on a memory-bound CPU; logits move slightly).
    reranker_quantize: Literal["none", "int8"] = "none"

    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"

    cache_dir: Path = Field(default_factory=default_cache_dir)
    # Where a moved catalogue now lives (`--root`); None: the root the indexer kept on the collection.
    catalogue_root: Path | None = None

    # Input bounds shared by the indexer, the CLI and the API.
    max_image_bytes: int = Field(default=MAX_IMAGE_BYTES, ge=1024)
    max_image_pixels: int = Field(default=MAX_IMAGE_PIXELS, ge=64)
    # Image downloads: seconds per attempt (connect, each read, and the whole body), and retries of transient errors.
    fetch_timeout_s: float = Field(default=15.0, gt=0, le=600)
    fetch_retries: int = Field(default=3, ge=0, le=10)
    max_k: int = Field(default=DEFAULT_MAX_K, ge=1, le=MAX_K)

    # API serving (docs/SERVING.md): concurrent searches arriving within `serve_batch_window_ms` are encoded and
    # searched together, at most `serve_max_batch` at a time; beyond the queue bounds new searches get 503.
    serve_batch_window_ms: float = Field(default=5.0, ge=0, le=1000)
    serve_max_batch: int = Field(default=16, ge=1, le=256)
    # POST /search/batch fetches client-given URLs: by default only hosts that resolve to public addresses, so a
    # client cannot make the server read its own network (SSRF). Allow private ones for an intranet deployment.
    serve_fetch_allow_private: bool = False
    serve_max_queued: int = Field(default=64, ge=1, le=10_000)
    serve_max_rerank_queued: int = Field(default=8, ge=1, le=1000)
    # HTTP edge: a request body that stalls longer than this between chunks gets 408; headers above the limit 431.
    serve_body_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    serve_max_header_bytes: int = Field(default=16 * 1024, ge=1024, le=1024 * 1024)

    # Tiny random-weight models and generated data (tests, CI, notebook smoke runs). Never search quality.
    smoke: bool = False

    @field_validator("encoder")
    @classmethod
    def _check_encoder(cls, value: str | None) -> str | None:
        if value is not None:
            EncoderSpec.parse(value)
        return value

    @field_validator("title_encoder")
    @classmethod
    def _check_title_encoder(cls, value: str) -> str:
        TitleEncoderSpec.parse(value)
        return value

    @property
    def encoder_spec(self) -> EncoderSpec:
        return EncoderSpec.parse(self.encoder or f"visualized-bge-{self.encoder_variant}")

    @property
    def title_encoder_spec(self) -> TitleEncoderSpec:
        return TitleEncoderSpec.parse(self.title_encoder)

    @property
    def text_model_id(self) -> str:
        return self.encoder_text_model or str(ENCODER_VARIANTS[self.encoder_variant]["text_model"])

    @property
    def is_server_uri(self) -> bool:
        return self.milvus_uri.startswith(("http://", "https://", "tcp://", "grpc://"))


__all__ = [
    "EMBEDDINGGEMMA_DIMS",
    "ENCODER_CHOICES",
    "ENCODER_VARIANTS",
    "SMOKE_BANNER",
    "TITLE_ENCODER_CHOICES",
    "EncoderSpec",
    "Settings",
    "TitleEncoderSpec",
    "default_cache_dir",
]
