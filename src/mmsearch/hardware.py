"""What this CPU can do fast, for choosing the default compute dtype on CPU.

Entry points: `cpu_matrix_features()` and `cpu_default_dtype_name()`. bfloat16 pays on a CPU only with hardware
bf16 dot products: AMX-BF16 (Sapphire Rapids and later: matmuls several times float32's) or AVX512-BF16 (same peak
as float32 FMAs, half the bytes: decode, which streams weights, gets ~2x). Without either, PyTorch emulates bf16
through float32 and it is slower than float32, so the default stays float32 there. Base layer: torch is imported
inside the functions only.
"""

from __future__ import annotations

import functools
import os

_FEATURES = ("amx_bf16", "avx512_bf16")


@functools.cache
def cpu_matrix_features() -> frozenset[str]:
    """The bf16 matrix features of this CPU among AMX-BF16 and AVX512-BF16.

    PyTorch's own check (cpuinfo: CPUID plus the OS enabling the state) comes first; /proc/cpuinfo's flags are the
    fallback for a torch build without `torch.cpu.get_capabilities`. `MMSEARCH_CPU_FEATURES` (comma-separated,
    may be empty) overrides both, for tests and for pinning a fleet to one behaviour.
    """
    override = os.environ.get("MMSEARCH_CPU_FEATURES")
    if override is not None:
        return frozenset(f.strip() for f in override.split(",") if f.strip() in _FEATURES)
    import torch

    caps = getattr(torch.cpu, "get_capabilities", None)
    if caps is not None:
        found = caps()
        return frozenset(f for f in _FEATURES if found.get(f))
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        flags = []
    return frozenset(f for f in _FEATURES if f in flags)


def cpu_default_dtype_name() -> str:
    """'bfloat16' on a CPU with AMX-BF16 or AVX512-BF16, else 'float32'."""
    return "bfloat16" if cpu_matrix_features() else "float32"


__all__ = ["cpu_default_dtype_name", "cpu_matrix_features"]
