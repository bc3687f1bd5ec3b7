"""Visualized BGE (VISTA): EVA02-CLIP image tokens fed into a BGE text encoder, CLS-pooled and L2-normalised.

Entry points: `VisualizedBGEConfig.base()` / `.m3()` and `VisualizedBGE.from_state_dict(sd, text_config)`, which
builds the module and loads the official `.pth` state dict with `strict=True` by its official key names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from mmsearch.errors import ModelLoadError
from mmsearch.models.bge_text import BertEmbeddings, BertEncoder, BertPooler, TextEncoderConfig
from mmsearch.models.eva_clip import EvaCLIPVisual, EvaVisionConfig


@dataclass
class VisualizedBGEConfig:
    """Both towers' configs. Defaults are `Visualized_base_en_v1.5.pth` (bge-base-en-v1.5 + EVA02-CLIP-B-16)."""

    variant: str = "base"
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    vision: EvaVisionConfig = field(default_factory=EvaVisionConfig.eva02_b16)

    def __post_init__(self) -> None:
        # visual_proj is Linear(hidden, hidden) applied to EVA tokens, so the two widths must agree.
        if self.vision.width != self.text.hidden_size:
            raise ValueError(
                f"EVA width {self.vision.width} must equal the text hidden size {self.text.hidden_size}"
            )
        if self.vision.num_patches + 1 > self.text.max_position_embeddings:
            raise ValueError(
                f"{self.vision.num_patches} image tokens do not fit in "
                f"{self.text.max_position_embeddings} text positions"
            )

    @property
    def dim(self) -> int:
        return self.text.hidden_size

    @property
    def num_image_tokens(self) -> int:
        return self.vision.num_patches

    @classmethod
    def base(cls) -> VisualizedBGEConfig:
        return cls()

    @classmethod
    def m3(cls) -> VisualizedBGEConfig:
        return cls(variant="m3", text=TextEncoderConfig.bge_m3(), vision=EvaVisionConfig.eva02_l14())


class VisualizedBGE(nn.Module):
    """The model. `state_dict()` keys equal the official checkpoint's keys exactly.

    All `encode_*` methods return float32, L2-normalised (batch, dim) tensors.
    """

    def __init__(self, config: VisualizedBGEConfig):
        super().__init__()
        self.config = config
        hidden = config.text.hidden_size
        self.bge_embeddings = BertEmbeddings(config.text)
        self.bge_encoder = BertEncoder(config.text)
        self.bge_pooler = BertPooler(config.text)  # in the checkpoint, unused: pooling is the raw CLS state
        self.model_visual = EvaCLIPVisual(config.vision)
        self.visual_proj = nn.Linear(hidden, hidden)

    @classmethod
    def from_state_dict(
        cls, state_dict: dict[str, torch.Tensor], text_config: TextEncoderConfig, variant: str = "base"
    ) -> VisualizedBGE:
        """Build with the vision geometry read off `state_dict`, load it strictly, and return it in eval mode."""
        try:
            vision = EvaVisionConfig.from_state_dict(state_dict)
            config = VisualizedBGEConfig(variant=variant, text=text_config, vision=vision)
        except KeyError as e:
            raise ModelLoadError(f"not a Visualized BGE checkpoint: tensor {e.args[0]!r} is missing") from e
        except ValueError as e:
            raise ModelLoadError(f"checkpoint does not match the text model config: {e}") from e
        # Built on the meta device and filled by assignment: no random init, no second copy of the weights.
        with torch.device("meta"):
            model = cls(config)
        load_strict(model, state_dict, assign=True)
        return model.eval()

    def image_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """(batch, 3, S, S) -> (batch, N, hidden): projected EVA patch tokens with positions 1..N, LayerNormed."""
        tokens = self.model_visual(pixels)[:, 1:]  # drop EVA's CLS: (batch, N, width)
        tokens = self.visual_proj(tokens)
        n = tokens.shape[1]
        positions = torch.arange(1, n + 1, device=tokens.device)
        # No word or token-type embedding for image tokens, only position + LayerNorm.
        return self.bge_embeddings.LayerNorm(tokens + self.bge_embeddings.position_embeddings(positions))

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Plain text: (batch, T) ids and mask -> (batch, dim)."""
        text = self.config.text
        if text.model_type == "xlm-roberta":
            # XLM-R derives positions from the ids: real tokens count up from padding_idx + 1, padding stays at it.
            keep = input_ids.ne(text.pad_token_id).long()
            positions = torch.cumsum(keep, dim=1) * keep + text.pad_token_id  # (batch, T)
        else:
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)  # (T,)
        hidden = self.bge_encoder(self.bge_embeddings(input_ids, positions), attention_mask)
        return self._pool(hidden)

    def encode_multimodal(
        self, pixels: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """Image + text: pixels (batch, 3, S, S), ids/mask (batch, T) starting with CLS -> (batch, dim).

        Sequence: [CLS, img_1..img_N, text tokens after CLS]. Positions: CLS 0, images 1..N, text N+1... (both
        variants use these raw ids here, unlike `encode_text`).
        """
        if pixels.shape[0] != input_ids.shape[0]:
            raise ValueError(f"got {pixels.shape[0]} images and {input_ids.shape[0]} token rows")
        images = self.image_tokens(pixels)  # (batch, N, hidden)
        n, t = images.shape[1], input_ids.shape[1]
        max_pos = self.config.text.max_position_embeddings
        if n + t > max_pos:
            raise ValueError(f"{n} image tokens + {t} text tokens exceed {max_pos} positions")
        positions = torch.cat([torch.zeros(1, dtype=torch.long), torch.arange(n + 1, n + t)]).to(
            input_ids.device
        )
        text = self.bge_embeddings(input_ids, positions)  # (batch, T, hidden)
        seq = torch.cat([text[:, :1], images, text[:, 1:]], dim=1)  # (batch, 1 + N + T - 1, hidden)
        image_mask = attention_mask.new_ones(attention_mask.shape[0], n)
        mask = torch.cat([attention_mask[:, :1], image_mask, attention_mask[:, 1:]], dim=1)  # (batch, N + T)
        return self._pool(self.bge_encoder(seq, mask))

    @staticmethod
    def _pool(hidden: torch.Tensor) -> torch.Tensor:
        # CLS pooling (no BERT pooler), normalised in float32 whatever the compute dtype.
        return F.normalize(hidden[:, 0].float(), dim=-1)


def load_strict(model: nn.Module, state_dict: dict[str, torch.Tensor], *, assign: bool = False) -> None:
    """`load_state_dict(strict=True)` with a one-paragraph `ModelLoadError` instead of PyTorch's wall of names.

    `assign=True` makes the module adopt the given tensors (needed when it was built on the meta device).
    """
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong_shape = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)}, model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
        if items:
            more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
            problems.append(f"{len(items)} {label}: {', '.join(items[:5])}{more}")
    if problems:
        raise ModelLoadError(
            "checkpoint does not match the Visualized BGE architecture; " + "; ".join(problems)
        )
    model.load_state_dict(state_dict, strict=True, assign=assign)


__all__ = ["VisualizedBGE", "VisualizedBGEConfig", "load_strict"]
