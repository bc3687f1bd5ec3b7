"""Ranking metrics for labelled queries (Recall@k, MRR@k, nDCG@k with graded relevance) and a paired bootstrap.

Entry points: `query_metrics(ranking, grades)` for one query, `mean_metrics(rows)` over queries and
`paired_bootstrap(base, treated)` for the confidence interval of an uplift (e.g. rerank minus retrieval).

Definitions (one query; `ranking` is a list of distinct ids, best first; `grades` maps ids to relevance > 0):
- targets: the ids whose grade is at least `threshold`, which defaults to the query's highest grade. For a
  single-target set (CIRR, FashionIQ) that is the target; for graded sets it is the best matches.
- Recall@k: 1 if any target is in the top k, else 0 (the hit rate, as CIRR and FashionIQ report Recall@K).
- MRR@k: 1 / rank of the first target within the top k, else 0.
- nDCG@k: DCG@k / IDCG@k with gain 2^grade - 1 and discount log2(rank + 1); IDCG sorts all labelled grades.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

RECALL_KS = (1, 5, 10)
MRR_K = 10
NDCG_K = 10
METRIC_NAMES: tuple[str, ...] = (*(f"recall@{k}" for k in RECALL_KS), f"mrr@{MRR_K}", f"ndcg@{NDCG_K}")


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")


def _check_grades(grades: Mapping[str, float]) -> None:
    if not grades:
        raise ValueError("a query needs at least one relevant id; got no relevance labels")
    bad = {i: g for i, g in grades.items() if not (isinstance(g, int | float) and math.isfinite(g) and g > 0)}
    if bad:
        raise ValueError(f"relevance grades must be finite numbers > 0; got {bad}")


def _check_distinct(ranking: Sequence[str]) -> None:
    seen: set[str] = set()
    for i in ranking:
        if i in seen:
            raise ValueError(f"ranking must hold distinct ids; {i!r} appears more than once")
        seen.add(i)


def targets_of(grades: Mapping[str, float], threshold: float | None = None) -> set[str]:
    """Ids counted as hits by Recall and MRR: grade >= threshold (default: the query's highest grade)."""
    _check_grades(grades)
    cut = max(grades.values()) if threshold is None else threshold
    return {i for i, g in grades.items() if g >= cut}


def recall_at_k(ranking: Sequence[str], targets: Iterable[str], k: int) -> float:
    """1.0 if any of `targets` is among the first `k` ids of `ranking`, else 0.0."""
    _check_k(k)
    wanted = set(targets)
    return 1.0 if any(i in wanted for i in ranking[:k]) else 0.0


def reciprocal_rank(ranking: Sequence[str], targets: Iterable[str], k: int = MRR_K) -> float:
    """1 / (1-based rank of the first target within the top `k`), or 0.0 when none is there."""
    _check_k(k)
    wanted = set(targets)
    for rank, i in enumerate(ranking[:k], start=1):
        if i in wanted:
            return 1.0 / rank
    return 0.0


def _dcg(gains: Sequence[float]) -> float:
    return sum((2.0**g - 1.0) / math.log2(rank + 1) for rank, g in enumerate(gains, start=1))


def ndcg_at_k(ranking: Sequence[str], grades: Mapping[str, float], k: int = NDCG_K) -> float:
    """Normalised DCG of the first `k` ids (unlabelled ids have grade 0); 1.0 for an ideal ordering."""
    _check_k(k)
    _check_grades(grades)
    _check_distinct(ranking)
    dcg = _dcg([float(grades.get(i, 0.0)) for i in ranking[:k]])
    ideal = _dcg(sorted((float(g) for g in grades.values()), reverse=True)[:k])
    return dcg / ideal


def query_metrics(
    ranking: Sequence[str], grades: Mapping[str, float], *, threshold: float | None = None
) -> dict[str, float]:
    """All of `METRIC_NAMES` for one query."""
    _check_distinct(ranking)
    targets = targets_of(grades, threshold)
    out = {f"recall@{k}": recall_at_k(ranking, targets, k) for k in RECALL_KS}
    out[f"mrr@{MRR_K}"] = reciprocal_rank(ranking, targets, MRR_K)
    out[f"ndcg@{NDCG_K}"] = ndcg_at_k(ranking, grades, NDCG_K)
    return out


def mean_metrics(rows: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Per-metric mean over queries (the keys of the first row)."""
    if not rows:
        raise ValueError("cannot average metrics over zero queries")
    return {name: float(np.mean([row[name] for row in rows])) for name in rows[0]}


@dataclass(frozen=True)
class BootstrapCI:
    """Mean paired difference (treated - base) and its percentile bootstrap interval."""

    mean: float
    low: float
    high: float
    confidence: float
    n_resamples: int
    n: int
    seed: int

    def excludes_zero(self) -> bool:
        return self.low > 0.0 or self.high < 0.0

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def paired_bootstrap(
    base: Sequence[float],
    treated: Sequence[float],
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> BootstrapCI:
    """Resample queries with replacement and take percentiles of the mean per-query difference.

    `base[i]` and `treated[i]` must be the same query's metric, so the pairing removes between-query variance.
    """
    a = np.asarray(base, dtype=np.float64)
    b = np.asarray(treated, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"base and treated must be 1-d and the same length, got {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError("cannot bootstrap over zero queries")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int) or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1 (exclusive), got {confidence!r}")
    diff = b - a  # (n,)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, diff.size, size=(n_resamples, diff.size))  # (n_resamples, n) query indices
    means = diff[picks].mean(axis=1)  # (n_resamples,)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return BootstrapCI(
        mean=float(diff.mean()),
        low=float(low),
        high=float(high),
        confidence=confidence,
        n_resamples=n_resamples,
        n=int(diff.size),
        seed=seed,
    )


__all__ = [
    "METRIC_NAMES",
    "MRR_K",
    "NDCG_K",
    "RECALL_KS",
    "BootstrapCI",
    "mean_metrics",
    "ndcg_at_k",
    "paired_bootstrap",
    "query_metrics",
    "recall_at_k",
    "reciprocal_rank",
    "targets_of",
]
