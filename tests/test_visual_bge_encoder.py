"""Behaviour of `VisualizedBGEEncoder` on the tiny random-weight checkpoint from `mmsearch.testing`: batching,
input types, bounds and clear errors. (Numbers against upstream are in test_visual_bge_parity.py.)"""

from __future__ import annotations

import io
import struct
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from mmsearch.config import Settings
from mmsearch.errors import (
    ConfigError,
    ImageTooLargeError,
    InvalidImageError,
    InvalidQueryError,
    InvalidTextError,
)
from mmsearch.models.encoder import TextTruncatedWarning, VisualizedBGEEncoder
from mmsearch.testing import build_tiny_visual_bge, tiny_visual_bge_encoder

ATOL = 1e-5


def make_image(seed: int, size=(80, 60), mode="RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(arr, "RGB").convert(mode)


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (a decompression-bomb shape) with almost no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0"))
        + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny_visual_bge")


@pytest.fixture(scope="module")
def encoder(tiny_dir) -> VisualizedBGEEncoder:
    return tiny_visual_bge_encoder(tiny_dir, batch_size=3)


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    sizes = [(80, 60), (50, 90), (64, 64), (120, 40), (70, 70)]
    return [make_image(i, s) for i, s in enumerate(sizes)]


TEXTS = ["red shoes", "a leopard print phone case for iphone", "blue", "wireless charger with cable", "mug"]


def test_encode_images_returns_unit_norm_float32_rows(encoder, images):
    emb = encoder.encode_images(images)
    assert emb.shape == (5, encoder.dim) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_different_images_get_different_embeddings(encoder, images):
    emb = encoder.encode_images(images[:2])
    assert np.abs(emb[0] - emb[1]).max() > 1e-3


def test_batched_images_equal_one_at_a_time(encoder, images):
    batched = encoder.encode_images(images)
    single = np.concatenate([encoder.encode_images([img]) for img in images])
    np.testing.assert_allclose(batched, single, rtol=0, atol=ATOL)


def test_batched_texts_equal_one_at_a_time(encoder):
    batched = encoder.encode_texts(TEXTS)
    single = np.concatenate([encoder.encode_texts([t]) for t in TEXTS])
    np.testing.assert_allclose(batched, single, rtol=0, atol=ATOL)


def test_batched_multimodal_equal_one_at_a_time(encoder, images):
    batched = encoder.encode_multimodal(images, TEXTS)
    single = np.concatenate(
        [encoder.encode_multimodal([img], [t]) for img, t in zip(images, TEXTS, strict=True)]
    )
    np.testing.assert_allclose(batched, single, rtol=0, atol=ATOL)


def test_path_bytes_and_pil_inputs_give_the_same_embedding(encoder, tmp_path):
    image = make_image(7)
    path = tmp_path / "x.png"
    image.save(path)
    emb = encoder.encode_images([image, path, str(path), png_bytes(image)])
    np.testing.assert_allclose(emb, np.repeat(emb[:1], 4, axis=0), rtol=0, atol=ATOL)


def test_encode_pixels_equals_encode_images(encoder, images):
    np.testing.assert_allclose(
        encoder.encode_pixels(encoder.preprocess(images)), encoder.encode_images(images), rtol=0, atol=ATOL
    )


def test_preprocess_returns_float32_batch_at_model_size(encoder, images):
    pixels = encoder.preprocess(images[:2])
    assert pixels.shape == (2, 3, 64, 64) and pixels.dtype == torch.float32


def test_multimodal_differs_from_image_only(encoder, images):
    assert (
        np.abs(
            encoder.encode_multimodal(images[:1], ["make it blue"]) - encoder.encode_images(images[:1])
        ).max()
        > 1e-4
    )


@pytest.mark.parametrize("method", ["images", "texts", "multimodal"])
def test_empty_input_returns_empty_array(encoder, method):
    out = (
        encoder.encode_multimodal([], [])
        if method == "multimodal"
        else getattr(encoder, f"encode_{method}")([])
    )
    assert out.shape == (0, encoder.dim) and out.dtype == np.float32


@pytest.mark.parametrize("text", ["", "   \n\t"])
def test_empty_text_raises(encoder, text):
    with pytest.raises(InvalidTextError, match=r"texts\[1\] is empty; expected non-blank text"):
        encoder.encode_texts(["fine", text])


def test_empty_instruction_in_pair_raises(encoder, images):
    with pytest.raises(InvalidTextError, match=r"texts\[0\] is empty"):
        encoder.encode_multimodal(images[:1], [""])


def test_non_string_text_raises(encoder):
    with pytest.raises(InvalidTextError, match=r"texts\[0\]: expected a string, got int"):
        encoder.encode_texts([3])


def test_bare_string_instead_of_list_raises(encoder):
    with pytest.raises(InvalidTextError, match="got a single str; wrap it in a list"):
        encoder.encode_texts("red shoes")


@pytest.mark.parametrize("method", ["encode_images", "preprocess"])
def test_single_image_instead_of_list_raises(encoder, method, tmp_path):
    with pytest.raises(InvalidQueryError, match="got a single PosixPath; wrap it in a list"):
        getattr(encoder, method)(tmp_path / "x.png")


def test_pair_count_mismatch_raises(encoder, images):
    with pytest.raises(InvalidQueryError, match="got 2 images and 1 texts; expected one text per image"):
        encoder.encode_multimodal(images[:2], ["blue"])


def test_text_longer_than_window_is_truncated_with_warning(encoder):
    long_text = " ".join(["red shoes"] * 400)  # 800 words -> far more than 512 tokens
    with pytest.warns(TextTruncatedWarning, match=r"texts\[0\]: 802 tokens exceed the model window of 512"):
        emb = encoder.encode_texts([long_text])
    ids = encoder.tokenizer([long_text])["input_ids"][0]
    cut = torch.tensor([ids[:511] + ids[-1:]])  # keep [SEP]
    with torch.inference_mode():
        want = encoder.model.encode_text(cut, torch.ones_like(cut)).numpy()
    np.testing.assert_allclose(emb, want, rtol=0, atol=ATOL)


def test_multimodal_window_leaves_room_for_image_tokens(encoder, images):
    long_text = " ".join(["blue"] * 600)
    with pytest.warns(TextTruncatedWarning, match="exceed the model window of 496"):
        emb = encoder.encode_multimodal(images[:1], [long_text])
    assert emb.shape == (1, encoder.dim)


def test_short_text_gives_no_warning(encoder):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        encoder.encode_texts(["red shoes"])


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "zero-byte file"),
        (b"this is plain text, not an image", "not an image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "corrupt or truncated image"),
    ],
)
def test_unreadable_image_bytes_raise_with_index(encoder, images, data, reason):
    with pytest.raises(InvalidImageError, match=rf"images\[1\]: <\d+ bytes>: {reason}"):
        encoder.encode_images([images[0], data])


