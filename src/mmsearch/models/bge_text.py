"""BERT / XLM-RoBERTa text encoder pieces of Visualized BGE (bge-base-en-v1.5, bge-m3), using PyTorch SDPA.

Entry points: `TextEncoderConfig.from_hf_config(config_dict)`, `BertEmbeddings`, `BertEncoder`, `BertPooler`.
Attribute names equal the official keys under `bge_embeddings.*`, `bge_encoder.*` and `bge_pooler.*`, so the
official `.pth` loads strictly without a rename table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

SUPPORTED_MODEL_TYPES = ("bert", "xlm-roberta")


@dataclass
class TextEncoderConfig:
    """BERT-family config. Defaults are bge-base-en-v1.5; `bge_m3()` gives the XLM-RoBERTa preset."""

    model_type: str = "bert"
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    hidden_act: str = "gelu"

    def __post_init__(self) -> None:
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"model_type {self.model_type!r} is not supported; expected one of {SUPPORTED_MODEL_TYPES}"
            )
        if self.hidden_act != "gelu":
            raise ValueError(f"hidden_act {self.hidden_act!r} is not supported; expected 'gelu'")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads {self.num_attention_heads}"
            )

    @property
    def text_position_offset(self) -> int:
        """First position id of a plain text sequence: XLM-R counts from padding_idx + 1, BERT from 0."""
        return self.pad_token_id + 1 if self.model_type == "xlm-roberta" else 0

    @classmethod
    def bge_m3(cls) -> TextEncoderConfig:
        return cls(
            model_type="xlm-roberta",
            vocab_size=250002,
            hidden_size=1024,
            num_hidden_layers=24,
            num_attention_heads=16,
            intermediate_size=4096,
            max_position_embeddings=8194,
            type_vocab_size=1,
            layer_norm_eps=1e-5,
            pad_token_id=1,
        )

    @classmethod
    def from_hf_config(cls, cfg: dict[str, Any]) -> TextEncoderConfig:
        """Build from a transformers `config.json` dict (unknown keys ignored)."""
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in cfg.items() if k in names})


class BertEmbeddings(nn.Module):
    """word + position + token-type embeddings, then LayerNorm (dropout is inactive in eval)."""

    def __init__(self, cfg: TextEncoderConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        # input_ids: (batch, seq); position_ids: (seq,) or (batch, seq); token type is always 0 upstream.
        x = self.word_embeddings(input_ids) + self.token_type_embeddings.weight[0]
        x = x + self.position_embeddings(position_ids)
        return self.LayerNorm(x)


class BertSelfAttention(nn.Module):
    def __init__(self, cfg: TextEncoderConfig):
        super().__init__()
        self.num_heads = cfg.num_attention_heads
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.value = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, n, c = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, self.num_heads, -1).transpose(1, 2)  # (batch, heads, seq, head_dim)

        out = F.scaled_dot_product_attention(
            heads(self.query(x)), heads(self.key(x)), heads(self.value(x)), mask
        )
        return out.transpose(1, 2).reshape(b, n, c)  # (batch, seq, hidden)


class BertSelfOutput(nn.Module):
    def __init__(self, cfg: TextEncoderConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class BertAttention(nn.Module):
    def __init__(self, cfg: TextEncoderConfig):
        super().__init__()
        self.self = BertSelfAttention(cfg)
        self.output = BertSelfOutput(cfg)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.output(self.self(x, mask), x)


class BertIntermediate(nn.Module):
    def __init__(self, cfg: TextEncoderConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))  # exact (erf) GELU, as transformers' "gelu"


class BertOutput(nn.Module):
    def __init__(self, cfg: TextEncoderConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class BertLayer(nn.Module):
    def __init__(self, cfg: TextEncoderConfig):
        super().__init__()
        self.attention = BertAttention(cfg)
        self.intermediate = BertIntermediate(cfg)
        self.output = BertOutput(cfg)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = self.attention(x, mask)
        return self.output(self.intermediate(x), x)


class BertEncoder(nn.Module):
    def __init__(self, cfg: TextEncoderConfig):
        super().__init__()
        self.layer = nn.ModuleList([BertLayer(cfg) for _ in range(cfg.num_hidden_layers)])

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """x: (batch, seq, hidden); attention_mask: (batch, seq) of 1 (keep) / 0 (padding), or None."""
        mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            # (batch, seq) -> (batch, 1, 1, seq): broadcast over heads and queries
            mask = attention_mask.bool()[:, None, None, :]
        for layer in self.layer:
            x = layer(x, mask)
        return x


class BertPooler(nn.Module):
    """Present in the checkpoint; Visualized BGE pools the CLS hidden state without it."""

    def __init__(self, cfg: TextEncoderConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(x[:, 0]))


__all__ = ["SUPPORTED_MODEL_TYPES", "BertEmbeddings", "BertEncoder", "BertPooler", "TextEncoderConfig"]
