"""Reranking of retrieved hits: the `Reranker` contract, the retrieval-order baseline and the Phi-3 Vision
reranker (panel image, untrusted-title prompt, schema-constrained JSON, validation with repair/retry/fallback).

`Phi3VisionReranker` is imported lazily so that `import mmsearch.reranker` stays light (no torch/outlines).
"""

from __future__ import annotations

from mmsearch.reranker.base import (
    Reranker,
    RerankQuery,
    RerankResult,
    RerankStatus,
    RetrievalOrderReranker,
    result_in_order,
)


def __getattr__(name: str):
    if name == "Phi3VisionReranker":
        from mmsearch.reranker.phi3 import Phi3VisionReranker

        return Phi3VisionReranker
    raise AttributeError(f"module 'mmsearch.reranker' has no attribute {name!r}")


__all__ = [
    "Phi3VisionReranker",
    "RerankQuery",
    "RerankResult",
    "RerankStatus",
    "Reranker",
    "RetrievalOrderReranker",
    "result_in_order",
]
