"""Native Phi-3 Vision vs the upstream hub code: the parity kit's tiny model, loaded strictly through our loader.

The kit's weights are regenerated with `mmsearch.testing.phi3_vision.parity_tensor` (the kit's numpy rule, checked
against its sha256), written as an official-format checkpoint and loaded by `load_phi3_vision`.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from phi3_kit import EXPECTED, KIT, MANIFEST, PARAMS, PROMPTS
from PIL import Image
from safetensors.torch import save_file

from mmsearch.models.phi3_vision import (
    OFFICIAL_LONG_FACTOR,
    OFFICIAL_SHORT_FACTOR,
    Phi3VisionConfig,
)
from mmsearch.models.phi3_vision_loader import build_empty_model, load_phi3_vision
from mmsearch.testing.phi3_vision import parity_tensor, random_phi3_vision


def kit_state_dict() -> dict[str, np.ndarray]:
    return {p["name"]: parity_tensor(p["name"], tuple(p["shape"]), p["init"]) for p in PARAMS}


def kit_config_dict() -> dict:
    config = json.loads((KIT / "config.json").read_text())
    clip = {k: v for k, v in json.loads((KIT / "clip_vision_config.json").read_text()).items() if k != "note"}
    return {**config, "vision_config": clip}


def write_kit_checkpoint(directory: Path, config: dict | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config or kit_config_dict()))
    tensors = {k: torch.from_numpy(v) for k, v in kit_state_dict().items()}
    save_file(tensors, str(directory / "model.safetensors"))
    for f in (KIT / "tokenizer").iterdir():
        shutil.copyfile(f, directory / f.name)
    shutil.copyfile(KIT / "preprocessor_config.json", directory / "preprocessor_config.json")
    return directory


@pytest.fixture(scope="module")
def kit_dir(tmp_path_factory) -> Path:
    return write_kit_checkpoint(tmp_path_factory.mktemp("phi3v_kit"))


@pytest.fixture(scope="module")
def loaded(kit_dir):
    return load_phi3_vision(str(kit_dir), device="cpu", dtype="float32", num_crops=4)


@pytest.fixture(scope="module")
def inputs(loaded):
    _, processor = loaded
    return {
        name: processor(text, [Image.open(KIT / "images" / f"{n}.png") for n in names])
        for name, (text, names) in PROMPTS.items()
    }


def test_weight_rule_reproduces_the_kit_sha256():
    digest = hashlib.sha256()
    sd = kit_state_dict()
    for name in sorted(sd):
        digest.update(name.encode("utf-8"))
        digest.update(np.ascontiguousarray(sd[name], dtype=np.float32).tobytes())
    assert digest.hexdigest() == EXPECTED["weights_check"]["sha256"]


def test_model_parameters_are_exactly_the_official_names_and_shapes():
    config = {k: v for k, v in kit_config_dict().items() if k not in ("model_type", "auto_map")}
    model = build_empty_model(Phi3VisionConfig(**config))
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == {p["name"]: p["shape"] for p in PARAMS}


@pytest.mark.parametrize("prompt", sorted(PROMPTS))
def test_last_logits_match_upstream(loaded, inputs, prompt):
    model, _ = loaded
    with torch.no_grad():
        logits = model(**inputs[prompt]).logits[0, -3:]
    expected = torch.from_numpy(np.load(KIT / "expected" / f"{prompt}_logits_last3.npy"))
    torch.testing.assert_close(logits, expected, atol=5e-6, rtol=0)


@pytest.mark.parametrize("prompt", sorted(PROMPTS))
def test_greedy_generation_matches_upstream(loaded, inputs, prompt):
    model, _ = loaded
    batch = inputs[prompt]
    out = model.generate(**batch, max_new_tokens=8, do_sample=False, eos_token_id=None)
    assert out[0, batch["input_ids"].shape[1] :].tolist() == MANIFEST[f"{prompt}_generate8"]["value"]


def test_long_positions_switch_longrope_to_the_long_factor(loaded, inputs):
    model, _ = loaded
    ids = inputs["pt"]["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=ids, position_ids=torch.arange(5000, 5000 + ids.shape[1])[None]).logits[
            0, -3:
        ]
    expected = torch.from_numpy(np.load(KIT / "expected" / "pt_logits_last3_pos5000.npy"))
    torch.testing.assert_close(logits, expected, atol=5e-6, rtol=0)


def test_projected_image_rows_match_upstream(loaded, inputs):
    model, _ = loaded
    with torch.no_grad():
        rows = model.model.vision_embed_tokens(inputs["p1"]["pixel_values"], inputs["p1"]["image_sizes"])
    expected = torch.from_numpy(np.load(KIT / "expected" / "p1_image_embeds.npy"))
    torch.testing.assert_close(rows, expected, atol=2e-5, rtol=0)


def test_clip_features_are_the_penultimate_layer_without_cls(loaded, inputs):
    model, _ = loaded
    with torch.no_grad():
        feats = model.model.vision_embed_tokens.img_processor(inputs["p1"]["pixel_values"][0, :1])
    expected = torch.from_numpy(np.load(KIT / "expected" / "p1_clip_feat_crop0_first8.npy"))
    torch.testing.assert_close(feats[0, :8], expected, atol=2e-5, rtol=0)


def test_eager_attention_gives_the_same_logits(kit_dir, inputs):
    model, _ = load_phi3_vision(str(kit_dir), device="cpu", dtype="float32", attn_implementation="eager")
    with torch.no_grad():
        logits = model(**inputs["p1"]).logits[0, -3:]
    expected = torch.from_numpy(np.load(KIT / "expected" / "p1_logits_last3.npy"))
    torch.testing.assert_close(logits, expected, atol=5e-6, rtol=0)


def test_forward_leaves_input_ids_untouched(loaded, inputs):
    model, _ = loaded
    ids = inputs["p1"]["input_ids"].clone()
    with torch.no_grad():
        model(**inputs["p1"])
    assert torch.equal(inputs["p1"]["input_ids"], ids)


def test_placeholders_without_pixel_values_are_rejected(loaded, inputs):
    model, _ = loaded
    with pytest.raises(ValueError, match="image placeholders \\(negative ids\\) but no pixel_values"):
        model(input_ids=inputs["p1"]["input_ids"])


def test_placeholder_count_must_match_the_images(loaded, inputs):
    model, _ = loaded
    batch = dict(inputs["p1"])
    batch["input_ids"] = batch["input_ids"][:, 4:]  # drop the 4 text tokens before the image block: still 457
    batch["input_ids"] = torch.cat([torch.full((1, 3), -1), batch["input_ids"]], dim=1)
    batch.pop("attention_mask")
    with pytest.raises(ValueError, match="expected 457 image tokens for the given images, got 460"):
        model(**batch)


def test_default_config_is_the_released_model():
    config = Phi3VisionConfig()
    assert (config.vocab_size, config.hidden_size, config.num_hidden_layers, config.intermediate_size) == (
        32064,
        3072,
        32,
        8192,
    )
    assert config.rope_parameters["rope_type"] == "longrope"
    assert config.rope_parameters["long_factor"] == OFFICIAL_LONG_FACTOR
    assert config.rope_parameters["short_factor"] == OFFICIAL_SHORT_FACTOR
    # The kit's 8 tiny factors are every 6th official value.
    kit_rope = json.loads((KIT / "config.json").read_text())["rope_scaling"]
    assert kit_rope["long_factor"] == OFFICIAL_LONG_FACTOR[::6]
    assert kit_rope["short_factor"] == pytest.approx(OFFICIAL_SHORT_FACTOR[::6], abs=0)
    assert config.vision_config.num_hidden_layers == 24 and config.vision_config.hidden_size == 1024


def test_full_size_model_has_the_official_key_set():
    """592 keys for 32 LM + 24 CLIP layers (expected.json: same key patterns as the official index)."""
    model = build_empty_model(Phi3VisionConfig())
    keys = model.state_dict().keys()
    assert len(keys) == 592

    def patterns(names):
        return {re.sub(r"\.layers\.\d+\.", ".layers.*.", n) for n in names}

    assert patterns(keys) == patterns(p["name"] for p in PARAMS)
    assert sum(p.numel() for p in model.parameters()) == 4_146_621_440


def test_official_config_json_is_accepted_as_is():
    raw = {
        "architectures": ["Phi3VForCausalLM"],
        "model_type": "phi3_v",
        "rope_scaling": {
            "type": "su",
            "long_factor": OFFICIAL_LONG_FACTOR,
            "short_factor": OFFICIAL_SHORT_FACTOR,
        },
        "_attn_implementation": "flash_attention_2",
        "torch_dtype": "bfloat16",
        "embd_layer": {"embedding_cls": "image", "hd_transform_order": "sub_glb", "projection_cls": "mlp"},
        "img_processor": {"image_dim_out": 1024, "num_img_tokens": 144},
    }
    config = Phi3VisionConfig(**{k: v for k, v in raw.items() if k != "model_type"})
    assert config.rope_parameters["rope_type"] == "longrope"
    assert config.rope_parameters["factor"] == 32.0
    assert config.embd_layer["use_hd_transform"] is True


def test_config_rejects_a_vision_width_that_does_not_match_the_projector():
    with pytest.raises(
        ValueError, match=r"image_dim_out \(1024\) must equal vision_config.hidden_size \(32\)"
    ):
        Phi3VisionConfig(vision_config={"hidden_size": 32, "num_attention_heads": 4})


@pytest.mark.slow
def test_full_width_model_runs_an_image_prompt():
    """Full-size widths (3072 LM, 1024 CLIP, 4096 merged) with fewer layers: the HD path and the LM head fit."""
    config = Phi3VisionConfig(num_hidden_layers=1, vision_config={"num_hidden_layers": 2})
    model = random_phi3_vision(config, dtype=torch.float32)
    ids = torch.cat([torch.ones(1, 3, dtype=torch.long), torch.full((1, 757), -1)], dim=1)
    pixel_values = torch.randn(1, 5, 3, 336, 336)
    with torch.no_grad():
        out = model(
            input_ids=ids, pixel_values=pixel_values, image_sizes=torch.tensor([[672, 672]]), logits_to_keep=1
        )
    assert out.logits.shape == (1, 1, 32064)
    assert torch.isfinite(out.logits).all()
