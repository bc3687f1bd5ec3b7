"""Parity of the native Visualized BGE with upstream FlagEmbedding `research/visual_bge`, from the kits in
tests/data/parity/ (tiny configs, weights by the kits' numpy rule, outputs computed by upstream): `visual_bge`
(base layout: BERT + EVA02-CLIP-B-16) and `visual_bge_m3` (m3 layout: XLM-RoBERTa + EVA02-CLIP-L-14)."""

from __future__ import annotations

import ast
import hashlib
import json
import zlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmsearch.config import ENCODER_VARIANTS
from mmsearch.errors import ModelLoadError
from mmsearch.models.bge_text import TextEncoderConfig
from mmsearch.models.encoder import VisualizedBGEEncoder
from mmsearch.models.eva_clip import EvaRotaryEmbedding
from mmsearch.models.preprocess import eval_transform, to_rgb_uint8
from mmsearch.models.visualized_bge import VisualizedBGE

PARITY = Path(__file__).parent / "data" / "parity"
KIT = PARITY / "visual_bge"
IMAGE_NAMES = ["landscape_rgb", "portrait_rgb", "square_gray", "transparent_rgba"]
EMBED_ATOL = 1e-5


@dataclass(frozen=True)
class Kit:
    root: Path
    variant: str

    @cached_property
    def config(self) -> dict:
        return json.loads((self.root / "config.json").read_text())

    @cached_property
    def expected_json(self) -> dict:
        return json.loads((self.root / "expected.json").read_text())

    @cached_property
    def params(self) -> list[dict]:
        return json.loads((self.root / "params.json").read_text())["params"]

    @property
    def image_size(self) -> int:
        return self.config["preprocess_eval"]["image_size"]

    @property
    def text_config(self) -> TextEncoderConfig:
        return TextEncoderConfig.from_hf_config(self.config["text_encoder"])

    def manifest(self, file: str) -> dict:
        return next(m for m in self.expected_json["manifest"] if m["file"] == file)

    def load(self, file: str) -> torch.Tensor:
        return torch.from_numpy(np.load(self.root / file))


KITS = {"base": Kit(PARITY / "visual_bge", "base"), "m3": Kit(PARITY / "visual_bge_m3", "m3")}


def kit_tensor(name: str, shape: list[int], init: str) -> np.ndarray:
    """The kit's weight rule: a per-name RandomState seeded by crc32, uniform in [-0.04, 0.04)."""
    u = np.random.RandomState(zlib.crc32(name.encode("utf-8"))).random_sample(tuple(shape))
    x = (2.0 * u - 1.0) * 0.04
    return np.asarray(1.0 + x if init == "norm_weight" else x, dtype=np.float64).astype(np.float32)


def kit_state_dict(kit: Kit) -> dict[str, np.ndarray]:
    out = {}
    for p in kit.params:
        arr = (
            np.load(kit.root / p["file"])
            if p["init"] == "file"
            else kit_tensor(p["name"], p["shape"], p["init"])
        )
        out[p["name"]] = arr
    return out


def call_kwargs(entry: dict) -> dict:
    """The keyword arguments of the recorded upstream call, e.g. encode(image='images/x.png', text='...')."""
    call = ast.parse(entry["call"], mode="eval").body
    return {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}


@pytest.fixture(scope="module", params=sorted(KITS))
def kit(request) -> Kit:
    return KITS[request.param]


@pytest.fixture(scope="module")
def state_dict(kit) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v) for k, v in kit_state_dict(kit).items()}


@pytest.fixture(scope="module")
def model(kit, state_dict) -> VisualizedBGE:
    return VisualizedBGE.from_state_dict(state_dict, kit.text_config, variant=kit.variant)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory, kit, state_dict) -> VisualizedBGEEncoder:
    """The kit model saved as an official-format .pth + text dir, loaded the way users load real weights."""
    root = tmp_path_factory.mktemp(f"kit_checkpoint_{kit.variant}")
    torch.save(state_dict, root / str(ENCODER_VARIANTS[kit.variant]["weights_file"]))
    text_dir = root / "text_model"
    text_dir.mkdir()
    (text_dir / "config.json").write_text(json.dumps(kit.config["text_encoder"]))
    for f in (kit.root / "tokenizer").iterdir():
        (text_dir / f.name).write_bytes(f.read_bytes())
    return VisualizedBGEEncoder.from_pretrained(
        kit.variant, weights=root, text_model=text_dir, device="cpu", dtype="float32", batch_size=3
    )


