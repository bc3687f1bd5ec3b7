"""Measuring search quality: labelled query sets, ranking metrics, the synthetic set and the `evaluate` harness.

Entry points: `evaluate(pipeline, queries, modes=..., rerank=...)`, `load_queries_jsonl`, `load_cirr`,
`load_fashioniq`, `generate_synthetic_set`; `mmsearch eval` wraps them (`mmsearch.evaluation.cli`).
"""

from mmsearch.evaluation.datasets import EvalQuery, EvalSet, load_cirr, load_fashioniq, load_queries_jsonl
from mmsearch.evaluation.harness import EvalReport, evaluate
from mmsearch.evaluation.synthetic import generate_synthetic_set

__all__ = [
    "EvalQuery",
    "EvalReport",
    "EvalSet",
    "evaluate",
    "generate_synthetic_set",
    "load_cirr",
    "load_fashioniq",
    "load_queries_jsonl",
]
