"""EVA02-CLIP vision tower as used by Visualized BGE: patch embedding, 2D-RoPE attention, SwiGLU blocks.

Entry point: `EvaVisionTransformer(EvaVisionConfig())`. Attribute names equal the official checkpoint keys
under `model_visual.visual.*`. `forward` returns every token (CLS first) without the final `norm` and `head`,
which is what Visualized BGE feeds into BERT; both modules exist only so the official weights load strictly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class EvaVisionConfig:
    """EVA02-CLIP vision geometry. Defaults are EVA02-CLIP-B-16 as shipped in `Visualized_base_en_v1.5.pth`."""

    image_size: int = 224
    patch_size: int = 16
    width: int = 768
    layers: int = 12
    head_width: int = 64
    mlp_hidden: int = 2048  # SwiGLU hidden size: int(width * 2.6667) in both official towers
    embed_dim: int = 512  # output of the (unused) CLIP head
    pt_hw_seq_len: int = 16  # RoPE positions are interpolated onto this pretraining grid
    rope_theta: float = 10000.0
    layer_norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not divisible by patch_size {self.patch_size}")
        if self.width % self.head_width:
            raise ValueError(f"width {self.width} is not divisible by head_width {self.head_width}")
        if self.head_width % 4:
            raise ValueError(f"head_width {self.head_width} must be divisible by 4 for 2D RoPE")

    @property
    def num_heads(self) -> int:
        return self.width // self.head_width

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid

    @classmethod
    def from_state_dict(
        cls, sd: dict[str, torch.Tensor], prefix: str = "model_visual.visual."
    ) -> EvaVisionConfig:
        """Read the geometry off a checkpoint's tensor shapes (depth, width, patch, image size, MLP, head width).

        Raises `KeyError` naming the first missing tensor. RoPE settings keep their defaults; the RoPE tables
        themselves are loaded from the checkpoint.
        """

        def shape(name: str) -> tuple[int, ...]:
            if prefix + name not in sd:
                raise KeyError(prefix + name)
            return tuple(sd[prefix + name].shape)

        width = shape("cls_token")[-1]
        patch = shape("patch_embed.proj.weight")[-1]
        grid = math.isqrt(shape("pos_embed")[1] - 1)
        block_ids = {k[len(prefix) :].split(".")[1] for k in sd if k.startswith(prefix + "blocks.")}
        return cls(
            image_size=grid * patch,
            patch_size=patch,
            width=width,
            layers=len(block_ids),
            head_width=shape("rope.freqs_cos")[-1],
            mlp_hidden=shape("blocks.0.mlp.w1.weight")[0],
            embed_dim=shape("head.weight")[0],
        )

    @classmethod
    def eva02_b16(cls) -> EvaVisionConfig:
        return cls()

    @classmethod
    def eva02_l14(cls) -> EvaVisionConfig:
        return cls(patch_size=14, width=1024, layers=24, mlp_hidden=2730, embed_dim=768)


class EvaRotaryEmbedding(nn.Module):
    """Interleaved 2D rotary embedding over the patch grid; the CLS token is not rotated (done by the caller).

    Half of each head's channels rotate with the patch row, the other half with the patch column. Channel pairs
    are adjacent: (x0, x1) -> (x0 cos - x1 sin, x1 cos + x0 sin), each frequency repeated for its pair.
    """

    def __init__(self, cfg: EvaVisionConfig):
        super().__init__()
        axis_dim = cfg.head_width // 2  # channels per grid axis
        inv_freq = cfg.rope_theta ** (-torch.arange(0, axis_dim, 2)[: axis_dim // 2].float() / axis_dim)
        t = torch.arange(cfg.grid, dtype=torch.float32) / cfg.grid * cfg.pt_hw_seq_len
        freqs = torch.outer(t, inv_freq).repeat_interleave(2, dim=-1)  # (grid, axis_dim)
        g = cfg.grid
        # (grid, grid, head_width): first half varies with the row, second half with the column
        grid_freqs = torch.cat(
            [freqs[:, None, :].expand(g, g, axis_dim), freqs[None, :, :].expand(g, g, axis_dim)], -1
        )
        grid_freqs = grid_freqs.reshape(g * g, cfg.head_width)  # row-major patches
        self.register_buffer("freqs_cos", grid_freqs.cos())
        self.register_buffer("freqs_sin", grid_freqs.sin())

    def signed_sin(self) -> torch.Tensor:
        """sin with the pair rotation's negation folded in: (-sin, +sin, -sin, ...) over each head's channels."""
        sin = self.freqs_sin
        sign = torch.tensor([-1.0, 1.0], dtype=sin.dtype, device=sin.device).repeat(sin.shape[-1] // 2)
        return sin * sign

    def with_cls(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, signed sin) tables of shape (1 + num_patches, head_width) for `rotate` over all tokens.

        Row 0 is the identity (cos 1, sin 0), so the CLS token passes through unchanged (exactly) without a slice
        and a `cat` of the activations. Small tables, built from the (loaded) buffers on each call so they always
        follow the checkpoint, dtype and device.
        """
        cos, sin = self.freqs_cos, self.signed_sin()
        return torch.cat([torch.ones_like(cos[:1]), cos]), torch.cat([torch.zeros_like(sin[:1]), sin])

    @staticmethod
    def rotate(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
        """x * cos + swap_pairs(x) * signed_sin, x: (..., tokens, head_width).

        The same roundings as the textbook (x0 cos - x1 sin, x1 cos + x0 sin), so float32 stays bit for bit,
        with one swapped copy instead of a neg, a stack and a cat; no fused multiply-add for the same reason.
        """
        swapped = x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2).mul_(signed_sin)
        return torch.mul(x, cos).add_(swapped)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (batch, heads, num_patches, head_width), patch tokens only
        return self.rotate(x, self.freqs_cos, self.signed_sin())


