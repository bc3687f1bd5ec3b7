"""The KV-cache keyword of the installed transformers: `past_key_values` up to 5.23, `cache` from 5.24.

transformers renamed the argument of `generate`'s `prepare_inputs_for_generation`, of the model forwards and the
field of the model outputs. The old name still works in 5.24 but warns on every call, so our code reads the names
off the installed classes once and speaks only the one each expects; it accepts either name from its callers.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

from transformers import GenerationMixin
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.models.phi3.modeling_phi3 import Phi3Model

NAMES = ("cache", "past_key_values")


def _parameter(fn) -> str:
    params = inspect.signature(fn).parameters  # follows functools.wraps of the deprecation decorators
    found = [n for n in NAMES if n in params]
    if not found:
        raise ImportError(f"{fn.__qualname__} takes neither of {NAMES}: unsupported transformers version")
    return found[0]


# The name `generate` passes to prepare_inputs_for_generation and expects back in the model inputs.
GENERATE_ARG = _parameter(GenerationMixin.prepare_inputs_for_generation)
# The name transformers' Phi-3 decoder takes.
DECODER_ARG = _parameter(Phi3Model.forward)
# The field of the model outputs that holds the cache.
OUTPUT_FIELD = next(f.name for f in dataclasses.fields(CausalLMOutputWithPast) if f.name in NAMES)


def pop_cache(kwargs: dict[str, Any]) -> Any:
    """Remove every spelling of the cache from `kwargs`; return the one that is set (None if none is)."""
    given = [kwargs.pop(n) for n in NAMES if n in kwargs]
    present = [c for c in given if c is not None]
    if len(present) > 1:
        raise ValueError(f"pass the KV cache once, as one of {NAMES}")
    return present[0] if present else None


def output_cache(output: Any) -> Any:
    """The cache held by a model output, read under this version's field name (no deprecation notice)."""
    return getattr(output, OUTPUT_FIELD)


__all__ = ["DECODER_ARG", "GENERATE_ARG", "NAMES", "OUTPUT_FIELD", "output_cache", "pop_cache"]
