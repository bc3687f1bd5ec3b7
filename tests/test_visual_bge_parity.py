"""Parity of the native Visualized BGE with upstream FlagEmbedding `research/visual_bge`, from the kit in
tests/data/parity/visual_bge/ (tiny config, weights by the kit's numpy rule, outputs computed by upstream)."""

from __future__ import annotations

import ast
import hashlib
import json
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmsearch.errors import ModelLoadError
from mmsearch.models.bge_text import TextEncoderConfig
from mmsearch.models.encoder import VisualizedBGEEncoder
from mmsearch.models.eva_clip import EvaRotaryEmbedding
from mmsearch.models.preprocess import eval_transform, to_rgb_uint8
from mmsearch.models.visualized_bge import VisualizedBGE

KIT = Path(__file__).parent / "data" / "parity" / "visual_bge"
CONFIG = json.loads((KIT / "config.json").read_text())
EXPECTED = json.loads((KIT / "expected.json").read_text())
PARAMS = json.loads((KIT / "params.json").read_text())["params"]
IMAGE_NAMES = ["landscape_rgb", "portrait_rgb", "square_gray", "transparent_rgba"]
EMBED_ATOL = 1e-5


def kit_tensor(name: str, shape: list[int], init: str) -> np.ndarray:
    """The kit's weight rule: a per-name RandomState seeded by crc32, uniform in [-0.04, 0.04)."""
    u = np.random.RandomState(zlib.crc32(name.encode("utf-8"))).random_sample(tuple(shape))
    x = (2.0 * u - 1.0) * 0.04
    return np.asarray(1.0 + x if init == "norm_weight" else x, dtype=np.float64).astype(np.float32)


def kit_state_dict() -> dict[str, np.ndarray]:
    out = {}
    for p in PARAMS:
        arr = (
            np.load(KIT / p["file"]) if p["init"] == "file" else kit_tensor(p["name"], p["shape"], p["init"])
        )
        out[p["name"]] = arr
    return out


def manifest(file: str) -> dict:
    return next(m for m in EXPECTED["manifest"] if m["file"] == file)


def call_kwargs(entry: dict) -> dict:
    """The keyword arguments of the recorded upstream call, e.g. encode(image='images/x.png', text='...')."""
    call = ast.parse(entry["call"], mode="eval").body
    return {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}


def expected(file: str) -> torch.Tensor:
    return torch.from_numpy(np.load(KIT / file))


@pytest.fixture(scope="module")
def state_dict() -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v) for k, v in kit_state_dict().items()}


@pytest.fixture(scope="module")
def model(state_dict) -> VisualizedBGE:
    return VisualizedBGE.from_state_dict(state_dict, TextEncoderConfig.from_hf_config(CONFIG["text_encoder"]))


@pytest.fixture(scope="module")
def encoder(tmp_path_factory, state_dict) -> VisualizedBGEEncoder:
    """The kit model saved as an official-format .pth + text dir, loaded the way users load real weights."""
    root = tmp_path_factory.mktemp("kit_checkpoint")
    torch.save(state_dict, root / "Visualized_base_en_v1.5.pth")
    text_dir = root / "text_model"
    text_dir.mkdir()
    (text_dir / "config.json").write_text(json.dumps(CONFIG["text_encoder"]))
    for f in (KIT / "tokenizer").iterdir():
        (text_dir / f.name).write_bytes(f.read_bytes())
    return VisualizedBGEEncoder.from_pretrained(
        "base", weights=root, text_model=text_dir, device="cpu", dtype="float32", batch_size=3
    )


def test_weight_rule_reproduces_kit_checksum():
    digest = hashlib.sha256()
    sd = kit_state_dict()
    for name in sorted(sd):
        digest.update(name.encode("utf-8"))
        digest.update(np.ascontiguousarray(sd[name], dtype=np.float32).tobytes())
    assert digest.hexdigest() == EXPECTED["weights_check"]["sha256"]


def test_state_dict_names_and_shapes_equal_official_layout(model):
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    official = {p["name"]: p["shape"] for p in PARAMS}
    assert ours == official


def test_vision_geometry_is_read_from_checkpoint(model):
    vision = model.config.vision
    assert (vision.image_size, vision.layers, vision.mlp_hidden) == (64, 2, 384)


