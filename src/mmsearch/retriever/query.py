"""Query-side encoding: one unit-norm vector for (image, instruction), separate from the indexer's batch path.

Entry point: `QueryEncoder(encoder).encode(query)`. With a joint encoder (Visualized BGE) image + instruction are
embedded together; a dual encoder (CLIP, SigLIP) embeds the image alone here and the instruction separately
(`encode_instructions`), for the `fused` and `weighted` modes. Either one alone is allowed, neither is an
`InvalidQueryError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mmsearch.errors import InvalidQueryError
from mmsearch.limits import MAX_INSTRUCTION_CHARS
from mmsearch.media.decode import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, ImageSource, open_image
from mmsearch.models.base import Encoder


@dataclass(frozen=True)
class Query:
    """A shopper's query: a photo, an instruction, or both."""

    image: ImageSource | None = None
    instruction: str = ""

    def __post_init__(self):
        instruction = (self.instruction or "").strip()
        if len(instruction) > MAX_INSTRUCTION_CHARS:
            raise InvalidQueryError(
                f"instruction has {len(instruction)} characters; the limit is {MAX_INSTRUCTION_CHARS}"
            )
        object.__setattr__(self, "instruction", instruction)
        if self.image is None and not instruction:
            raise InvalidQueryError("a query needs an image, an instruction, or both; got neither")


class QueryEncoder:
    """Turns a `Query` into unit-norm float32 vectors of the encoder's dimension."""

    def __init__(
        self,
        encoder: Encoder,
        *,
        max_image_bytes: int = DEFAULT_MAX_BYTES,
        max_image_pixels: int = DEFAULT_MAX_PIXELS,
    ):
        self.encoder = encoder
        self.max_image_bytes = max_image_bytes
        self.max_image_pixels = max_image_pixels

    def load_image(self, image: ImageSource):
        return open_image(image, max_bytes=self.max_image_bytes, max_pixels=self.max_image_pixels)

    def encode(self, query: Query) -> np.ndarray:
        """Joint embedding of the query, shape (dim,)."""
        return self.encode_many([query])[0]

    def encode_many(self, queries: Sequence[Query]) -> np.ndarray:
        """Image-side vectors of `queries` (joint embeddings with a joint encoder), shape (n, dim): one encoder
        call per kind of query present
        (image + instruction, image only, instruction only), each batched by the encoder."""
        out = np.empty((len(queries), self.encoder.dim), dtype=np.float32)
        kinds: dict[str, list[int]] = {"multimodal": [], "image": [], "text": []}
        for i, q in enumerate(queries):
            # A dual encoder has no joint embedding: its image-side vector is the image's alone.
            joint = q.instruction and self.encoder.supports_joint
            kind = "text" if q.image is None else "multimodal" if joint else "image"
            kinds[kind].append(i)
        if kinds["multimodal"]:
            idx = kinds["multimodal"]
            images = [self.load_image(queries[i].image) for i in idx]
            out[idx] = self.encoder.encode_multimodal(images, [queries[i].instruction for i in idx])
        if kinds["image"]:
            idx = kinds["image"]
            out[idx] = self.encoder.encode_images([self.load_image(queries[i].image) for i in idx])
        if kinds["text"]:
            idx = kinds["text"]
            out[idx] = self.encoder.encode_texts([queries[i].instruction for i in idx])
        return out

    def encode_instruction(self, query: Query) -> np.ndarray | None:
        """The instruction through the image-text encoder's text tower (the images' space), or None."""
        return self.encode_instructions([query])[0]

    def encode_instructions(self, queries: Sequence[Query]) -> list[np.ndarray | None]:
        """Text-only embeddings of the queries' instructions in one encoder call; None where there is none."""
        idx = [i for i, q in enumerate(queries) if q.instruction]
        out: list[np.ndarray | None] = [None] * len(queries)
        if idx:
            vectors = np.asarray(self.encoder.encode_texts([queries[i].instruction for i in idx]), np.float32)
            for row, i in enumerate(idx):
                out[i] = vectors[row]
        return out


__all__ = ["Encoder", "Query", "QueryEncoder"]
