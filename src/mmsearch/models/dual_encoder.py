"""CLIP and SigLIP dual encoders through transformers' native `CLIPModel` / `SiglipModel` (no remote code).

Entry point: `DualEncoder.from_pretrained("clip", "openai/clip-vit-base-patch32")` (hub id or local directory with
config.json, preprocessor_config.json, tokenizer files and weights). Images go through the model's own PIL image
processor (`CLIPImageProcessorPil` / `SiglipImageProcessorPil`: no torchvision); texts through its tokenizer.
A dual encoder embeds image and text separately, so it serves the `weighted` and `fused` modes, not `joint`.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from mmsearch.errors import (
    ConfigError,
    InvalidQueryError,
    ModelLoadError,
)
from mmsearch.limits import resolve_device, resolve_dtype
from mmsearch.media.decode import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, ImageSource
from mmsearch.models.base import (
    DUAL_ENCODER_MODES,
    Encoder,
    check_image_sequence,
    check_texts,
    chunks,
    decode_images,
    l2_normalize,
)
from mmsearch.models.checkpoints import resolve_dir, state_dict_fingerprint
from mmsearch.models.encoder import TextTruncatedWarning

# kind -> (model class, PIL image processor class, model_type in config.json, tokenizer padding).
# SigLIP was trained on texts padded to the full window with no attention mask (its pooled token is the last
# position), so its texts are padded to `max_length`; CLIP pools at the end-of-text token and pads to the longest.
DUAL_ENCODER_KINDS: dict[str, tuple[str, str, str, str]] = {
    "clip": ("CLIPModel", "CLIPImageProcessorPil", "clip", "longest"),
    "siglip": ("SiglipModel", "SiglipImageProcessorPil", "siglip", "max_length"),
}
DEFAULT_CHECKPOINTS = {"clip": "openai/clip-vit-base-patch16", "siglip": "google/siglip-base-patch16-224"}
MODEL_FILES = (
    "config.json",
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "model.safetensors",
    "model*.safetensors.index.json",
    "model-*.safetensors",
)


class DualEncoder(Encoder):
    """Batched, eval-mode, no-grad CLIP/SigLIP encoder. Outputs are (n, dim) float32, rows L2-normalised."""

    capabilities: ClassVar[frozenset[str]] = DUAL_ENCODER_MODES
    default_mode: ClassVar[str] = "fused"

    def __init__(
        self,
        kind: str,
        model: Any,
        image_processor: Any,
        tokenizer: Any,
        *,
        model_id: str,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float32",
        batch_size: int = 32,
        max_image_pixels: int = DEFAULT_MAX_PIXELS,
        max_image_bytes: int = DEFAULT_MAX_BYTES,
    ):
        if kind not in DUAL_ENCODER_KINDS:
            raise ConfigError(
                f"unknown dual encoder kind {kind!r}; expected one of {sorted(DUAL_ENCODER_KINDS)}"
            )
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.kind = kind
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.model = model.to(device=self.device, dtype=self.dtype).eval().requires_grad_(False)
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self._tokenizer_lock = threading.Lock()  # fast tokenizers are not safe across threads
        self.model_id = model_id
        self.batch_size = batch_size
        self.max_image_pixels = max_image_pixels
        self.max_image_bytes = max_image_bytes
        text_cfg = model.config.text_config
        # CLIP projects both towers to projection_dim; SigLIP's text head maps to projection_size (= hidden_size).
        self.dim = int(
            model.config.projection_dim
            if kind == "clip"
            else getattr(text_cfg, "projection_size", None) or text_cfg.hidden_size
        )
        self.image_size = int(model.config.vision_config.image_size)
        self.max_text_tokens = int(model.config.text_config.max_position_embeddings)
        self.padding = DUAL_ENCODER_KINDS[kind][3]

    @classmethod
    def from_pretrained(
        cls,
        kind: str,
        repo_or_path: str | os.PathLike[str] | None = None,
        *,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto",
        batch_size: int = 32,
        cache_dir: str | os.PathLike[str] | None = None,
        max_image_pixels: int = DEFAULT_MAX_PIXELS,
        max_image_bytes: int = DEFAULT_MAX_BYTES,
        local_files_only: bool = False,
    ) -> DualEncoder:
        """Load a CLIP or SigLIP checkpoint (hub id or local dir) with its image processor and tokenizer.

        Raises:
            ConfigError: unknown kind, device or dtype. ModelLoadError: files missing or of another architecture.
        """
        if kind not in DUAL_ENCODER_KINDS:
            raise ConfigError(
                f"unknown dual encoder kind {kind!r}; expected one of {sorted(DUAL_ENCODER_KINDS)}"
            )
        resolve_dtype(dtype, resolve_device(device))  # a bad device/dtype fails before any download
        ref = repo_or_path if repo_or_path is not None else DEFAULT_CHECKPOINTS[kind]
        model_cls_name, proc_cls_name, model_type, _ = DUAL_ENCODER_KINDS[kind]
        path = resolve_dir(
            ref,
            cache_dir,
            allow_patterns=MODEL_FILES,
            required=("config.json", "preprocessor_config.json"),
            local_files_only=local_files_only,
            what=f"{kind} model",
            hint=f"download the {kind} repo (config, preprocessor config, tokenizer, safetensors) into a directory "
            f"and pass it (--encoder {kind}:/path/to/dir)",
        )
        import transformers

        model_cls = getattr(transformers, model_cls_name)
        proc_cls = getattr(transformers, proc_cls_name)
        try:
            config = transformers.AutoConfig.from_pretrained(str(path))
        except (OSError, ValueError, KeyError) as e:
            raise ModelLoadError(f"{kind} model config in {str(path)!r} is unusable: {e}") from None
        if config.model_type != model_type:
            raise ModelLoadError(
                f"--encoder {kind}: {str(path)!r} holds a {config.model_type!r} model, expected {model_type!r}"
            )
        try:
            model = model_cls.from_pretrained(str(path), config=config, dtype=torch.float32)
            image_processor = proc_cls.from_pretrained(str(path))
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(path))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ModelLoadError(f"cannot load the {kind} model from {str(path)!r}: {e}") from None
        model_id = f"{kind}:{_short_name(ref)}@{state_dict_fingerprint(model.state_dict())}"
        return cls(
            kind,
            model,
            image_processor,
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
        check_image_sequence(images)
        return self._preprocess(images, range(len(images)))

    def _preprocess(self, images: Sequence[ImageSource], positions: Sequence[int]) -> torch.Tensor:
        decoded = decode_images(
            images, positions, max_bytes=self.max_image_bytes, max_pixels=self.max_image_pixels
        )
        decoded = [img.convert("RGB") for img in decoded]
        if not decoded:
            return torch.empty(0, 3, self.image_size, self.image_size)
        out = self.image_processor(images=decoded, return_tensors="pt")
        return out["pixel_values"].float()  # (n, 3, S, S)

    def _tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        check_texts(texts)
        with self._tokenizer_lock:
            lengths = [len(r) for r in self.tokenizer(list(texts), verbose=False)["input_ids"]]
            enc = self.tokenizer(
                list(texts),
                padding=self.padding,
                truncation=True,
                max_length=self.max_text_tokens,
                return_tensors="pt",
            )
        for i, n in enumerate(lengths):
            if n > self.max_text_tokens:
                warnings.warn(
                    f"texts[{i}]: {n} tokens exceed the model window of {self.max_text_tokens}; truncated",
                    TextTruncatedWarning,
                    stacklevel=3,
                )
        return enc

    # ---- encoding -----------------------------------------------------------------------------------------
    def encode_pixels(self, pixel_values: torch.Tensor) -> np.ndarray:
        expected = (3, self.image_size, self.image_size)
        if pixel_values.dim() != 4 or tuple(pixel_values.shape[1:]) != expected:
            raise InvalidQueryError(
                f"pixel_values must have shape (n, {expected}), got {tuple(pixel_values.shape)}"
            )
        out = []
        with torch.inference_mode():
            for idx in chunks(pixel_values.shape[0], self.batch_size):
                pixels = pixel_values[idx.start : idx.stop].to(device=self.device, dtype=self.dtype)
                feats = _features(self.model.get_image_features(pixel_values=pixels))  # (b, dim)
                out.append(feats.float().cpu().numpy())
        return l2_normalize(np.concatenate(out)) if out else np.zeros((0, self.dim), np.float32)

    def encode_images(self, images: Sequence[ImageSource]) -> np.ndarray:
        check_image_sequence(images)
        out = [
            self.encode_pixels(self._preprocess([images[i] for i in idx], idx))
            for idx in chunks(len(images), self.batch_size)
        ]
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        enc = self._tokenize(texts)
        if not len(texts):
            return np.zeros((0, self.dim), np.float32)
        out = []
        with torch.inference_mode():
            for idx in chunks(len(texts), self.batch_size):
                batch = {k: v[idx.start : idx.stop].to(self.device) for k, v in enc.items()}
                if self.kind == "siglip":
                    batch.pop("attention_mask", None)  # trained without one (see DUAL_ENCODER_KINDS)
                out.append(_features(self.model.get_text_features(**batch)).float().cpu().numpy())
        return l2_normalize(np.concatenate(out))


def _features(output: Any) -> torch.Tensor:
    # transformers 5 returns a model output whose pooler_output holds the projected features.
    return output.pooler_output if hasattr(output, "pooler_output") else output


def _short_name(ref: str | os.PathLike[str]) -> str:
    text = os.fspath(ref)
    return Path(text).name if os.path.sep in text and Path(text).expanduser().exists() else text


__all__ = ["DEFAULT_CHECKPOINTS", "DUAL_ENCODER_KINDS", "DualEncoder"]
