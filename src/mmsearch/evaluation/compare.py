"""Side-by-side comparison of encoder choices on one query set: quality, index size and query latency per mode.

Entry point: `EncoderComparison(runs=[EncoderRun(...), ...]).format_table()`; `mmsearch eval --encoder A
--encoder B [--title-encoder ...]` builds one run per (encoder, title encoder) pair, each in its own collection,
through `evaluation.cli.run_eval_command`. Modes an encoder cannot serve (joint with CLIP/SigLIP) are listed as
skipped, not scored.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from mmsearch.config import SMOKE_BANNER
from mmsearch.evaluation.harness import EvalReport

FLOAT32_BYTES = 4
COLUMNS = (
    ("recall@1", "R@1"),
    ("recall@5", "R@5"),
    ("recall@10", "R@10"),
    ("ndcg@10", "nDCG@10"),
    ("mrr@10", "MRR"),
)


def collection_suffix(encoder: str, title_encoder: str) -> str:
    """A Milvus-safe, stable suffix naming one (encoder, title encoder) pair: readable part + short hash."""
    readable = re.sub(r"[^0-9A-Za-z]+", "_", f"{encoder}__{title_encoder}").strip("_")[:60]
    digest = hashlib.sha1(f"{encoder}\0{title_encoder}".encode()).hexdigest()[:6]
    return f"{readable}_{digest}"


@dataclass
class EncoderRun:
    """One encoder choice evaluated: what it was, where its index lives, and its `EvalReport`."""

    encoder: str
    title_encoder: str
    encoder_id: str
    title_encoder_id: str
    dim: int
    title_dim: int
    collection: str
    report: EvalReport
    skipped_modes: list[str] = field(default_factory=list)

    @property
    def vector_bytes_per_product(self) -> int:
        """float32 bytes of the vectors stored per product row (image + title); Milvus index overhead excluded."""
        return FLOAT32_BYTES * (self.dim + self.title_dim)

    def to_dict(self) -> dict[str, Any]:
        return {
            "encoder": self.encoder,
            "title_encoder": self.title_encoder,
            "encoder_id": self.encoder_id,
            "title_encoder_id": self.title_encoder_id,
            "dim": self.dim,
            "title_dim": self.title_dim,
            "collection": self.collection,
            "vector_bytes_per_product": self.vector_bytes_per_product,
            "skipped_modes": self.skipped_modes,
            "report": self.report.to_dict(),
        }


@dataclass
class EncoderComparison:
    """Every run of one `mmsearch eval` over several encoder choices."""

    runs: list[EncoderRun]

    @property
    def smoke(self) -> bool:
        return any(run.report.smoke for run in self.runs)

    def to_dict(self) -> dict[str, Any]:
        first = self.runs[0].report if self.runs else None
        return {
            "comparison": "encoders",
            "smoke": self.smoke,
            "note": SMOKE_BANNER if self.smoke else "",
            "dataset": first.dataset if first else None,
            "n_queries": first.n_queries if first else 0,
            "k": first.k if first else None,
            "runs": [run.to_dict() for run in self.runs],
        }

    def format_table(self) -> str:
        """One row per (encoder, title encoder, mode): recall, nDCG@10, MRR, vector bytes per product, mean ms."""
        lines = []
        if self.smoke:
            lines.append(f"*** {SMOKE_BANNER} ***")
            lines.append(
                "*** encoder comparison on tiny random weights: PLUMBING ONLY, the numbers mean nothing ***"
            )
        if self.runs:
            first = self.runs[0].report
            lines.append(f"dataset {first.dataset}: {first.n_queries} queries, k={first.k}")
        head = (
            f"{'encoder':<24} {'titles':<18} {'mode':<9}"
            + "".join(f"{short:>8}" for _, short in COLUMNS)
            + f"{'B/product':>11}{'ms/query':>10}"
        )
        lines += [head, "-" * len(head)]
        for run in self.runs:
            for mode, rep in run.report.modes.items():
                ms = rep.timings_ms.get("encode_ms", 0.0) + rep.timings_ms.get("search_ms", 0.0)
                lines.append(
                    f"{_cut(run.encoder, 24):<24} {_cut(run.title_encoder, 18):<18} {mode:<9}"
                    + "".join(f"{rep.retrieval[name]:>8.3f}" for name, _ in COLUMNS)
                    + f"{run.vector_bytes_per_product:>11d}{ms:>10.1f}"
                )
            for mode in run.skipped_modes:
                lines.append(
                    f"{_cut(run.encoder, 24):<24} {_cut(run.title_encoder, 18):<18} {mode:<9}  "
                    "n/a: this encoder has no joint image+text embedding"
                )
        lines.append("")
        lines.append(
            "B/product: float32 bytes of the image and title vectors per row (index overhead excluded); "
            "ms/query: mean encode + search time"
        )
        for run in self.runs:
            lines.append(f"  {run.encoder} + {run.title_encoder}: {run.encoder_id} / {run.title_encoder_id}")
        return "\n".join(lines)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1) :]


__all__ = ["EncoderComparison", "EncoderRun", "collection_suffix"]
