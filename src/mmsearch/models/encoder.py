"""Batched Visualized BGE encoder: images, texts and image+text pairs to L2-normalised float32 numpy vectors.

Entry point: `VisualizedBGEEncoder.from_pretrained(variant="base")` (hub id or local paths); `mmsearch.engine`
builds it from settings. Text longer than the model's position window is truncated
(keeping the final [SEP]) with a `TextTruncatedWarning`; empty text raises `InvalidTextError`.
"""

from __future__ import annotations

import json
import os
import threading
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmsearch.config import ENCODER_VARIANTS
from mmsearch.errors import (
    ConfigError,
    InvalidQueryError,
    InvalidTextError,
    ModelLoadError,
)
from mmsearch.limits import resolve_device, resolve_dtype
from mmsearch.media.decode import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, ImageSource
from mmsearch.models.base import Encoder, check_image_sequence, check_texts, decode_images
from mmsearch.models.bge_text import TextEncoderConfig
from mmsearch.models.checkpoints import (
    load_state_dict_file,
    resolve_dir,
    resolve_file,
    state_dict_fingerprint,
)
from mmsearch.models.preprocess import pixels_batch
from mmsearch.models.visualized_bge import VisualizedBGE

TEXT_MODEL_TYPE = {"base": "bert", "m3": "xlm-roberta"}
# What a text-model snapshot needs: config + tokenizer, never the text model's own weights.
TEXT_MODEL_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "sentencepiece.bpe.model",
)


class TextTruncatedWarning(UserWarning):
    """A text was longer than the model's window and was cut (the final [SEP] is kept)."""


def _chunks(n: int, size: int) -> Iterator[range]:
    for start in range(0, n, size):
        yield range(start, min(start + size, n))


