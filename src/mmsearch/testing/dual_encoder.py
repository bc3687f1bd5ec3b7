"""Tiny random-weight CLIP and SigLIP checkpoints in the hub layout, built offline in about a second.

Entry points: `build_tiny_dual_encoder(kind, out_dir)` writes config.json, model.safetensors, the image processor and
tokenizer files with transformers' own `save_pretrained`; `tiny_dual_encoder(kind, out_dir)` loads them through
`DualEncoder.from_pretrained`, the path real checkpoints take. Tests, smoke runs and speed runs only.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import torch

from mmsearch.models.dual_encoder import DualEncoder

_FORMAT = 1
_MARKER = "tiny_dual_encoder.json"
# Words the SigLIP sentencepiece model is trained on (product-title-like, so test titles tokenize to real pieces).
_CORPUS = (
    "red leopard print phone case for iphone with card slot",
    "blue silicone cover for samsung galaxy charger cable usb type c",
    "black wireless earbuds bluetooth headphones with microphone and noise cancelling",
    "stainless steel kitchen appliance blender toaster coffee maker refrigerator filter",
    "green yellow white purple orange pink grey brown gold silver pattern stripes dots",
    "a photo of a product, the same but in another colour, make it cheaper and smaller",
)


def _clip_tokenizer() -> Any:
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    chars = sorted(ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    # The real vocabulary ends with the start/end tokens (49406, 49407); keep that order.
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def _siglip_tokenizer(tmp: Path) -> Any:
    import sentencepiece as spm
    from transformers import SiglipTokenizer

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_CORPUS * 4),
        model_writer=model,
        vocab_size=120,
        hard_vocab_limit=False,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        minloglevel=2,
    )
    path = tmp / "spiece.model"
    path.write_bytes(model.getvalue())
    return SiglipTokenizer(vocab_file=str(path), model_max_length=32)


def _tiny_configs(kind: str, tokenizer: Any) -> Any:
    from transformers import CLIPConfig, SiglipConfig

    vocab = len(tokenizer)
    vision = {
        "image_size": 30,
        "patch_size": 6,
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
    }
    text = {
        "vocab_size": vocab,
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    if kind == "clip":
        text.update(max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id)
        return CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
    text.update(max_position_embeddings=32)
    return SiglipConfig(text_config=text, vision_config=vision)


def build_tiny_dual_encoder(kind: str, out_dir: str | Path, seed: int = 0) -> Path:
    """Write a tiny `kind` ("clip" or "siglip") checkpoint into `out_dir`; reuse it if already built."""
    from transformers import CLIPImageProcessorPil, CLIPModel, SiglipImageProcessorPil, SiglipModel

    if kind not in ("clip", "siglip"):
        raise ValueError(f"kind must be 'clip' or 'siglip', got {kind!r}")
    out = Path(out_dir)
    marker = out / _MARKER
    wanted = {"format": _FORMAT, "kind": kind, "seed": seed}
    if (
        marker.is_file()
        and json.loads(marker.read_text()) == wanted
        and (out / "model.safetensors").is_file()
    ):
        return out
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _clip_tokenizer() if kind == "clip" else _siglip_tokenizer(out)
    config = _tiny_configs(kind, tokenizer)
    torch.manual_seed(seed)
    model = (CLIPModel if kind == "clip" else SiglipModel)(config)
    if kind == "clip":
        processor = CLIPImageProcessorPil(size={"shortest_edge": 30}, crop_size={"height": 30, "width": 30})
    else:
        processor = SiglipImageProcessorPil(size={"height": 30, "width": 30})
    model.save_pretrained(out)
    processor.save_pretrained(out)
    tokenizer.save_pretrained(out)
    marker.write_text(json.dumps(wanted))
    return out


def tiny_dual_encoder(kind: str, out_dir: str | Path, seed: int = 0, **kwargs: Any) -> DualEncoder:
    """Build (or reuse) the tiny checkpoint and load it via `DualEncoder.from_pretrained` on CPU in float32."""
    path = build_tiny_dual_encoder(kind, out_dir, seed)
    options = {"device": "cpu", "dtype": "float32", "local_files_only": True, **kwargs}
    return DualEncoder.from_pretrained(kind, path, **options)


__all__ = ["build_tiny_dual_encoder", "tiny_dual_encoder"]
