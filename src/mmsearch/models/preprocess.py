"""Visualized BGE's eval image transform in PIL + torch, matching upstream's torchvision pipeline bit for bit.

Entry point: `eval_transform(image, image_size)` -> (3, S, S) float32; `pixels_batch(images, image_size)` stacks.
Order (as upstream): bicubic resize of the shortest side on the image as stored, centre crop with Python
rounding, *then* convert to RGB, scale to [0, 1], normalise. Upstream calls this on `Image.open(path)`, so the mode
as decoded decides what the resize does, and so do we (the decoder keeps it):
- `I;16`, `I`, `F` (16-bit, 32-bit, float grey) are resampled at full depth; the RGB conversion afterwards clips
  to 0..255, so bright 16-bit pixels saturate after, not before, the resize.
- `RGBA`, `LA`: PIL resamples with premultiplied alpha; the conversion then drops alpha (no compositing).
- `P` (also with transparency) and `1`: PIL resamples these nearest-neighbour whatever filter is asked; the palette
  colour of a transparent index is kept.
- `CMYK` is resampled in CMYK and converted with PIL's formula.
- EXIF orientation is not applied (upstream does not transpose): the pixels are used as stored.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from mmsearch.limits import CLIP_MEAN, CLIP_STD

_MEAN = torch.tensor(CLIP_MEAN, dtype=torch.float32).view(3, 1, 1)
_STD = torch.tensor(CLIP_STD, dtype=torch.float32).view(3, 1, 1)


def resize_shortest_side(image: Image.Image, size: int) -> Image.Image:
    """Bicubic resize so the shorter side is `size`; the longer side is `int(size * long / short)` (truncated)."""
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) == (w, h):
        return image
    try:
        return image.resize((new_w, new_h), Image.Resampling.BICUBIC)  # in the source mode, as upstream
    except ValueError:
        # A mode this Pillow cannot resample (upstream would fail here): resample its RGB conversion instead.
        return image.convert("RGB").resize((new_w, new_h), Image.Resampling.BICUBIC)


def center_crop(image: Image.Image, size: int) -> Image.Image:
    """Crop the central `size` x `size` square; offsets use Python's round (10.5 -> 10), as upstream."""
    w, h = image.size
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def to_rgb_uint8(image: Image.Image, image_size: int) -> np.ndarray:
    """Resize, crop and convert: (S, S, 3) uint8, i.e. upstream's transform before ToTensor/Normalize."""
    image = center_crop(resize_shortest_side(image, image_size), image_size)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def eval_transform(image: Image.Image, image_size: int) -> torch.Tensor:
    """Upstream's `image_transform(image_size, is_train=False)` on one decoded image: (3, S, S) float32."""
    rgb = torch.from_numpy(to_rgb_uint8(image, image_size).copy())  # (S, S, 3) uint8
    pixels = rgb.permute(2, 0, 1).float().div(255.0)  # (3, S, S) in [0, 1]
    return pixels.sub(_MEAN).div(_STD)


def pixels_batch(images: Sequence[Image.Image], image_size: int) -> torch.Tensor:
    """Stack `eval_transform` over decoded images: (n, 3, S, S) float32 (n may be 0)."""
    if not images:
        return torch.empty(0, 3, image_size, image_size)
    return torch.stack([eval_transform(img, image_size) for img in images])


__all__ = [
    "center_crop",
    "eval_transform",
    "pixels_batch",
    "resize_shortest_side",
    "to_rgb_uint8",
]
