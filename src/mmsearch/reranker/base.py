"""The reranker contract: `Reranker.rerank(query, hits) -> RerankResult`, plus the retrieval-order baseline.

Every implementation returns all of its input hits, reordered, and says how it got there (`status`): "ok",
"repaired" (model output fixed up safely) or "fallback" (retrieval order, with the reason and the raw output).
"""

from __future__ import annotations

import re
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from PIL import Image

from mmsearch.limits import MAX_REASONS_CHARS
from mmsearch.types import Hit

# "degraded": a valid ranking, but some candidates were judged without their image (listed in missing_images).
RerankStatus = Literal["ok", "repaired", "degraded", "fallback"]

# Bound on the overall reasons text carried in a result (the model's is bounded by the schema as well).


@dataclass(frozen=True)
class RerankQuery:
    """What the shopper asked: an optional query photo and a free-text instruction."""

    image: Image.Image | None = None
    instruction: str = ""


@dataclass
class RerankResult:
    """A reordering of all input hits and how it was obtained.

    `order[i]` is the 0-based retrieval position of `hits[i]`, so `order` is always a permutation of
    `range(len(hits))`. `raw_output` is the model's text (None when no model ran); `reason` says what was
    repaired or why the result fell back. `timings` are in ms; `stats` counts tokens and model passes.
    """

    hits: list[Hit]
    order: list[int]
    status: RerankStatus = "ok"
    reason: str | None = None
    raw_output: str | None = None
    reasons: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)
    missing_images: list[str] = field(default_factory=list)  # ids of hits shown without their image

    @property
    def fallback(self) -> bool:
        return self.status == "fallback"

    def to_dict(self) -> dict[str, object]:
        return {
            "ids": [h.id for h in self.hits],
            "order": list(self.order),
            "status": self.status,
            "reason": self.reason,
            "raw_output": self.raw_output,
            "reasons": self.reasons,
            "timings": dict(self.timings),
            "stats": dict(self.stats),
            "missing_images": list(self.missing_images),
        }


# Lone surrogates (from JSON escapes such as "\\ud800") cannot be encoded as UTF-8; control characters garble output.
_INVALID_TEXT = re.compile(r"[\ud800-\udfff\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def valid_text(text: str) -> str:
    """`text` with lone surrogates and control characters replaced by U+FFFD: always encodable as UTF-8."""
    return _INVALID_TEXT.sub("\ufffd", text)


def bounded_reasons(text: str, limit: int = MAX_REASONS_CHARS) -> str:
    """Valid text with whitespace collapsed, cut to `limit` characters (with an ellipsis when cut)."""
    text = " ".join(valid_text(str(text)).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def result_in_order(
    hits: Sequence[Hit],
    order: Sequence[int],
    *,
    status: RerankStatus = "ok",
    reason: str | None = None,
    raw_output: str | None = None,
    reasons: str = "",
    timings: dict[str, float] | None = None,
    stats: dict[str, int] | None = None,
    missing_images: Sequence[str] = (),
) -> RerankResult:
    """Build a `RerankResult` from a permutation of positions, refusing anything that is not one."""
    order = [int(i) for i in order]
    if sorted(order) != list(range(len(hits))):
        raise ValueError(f"order must be a permutation of range({len(hits)}), got {order}")
    return RerankResult(
        hits=[hits[i] for i in order],
        order=order,
        status=status,
        reason=reason,
        raw_output=raw_output,
        reasons=bounded_reasons(reasons),
        timings=dict(timings or {}),
        stats=dict(stats or {}),
        missing_images=list(missing_images),
    )


class Reranker(ABC):
    """Reorders retrieved hits for a query. Subclasses implement `_rerank`; `rerank` handles trivial input."""

    name = "reranker"

    def rerank(self, query: RerankQuery, hits: Sequence[Hit]) -> RerankResult:
        """Return all `hits` reordered for `query`. Zero or one hit comes back unchanged without running a model."""
        hits = list(hits)
        if len(hits) <= 1:
            return result_in_order(hits, range(len(hits)), stats={"passes": 0})
        return self._rerank(query, hits)

    @abstractmethod
    def _rerank(self, query: RerankQuery, hits: list[Hit]) -> RerankResult:
        """Rerank two or more hits."""


class RetrievalOrderReranker(Reranker):
    """Keeps the retriever's order: the baseline to compare against and the fallback of model rerankers."""

    name = "retrieval_order"

    def _rerank(self, query: RerankQuery, hits: list[Hit]) -> RerankResult:
        t0 = time.perf_counter()
        result = result_in_order(hits, range(len(hits)), reasons="retrieval order", stats={"passes": 0})
        result.timings["total_ms"] = (time.perf_counter() - t0) * 1e3
        return result


__all__ = [
    "RerankQuery",
    "RerankResult",
    "RerankStatus",
    "Reranker",
    "RetrievalOrderReranker",
    "bounded_reasons",
    "result_in_order",
    "valid_text",
]
