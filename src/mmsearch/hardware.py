"""What this CPU can do fast, for choosing the default compute dtype on CPU.

Entry points: `cpu_matrix_features()` and `cpu_default_dtype_name(memory_bound=...)`. Measured on the 2-core
development VM (AVX512-BF16, no AMX; benchmarks/RESULTS.md "CPU roofline"): oneDNN's bf16 GEMM there runs at
0.4-0.7x MKL's float32 GEMM at the models' shapes, so compute-bound work (the encoders, prefill) is faster in float32
unless the CPU has AMX-BF16 (Sapphire Rapids and later, several times float32). Memory-bound work (decode, which
streams every weight per token) gains from bf16's half bytes wherever the CPU has bf16 dot products, AVX512-BF16
included. Without either, PyTorch emulates bf16 through float32 and the default stays float32. Base layer: torch
is imported inside the functions only.
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


def cpu_default_dtype_name(*, memory_bound: bool = False) -> str:
    """'bfloat16' with AMX-BF16; with AVX512-BF16 alone only for memory-bound work; else 'float32'."""
    features = cpu_matrix_features()
    if "amx_bf16" in features or (memory_bound and features):
        return "bfloat16"
    return "float32"


__all__ = ["cpu_default_dtype_name", "cpu_matrix_features"]