@pytest.mark.parametrize("buffer", ["freqs_cos", "freqs_sin"])
def test_recomputed_rope_tables_match_kit_buffers(model, buffer):
    table = getattr(EvaRotaryEmbedding(model.config.vision), buffer)
    torch.testing.assert_close(table, expected(f"buffers/rope.{buffer}.npy"), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", IMAGE_NAMES)
def test_pixels_at_tiny_size_match_upstream(name):
    pixels = eval_transform(Image.open(KIT / "images" / f"{name}.png"), 64)
    torch.testing.assert_close(pixels, expected(f"expected/pixels64_{name}.npy"), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", IMAGE_NAMES)
def test_resize_crop_convert_at_official_size_match_upstream_exactly(name):
    rgb = to_rgb_uint8(Image.open(KIT / "images" / f"{name}.png"), 224)
    np.testing.assert_array_equal(rgb, np.asarray(Image.open(KIT / "expected" / f"rgb224_{name}.png")))


def test_pixels_at_official_size_match_upstream():
    pixels = eval_transform(Image.open(KIT / "images" / "landscape_rgb.png"), 224)
    torch.testing.assert_close(pixels, expected("expected/pixels224_landscape_rgb.npy"), rtol=0, atol=1e-6)


def test_eva_tokens_match_upstream(model):
    pixels = expected("expected/pixels64_landscape_rgb.npy")[None]
    with torch.inference_mode():
        tokens = model.model_visual(pixels)
    torch.testing.assert_close(tokens, expected("expected/eva_tokens_landscape_rgb.npy"), rtol=0, atol=1e-4)


@pytest.mark.parametrize("file", ["text_0", "text_1", "text_2", "text_batch"])
def test_text_embeddings_from_recorded_ids_match_upstream(model, file):
    entry = manifest(f"expected/{file}.npy")
    ids = torch.tensor(entry["input_ids"])
    mask = torch.tensor(entry.get("attention_mask", np.ones_like(entry["input_ids"]).tolist()))
    with torch.inference_mode():
        emb = model.encode_text(ids, mask)
    torch.testing.assert_close(emb, expected(entry["file"]), rtol=0, atol=EMBED_ATOL)


@pytest.mark.parametrize("file", [f"image_{n}" for n in IMAGE_NAMES] + [f"mm_{i}" for i in range(4)])
def test_image_and_multimodal_embeddings_from_recorded_inputs_match_upstream(model, file):
    entry = manifest(f"expected/{file}.npy")
    image = Path(call_kwargs(entry)["image"]).stem
    pixels = expected(f"expected/pixels64_{image}.npy")[None]
    ids = torch.tensor(entry["input_ids"])
    with torch.inference_mode():
        emb = model.encode_multimodal(pixels, ids, torch.ones_like(ids))
    torch.testing.assert_close(emb, expected(entry["file"]), rtol=0, atol=EMBED_ATOL)


@pytest.mark.parametrize("file", ["text_0", "text_1", "text_2", "mm_0", "mm_1", "mm_2", "mm_3"])
def test_tokenizer_ids_match_upstream(encoder, file):
    entry = manifest(f"expected/{file}.npy")
    assert encoder.tokenizer([call_kwargs(entry)["text"]])["input_ids"] == entry["input_ids"]


def test_encoder_texts_match_upstream(encoder):
    texts = call_kwargs(manifest("expected/text_batch.npy"))["text"]
    emb = encoder.encode_texts(texts)
    np.testing.assert_allclose(emb, np.load(KIT / "expected" / "text_batch.npy"), rtol=0, atol=EMBED_ATOL)


def test_encoder_image_paths_match_upstream(encoder):
    emb = encoder.encode_images([KIT / "images" / f"{n}.png" for n in IMAGE_NAMES])
    want = np.concatenate([np.load(KIT / "expected" / f"image_{n}.npy") for n in IMAGE_NAMES])
    np.testing.assert_allclose(emb, want, rtol=0, atol=EMBED_ATOL)


def test_encoder_multimodal_pairs_match_upstream(encoder):
    calls = [call_kwargs(manifest(f"expected/mm_{i}.npy")) for i in range(4)]
    emb = encoder.encode_multimodal([KIT / c["image"] for c in calls], [c["text"] for c in calls])
    want = np.concatenate([np.load(KIT / "expected" / f"mm_{i}.npy") for i in range(4)])
    np.testing.assert_allclose(emb, want, rtol=0, atol=EMBED_ATOL)


def test_strict_load_names_a_missing_key(state_dict):
    partial = {k: v for k, v in state_dict.items() if k != "visual_proj.bias"}
    with pytest.raises(ModelLoadError, match=r"1 missing: visual_proj\.bias"):
        VisualizedBGE.from_state_dict(partial, TextEncoderConfig.from_hf_config(CONFIG["text_encoder"]))


def test_strict_load_names_an_unexpected_key(state_dict):
    extra = {**state_dict, "bge_embeddings.position_ids": torch.arange(512)}
    with pytest.raises(ModelLoadError, match=r"1 unexpected: bge_embeddings\.position_ids"):
        VisualizedBGE.from_state_dict(extra, TextEncoderConfig.from_hf_config(CONFIG["text_encoder"]))


def test_strict_load_names_a_wrong_shape(state_dict):
    text = TextEncoderConfig.from_hf_config({**CONFIG["text_encoder"], "intermediate_size": 256})
    want = r"6 wrong shape: bge_encoder\.layer\.0\.intermediate\.dense\.weight: checkpoint \(512, 768\), model \(256, 768\)"
    with pytest.raises(ModelLoadError, match=want):
        VisualizedBGE.from_state_dict(state_dict, text)
