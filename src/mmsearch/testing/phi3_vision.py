"""Tiny random-weight Phi-3 Vision checkpoints in the official on-disk format, for tests, smoke and speed runs.

Entry point: `build_tiny_phi3_vision(out_dir) -> out_dir`, then `load_phi3_vision(str(out_dir))` as for the real
model. The language model and tokenizer are the parity kit's (hidden 64, 2 layers, vocab 448); the CLIP tower keeps
the real geometry (336 px, 14 px patches, so 144 tokens per crop) but is narrow and shallow. Weights follow the kit's
numpy rule, so they are deterministic. Output is garbage by design: never a measure of search quality.
"""

from __future__ import annotations

import json
import shutil
import zlib
from pathlib import Path

import numpy as np
import torch
from accelerate import init_empty_weights
from safetensors.torch import save_file

from mmsearch.models.phi3_vision import Phi3VisionConfig, Phi3VisionForCausalLM

DATA_DIR = Path(__file__).parent / "data" / "phi3_vision"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
TINY_VISION = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "image_size": 336,
    "patch_size": 14,
}
WEIGHT_SCALE = 0.04
_POOL = 1 << 22  # random values reused (at varying offsets) by `random_phi3_vision`


def weight_init_kind(name: str) -> str:
    """Init kind of a parameter: norm_weight for LayerNorm/RMSNorm gains (module name has "norm" or ends in "_ln")."""
    module, _, leaf = name.rpartition(".")
    last = module.rpartition(".")[2]
    if leaf == "weight" and ("norm" in module.lower() or last.endswith("_ln")):
        return "norm_weight"
    return "normal"


def parity_tensor(name: str, shape: tuple[int, ...], init: str) -> np.ndarray:
    """The parity kit's rule: uniform [-0.04, 0.04) from RandomState(crc32(name)), plus 1 for norm gains; float32."""
    u = np.random.RandomState(zlib.crc32(name.encode("utf-8"))).random_sample(tuple(shape))
    x = (2.0 * np.asarray(u, dtype=np.float64) - 1.0) * WEIGHT_SCALE
    if init == "norm_weight":
        x = 1.0 + x
    elif init != "normal":
        raise ValueError(f"{name}: unknown init {init!r}, expected 'normal' or 'norm_weight'")
    return np.asarray(x, dtype=np.float64).astype(np.float32)


def tiny_config_dict(vision: dict | None = None) -> dict:
    """The kit's tiny config.json plus a `vision_config` for the narrow CLIP tower."""
    raw = json.loads((DATA_DIR / "config.json").read_text(encoding="utf-8"))
    vision = {**TINY_VISION, **(vision or {})}
    raw["vision_config"] = vision
    raw["img_processor"] = {**raw["img_processor"], "image_dim_out": vision["hidden_size"]}
    raw["_attn_implementation"] = "sdpa"
    return raw


def tiny_state_dict(config_dict: dict) -> dict[str, torch.Tensor]:
    """Every parameter of the model `config_dict` describes, under its official name, filled by the kit's rule."""
    cfg = {k: v for k, v in config_dict.items() if k not in ("model_type", "auto_map")}
    with init_empty_weights(include_buffers=False):
        model = Phi3VisionForCausalLM(Phi3VisionConfig(**cfg))
    return {
        name: torch.from_numpy(parity_tensor(name, tuple(p.shape), weight_init_kind(name)))
        for name, p in sorted(model.state_dict().items())
    }


def random_phi3_vision(
    config: Phi3VisionConfig | None = None,
    *,
    dtype: torch.dtype = torch.bfloat16,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> Phi3VisionForCausalLM:
    """A Phi-3 Vision with cheap random weights (default: full size), for speed runs only; eval mode.

    Parameters are allocated once, directly in `dtype` on `device` (full size in bf16: ~8.3 GB), then filled with
    uniform noise; norm gains are ones. The RoPE buffers stay float32.
    """
    from mmsearch.models.phi3_vision_loader import build_empty_model

    model = build_empty_model(config if config is not None else Phi3VisionConfig())
    gen = torch.Generator(device=device).manual_seed(seed)
    # Drawing 4B random numbers costs a minute on 2 CPU cores; copying slices of one random pool costs seconds.
    pool = torch.empty(2 * _POOL, dtype=dtype, device=device).uniform_(-0.02, 0.02, generator=gen)
    with torch.no_grad():
        for name, param in list(model.named_parameters()):
            data = torch.empty(param.shape, dtype=dtype, device=device)
            if weight_init_kind(name) == "norm_weight":
                data.fill_(1.0)
            else:
                flat, offset = data.view(-1), zlib.crc32(name.encode("utf-8")) % _POOL
                for start in range(0, flat.numel(), _POOL):
                    chunk = flat[start : start + _POOL]
                    chunk.copy_(pool[offset : offset + chunk.numel()])
                    offset = (offset + 7919) % _POOL
            owner, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(owner), leaf, torch.nn.Parameter(data, requires_grad=False))
    return model.to(device).eval()


def build_tiny_phi3_vision(out_dir: Path, *, num_crops: int = 4, vision: dict | None = None) -> Path:
    """Write a tiny Phi-3 Vision checkpoint dir (config.json, model.safetensors, tokenizer, preprocessor config).

    Args:
        out_dir: created if needed; existing files of the same names are overwritten.
        num_crops: written to preprocessor_config.json (the loader's `num_crops` argument overrides it).
        vision: overrides of the CLIP tower config (keep image_size 336 / patch_size 14 for the real token counts).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = tiny_config_dict(vision)
    (out_dir / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    save_file(tiny_state_dict(config), str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    for name in TOKENIZER_FILES:
        shutil.copyfile(DATA_DIR / name, out_dir / name)
    pre = json.loads((DATA_DIR / "preprocessor_config.json").read_text(encoding="utf-8"))
    pre["num_crops"] = num_crops
    (out_dir / "preprocessor_config.json").write_text(json.dumps(pre, indent=2), encoding="utf-8")
    return out_dir


__all__ = [
    "TINY_VISION",
    "build_tiny_phi3_vision",
    "parity_tensor",
    "random_phi3_vision",
    "tiny_config_dict",
    "weight_init_kind",
]
