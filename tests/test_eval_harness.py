"""The evaluation harness end to end: the synthetic set indexed into real Milvus Lite with the tiny random encoder.

Random weights mean no ranking is asserted except where the input implies it: a product image queried as
itself must come back first, and a reranker that sorts candidates by their labels cannot lower nDCG.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import pytest

from mmsearch.config import Settings
from mmsearch.engine import Engine
from mmsearch.errors import InvalidQueryError
from mmsearch.evaluation.datasets import EvalQuery, EvalSet
from mmsearch.evaluation.harness import evaluate, ranking_keys
from mmsearch.evaluation.metrics import METRIC_NAMES
from mmsearch.evaluation.synthetic import generate_synthetic_set
from mmsearch.media.decode import open_image
from mmsearch.pipelines import SearchPipeline
from mmsearch.reranker.base import (
    Reranker,
    RerankQuery,
    RerankResult,
    RetrievalOrderReranker,
    result_in_order,
)
from mmsearch.retriever import Retriever
from mmsearch.store import ProductStore
from mmsearch.testing import tiny_visual_bge_encoder
from mmsearch.types import Hit

MODES = ("joint", "weighted", "fused")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    syn = generate_synthetic_set(root / "synthetic", n_products=24, n_queries=6, seed=0)
    encoder = tiny_visual_bge_encoder(root / "bge")
    settings = Settings(milvus_uri=str(root / "milvus.db"), collection="synthetic", cache_dir=root / "cache")
    with Engine(settings=settings, encoder=encoder) as engine:
        report = engine.index(str(syn.products_jsonl))
    assert report.indexed == 24
    store = ProductStore(settings.milvus_uri, collection="synthetic")
    try:
        yield syn, Retriever(encoder, store)
    finally:
        store.close()


def _image_key(image) -> str:
    return hashlib.sha1(open_image(image).tobytes()).hexdigest()


class LabelOracleReranker(Reranker):
    """Sorts candidates by their label grade for the query (looked up by the query image), ties kept in order."""

    def __init__(self, queries: list[EvalQuery]):
        self.grades = {_image_key(q.image): q.relevance for q in queries}

    def _rerank(self, query: RerankQuery, hits: list[Hit]) -> RerankResult:
        grades = self.grades[_image_key(query.image)]
        order = sorted(range(len(hits)), key=lambda i: -grades.get(hits[i].parent_asin, 0.0))
        return result_in_order(hits, order)


class StatusByWordReranker(Reranker):
    """Keeps retrieval order but reports 'fallback' for mug queries and 'repaired' for shirt queries."""

    def _rerank(self, query: RerankQuery, hits: list[Hit]) -> RerankResult:
        status = (
            "fallback" if "mug" in query.instruction else "repaired" if "shirt" in query.instruction else "ok"
        )
        return result_in_order(
            hits, range(len(hits)), status=status, reason=None if status == "ok" else "test"
        )


@pytest.fixture(scope="module")
def three_mode_report(synthetic):
    """One run over all modes with the retrieval-order reranker, shared by the tests that only read it."""
    syn, retriever = synthetic
    pipeline = SearchPipeline(retriever, RetrievalOrderReranker(), smoke=True)
    return evaluate(pipeline, syn.eval_set, modes=MODES, k=10, rerank=True, n_resamples=100)


def test_report_has_every_mode_metric_and_range(three_mode_report):
    report = three_mode_report
    assert list(report.modes) == list(MODES)
    assert report.n_queries == 6
    for mode in report.modes.values():
        for means in (mode.retrieval, mode.reranked):
            assert list(means) == list(METRIC_NAMES)
            assert all(0.0 <= v <= 1.0 for v in means.values())
        assert len(mode.per_query) == 6
        assert all(len(row["top"]) == 10 for row in mode.per_query)
        assert sum(mode.rerank_status.values()) == 6
        assert {"encode_ms", "search_ms", "rerank_ms", "total_ms"} <= set(mode.timings_ms)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["smoke"] is True and "not search quality" in data["note"]
    assert set(data["modes"]["weighted"]["uplift"]) == set(METRIC_NAMES)


def test_table_is_labelled_smoke_and_lists_each_mode(three_mode_report):
    table = three_mode_report.format_table()
    assert table.splitlines()[0].startswith("*** SMOKE MODE")
    assert "rerank status (fused): ok 6, repaired 0, degraded 0, fallback 0, skipped 0" in table
    for mode in MODES:
        assert f"\n{mode:<9} retrieval" in table
        assert f"\n{mode:<9} reranked" in table


def test_table_notes_when_k_is_below_ten(synthetic):
    syn, retriever = synthetic
    table = evaluate(retriever, syn.eval_set, modes=["joint"], k=5).format_table()
    assert "note: k=5 < 10, so the @10 metrics only see the top 5" in table


def test_retrieval_order_reranker_has_zero_uplift(three_mode_report):
    for mode in three_mode_report.modes.values():
        assert mode.reranked == mode.retrieval
        for ci in mode.uplift.values():
            assert (ci["mean"], ci["low"], ci["high"]) == (0.0, 0.0, 0.0)
        assert mode.rerank_status == {"ok": 6, "repaired": 0, "degraded": 0, "fallback": 0, "skipped": 0}


def test_product_image_queried_as_itself_ranks_that_product_first(synthetic):
    syn, retriever = synthetic
    echo = [
        EvalQuery(id=p.parent_asin, image=p.image, instruction="", relevance={p.parent_asin: 2.0})
        for p in syn.products[::5]
    ]
    mode = evaluate(retriever, echo, modes=["joint"], k=10).modes["joint"]
    assert [row["top"][0] for row in mode.per_query] == [q.id for q in echo]
    assert mode.retrieval["recall@1"] == 1.0
    assert mode.retrieval["mrr@10"] == 1.0


def test_label_sorting_reranker_never_lowers_ndcg(synthetic):
    syn, retriever = synthetic
    pipeline = SearchPipeline(retriever, LabelOracleReranker(syn.eval_set.queries))
    mode = evaluate(pipeline, syn.eval_set, modes=["fused"], k=10, rerank=True, n_resamples=200).modes[
        "fused"
    ]
    for row in mode.per_query:
        assert row["reranked"]["ndcg@10"] >= row["retrieval"]["ndcg@10"] - 1e-12
        assert row["reranked"]["recall@10"] == row["retrieval"]["recall@10"]  # same candidates
        assert sorted(row["reranked_top"]) == sorted(row["top"])
    assert mode.uplift["ndcg@10"]["low"] >= 0.0
    assert mode.uplift["recall@10"]["mean"] == 0.0


def test_rerank_status_counts_follow_the_reranker(synthetic):
    syn, retriever = synthetic
    pipeline = SearchPipeline(retriever, StatusByWordReranker())
    mode = evaluate(pipeline, syn.eval_set, modes=["joint"], rerank=True, n_resamples=10).modes["joint"]
    words = Counter(
        "fallback" if "mug" in q.instruction else "repaired" if "shirt" in q.instruction else "ok"
        for q in syn.eval_set.queries
    )
    assert mode.rerank_status == {
        "ok": words["ok"],
        "repaired": words["repaired"],
        "degraded": 0,
        "fallback": words["fallback"],
        "skipped": 0,
    }
    reasons = [row.get("rerank_reason") for row in mode.per_query if row["rerank_status"] != "ok"]
    assert reasons == ["test"] * (words["repaired"] + words["fallback"])


def test_excluded_ids_never_appear_and_deepen_the_search(synthetic):
    syn, retriever = synthetic
    product, other = syn.products[0], syn.products[1]
    query = EvalQuery(
        id="x",
        image=product.image,
        instruction="",
        relevance={other.parent_asin: 1.0},
        exclude=(product.parent_asin,),
    )
    report = evaluate(retriever, EvalSet("one", [query]), modes=["joint"], k=5)
    top = report.modes["joint"].per_query[0]["top"]
    assert product.parent_asin not in top
    assert len(top) == 5
    assert report.settings["depth"] == 6


def test_ranking_keys_use_labels_drop_exclusions_and_repeat_products():
    hits = [Hit(id="X:0", score=1, parent_asin="X"), Hit(id="Y:0", score=1, parent_asin="Y")]
    hits += [Hit(id="X:1", score=1, parent_asin="X"), Hit(id="Z:3", score=1, parent_asin="Z")]
    query = EvalQuery(id="q", image=None, instruction="t", relevance={"Z:3": 1.0}, exclude=("Y",))
    assert ranking_keys(hits, query, 10) == ["X", "Z:3"]
    assert ranking_keys(hits, query, 1) == ["X"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"modes": ["joint", "sideways"]},
            "unknown mode 'sideways'; expected some of joint, weighted, fused, hybrid-bm25",
        ),
        ({"modes": []}, "modes must name at least one of joint, weighted, fused, hybrid-bm25"),
        ({"k": 0}, "k must be an integer between 1 and 1000, got 0"),
        ({"rerank": True}, "rerank=True needs a reranker; none was given"),
    ],
)
def test_evaluate_refuses_bad_arguments(synthetic, kwargs, message):
    syn, retriever = synthetic
    with pytest.raises(InvalidQueryError) as err:
        evaluate(retriever, syn.eval_set, **kwargs)
    assert str(err.value) == message
