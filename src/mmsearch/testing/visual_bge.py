"""Tiny random-weight Visualized BGE checkpoint in the official on-disk format, built offline in a second or two.

Entry points: `build_tiny_visual_bge(out_dir)` writes a `.pth` with the official keys plus a text-model directory
(config.json + tokenizer); `tiny_visual_bge_encoder(out_dir)` loads it through `VisualizedBGEEncoder.from_pretrained`,
the same path real users take. For tests, smoke runs and speed runs only: the embeddings mean nothing.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from mmsearch.models.bge_text import TextEncoderConfig
from mmsearch.models.encoder import VisualizedBGEEncoder
from mmsearch.models.eva_clip import EvaRotaryEmbedding, EvaVisionConfig
from mmsearch.models.visualized_bge import VisualizedBGE, VisualizedBGEConfig

# The parity kit's tiny geometry: hidden 768 is forced by the base layout (visual_proj is 768x768).
TINY_TEXT_CONFIG: dict[str, Any] = {
    "architectures": ["BertModel"],
    "model_type": "bert",
    "vocab_size": 234,
    "hidden_size": 768,
    "num_hidden_layers": 2,
    "num_attention_heads": 12,
    "intermediate_size": 512,
    "hidden_act": "gelu",
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
    "pad_token_id": 0,
    "position_embedding_type": "absolute",
}
TINY_VISION_CONFIG = EvaVisionConfig(
    image_size=64, patch_size=16, width=768, layers=2, head_width=64, mlp_hidden=384
)
# Same file name as the official release, so a directory holding it resolves the same way.
WEIGHTS_FILE = "Visualized_base_en_v1.5.pth"
_MARKER = "tiny_visual_bge.json"
_FORMAT = 1


@dataclass(frozen=True)
class TinyVisualBGE:
    """Paths to pass as `weights=` and `text_model=` to `VisualizedBGEEncoder.from_pretrained`."""

    weights_path: Path
    text_model_dir: Path


def _random_state_dict(config: VisualizedBGEConfig, seed: int) -> dict[str, torch.Tensor]:
    """Official keys, seeded values: LayerNorm gains near 1, everything else small noise; RoPE tables exact."""
    with torch.device("meta"):
        names_shapes = {k: v.shape for k, v in VisualizedBGE(config).state_dict().items()}
    rope = EvaRotaryEmbedding(config.vision)
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for name in sorted(names_shapes):
        shape = names_shapes[name]
        if name.endswith(("rope.freqs_cos", "rope.freqs_sin")):
            sd[name] = getattr(rope, name.rsplit(".", 1)[1]).clone()
            continue
        module = name.rsplit(".", 2)[-2]
        noise = torch.randn(shape, generator=gen) * 0.02
        is_gain = name.endswith(".weight") and ("norm" in module.lower() or module.endswith("_ln"))
        sd[name] = 1.0 + noise if is_gain else noise
    return sd


def build_tiny_visual_bge(out_dir: str | Path, seed: int = 0) -> TinyVisualBGE:
    """Write `<out_dir>/Visualized_base_en_v1.5.pth` and `<out_dir>/text_model/`; reuse them if already built."""
    out = Path(out_dir)
    weights_path = out / WEIGHTS_FILE
    text_dir = out / "text_model"
    marker = out / _MARKER
    wanted = {"format": _FORMAT, "seed": seed}
    built = marker.is_file() and weights_path.is_file() and (text_dir / "config.json").is_file()
    if built and json.loads(marker.read_text()) == wanted:
        return TinyVisualBGE(weights_path, text_dir)
    text_dir.mkdir(parents=True, exist_ok=True)
    (text_dir / "config.json").write_text(json.dumps(TINY_TEXT_CONFIG, indent=2))
    tokenizer_files = resources.files("mmsearch.testing") / "data" / "visual_bge_tokenizer"
    for item in tokenizer_files.iterdir():
        if item.is_file():
            with resources.as_file(item) as src:
                shutil.copyfile(src, text_dir / item.name)
    config = VisualizedBGEConfig(
        text=TextEncoderConfig.from_hf_config(TINY_TEXT_CONFIG), vision=TINY_VISION_CONFIG
    )
    torch.save(_random_state_dict(config, seed), weights_path)
    marker.write_text(json.dumps(wanted))
    return TinyVisualBGE(weights_path, text_dir)


def tiny_visual_bge_encoder(out_dir: str | Path, seed: int = 0, **kwargs: Any) -> VisualizedBGEEncoder:
    """Build (or reuse) the tiny checkpoint in `out_dir` and load it via `from_pretrained` on CPU in float32.

    `kwargs` go to `from_pretrained` (e.g. `batch_size=4`, `max_image_pixels=...`).
    """
    tiny = build_tiny_visual_bge(out_dir, seed)
    options = {"device": "cpu", "dtype": "float32", **kwargs}
    return VisualizedBGEEncoder.from_pretrained(
        "base", weights=tiny.weights_path, text_model=tiny.text_model_dir, **options
    )


__all__ = [
    "TINY_TEXT_CONFIG",
    "TINY_VISION_CONFIG",
    "TinyVisualBGE",
    "build_tiny_visual_bge",
    "tiny_visual_bge_encoder",
]
