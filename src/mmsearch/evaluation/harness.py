"""Runs a labelled query set through the search pipeline and scores it, per retrieval mode, with and without reranking.

Entry point: `evaluate(pipeline_or_retriever, queries, modes=..., k=10, rerank=False) -> EvalReport`, whose
`to_dict()` is the JSON report and `format_table()` the readable one. Each query is encoded once per run and
searched in batches in every mode (`_retrieve_all`). With reranking, each query runs once per mode:
the retrieval order (`SearchResult.retrieved`) and the reranked order (`SearchResult.hits`) come from the same
candidates, so the uplift is paired per query and gets a paired-bootstrap confidence interval.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from mmsearch.config import SMOKE_BANNER
from mmsearch.errors import InvalidQueryError
from mmsearch.evaluation.datasets import EvalQuery, EvalSet
from mmsearch.evaluation.metrics import METRIC_NAMES, mean_metrics, paired_bootstrap, query_metrics
from mmsearch.pipelines.search import SearchPipeline, SearchResult
from mmsearch.retriever import Query, SearchOptions
from mmsearch.retriever.retriever import DEFAULT_WEIGHTS, SEARCH_MODES, TEXT_VECTOR_MODES
from mmsearch.types import Hit

RERANK_STATUSES = ("ok", "repaired", "degraded", "fallback", "skipped")
EVAL_BATCH = 32  # queries encoded together and searched in one Milvus call per mode
SHORT_NAMES = {
    "recall@1": "R@1",
    "recall@5": "R@5",
    "recall@10": "R@10",
    "mrr@10": "MRR@10",
    "ndcg@10": "nDCG@10",
}


def ranking_keys(hits: Sequence[Hit], query: EvalQuery, k: int) -> list[str]:
    """The label ids of `hits` in order: a hit counts under its `id` or `parent_asin`, whichever the labels use.

    Excluded ids (e.g. CIRR's reference image) are dropped, and a product met twice (two of its images) counts
    once, at its first rank. At most `k` ids are kept.
    """
    known = set(query.relevance) | set(query.exclude)
    excluded = set(query.exclude)
    out: list[str] = []
    seen: set[str] = set()
    for hit in hits:
        if hit.id in known:
            key = hit.id
        elif hit.parent_asin and hit.parent_asin in known:
            key = hit.parent_asin
        else:
            key = hit.parent_asin or hit.id
        if key in excluded or key in seen:
            continue
        seen.add(key)
        out.append(key)
        if len(out) == k:
            break
    return out


@dataclass
class ModeReport:
    """Scores of one retrieval mode: means, the rerank uplift with its CI, rerank statuses, timings, per query."""

    mode: str
    retrieval: dict[str, float]
    reranked: dict[str, float] | None = None
    uplift: dict[str, dict[str, float]] | None = None
    rerank_status: dict[str, int] = field(default_factory=dict)
    timings_ms: dict[str, float] = field(default_factory=dict)
    per_query: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "retrieval": self.retrieval,
            "reranked": self.reranked,
            "uplift": self.uplift,
            "rerank_status": self.rerank_status,
            "mean_timings_ms": self.timings_ms,
            "per_query": self.per_query,
        }


@dataclass
class EvalReport:
    """Everything one `evaluate` call measured, per mode."""

    dataset: str
    n_queries: int
    k: int
    rerank: bool
    smoke: bool
    modes: dict[str, ModeReport]
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "n_queries": self.n_queries,
            "k": self.k,
            "rerank": self.rerank,
            "smoke": self.smoke,
            "note": SMOKE_BANNER if self.smoke else "",
            "metrics": list(METRIC_NAMES),
            "settings": self.settings,
            "modes": {name: report.to_dict() for name, report in self.modes.items()},
        }

    def format_table(self) -> str:
        """A plain-text summary: one row per mode and ranking, then uplifts with CIs, statuses and timings."""
        lines = []
        if self.smoke:
            lines.append(f"*** {SMOKE_BANNER} ***")
            lines.append("*** PLUMBING CHECK: the numbers below say nothing about search quality ***")
        lines.append(
            f"dataset {self.dataset}: {self.n_queries} queries, k={self.k}, rerank {'on' if self.rerank else 'off'}"
        )
        if self.settings.get("dataset_note"):
            lines.append(f"note: {self.settings['dataset_note']}")
        if self.k < 10:
            lines.append(f"note: k={self.k} < 10, so the @10 metrics only see the top {self.k}")
        width = max([9, *(len(name) for name in self.modes)])
        head = f"{'mode':<{width}} {'ranking':<10}" + "".join(f"{SHORT_NAMES[m]:>9}" for m in METRIC_NAMES)
        lines += [head, "-" * len(head)]
        for name, rep in self.modes.items():
            rows = [("retrieval", rep.retrieval)] + ([("reranked", rep.reranked)] if rep.reranked else [])
            for label, values in rows:
                lines.append(
                    f"{name:<{width}} {label:<10}" + "".join(f"{values[m]:>9.3f}" for m in METRIC_NAMES)
                )
        uplifts = [(name, rep) for name, rep in self.modes.items() if rep.uplift]
        if uplifts:
            any_ci = uplifts[0][1].uplift[METRIC_NAMES[0]]
            lines.append("")
            lines.append(
                f"rerank uplift (reranked - retrieval): mean [{any_ci['confidence']:.0%} CI], paired bootstrap over "
                f"{self.n_queries} queries, {any_ci['n_resamples']} resamples, seed {any_ci['seed']}"
            )
            lines.append(f"  {'mode':<{width}} {'metric':<8} {'uplift':>7}  CI")
            for name, rep in uplifts:
                for m, u in rep.uplift.items():
                    lines.append(
                        f"  {name:<{width}} {SHORT_NAMES[m]:<8} {u['mean']:>+7.3f}  "
                        f"[{u['low']:+.3f}, {u['high']:+.3f}]"
                    )
            lines.append("")
            for name, rep in uplifts:
                counts = ", ".join(f"{s} {n}" for s, n in rep.rerank_status.items())
                lines.append(f"rerank status ({name}): {counts}")
        lines.append("")
        for name, rep in self.modes.items():
            parts = ", ".join(f"{key.removesuffix('_ms')} {v:.1f}" for key, v in rep.timings_ms.items())
            lines.append(f"mean ms per query ({name}): {parts}")
        return "\n".join(lines)


def _as_pipeline(target: Any, reranker: Any) -> SearchPipeline:
    if isinstance(target, SearchPipeline):
        if reranker is not None:
            raise InvalidQueryError("pass the reranker inside the SearchPipeline, not as well as one")
        return target
    if hasattr(target, "search") and hasattr(target, "query_encoder"):
        return SearchPipeline(target, reranker, max_k=1000)
    raise InvalidQueryError(f"evaluate() needs a SearchPipeline or a Retriever, got {type(target).__name__}")


def _check_modes(modes: Sequence[str]) -> list[str]:
    out = list(dict.fromkeys(modes))
    if not out:
        raise InvalidQueryError(f"modes must name at least one of {', '.join(SEARCH_MODES)}")
    for mode in out:
        if mode not in SEARCH_MODES:
            raise InvalidQueryError(f"unknown mode {mode!r}; expected some of {', '.join(SEARCH_MODES)}")
    return out


def _mean_timings(rows: list[dict[str, float]]) -> dict[str, float]:
    keys = list(dict.fromkeys(key for row in rows for key in row))
    return {key: float(np.mean([row[key] for row in rows if key in row])) for key in keys}


ALL_IMAGES_SUFFIX = "/images"  # report key of a mode run without one slot per product


def run_names(modes: Sequence[str], one_per_product: Sequence[bool]) -> dict[str, tuple[str, bool]]:
    """Report key -> (mode, one_per_product): `joint` is one slot per product, `joint/images` every image."""
    return {
        (mode if opp else mode + ALL_IMAGES_SUFFIX): (mode, opp)
        for mode in modes
        for opp in dict.fromkeys(one_per_product)
    }


def _retrieve_all(
    pipeline: SearchPipeline,
    queries: Sequence[EvalQuery],
    runs: dict[str, tuple[str, bool]],
    depth: int,
    weights: tuple[float, float],
    ranker: str,
    rrf_k: int,
    progress: bool,
) -> dict[str, list[SearchResult]]:
    """Retrieval results per mode, in query order. Each query is encoded once per run (its joint and instruction
    vectors serve every mode), in chunks of EVAL_BATCH, and each mode searches a chunk in one Milvus call. The
    timings are per query: the chunk's encode and search time divided by its size."""
    retriever = pipeline.retriever
    options = {
        name: SearchOptions(
            k=depth,
            mode=mode,
            weights=weights,
            ranker=ranker,
            rrf_k=rrf_k,
            max_k=pipeline.max_k,
            one_per_product=opp,
        )
        for name, (mode, opp) in runs.items()
    }
    with_text = any(mode in TEXT_VECTOR_MODES for mode, _ in runs.values())
    out: dict[str, list[SearchResult]] = {name: [] for name in runs}
    bar = tqdm(
        total=len(queries), desc="eval encode+search", disable=not progress, file=sys.stderr, leave=False
    )
    for start in range(0, len(queries), EVAL_BATCH):
        chunk = queries[start : start + EVAL_BATCH]
        vectors = retriever.encode(
            [Query(image=q.image, instruction=q.instruction) for q in chunk], with_text=with_text
        )
        for name in runs:
            for found in retriever.search_vectors(vectors, [options[name]] * len(chunk)):
                timings = {key: value / len(chunk) for key, value in found.timings.items()}
                out[name].append(
                    SearchResult(
                        hits=list(found.hits),
                        retrieved=list(found.hits),
                        mode=found.mode,
                        timings=timings | {"total_ms": sum(timings.values())},
                        smoke=pipeline.smoke,
                        batch_size=len(chunk),
                    )
                )
        bar.update(len(chunk))
    bar.close()
    return out


def evaluate(
    target: Any,
    queries: EvalSet | Sequence[EvalQuery],
    *,
    modes: Sequence[str] = ("joint",),
    one_per_product: Sequence[bool] = (True,),
    k: int = 10,
    rerank: bool = False,
    reranker: Any = None,
    weights: tuple[float, float] = DEFAULT_WEIGHTS,
    ranker: str = "weighted",
    rrf_k: int = 60,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    smoke: bool | None = None,
    progress: bool = False,
) -> EvalReport:
    """Score `queries` in each of `modes`; with `rerank`, also the reranked order and its uplift.

    Args:
        target: a `SearchPipeline`, or a `Retriever` (then `reranker` is the optional reranker).
        queries: an `EvalSet` or a list of `EvalQuery`.
        k: candidates scored (and reranked) per query; a query's excluded ids are fetched on top of it.
        one_per_product: run each mode with one slot per product (True, report key `mode`), with every image
            (False, key `mode/images`), or both; a product met twice still counts once in the metrics.
        weights, ranker, rrf_k: fusion settings for the `weighted`, `fused` and `hybrid-bm25` modes.
        n_resamples, confidence, seed: the paired bootstrap of the uplift.
        smoke: label the report as tiny random-weight models (default: the pipeline's own flag).
    """
    pipeline = _as_pipeline(target, reranker)
    eval_set = queries if isinstance(queries, EvalSet) else EvalSet(name="queries", queries=list(queries))
    if not eval_set.queries:
        raise InvalidQueryError("no queries to evaluate")
    modes = _check_modes(modes)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= pipeline.max_k:
        raise InvalidQueryError(f"k must be an integer between 1 and {pipeline.max_k}, got {k!r}")
    if rerank and pipeline.reranker is None:
        raise InvalidQueryError("rerank=True needs a reranker; none was given")
    extra = max(len(q.exclude) for q in eval_set.queries)
    depth = min(k + extra, pipeline.max_k)

    if not one_per_product or any(not isinstance(v, bool) for v in one_per_product):
        raise InvalidQueryError(f"one_per_product must list True and/or False, got {one_per_product!r}")
    runs = run_names(modes, one_per_product)
    retrieved = _retrieve_all(pipeline, eval_set.queries, runs, depth, weights, ranker, rrf_k, progress)
    reports: dict[str, ModeReport] = {}
    for mode in runs:
        base_rows, rerank_rows, timing_rows, per_query = [], [], [], []
        statuses: Counter[str] = Counter()
        bar = tqdm(
            eval_set.queries,
            desc=f"rerank {mode}",
            disable=not (progress and rerank),
            file=sys.stderr,
            leave=False,
        )
        for query, result in zip(bar, retrieved[mode], strict=True):
            if rerank:
                # Decoded again here rather than kept from encoding: a whole eval set of images would not fit.
                image = (
                    None if query.image is None else pipeline.retriever.query_encoder.load_image(query.image)
                )
                result.query = Query(image=image, instruction=query.instruction)
                result = pipeline.rerank(result)
            before = ranking_keys(result.retrieved, query, k)
            base = query_metrics(before, query.relevance)
            base_rows.append(base)
            timing_rows.append(dict(result.timings))
            row: dict[str, Any] = {"query": query.id, "retrieval": base, "top": before}
            if rerank:
                after = ranking_keys(result.hits, query, k)
                reranked = query_metrics(after, query.relevance)
                rerank_rows.append(reranked)
                status = result.rerank.status if result.rerank is not None else "skipped"
                statuses[status] += 1
                row.update(reranked=reranked, reranked_top=after, rerank_status=status)
                if result.rerank is not None and result.rerank.reason:
                    row["rerank_reason"] = result.rerank.reason
            per_query.append(row)
        report = ModeReport(
            mode=mode,
            retrieval=mean_metrics(base_rows),
            timings_ms=_mean_timings(timing_rows),
            per_query=per_query,
        )
        if rerank:
            report.reranked = mean_metrics(rerank_rows)
            report.uplift = {
                m: paired_bootstrap(
                    [r[m] for r in base_rows],
                    [r[m] for r in rerank_rows],
                    n_resamples=n_resamples,
                    confidence=confidence,
                    seed=seed,
                ).to_dict()
                for m in METRIC_NAMES
            }
            report.rerank_status = {s: statuses.get(s, 0) for s in RERANK_STATUSES}
        reports[mode] = report
    return EvalReport(
        dataset=eval_set.name,
        n_queries=len(eval_set.queries),
        k=k,
        rerank=rerank,
        smoke=pipeline.smoke if smoke is None else smoke,
        modes=reports,
        settings={
            "weights": list(weights),
            "ranker": ranker,
            "rrf_k": rrf_k,
            "depth": depth,
            "reranker": type(pipeline.reranker).__name__ if rerank else None,
            **{f"dataset_{key}": value for key, value in eval_set.info.items()},
        },
    )


__all__ = [
    "ALL_IMAGES_SUFFIX",
    "RERANK_STATUSES",
    "EvalReport",
    "ModeReport",
    "evaluate",
    "ranking_keys",
    "run_names",
]
