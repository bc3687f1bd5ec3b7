"""Weight-only int8 for decoder linears: decode streams half the bytes of bf16, so it runs up to ~2x faster on a
memory-bound CPU.

Entry point: `quantize_int8_weight_only(module, skip=("vision_embed_tokens",))` swaps every `nn.Linear` (outside
the skipped submodules) for `Int8Linear`: per-output-channel symmetric int8 weights and bf16/fp32 scales. It uses
PyTorch's own CPU kernel `aten._weight_int8pack_mm` for decode-shaped inputs (few rows) and a dequantised weight
for long prefills, where the matmul, not the weight read, is the cost. torchao 0.18 was measured beside torch 2.13
(CPU) and its int8 weight-only linear was far slower than bf16 here, so it is not used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Up to this many rows the fused int8 kernel (weight read once, dequantised in registers) is used; above it the
# matmul is compute-bound and a one-off dequantised bf16 weight feeds the fast GEMM.
PACKED_ROWS_MAX = 16


class Int8Linear(nn.Module):
    """`y = x @ (w_int8 * scale).T + bias`, w_int8 (out, in) int8, scale (out,) in the activation dtype."""

    def __init__(self, weight_int8: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.in_features, self.out_features = weight_int8.shape[1], weight_int8.shape[0]
        self.register_buffer("weight_int8", weight_int8)
        self.register_buffer("scale", scale)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        w = linear.weight.detach().float()
        scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127.0  # (out,)
        q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
        bias = None if linear.bias is None else linear.bias.detach()
        return cls(q, scale.to(linear.weight.dtype), bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        if rows.shape[0] <= PACKED_ROWS_MAX and x.device.type == "cpu":
            y = torch.ops.aten._weight_int8pack_mm(
                rows.contiguous(), self.weight_int8, self.scale.to(x.dtype)
            )
        else:
            y = F.linear(rows, self.weight_int8.to(x.dtype) * self.scale.to(x.dtype)[:, None])
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weight-only"


def quantize_int8_weight_only(module: nn.Module, skip: tuple[str, ...] = ()) -> int:
    """Replace, in place, every `nn.Linear` whose qualified name has no part in `skip`; returns how many."""
    targets = [
        (name, child)
        for name, child in module.named_modules()
        if isinstance(child, nn.Linear) and not any(part in skip for part in name.split("."))
    ]
    for name, linear in targets:
        parent_name, _, attr = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, attr, Int8Linear.from_linear(linear))
    return len(targets)


def weight_bytes(module: nn.Module) -> int:
    """Bytes of all parameters and buffers: what one decode step streams from memory at most."""
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


__all__ = ["PACKED_ROWS_MAX", "Int8Linear", "quantize_int8_weight_only", "weight_bytes"]
