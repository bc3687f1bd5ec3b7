"""Phi-3 Vision processor: HD transform, pixel values and image-token expansion against the upstream parity kit."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
import torch
from image_mode_cases import CASES
from phi3_kit import KIT, MANIFEST, PROMPTS
from PIL import Image

from mmsearch.errors import InvalidImageError
from mmsearch.models.phi3_vision_processor import Phi3VisionImageProcessor, Phi3VisionProcessor

IMAGES = ["landscape_rgb", "portrait_rgb", "square_gray", "transparent_rgba"]


@pytest.fixture(scope="module")
def processor() -> Phi3VisionProcessor:
    return Phi3VisionProcessor.from_pretrained(KIT / "tokenizer", num_crops=4)


def kit_image(name: str) -> Image.Image:
    return Image.open(KIT / "images" / f"{name}.png")


@pytest.mark.parametrize("name", IMAGES)
def test_hd_resize_and_pad_match_upstream_exactly(name):
    hd = Phi3VisionImageProcessor(num_crops=4).hd_resize(kit_image(name).convert("RGB"))
    expected = np.asarray(Image.open(KIT / "expected" / f"hd_{name}.png"))
    np.testing.assert_array_equal(np.asarray(hd), expected)


@pytest.mark.parametrize("name", IMAGES)
def test_pixel_values_match_upstream(name):
    entry = MANIFEST[f"expected/pv_sub8_{name}.npy"]
    out = Phi3VisionImageProcessor(num_crops=4)([kit_image(name)])
    pv = out["pixel_values"].numpy()
    assert list(pv.shape) == entry["full_shape"]
    np.testing.assert_allclose(
        pv[:, :, :, ::8, ::8], np.load(KIT / "expected" / f"pv_sub8_{name}.npy"), atol=1e-5
    )
    digest = hashlib.sha256(np.ascontiguousarray(pv, dtype=np.float32).tobytes()).hexdigest()
    assert digest == entry["full_sha256_float32"], (
        f"full pixel tensor differs (sum {pv.sum(dtype=np.float64)})"
    )
    assert out["image_sizes"].tolist() == entry["image_sizes"]
    assert out["num_img_tokens"] == entry["num_img_tokens"]


@pytest.mark.parametrize("prompt", sorted(PROMPTS))
def test_input_ids_with_image_token_expansion_match_upstream(processor, prompt):
    text, names = PROMPTS[prompt]
    out = processor(text, [kit_image(n) for n in names])
    entry = MANIFEST[f"expected/{prompt}_input_ids.npy"]
    np.testing.assert_array_equal(
        out["input_ids"].numpy(), np.load(KIT / "expected" / f"{prompt}_input_ids.npy")
    )
    assert out["attention_mask"].tolist() == [[1] * out["input_ids"].shape[1]]
    if names:
        assert list(out["pixel_values"].shape) == entry["pixel_values_shape"]
        assert out["image_sizes"].tolist() == entry["image_sizes"]
    else:
        assert "pixel_values" not in out and "image_sizes" not in out


def test_image_n_slots_hold_minus_n_and_each_text_chunk_starts_with_bos(processor):
    out = processor(*PROMPTS["p2"][:1], [kit_image(n) for n in PROMPTS["p2"][1]])
    ids = out["input_ids"][0].tolist()
    assert ids.count(-1) == 757 and ids.count(-2) == 757
    first_minus_two = ids.index(-2)
    assert ids[ids.index(-1) + 757] == 1, "BOS right after image 1's block"
    assert ids[first_minus_two + 757] == 1, "BOS right after image 2's block"


def test_chat_template_matches_the_checkpoint_template(processor):
    messages = [
        {"role": "system", "content": "Rank products."},
        {"role": "user", "content": "<|image_1|>\nWhich is closest?"},
    ]
    ours = processor.apply_chat_template(messages)
    theirs = processor.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert ours == theirs
    assert ours.endswith("<|end|>\n<|assistant|>\n")


def test_chat_template_rejects_unknown_role(processor):
    with pytest.raises(ValueError, match="message role must be system, user or assistant, got 'tool'"):
        processor.apply_chat_template([{"role": "tool", "content": "x"}])


def test_image_count_must_match_the_tags(processor):
    with pytest.raises(
        ValueError, match=r"<\|image_1\|>\.\.<\|image_2\|>.*for 2 image\(s\); got \['<\|image_1\|>'\]"
    ):
        processor("<|user|>\n<|image_1|>\nx<|end|>\n<|assistant|>\n", [kit_image("square_gray")] * 2)


def test_image_tags_must_be_in_order(processor):
    with pytest.raises(ValueError, match=r"each once and in order.*got \['<\|image_2\|>', '<\|image_1\|>'\]"):
        processor("<|image_2|><|image_1|>", [kit_image("square_gray")] * 2)


def test_text_must_be_one_string(processor):
    with pytest.raises(TypeError, match="text must be one prompt string, got list"):
        processor(["a", "b"])


@pytest.mark.parametrize(("num_crops", "sizes", "crops"), [(1, [336, 336], 2), (16, [1008, 1680], 17)])
def test_num_crops_bounds_the_hd_size(num_crops, sizes, crops):
    out = Phi3VisionImageProcessor(num_crops=num_crops)([kit_image("landscape_rgb")])
    assert out["image_sizes"].tolist() == [sizes]
    assert out["pixel_values"].shape == (1, crops, 3, 336, 336)
    h, w = sizes[0] // 336, sizes[1] // 336
    assert h * w <= num_crops
    assert out["num_img_tokens"] == [(h * w + 1) * 144 + 1 + (h + 1) * 12]


def test_unused_crop_slots_are_zero():
    pv = Phi3VisionImageProcessor(num_crops=4)([kit_image("landscape_rgb")])["pixel_values"]
    assert pv[0, 3:].abs().sum() == 0 and pv[0, :3].abs().sum() > 0


def test_extreme_aspect_ratio_gives_at_least_one_pixel_row(monkeypatch):
    # The decoder refuses such images by default (media.decode.MAX_ASPECT_RATIO); the processor's arithmetic must
    # still hold for a caller who raises that bound.
    monkeypatch.setattr("mmsearch.media.decode.MAX_ASPECT_RATIO", 10_000)
    out = Phi3VisionImageProcessor(num_crops=4)([Image.new("RGB", (3000, 1), (10, 20, 30))])
    assert out["image_sizes"].tolist() == [[336, 1344]]


def test_invalid_num_crops_is_rejected():
    with pytest.raises(ValueError, match="num_crops must be a positive integer, got 0"):
        Phi3VisionImageProcessor(num_crops=0)


def test_paths_and_bytes_decode_like_pil_images(processor):
    path = KIT / "images" / "portrait_rgb.png"
    from_pil = processor.image_processor([Image.open(path)])["pixel_values"]
    from_path = processor.image_processor([path])["pixel_values"]
    from_bytes = processor.image_processor([path.read_bytes()])["pixel_values"]
    assert torch.equal(from_pil, from_path) and torch.equal(from_pil, from_bytes)


def test_corrupt_image_bytes_raise_invalid_image(processor):
    with pytest.raises(InvalidImageError, match="not an image"):
        processor("<|image_1|>", [io.BytesIO(b"not a png").getvalue()])


def test_decode_skips_image_placeholders(processor):
    out = processor(*PROMPTS["p1"][:1], [kit_image("landscape_rgb")])
    text = processor.decode(out["input_ids"][0], skip_special_tokens=False)
    assert "Describe the product in one word." in text
    assert processor.decode([-1, -1, 394], skip_special_tokens=False) == "<|user|>"


def test_stop_token_ids_are_end_and_endoftext(processor):
    assert processor.stop_token_ids == [391, 384]


@pytest.mark.parametrize("case", ["I;16", "I", "F", "P transparency", "LA", "CMYK", "EXIF-rotated"])
def test_unusual_modes_are_converted_to_rgb_before_the_hd_transform(case):
    """The hub processor converts every image to RGB first (unlike Visualized BGE, which resizes first)."""
    img = Image.open(io.BytesIO(CASES[case]()))
    got = Phi3VisionImageProcessor(num_crops=4)([img])["pixel_values"]
    want = Phi3VisionImageProcessor(num_crops=4)([img.convert("RGB")])["pixel_values"]
    assert torch.equal(got, want)
