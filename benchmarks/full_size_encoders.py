"""Full-size encoders with random weights (official architectures and preprocessing, no downloads), for speed runs.

Entry points: `build_full_size(name, tmp, device=..., dtype=..., batch_size=...)` for `visualized-bge-base`,
`visualized-bge-m3`, `clip` (ViT-B/16, as openai/clip-vit-base-patch16) and `siglip` (as
google/siglip-base-patch16-224); `compare_encoders(names, paths, ...)` times `encode_images` for each in one run.
Random weights: the numbers are speed only, never quality. Tokenizers come from the tiny test checkpoints (image
encoding needs only their special tokens).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from transformers import (
    AutoTokenizer,
    CLIPConfig,
    CLIPImageProcessorPil,
    CLIPModel,
    SiglipConfig,
    SiglipImageProcessorPil,
    SiglipModel,
)

from mmsearch.models.dual_encoder import DualEncoder
from mmsearch.models.encoder import VisualizedBGEEncoder
from mmsearch.models.visualized_bge import VisualizedBGE, VisualizedBGEConfig
from mmsearch.testing import build_tiny_dual_encoder, build_tiny_visual_bge

ENCODERS = ("visualized-bge-base", "visualized-bge-m3", "clip", "siglip")
# openai/clip-vit-base-patch16: CLIPConfig's defaults are ViT-B/32, so the patch size is set.
CLIP_B16 = {"vision_config": {"patch_size": 16}, "projection_dim": 512}


def build_full_size(name: str, tmp: Path, *, device: str, dtype: str, batch_size: int):
    """One of `ENCODERS` at full size, PyTorch's default random init, seeded."""
    torch.manual_seed(0)
    if name.startswith("visualized-bge-"):
        variant = name.removeprefix("visualized-bge-")
        config = VisualizedBGEConfig.base() if variant == "base" else VisualizedBGEConfig.m3()
        tokenizer = AutoTokenizer.from_pretrained(str(build_tiny_visual_bge(tmp / "bge_tok").text_model_dir))
        return VisualizedBGEEncoder(
            VisualizedBGE(config).eval(),
            tokenizer,
            model_id=f"random-{name}",
            device=device,
            dtype=dtype,
            batch_size=batch_size,
        )
    if name == "clip":
        model, processor = CLIPModel(CLIPConfig(**CLIP_B16)), CLIPImageProcessorPil()
    elif name == "siglip":
        model, processor = SiglipModel(SiglipConfig()), SiglipImageProcessorPil()
    else:
        raise SystemExit(f"--encoder {name!r}: expected one of {', '.join(ENCODERS)}")
    tokenizer = AutoTokenizer.from_pretrained(str(build_tiny_dual_encoder(name, tmp / f"{name}_tok")))
    return DualEncoder(
        name,
        model.eval(),
        processor,
        tokenizer,
        model_id=f"random-{name}",
        device=device,
        dtype=dtype,
        batch_size=batch_size,
    )


def compare_encoders(
    names: list[str], paths: list[Path], tmp: Path, *, device: str, dtype: str, batch_size: int, rounds: int
) -> dict:
    """Batched `encode_images` (decode + preprocess + forward) images/s for each encoder, ratios vs the first.

    Encoders are timed round-robin `rounds` times, so a change in machine load hits each of them."""
    encoders = {}
    for name in names:
        enc = build_full_size(name, tmp, device=device, dtype=dtype, batch_size=batch_size)
        enc.encode_images(paths[: min(len(paths), batch_size)])  # warm-up
        encoders[name] = enc
    wall = dict.fromkeys(names, 0.0)
    cpu = dict.fromkeys(names, 0.0)
    for _ in range(rounds):
        for name, enc in encoders.items():
            w, c = time.perf_counter(), time.process_time()
            enc.encode_images(paths)
            if enc.device.type == "cuda":
                torch.cuda.synchronize()
            wall[name] += time.perf_counter() - w
            cpu[name] += time.process_time() - c
    n = len(paths) * rounds
    first = names[0]
    out = {}
    for name, enc in encoders.items():
        out[name] = {
            "params_m": round(sum(p.numel() for p in enc.model.parameters()) / 1e6, 1),
            "dim": enc.dim,
            "image_size": enc.image_size,
            "dtype": str(enc.dtype).removeprefix("torch."),
            "images_per_s": round(n / wall[name], 3),
            "images_per_cpu_s": round(n / cpu[name], 3),
            f"speed_vs_{first}": round(wall[first] / wall[name], 2),
            f"speed_vs_{first}_cpu_time": round(cpu[first] / cpu[name], 2),
        }
    return out


__all__ = ["ENCODERS", "build_full_size", "compare_encoders"]
