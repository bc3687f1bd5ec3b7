"""Title vectors from a separate text model: EmbeddingGemma through sentence-transformers, as its model card uses it.

Entry point: `SentenceTransformerTitleEncoder.from_pretrained("google/embeddinggemma-300m", dim=256)` (hub id or a
local directory in the sentence-transformers layout: modules.json, the Gemma 3 text model, 1_Pooling, 2_Dense,
3_Dense). Titles are embedded with the repo's "document" prompt and instructions with its "query" prompt;
outputs are cut to `dim` (Matryoshka: 768, 512, 256 or 128) and re-normalised.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmsearch.errors import ConfigError, InvalidTextError, ModelLoadError
from mmsearch.limits import resolve_device, resolve_dtype
from mmsearch.models.base import TitleEncoder, l2_normalize
from mmsearch.models.checkpoints import resolve_dir, state_dict_fingerprint

EMBEDDINGGEMMA = "google/embeddinggemma-300m"
# The sizes EmbeddingGemma was trained to be cut to (Matryoshka representation learning).
MATRYOSHKA_DIMS = (768, 512, 256, 128)
_ST_FILES = (
    "*.json",
    "*.safetensors",
    "tokenizer.model",
    "*/*.json",
    "*/*.safetensors",
)


class SentenceTransformerTitleEncoder(TitleEncoder):
    """A sentence-transformers text model for titles (`text_vector`); rows are L2-normalised after truncation."""

    def __init__(self, model: Any, *, name: str, dim: int, batch_size: int = 32):
        # sentence-transformers 6 renamed get_sentence_embedding_dimension; 5.x has only the old name.
        dim_of = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        full = int(dim_of())
        if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= full:
            raise ConfigError(f"title encoder dim must be an integer between 1 and {full}, got {dim!r}")
        for prompt in ("query", "document"):
            if prompt not in model.prompts:
                raise ModelLoadError(
                    f"title encoder {name!r} has no {prompt!r} prompt in config_sentence_transformers.json; "
                    f"found {sorted(model.prompts)}"
                )
        self.model = model
        self.dim = dim
        self.full_dim = full
        self.batch_size = batch_size
        self.model_id = f"{name}@{state_dict_fingerprint(model.state_dict())}/{dim}"

    @classmethod
    def from_pretrained(
        cls,
        repo_or_path: str | os.PathLike[str] = EMBEDDINGGEMMA,
        *,
        dim: int = 768,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto",
        batch_size: int = 32,
        cache_dir: str | os.PathLike[str] | None = None,
        local_files_only: bool = False,
    ) -> SentenceTransformerTitleEncoder:
        """Load a sentence-transformers model directory (or hub snapshot). float16 is refused (EmbeddingGemma
        activations overflow in it); 'auto' means bfloat16 on CUDA, float32 elsewhere.

        Raises:
            ConfigError: bad dim, device or dtype. ModelLoadError: files missing or unusable.
        """
        dev = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, dev)
        if torch_dtype == torch.float16:
            raise ConfigError("EmbeddingGemma does not support float16; use float32 or bfloat16")
        path = resolve_dir(
            repo_or_path,
            cache_dir,
            allow_patterns=_ST_FILES,
            required=("modules.json", "config.json", "config_sentence_transformers.json"),
            local_files_only=local_files_only,
            what="title encoder (sentence-transformers model)",
            hint="download the model repo into a directory and pass it (MMSEARCH_TITLE_ENCODER_MODEL=/path/to/dir)",
        )
        from sentence_transformers import SentenceTransformer

        try:
            model = SentenceTransformer(
                str(path), device=str(dev), local_files_only=True, model_kwargs={"dtype": torch_dtype}
            )
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
            raise ModelLoadError(f"cannot load the title encoder from {str(path)!r}: {e}") from None
        model.eval()
        name = "embeddinggemma" if os.fspath(repo_or_path) == EMBEDDINGGEMMA else Path(path).name
        return cls(model, name=name, dim=dim, batch_size=batch_size)

    def _encode(self, texts: Sequence[str], prompt_name: str) -> np.ndarray:
        if isinstance(texts, str):
            raise InvalidTextError("texts must be a sequence of strings, got a single str; wrap it in a list")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise InvalidTextError(f"texts[{i}]: expected a string, got {type(text).__name__}")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with torch.inference_mode():
            out = self.model.encode(
                list(texts),
                prompt_name=prompt_name,
                batch_size=self.batch_size,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return l2_normalize(np.asarray(out, dtype=np.float32)[:, : self.dim])  # Matryoshka: cut, re-normalise

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Titles with the "document" prompt -> (n, dim). An empty title embeds the bare prompt."""
        return self._encode(texts, "document")

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Instructions with the "query" prompt -> (n, dim)."""
        return self._encode(texts, "query")


__all__ = ["EMBEDDINGGEMMA", "MATRYOSHKA_DIMS", "SentenceTransformerTitleEncoder"]