def test_truncated_image_raises(encoder, images):
    data = png_bytes(make_image(3, (200, 200)))
    with pytest.raises(InvalidImageError, match=r"images\[0\]: <\d+ bytes>: corrupt or truncated image"):
        encoder.encode_images([data[: len(data) // 2]])


def test_absurd_pixel_count_is_refused_before_decoding(encoder):
    with pytest.raises(
        InvalidImageError, match=r"10000x10000 = 100000000 pixels exceeds the limit of 40000000"
    ):
        encoder.encode_images([png_header_only(10_000, 10_000)])


def test_decompression_bomb_is_refused(encoder):
    with pytest.raises(InvalidImageError, match=r"images\[0\]: <\d+ bytes>: decompression bomb refused"):
        encoder.encode_images([png_header_only(100_000, 100_000)])


def test_missing_image_file_raises(encoder, tmp_path):
    with pytest.raises(InvalidImageError, match=r"images\[0\]: .*nope\.png: file not found"):
        encoder.encode_images([tmp_path / "nope.png"])


def test_error_index_refers_to_caller_order_in_pairs(encoder, images):
    with pytest.raises(InvalidImageError, match=r"images\[2\]: <0 bytes>: zero-byte file"):
        encoder.encode_multimodal([images[0], images[1], b""], ["a long instruction text here", "b", "c c"])


def test_image_byte_limit_is_applied(tiny_dir, images):
    small = tiny_visual_bge_encoder(tiny_dir, max_image_bytes=2048)
    with pytest.raises(
        ImageTooLargeError, match=r"images\[0\]: <\d+ bytes>: \d+ bytes exceeds the limit of 2048"
    ):
        small.encode_images([png_bytes(images[0])])


def test_wrong_pixel_shape_raises(encoder):
    with pytest.raises(
        InvalidQueryError, match=r"pixel_values must have shape \(n, \(3, 64, 64\)\), got \(2, 3, 32, 32\)"
    ):
        encoder.encode_pixels(torch.zeros(2, 3, 32, 32))


def test_model_id_is_stable_for_the_same_weights(tiny_dir, encoder):
    assert tiny_visual_bge_encoder(tiny_dir).model_id == encoder.model_id


def test_model_id_differs_for_other_weights(tmp_path, encoder):
    other = tiny_visual_bge_encoder(tmp_path, seed=1)
    assert other.model_id != encoder.model_id and other.model_id.startswith("visualized-bge-base@")


def test_weights_directory_resolves_official_file_name(tiny_dir, encoder):
    tiny = build_tiny_visual_bge(tiny_dir)
    loaded = VisualizedBGEEncoder.from_pretrained(
        "base", weights=tiny_dir, text_model=tiny.text_model_dir, device="cpu"
    )
    assert loaded.model_id == encoder.model_id


def test_engine_smoke_builds_tiny_model(tmp_path):
    from mmsearch.engine import build_encoder

    enc = build_encoder(Settings(smoke=True, cache_dir=tmp_path, device="cpu", encode_batch_size=4))
    assert (enc.dim, enc.batch_size, enc.image_size) == (768, 4, 64)


def test_float16_on_cpu_is_refused(tiny_dir):
    with pytest.raises(
        ConfigError, match=r"dtype float16 needs a GPU; use --dtype float32 \(or bfloat16\) on device 'cpu'"
    ):
        tiny_visual_bge_encoder(tiny_dir, dtype="float16")


def test_bfloat16_embeddings_are_close_to_float32(tiny_dir, encoder, images):
    bf16 = tiny_visual_bge_encoder(tiny_dir, dtype="bfloat16")
    emb = bf16.encode_multimodal(images[:2], TEXTS[:2])
    assert emb.dtype == np.float32
    np.testing.assert_allclose(emb, encoder.encode_multimodal(images[:2], TEXTS[:2]), rtol=0, atol=5e-3)


def test_unknown_variant_is_refused(tiny_dir):
    with pytest.raises(
        ConfigError, match=r"unknown encoder variant 'large'; expected one of \['base', 'm3'\]"
    ):
        VisualizedBGEEncoder.from_pretrained("large", weights=tiny_dir)


def test_zero_batch_size_is_refused(tiny_dir):
    with pytest.raises(ConfigError, match="batch_size must be >= 1, got 0"):
        tiny_visual_bge_encoder(tiny_dir, batch_size=0)


def test_concurrent_calls_from_threads_match_sequential(encoder, images):
    from concurrent.futures import ThreadPoolExecutor

    pairs = [(images[i % 5], TEXTS[(i * 2) % 5]) for i in range(8)]
    sequential = [encoder.encode_multimodal([img], [t]) for img, t in pairs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(lambda p: encoder.encode_multimodal([p[0]], [p[1]]), pairs))
    np.testing.assert_allclose(np.concatenate(threaded), np.concatenate(sequential), rtol=0, atol=ATOL)
