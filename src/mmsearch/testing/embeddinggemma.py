"""A tiny random-weight EmbeddingGemma in the sentence-transformers layout of `google/embeddinggemma-300m`.

Entry points: `build_tiny_embeddinggemma(out_dir)` writes modules.json, config_sentence_transformers.json (the real
query/document prompts), sentence_bert_config.json, a Gemma 3 text model (bidirectional attention) with its
tokenizer at the root, 1_Pooling (mean), 2_Dense and 3_Dense (no bias, identity activation) and Normalize, as the
real repo has them; `tiny_embeddinggemma(out_dir, dim)` loads it through `SentenceTransformerTitleEncoder`.
The output size is the real 768 so every Matryoshka size (768/512/256/128) works. Tests and smoke runs only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from mmsearch.models.title_encoder import SentenceTransformerTitleEncoder

_FORMAT = 1
_MARKER = "tiny_embeddinggemma.json"
HIDDEN = 32
BOTTLENECK = 128
OUTPUT_DIM = 768
PROMPTS = {"query": "task: search result | query: ", "document": "title: none | text: "}
_MODULES = [
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
    {"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"},
    {"idx": 4, "name": "4", "path": "4_Normalize", "type": "sentence_transformers.models.Normalize"},
]


def _tokenizer() -> Any:
    from transformers import GemmaTokenizer

    # Gemma's byte-fallback BPE; single characters plus the 256 byte tokens cover any text.
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    pieces = specials + [f"<0x{b:02X}>" for b in range(256)]
    pieces += ["▁"] + [chr(c) for c in range(33, 127)]
    vocab = {p: i for i, p in enumerate(pieces)}
    return GemmaTokenizer(vocab=vocab, merges=[], model_max_length=256)


def _write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))


def build_tiny_embeddinggemma(out_dir: str | Path, seed: int = 0) -> Path:
    """Write the tiny model into `out_dir` (reused when already built) and return the directory."""
    from transformers import Gemma3TextConfig, Gemma3TextModel

    out = Path(out_dir)
    marker = out / _MARKER
    wanted = {"format": _FORMAT, "seed": seed}
    if marker.is_file() and json.loads(marker.read_text()) == wanted and (out / "modules.json").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer()
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        query_pre_attn_scalar=16,
        max_position_embeddings=256,
        sliding_window=16,
        use_bidirectional_attention=True,  # EmbeddingGemma attends both ways
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    config.architectures = ["Gemma3TextModel"]
    torch.manual_seed(seed)
    Gemma3TextModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    _write_json(out / "modules.json", _MODULES)
    _write_json(out / "sentence_bert_config.json", {"max_seq_length": 256, "do_lower_case": False})
    _write_json(
        out / "config_sentence_transformers.json",
        {
            "model_type": "SentenceTransformer",
            "prompts": PROMPTS,
            "default_prompt_name": None,
            "similarity_fn_name": "cosine",
        },
    )
    _write_json(
        out / "1_Pooling" / "config.json",
        {
            "word_embedding_dimension": HIDDEN,
            "pooling_mode_cls_token": False,
            "pooling_mode_mean_tokens": True,
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
            "pooling_mode_weightedmean_tokens": False,
            "pooling_mode_lasttoken": False,
            "include_prompt": True,
        },
    )
    gen = torch.Generator().manual_seed(seed + 1)
    for sub, (n_in, n_out) in (("2_Dense", (HIDDEN, BOTTLENECK)), ("3_Dense", (BOTTLENECK, OUTPUT_DIM))):
        _write_json(
            out / sub / "config.json",
            {
                "in_features": n_in,
                "out_features": n_out,
                "bias": False,
                "activation_function": "torch.nn.modules.linear.Identity",
            },
        )
        weight = torch.randn(n_out, n_in, generator=gen) / n_in**0.5  # (out, in), as nn.Linear stores it
        save_file({"linear.weight": weight.contiguous()}, str(out / sub / "model.safetensors"))
    (out / "4_Normalize").mkdir(exist_ok=True)
    marker.write_text(json.dumps(wanted))
    return out


def tiny_embeddinggemma(
    out_dir: str | Path, dim: int = OUTPUT_DIM, **kwargs: Any
) -> SentenceTransformerTitleEncoder:
    """Build (or reuse) the tiny model and load it as a title encoder on CPU in float32."""
    path = build_tiny_embeddinggemma(out_dir)
    options = {"device": "cpu", "dtype": "float32", "local_files_only": True, **kwargs}
    return SentenceTransformerTitleEncoder.from_pretrained(path, dim=dim, **options)


__all__ = ["OUTPUT_DIM", "PROMPTS", "build_tiny_embeddinggemma", "tiny_embeddinggemma"]
