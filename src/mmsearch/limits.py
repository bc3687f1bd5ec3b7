"""Limits and shared constants every layer agrees on, plus the one device and dtype resolution.

Entry points: the constants below, `resolve_device(name)` and `resolve_dtype(name, device)`. This module sits at
the bottom of the package (beside `config`, `errors`, `types`): it imports torch only inside the two resolvers,
so reading a limit never loads torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmsearch.errors import ConfigError
from mmsearch.hardware import cpu_default_dtype_name

if TYPE_CHECKING:
    import torch

# -- queries -----------------------------------------------------------------------------------------------------
# Largest k anyone may ask for: the pipeline, the store and `Settings.max_k` all stop here (Milvus' own ceiling,
# 16384, is far above what a product page or an evaluation needs). `DEFAULT_MAX_K` is what a deployment allows.
MAX_K = 1000
DEFAULT_MAX_K = 50
DEFAULT_K = 9
# RRF's smoothing constant; Milvus' RRFRanker accepts 1..16384.
MAX_RRF_K = 16384
DEFAULT_RRF_K = 60
# A shopper's instruction: checked at the query, and the same bound applies in the reranker's prompt.
MAX_INSTRUCTION_CHARS = 1000

# -- reranker ----------------------------------------------------------------------------------------------------
# The reranker's free-text explanation: the constrained decoder's bound and the result's bound are the same number.
MAX_REASONS_CHARS = 240

# -- images ------------------------------------------------------------------------------------------------------
MAX_IMAGE_BYTES = 20 * 1024 * 1024  # encoded size of one image (upload, download or local file)
MAX_IMAGE_PIXELS = 40_000_000  # width * height, checked from the header before decoding (bomb guard)
# Longest side / shortest side, checked from the header. Product photos and banners stay far below; beyond it the
# shortest-side resize of the encoders (224 px; Phi-3's 336 px) would allocate an image `ratio` times wider than
# tall (60000x3 -> 224x4,480,000 pixels, 4 GiB).
MAX_IMAGE_ASPECT_RATIO = 50.0

# -- model constants shared by both vision towers ----------------------------------------------------------------
# OpenAI CLIP statistics: EVA02-CLIP (Visualized BGE) and CLIP ViT-L/14-336 (Phi-3 Vision) both normalise with them.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "float32", "bfloat16", "float16")
_DTYPE_ALIASES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> cuda if available, else mps, else cpu; an explicit device must exist.

    Raises:
        ConfigError: unknown device name, or a device this machine does not have.
    """
    import torch

    name = str(device)
    mps = getattr(torch.backends, "mps", None)
    has_mps = mps is not None and mps.is_available()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if has_mps else torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"device {name!r} requested but CUDA is not available; use --device cpu or auto (MMSEARCH_DEVICE)"
        )
    if name == "mps" and not has_mps:
        raise ConfigError("device 'mps' requested but MPS is not available; use --device cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"unknown device {name!r}; expected one of {', '.join(DEVICES)}") from e


def resolve_dtype(
    dtype: str | torch.dtype, device: torch.device, *, memory_bound: bool = False
) -> torch.dtype:
    """'auto' -> bfloat16 on CUDA (float16 where the GPU lacks bf16), float16 on MPS; on CPU bfloat16 where it has
        AMX-BF16, or AVX512-BF16 when `memory_bound` (a decoder that streams its weights per token; without AMX,
    bf16 GEMMs are slower than float32 ones), else float32 (`mmsearch.hardware`).

        bf16 embeddings keep cosine >= 0.999 to float32's (tested on the parity kits); float16 is refused on CPU, where
        PyTorch has no fast kernels for it.

        Raises:
            ConfigError: unknown dtype, or float16 on CPU.
    """
    import torch

    if isinstance(dtype, torch.dtype):
        resolved = dtype
    elif dtype == "auto":
        if device.type == "cuda":
            resolved = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        elif device.type == "cpu":
            resolved = getattr(torch, cpu_default_dtype_name(memory_bound=memory_bound))
        else:
            resolved = torch.float16 if device.type == "mps" else torch.float32
    elif dtype in _DTYPE_ALIASES:
        resolved = getattr(torch, _DTYPE_ALIASES[dtype])
    else:
        raise ConfigError(
            f"unknown dtype {dtype!r}; expected one of {', '.join(DTYPES)} (--dtype / MMSEARCH_DTYPE)"
        )
    if resolved not in (torch.float32, torch.bfloat16, torch.float16):
        raise ConfigError(f"dtype {resolved} is not supported; expected float32, bfloat16 or float16")
    if resolved == torch.float16 and device.type == "cpu":
        raise ConfigError("dtype float16 needs a GPU; use --dtype float32 (or bfloat16) on device 'cpu'")
    return resolved


__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "DEFAULT_K",
    "DEFAULT_MAX_K",
    "DEFAULT_RRF_K",
    "DEVICES",
    "DTYPES",
    "MAX_IMAGE_ASPECT_RATIO",
    "MAX_IMAGE_BYTES",
    "MAX_IMAGE_PIXELS",
    "MAX_INSTRUCTION_CHARS",
    "MAX_K",
    "MAX_REASONS_CHARS",
    "MAX_RRF_K",
    "resolve_device",
    "resolve_dtype",
]
