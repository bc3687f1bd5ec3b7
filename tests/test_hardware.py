"""The CPU default dtype follows the CPU's bf16 matrix features (overridden through MMSEARCH_CPU_FEATURES):
bf16 for compute-bound work only with AMX-BF16, for memory-bound decoding with AVX512-BF16 too."""

from __future__ import annotations

import pytest
import torch

from mmsearch.hardware import cpu_matrix_features
from mmsearch.limits import resolve_dtype

CPU = torch.device("cpu")


@pytest.fixture
def features(monkeypatch):
    def use(value: str) -> None:
        monkeypatch.setenv("MMSEARCH_CPU_FEATURES", value)
        cpu_matrix_features.cache_clear()

    yield use
    cpu_matrix_features.cache_clear()


@pytest.mark.parametrize("flags", ["amx_bf16", "amx_bf16,avx512_bf16"])
def test_auto_is_bfloat16_everywhere_with_amx(features, flags):
    features(flags)
    assert resolve_dtype("auto", CPU) == torch.bfloat16
    assert resolve_dtype("auto", CPU, memory_bound=True) == torch.bfloat16


def test_avx512_bf16_alone_picks_bfloat16_only_for_memory_bound_work(features):
    features("avx512_bf16")
    assert resolve_dtype("auto", CPU) == torch.float32
    assert resolve_dtype("auto", CPU, memory_bound=True) == torch.bfloat16


def test_auto_is_float32_on_cpus_without_bf16_matrix_instructions(features):
    features("avx2")  # not a bf16 matrix feature: ignored
    assert cpu_matrix_features() == frozenset()
    assert resolve_dtype("auto", CPU) == torch.float32
    assert resolve_dtype("auto", CPU, memory_bound=True) == torch.float32


def test_explicit_dtype_wins_over_the_cpu_check(features):
    features("amx_bf16")
    assert resolve_dtype("float32", CPU) == torch.float32
