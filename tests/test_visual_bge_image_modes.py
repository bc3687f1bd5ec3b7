"""Visualized BGE preprocessing of unusual image modes against upstream's order of operations, spelled out in PIL.

Upstream (FlagEmbedding research/visual_bge) runs torchvision's Resize(S, bicubic) -> CenterCrop(S) -> convert("RGB")
-> ToTensor -> Normalize on `Image.open(path)`. On a PIL image those are `img.resize(size, BICUBIC)`,
`img.crop(box)` and `img.convert("RGB")`, in the mode as decoded. Each reference below is those three calls with the
geometry worked out by hand for the case's size, so it does not reuse the code under test. The parity kits have no
such images; tests/image_mode_cases.py makes them.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from image_mode_cases import CASES, GEOMETRY, MODES, TINY, i16_png
from PIL import Image

from mmsearch.limits import CLIP_MEAN, CLIP_STD
from mmsearch.models.preprocess import eval_transform
from mmsearch.testing.visual_bge import tiny_visual_bge_encoder

PIXEL_ATOL = 1e-6  # the parity kit's pixel tolerance
EMBED_ATOL = 1e-5  # the parity kit's embedding tolerance


def upstream_rgb(data: bytes, size: int) -> Image.Image:
    """Upstream's steps in plain PIL on the decoded file: resize (bicubic), crop, then convert."""
    img = Image.open(io.BytesIO(data))
    resized, box = GEOMETRY[img.size][size]
    return img.resize(resized, Image.Resampling.BICUBIC).crop(box).convert("RGB")


def normalised(rgb: Image.Image) -> torch.Tensor:
    x = torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (x - torch.tensor(CLIP_MEAN).view(3, 1, 1)) / torch.tensor(CLIP_STD).view(3, 1, 1)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    return tiny_visual_bge_encoder(tmp_path_factory.mktemp("tiny_vbge_modes"))


@pytest.mark.parametrize("case", CASES)
def test_case_decodes_in_the_mode_it_covers(case):
    assert Image.open(io.BytesIO(CASES[case]())).mode == MODES[case]


@pytest.mark.parametrize("case", CASES)
def test_pixels_at_official_size_follow_upstreams_order(case):
    data = CASES[case]()
    pixels = eval_transform(Image.open(io.BytesIO(data)), 224)
    torch.testing.assert_close(pixels, normalised(upstream_rgb(data, 224)), rtol=0, atol=PIXEL_ATOL)


@pytest.mark.parametrize("case", ["I;16", "I", "F"])
def test_deep_modes_are_sensitive_to_converting_first(case):
    """The cases can tell the orders apart: converting to RGB before the resize moves pixels by > 1/255."""
    data = CASES[case]()
    img = Image.open(io.BytesIO(data))
    resized, box = GEOMETRY[img.size][224]
    early = img.convert("RGB").resize(resized, Image.Resampling.BICUBIC).crop(box)
    diff = normalised(early) - normalised(upstream_rgb(data, 224))
    assert diff.abs().max() > 1.0 / 255 / max(CLIP_STD)


@pytest.mark.parametrize("case", CASES)
def test_encoder_on_the_file_matches_the_encoder_on_upstreams_pixels(encoder, case):
    data = CASES[case]()
    # An RGB image already S x S passes through resize, crop and convert unchanged.
    want = encoder.encode_images([upstream_rgb(data, TINY)])
    np.testing.assert_allclose(encoder.encode_images([data]), want, rtol=0, atol=EMBED_ATOL)


def test_a_mode_pillow_cannot_resample_is_resampled_after_conversion(monkeypatch):
    data = i16_png()
    img = Image.open(io.BytesIO(data))
    resized, box = GEOMETRY[img.size][224]
    want = normalised(img.convert("RGB").resize(resized, Image.Resampling.BICUBIC).crop(box))
    real_resize = Image.Image.resize

    def resize(self, size, resample=None, *args, **kwargs):
        if self.mode == "I;16":
            raise ValueError("image has wrong mode")
        return real_resize(self, size, resample, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", resize)
    torch.testing.assert_close(eval_transform(img, 224), want, rtol=0, atol=PIXEL_ATOL)