class VisualizedBGEEncoder(Encoder):
    """Batched, eval-mode, no-grad encoder (joint image+instruction embeddings: every retrieval mode). All outputs are (n, dim) float32, rows L2-normalised.

    Attributes:
        model_id: stable id of the weights (variant + content fingerprint), recorded on the Milvus collection.
        dim: embedding size (768 base, 1024 m3).
    """

    def __init__(
        self,
        model: VisualizedBGE,
        tokenizer: Any,
        *,
        model_id: str,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float32",
        batch_size: int = 32,
        max_image_pixels: int = DEFAULT_MAX_PIXELS,
        max_image_bytes: int = DEFAULT_MAX_BYTES,
    ):
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.model = model.to(device=self.device, dtype=self.dtype).eval().requires_grad_(False)
        self.tokenizer = tokenizer
        # Fast tokenizers can fail with "Already borrowed" when one instance is used from several threads.
        self._tokenizer_lock = threading.Lock()
        self.model_id = model_id
        self.batch_size = batch_size
        self.max_image_pixels = max_image_pixels
        self.max_image_bytes = max_image_bytes
        cfg = model.config
        self.dim = cfg.dim
        self.image_size = cfg.vision.image_size
        self.pad_id = int(tokenizer.pad_token_id)
        # Longest token sequences (specials included) whose position ids stay inside the embedding table.
        self.max_text_tokens = cfg.text.max_position_embeddings - cfg.text.text_position_offset
        self.max_multimodal_text_tokens = cfg.text.max_position_embeddings - cfg.num_image_tokens
        self._image_prompt = self._tokenize([""], self.max_multimodal_text_tokens, allow_empty=True)[0]

    # ---- construction -------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        variant: str = "base",
        weights: str | os.PathLike[str] = "BAAI/bge-visualized",
        text_model: str | os.PathLike[str] | None = None,
        *,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto",
        batch_size: int = 32,
        cache_dir: str | os.PathLike[str] | None = None,
        max_image_pixels: int = DEFAULT_MAX_PIXELS,
        max_image_bytes: int = DEFAULT_MAX_BYTES,
        local_files_only: bool = False,
    ) -> VisualizedBGEEncoder:
        """Load official weights (hub repo id, local dir or local .pth) plus the BGE text config and tokenizer.

        Args:
            variant: "base" (bge-base-en-v1.5 + EVA02-CLIP-B-16, 768-d) or "m3" (bge-m3 + EVA02-CLIP-L-14, 1024-d).
            weights: hub repo holding the variant's .pth, a local directory holding it, or the .pth itself.
            text_model: hub repo or local dir with the text model's config.json + tokenizer; None = official repo.
            cache_dir: huggingface cache directory (None = the huggingface default).
            local_files_only: only use files already on disk / in the cache.
        Raises:
            ConfigError: unknown variant, device or dtype. ModelLoadError: files missing or not matching.
        """
        resolve_dtype(dtype, resolve_device(device))  # fail on a bad device/dtype before loading anything
        if variant not in ENCODER_VARIANTS:
            raise ConfigError(
                f"unknown encoder variant {variant!r}; expected one of {sorted(ENCODER_VARIANTS)}"
            )
        spec = ENCODER_VARIANTS[variant]
        weights_file = str(spec["weights_file"])
        text_ref = text_model if text_model is not None else str(spec["text_model"])
        weights_path = resolve_file(
            weights,
            weights_file,
            cache_dir,
            local_files_only=local_files_only,
            what="Visualized BGE weights",
            hint=f"download {weights_file} from https://huggingface.co/BAAI/bge-visualized and pass its path "
            f"(weights=... / MMSEARCH_ENCODER_WEIGHTS=/path/to/{weights_file})",
        )
        text_dir = resolve_dir(
            text_ref,
            cache_dir,
            allow_patterns=TEXT_MODEL_FILES,
            local_files_only=local_files_only,
            what="BGE text model config/tokenizer",
            hint=f"download config.json and the tokenizer files of {spec['text_model']} into a directory and pass "
            "it (text_model=... / MMSEARCH_ENCODER_TEXT_MODEL=/path/to/dir)",
        )
        text_cfg = _read_text_config(text_dir, variant)
        tokenizer = _load_tokenizer(text_dir)
        state_dict = load_state_dict_file(weights_path)
        model = VisualizedBGE.from_state_dict(state_dict, text_cfg, variant=variant)
        model_id = f"visualized-bge-{variant}@{state_dict_fingerprint(state_dict)}"
        del state_dict
        return cls(
            model,
            tokenizer,
            model_id=model_id,
            device=device,
            dtype=dtype,
            batch_size=batch_size,
            max_image_pixels=max_image_pixels,
            max_image_bytes=max_image_bytes,
        )

    # ---- inputs -------------------------------------------------------------------------------------------
    def preprocess(self, images: Sequence[ImageSource]) -> torch.Tensor:
        """Decode (bounded, via `open_image`) and transform: (n, 3, S, S) float32 on CPU."""
        check_image_sequence(images)
        return self._preprocess(images, range(len(images)))

    def _preprocess(self, images: Sequence[ImageSource], positions: Sequence[int]) -> torch.Tensor:
        # `positions` are the caller's indices, so an error names the input the user passed.
        decoded = decode_images(
            images, positions, max_bytes=self.max_image_bytes, max_pixels=self.max_image_pixels
        )
        return pixels_batch(decoded, self.image_size)

    def _tokenize(self, texts: Sequence[str], window: int, *, allow_empty: bool = False) -> list[list[int]]:
        """Token ids with specials, each cut to `window` tokens (keeping the last special token) with a warning."""
        check_texts(texts, allow_empty=allow_empty, empty_hint=" (use encode_images for images alone)")
        with self._tokenizer_lock:
            ids = self.tokenizer(list(texts), add_special_tokens=True, verbose=False)["input_ids"]
        out = []
        for i, row in enumerate(ids):
            if not allow_empty and len(row) <= 2:
                raise InvalidTextError(
                    f"texts[{i}] {texts[i]!r} has no tokens after tokenization; expected real text"
                )
            if len(row) > window:
                warnings.warn(
                    f"texts[{i}]: {len(row)} tokens exceed the model window of {window}; truncated to {window}",
                    TextTruncatedWarning,
                    stacklevel=3,
                )
                row = row[: window - 1] + row[-1:]
            out.append(list(row))
        return out

    def _pad(self, rows: Sequence[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-pad to the longest row: ids and attention mask, (batch, T) long, on the model device."""
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        return ids.to(self.device), mask.to(self.device)

    def _empty(self) -> np.ndarray:
        return np.zeros((0, self.dim), dtype=np.float32)

    # ---- encoding -----------------------------------------------------------------------------------------
    def encode_pixels(self, pixel_values: torch.Tensor) -> np.ndarray:
        """Image-only embeddings from `preprocess` output (n, 3, S, S) -> (n, dim)."""
        expected = (3, self.image_size, self.image_size)
        if pixel_values.dim() != 4 or tuple(pixel_values.shape[1:]) != expected:
            raise InvalidQueryError(
                f"pixel_values must have shape (n, {expected}), got {tuple(pixel_values.shape)}"
            )
        out = []
        with torch.inference_mode():
            for idx in _chunks(pixel_values.shape[0], self.batch_size):
                pixels = pixel_values[idx.start : idx.stop].to(device=self.device, dtype=self.dtype)
                ids, mask = self._pad([self._image_prompt] * len(idx))  # "" -> [CLS, SEP], as upstream
                out.append(self.model.encode_multimodal(pixels, ids, mask).cpu().numpy())
        return np.concatenate(out) if out else self._empty()

    def encode_images(self, images: Sequence[ImageSource]) -> np.ndarray:
        """Paths, bytes or PIL images -> (n, dim). Decoding happens one batch at a time to bound memory, the next
        batch on a worker thread while the model runs the current one."""
        check_image_sequence(images)
        out = [self.encode_pixels(pixels) for pixels in self._preprocessed_batches(images)]
        return np.concatenate(out) if out else self._empty()

    def _preprocessed_batches(self, images: Sequence[ImageSource]) -> Iterator[torch.Tensor]:
        """`preprocess` output one batch at a time, decoding batch i + 1 while the caller encodes batch i (PIL and
        the resize release the GIL). At most two batches of pixels exist at once; an error surfaces in order."""
        batches = list(_chunks(len(images), self.batch_size))
        if len(batches) < 2:
            yield from (self._preprocess([images[i] for i in idx], idx) for idx in batches)
            return
        with ThreadPoolExecutor(1, thread_name_prefix="mmsearch-decode") as pool:
            pending = pool.submit(self._preprocess, [images[i] for i in batches[0]], batches[0])
            for idx in batches[1:]:
                ready = pending.result()
                pending = pool.submit(self._preprocess, [images[i] for i in idx], idx)
                yield ready
            yield pending.result()

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Texts -> (n, dim). Batches are formed from length-sorted texts to limit padding."""
        if isinstance(texts, str):
            raise InvalidTextError("texts must be a sequence of strings, got a single str; wrap it in a list")
        if not texts:
            return self._empty()
        rows = self._tokenize(texts, self.max_text_tokens)
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        result = np.empty((len(rows), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for idx in _chunks(len(order), self.batch_size):
                members = [order[i] for i in idx]
                ids, mask = self._pad([rows[i] for i in members])
                result[members] = self.model.encode_text(ids, mask).cpu().numpy()
        return result

    def encode_multimodal(self, images: Sequence[ImageSource], texts: Sequence[str]) -> np.ndarray:
        """(image, instruction) pairs -> (n, dim): the composed-query embedding."""
        if isinstance(texts, str):
            raise InvalidTextError("texts must be a sequence of strings, got a single str; wrap it in a list")
        check_image_sequence(images)
        if len(images) != len(texts):
            raise InvalidQueryError(
                f"got {len(images)} images and {len(texts)} texts; expected one text per image"
            )
        if not texts:
            return self._empty()
        rows = self._tokenize(texts, self.max_multimodal_text_tokens)
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        result = np.empty((len(rows), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for idx in _chunks(len(order), self.batch_size):
                members = [order[i] for i in idx]
                pixels = self._preprocess([images[i] for i in members], members)
                pixels = pixels.to(device=self.device, dtype=self.dtype)
                ids, mask = self._pad([rows[i] for i in members])
                result[members] = self.model.encode_multimodal(pixels, ids, mask).cpu().numpy()
        return result


def _read_text_config(text_dir: Path, variant: str) -> TextEncoderConfig:
    path = text_dir / "config.json"
    try:
        cfg = TextEncoderConfig.from_hf_config(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, json.JSONDecodeError, TypeError, ValueError) as e:
        raise ModelLoadError(f"text model config {str(path)!r} is unusable: {e}") from None
    if cfg.model_type != TEXT_MODEL_TYPE[variant]:
        raise ModelLoadError(
            f"variant {variant!r} expects a {TEXT_MODEL_TYPE[variant]!r} text model, "
            f"but {str(path)!r} has model_type {cfg.model_type!r}"
        )
    return cfg


def _load_tokenizer(text_dir: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(text_dir))
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise ModelLoadError(f"cannot load the tokenizer from {str(text_dir)!r}: {e}") from None


__all__ = ["TextTruncatedWarning", "VisualizedBGEEncoder"]
