"""The encoder interface every search stage depends on: image-text encoders and title (text-only) encoders.

Entry points: `Encoder` (abstract: Visualized BGE, CLIP, SigLIP implement it), `TitleEncoder` (abstract: the
text model that fills `text_vector`), `SameSpaceTitles` (the image-text encoder's own text tower as the title
encoder). Every output is (n, dim) float32 with L2-normalised rows.

Retrieval modes an encoder can serve (`Encoder.capabilities`):
- "joint": one embedding of image + instruction together (needs `encode_multimodal`: Visualized BGE);
- "weighted": image vector vs `image_vector` and instruction vs `text_vector`, fused by Milvus' ranker;
- "fused": query-side weighted sum of the image vector and the instruction's text vector, one ANN search;
- "hybrid-bm25": the image-side vector vs `image_vector` fused with the instruction's BM25 match on titles
  (computed by Milvus; any encoder serves it).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, ClassVar

import numpy as np
from PIL import Image

from mmsearch.errors import InvalidImageError, InvalidQueryError, InvalidTextError, UnsupportedModeError
from mmsearch.media.decode import ImageSource, open_image

if TYPE_CHECKING:
    import torch

    from mmsearch.media.decode import ImageSource

ALL_MODES = frozenset({"joint", "weighted", "fused", "hybrid-bm25"})
DUAL_ENCODER_MODES = frozenset({"weighted", "fused", "hybrid-bm25"})


class Encoder(ABC):
    """An image-text embedding model: images and texts into one space of `dim` floats.

    Attributes:
        model_id: stable id of the weights, recorded on the Milvus collection (mixing encoders is refused).
        dim: embedding size.
        capabilities: the retrieval modes that make sense with this encoder (see module docstring).
        default_mode: the mode used when a caller names none.
    """

    model_id: str
    dim: int
    capabilities: ClassVar[frozenset[str]] = ALL_MODES
    default_mode: ClassVar[str] = "joint"

    @abstractmethod
    def preprocess(self, images: Sequence[ImageSource]) -> torch.Tensor:
        """Decode (bounded) and transform: (n, 3, S, S) float32 on CPU, ready for `encode_pixels`."""

    @abstractmethod
    def encode_pixels(self, pixel_values: torch.Tensor) -> np.ndarray:
        """Image embeddings from `preprocess` output -> (n, dim)."""

    @abstractmethod
    def encode_images(self, images: Sequence[ImageSource]) -> np.ndarray:
        """Paths, bytes or PIL images -> (n, dim)."""

    @abstractmethod
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Texts -> (n, dim), in the same space as the images."""

    @property
    def supports_joint(self) -> bool:
        return "joint" in self.capabilities

    def encode_multimodal(self, images: Sequence[ImageSource], texts: Sequence[str]) -> np.ndarray:
        """(image, instruction) pairs -> (n, dim). Only joint encoders implement it."""
        raise UnsupportedModeError(
            f"encoder {self.model_id!r} ({type(self).__name__}) embeds images and texts separately and has no joint "
            f"image+instruction embedding; use mode {' or '.join(sorted(self.capabilities))}"
        )

    def check_mode(self, mode: str) -> None:
        """Raise `UnsupportedModeError` when `mode` makes no sense with this encoder."""
        if mode not in self.capabilities:
            raise UnsupportedModeError(
                f"mode {mode!r} is not available with encoder {self.model_id!r}: it supports "
                f"{', '.join(sorted(self.capabilities))}"
            )


class TitleEncoder(ABC):
    """A text model for product titles (`text_vector`) and the instructions matched against them.

    Attributes:
        model_id: stable id of the weights and output size, recorded on the collection.
        dim: output size (after any Matryoshka truncation).
        same_space_as_images: True when titles share the image encoder's space (an untitled product may then
            reuse its image vector as its title vector).
    """

    model_id: str
    dim: int
    same_space_as_images: ClassVar[bool] = False

    @abstractmethod
    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Product titles -> (n, dim)."""

    @abstractmethod
    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Shopper instructions -> (n, dim), comparable with `encode_documents` output."""


class SameSpaceTitles(TitleEncoder):
    """Titles embedded by the image-text encoder's own text tower (`--title-encoder same`)."""

    same_space_as_images = True

    def __init__(self, encoder: Encoder):
        self.encoder = encoder
        self.model_id = encoder.model_id
        self.dim = encoder.dim

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self.encoder.encode_texts(texts)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.encoder.encode_texts(texts)


def check_image_sequence(images: object) -> None:
    """A lone path/bytes/image is a sequence-like trap: a str would be iterated character by character."""
    if isinstance(images, str | bytes | bytearray | memoryview | os.PathLike | Image.Image):
        raise InvalidQueryError(
            f"images must be a sequence of images, got a single {type(images).__name__}; wrap it in a list"
        )


def decode_images(
    images: Sequence[ImageSource], positions: Sequence[int], *, max_bytes: int, max_pixels: int
) -> list[Image.Image]:
    """Each source decoded under the byte and pixel bounds; an error names the caller's index (`positions`)."""
    decoded = []
    for pos, source in zip(positions, images, strict=True):
        try:
            decoded.append(open_image(source, max_bytes=max_bytes, max_pixels=max_pixels))
        except InvalidImageError as e:
            raise type(e)(f"images[{pos}]: {e.message}") from None
    return decoded


def check_texts(texts: Sequence[str], *, allow_empty: bool = False, empty_hint: str = "") -> None:
    """A single str, a non-string item or (unless `allow_empty`) a blank text is a user error naming its index."""
    if isinstance(texts, str):
        raise InvalidTextError("texts must be a sequence of strings, got a single str; wrap it in a list")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidTextError(f"texts[{i}]: expected a string, got {type(text).__name__}")
        if not allow_empty and not text.strip():
            raise InvalidTextError(f"texts[{i}] is empty; expected non-blank text{empty_hint}")


def chunks(n: int, size: int) -> Iterator[range]:
    for start in range(0, n, size):
        yield range(start, min(start + size, n))


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero), float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


__all__ = [
    "ALL_MODES",
    "DUAL_ENCODER_MODES",
    "Encoder",
    "SameSpaceTitles",
    "TitleEncoder",
    "check_image_sequence",
    "check_texts",
    "decode_images",
    "chunks",
    "l2_normalize",
]