class EvaPatchEmbed(nn.Module):
    def __init__(self, cfg: EvaVisionConfig):
        super().__init__()
        self.proj = nn.Conv2d(3, cfg.width, kernel_size=cfg.patch_size, stride=cfg.patch_size)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        # (batch, 3, H, W) -> (batch, width, grid, grid) -> (batch, grid*grid, width)
        return self.proj(pixels).flatten(2).transpose(1, 2)


class EvaAttention(nn.Module):
    """Multi-head attention with bias on q and v only, RoPE on patch tokens, and a LayerNorm before `proj`."""

    def __init__(self, cfg: EvaVisionConfig, rope: EvaRotaryEmbedding):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.scale = cfg.head_width**-0.5
        self.q_proj = nn.Linear(cfg.width, cfg.width, bias=False)
        self.k_proj = nn.Linear(cfg.width, cfg.width, bias=False)
        self.v_proj = nn.Linear(cfg.width, cfg.width, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(cfg.width))
        self.v_bias = nn.Parameter(torch.zeros(cfg.width))
        # The tower's single RoPE module, shared: its buffers appear under every block's key too.
        self.rope = rope
        self.inner_attn_ln = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        self.proj = nn.Linear(cfg.width, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        # (batch, tokens, width) -> (batch, heads, tokens, head_width)
        q = F.linear(x, self.q_proj.weight, self.q_bias).view(b, n, self.num_heads, -1).transpose(1, 2)
        k = F.linear(x, self.k_proj.weight).view(b, n, self.num_heads, -1).transpose(1, 2)
        v = F.linear(x, self.v_proj.weight, self.v_bias).view(b, n, self.num_heads, -1).transpose(1, 2)
        # Token 0 is CLS and carries no grid position: its table row is the identity.
        cos, sin = self.rope.with_cls()
        q = self.rope.rotate(q, cos, sin)
        k = self.rope.rotate(k, cos, sin)
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        out = out.transpose(1, 2).reshape(b, n, c)  # (batch, tokens, width)
        return self.proj(self.inner_attn_ln(out))


class EvaSwiGLU(nn.Module):
    """SwiGLU with a sub-LayerNorm: w3(ffn_ln(silu(w1 x) * w2 x))."""

    def __init__(self, cfg: EvaVisionConfig):
        super().__init__()
        self.w1 = nn.Linear(cfg.width, cfg.mlp_hidden)
        self.w2 = nn.Linear(cfg.width, cfg.mlp_hidden)
        self.ffn_ln = nn.LayerNorm(cfg.mlp_hidden, eps=cfg.layer_norm_eps)
        self.w3 = nn.Linear(cfg.mlp_hidden, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w3(self.ffn_ln(F.silu(self.w1(x)) * self.w2(x)))


class EvaBlock(nn.Module):
    def __init__(self, cfg: EvaVisionConfig, rope: EvaRotaryEmbedding):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        self.attn = EvaAttention(cfg, rope)
        self.norm2 = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        self.mlp = EvaSwiGLU(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class EvaVisionTransformer(nn.Module):
    """EVA02-CLIP ViT. `forward(pixels)` -> (batch, 1 + num_patches, width), CLS first, before the final norm."""

    def __init__(self, cfg: EvaVisionConfig):
        super().__init__()
        self.config = cfg
        self.patch_embed = EvaPatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_patches + 1, cfg.width))
        self.rope = EvaRotaryEmbedding(cfg)
        self.blocks = nn.ModuleList([EvaBlock(cfg, self.rope) for _ in range(cfg.layers)])
        # Present in the checkpoint, unused by Visualized BGE (it takes all tokens before the norm).
        self.norm = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        self.head = nn.Linear(cfg.width, cfg.embed_dim)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        size = self.config.image_size
        if pixels.dim() != 4 or pixels.shape[1] != 3 or pixels.shape[2:] != (size, size):
            raise ValueError(
                f"expected pixels of shape (batch, 3, {size}, {size}), got {tuple(pixels.shape)}"
            )
        x = self.patch_embed(pixels)  # (batch, num_patches, width)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)  # (batch, 1 + num_patches, width)
        x = x + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return x


class EvaCLIPVisual(nn.Module):
    """Holder matching the checkpoint's `model_visual.*` prefix: the tower plus CLIP's unused `logit_scale`."""

    def __init__(self, cfg: EvaVisionConfig):
        super().__init__()
        self.visual = EvaVisionTransformer(cfg)
        self.logit_scale = nn.Parameter(torch.zeros(()))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.visual(pixels)


__all__ = [
    "EvaAttention",
    "EvaBlock",
    "EvaCLIPVisual",
    "EvaRotaryEmbedding",
    "EvaSwiGLU",
    "EvaVisionConfig",
    "EvaVisionTransformer",
]