def test_weight_rule_reproduces_kit_checksum(kit):
    digest = hashlib.sha256()
    sd = kit_state_dict(kit)
    for name in sorted(sd):
        digest.update(name.encode("utf-8"))
        digest.update(np.ascontiguousarray(sd[name], dtype=np.float32).tobytes())
    assert digest.hexdigest() == kit.expected_json["weights_check"]["sha256"]


def test_state_dict_names_and_shapes_equal_official_layout(kit, model):
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == {p["name"]: p["shape"] for p in kit.params}


def test_vision_geometry_is_read_from_checkpoint(kit, model):
    vision, want = model.config.vision, kit.config["vision"]
    got = (vision.image_size, vision.patch_size, vision.width, vision.layers, vision.mlp_hidden)
    vcfg = want["vision_cfg"]
    assert got == (
        vcfg["image_size"],
        vcfg["patch_size"],
        vcfg["width"],
        vcfg["layers"],
        want["derived"]["mlp_hidden"],
    )


@pytest.mark.parametrize("buffer", ["freqs_cos", "freqs_sin"])
def test_recomputed_rope_tables_match_kit_buffers(kit, model, buffer):
    table = getattr(EvaRotaryEmbedding(model.config.vision), buffer)
    torch.testing.assert_close(table, kit.load(f"buffers/rope.{buffer}.npy"), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", IMAGE_NAMES)
def test_pixels_at_tiny_size_match_upstream(kit, name):
    pixels = eval_transform(Image.open(kit.root / "images" / f"{name}.png"), kit.image_size)
    want = kit.load(f"expected/pixels{kit.image_size}_{name}.npy")
    torch.testing.assert_close(pixels, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", IMAGE_NAMES)
def test_resize_crop_convert_at_official_size_match_upstream_exactly(name):
    rgb = to_rgb_uint8(Image.open(KIT / "images" / f"{name}.png"), 224)
    np.testing.assert_array_equal(rgb, np.asarray(Image.open(KIT / "expected" / f"rgb224_{name}.png")))


def test_pixels_at_official_size_match_upstream():
    pixels = eval_transform(Image.open(KIT / "images" / "landscape_rgb.png"), 224)
    want = torch.from_numpy(np.load(KIT / "expected" / "pixels224_landscape_rgb.npy"))
    torch.testing.assert_close(pixels, want, rtol=0, atol=1e-6)


def test_eva_tokens_match_upstream(kit, model):
    pixels = kit.load(f"expected/pixels{kit.image_size}_landscape_rgb.npy")[None]
    with torch.inference_mode():
        tokens = model.model_visual(pixels)
    torch.testing.assert_close(tokens, kit.load("expected/eva_tokens_landscape_rgb.npy"), rtol=0, atol=1e-4)


@pytest.mark.parametrize("file", ["text_0", "text_1", "text_2", "text_batch"])
def test_text_embeddings_from_recorded_ids_match_upstream(kit, model, file):
    entry = kit.manifest(f"expected/{file}.npy")
    ids = torch.tensor(entry["input_ids"])
    mask = torch.tensor(entry["attention_mask"]) if "attention_mask" in entry else torch.ones_like(ids)
    with torch.inference_mode():
        emb = model.encode_text(ids, mask)
    torch.testing.assert_close(emb, kit.load(entry["file"]), rtol=0, atol=EMBED_ATOL)


@pytest.mark.parametrize("file", [f"image_{n}" for n in IMAGE_NAMES] + [f"mm_{i}" for i in range(4)])
def test_image_and_multimodal_embeddings_from_recorded_inputs_match_upstream(kit, model, file):
    entry = kit.manifest(f"expected/{file}.npy")
    image = Path(call_kwargs(entry)["image"]).stem
    pixels = kit.load(f"expected/pixels{kit.image_size}_{image}.npy")[None]
    ids = torch.tensor(entry["input_ids"])
    with torch.inference_mode():
        emb = model.encode_multimodal(pixels, ids, torch.ones_like(ids))
    torch.testing.assert_close(emb, kit.load(entry["file"]), rtol=0, atol=EMBED_ATOL)


@pytest.mark.parametrize("file", ["text_0", "text_1", "text_2", "mm_0", "mm_1", "mm_2", "mm_3"])
def test_tokenizer_ids_match_upstream(kit, encoder, file):
    entry = kit.manifest(f"expected/{file}.npy")
    assert encoder.tokenizer([call_kwargs(entry)["text"]])["input_ids"] == entry["input_ids"]


def test_encoder_texts_match_upstream(kit, encoder):
    texts = call_kwargs(kit.manifest("expected/text_batch.npy"))["text"]
    emb = encoder.encode_texts(texts)
    np.testing.assert_allclose(emb, kit.load("expected/text_batch.npy").numpy(), rtol=0, atol=EMBED_ATOL)


def test_encoder_image_paths_match_upstream(kit, encoder):
    emb = encoder.encode_images([kit.root / "images" / f"{n}.png" for n in IMAGE_NAMES])
    want = np.concatenate([np.load(kit.root / "expected" / f"image_{n}.npy") for n in IMAGE_NAMES])
    np.testing.assert_allclose(emb, want, rtol=0, atol=EMBED_ATOL)


def test_encoder_multimodal_pairs_match_upstream(kit, encoder):
    calls = [call_kwargs(kit.manifest(f"expected/mm_{i}.npy")) for i in range(4)]
    emb = encoder.encode_multimodal([kit.root / c["image"] for c in calls], [c["text"] for c in calls])
    want = np.concatenate([np.load(kit.root / "expected" / f"mm_{i}.npy") for i in range(4)])
    np.testing.assert_allclose(emb, want, rtol=0, atol=EMBED_ATOL)


def test_bfloat16_image_and_multimodal_embeddings_keep_cosine_to_upstream_float32(kit, state_dict):
    """The CPU default on bf16 hardware: every parity image and pair within cosine 0.999 of upstream's float32."""
    model = VisualizedBGE.from_state_dict(state_dict, kit.text_config, variant=kit.variant).to(torch.bfloat16)
    files = [f"image_{n}" for n in IMAGE_NAMES] + [f"mm_{i}" for i in range(4)]
    cosines = []
    for file in files:
        entry = kit.manifest(f"expected/{file}.npy")
        image = Path(call_kwargs(entry)["image"]).stem
        pixels = kit.load(f"expected/pixels{kit.image_size}_{image}.npy")[None].to(torch.bfloat16)
        ids = torch.tensor(entry["input_ids"])
        with torch.inference_mode():
            emb = model.encode_multimodal(pixels, ids, torch.ones_like(ids))
        assert emb.dtype == torch.float32
        cosines.append(float((emb * kit.load(entry["file"])).sum()))
    assert min(cosines) >= 0.999, dict(zip(files, cosines, strict=True))


def test_encoder_dim_and_window_follow_the_variant(kit, encoder):
    text = kit.config["text_encoder"]
    offset = (
        text["pad_token_id"] + 1 if kit.variant == "m3" else 0
    )  # XLM-R text positions start after padding_idx
    n_image = kit.config["vision"]["derived"]["num_patches"]
    got = (encoder.dim, encoder.max_text_tokens, encoder.max_multimodal_text_tokens)
    want = (
        text["hidden_size"],
        text["max_position_embeddings"] - offset,
        text["max_position_embeddings"] - n_image,
    )
    assert got == want


def test_strict_load_names_a_missing_key(kit, state_dict):
    partial = {k: v for k, v in state_dict.items() if k != "visual_proj.bias"}
    with pytest.raises(ModelLoadError, match=r"1 missing: visual_proj\.bias"):
        VisualizedBGE.from_state_dict(partial, kit.text_config)


def test_strict_load_names_an_unexpected_key(kit, state_dict):
    extra = {**state_dict, "bge_embeddings.position_ids": torch.arange(512)}
    with pytest.raises(ModelLoadError, match=r"1 unexpected: bge_embeddings\.position_ids"):
        VisualizedBGE.from_state_dict(extra, kit.text_config)


def test_strict_load_names_a_wrong_shape():
    kit = KITS["base"]
    state_dict = {k: torch.from_numpy(v) for k, v in kit_state_dict(kit).items()}
    text = TextEncoderConfig.from_hf_config({**kit.config["text_encoder"], "intermediate_size": 256})
    want = r"6 wrong shape: bge_encoder\.layer\.0\.intermediate\.dense\.weight: checkpoint \(512, 768\), model \(256, 768\)"
    with pytest.raises(ModelLoadError, match=want):
        VisualizedBGE.from_state_dict(state_dict, text)
