"""The three retrieval modes on real Milvus Lite with the tiny encoder: k hits each, and what the fusion math implies.

Milvus' WeightedRanker (pymilvus default `norm_score=True`) maps each COSINE score s to (1 + s) / 2 before
weighting, and a candidate missing from one route contributes nothing for that route. So with weights (1, 0)
every image-route candidate scores (1 + cos) / 2 > 0 while a text-only candidate scores 0: the order is the
image route's, which is joint mode's search with the same vector. Fused mode with (1, 0) is the joint vector.
The score checks turn one slot per product off: grouping fetches each route deeper, which changes fused scores.
"""

from __future__ import annotations

import math

import pytest

from mmsearch.config import Settings
from mmsearch.engine import Engine
from mmsearch.errors import InvalidQueryError
from mmsearch.evaluation.synthetic import generate_synthetic_set
from mmsearch.retriever import Query, Retriever, SearchOptions
from mmsearch.store import ProductStore
from mmsearch.testing import tiny_visual_bge_encoder

K = 7
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    root = tmp_path_factory.mktemp("hybrid")
    syn = generate_synthetic_set(root / "synthetic", n_products=20, n_queries=3, seed=1)
    encoder = tiny_visual_bge_encoder(root / "bge")
    settings = Settings(milvus_uri=str(root / "milvus.db"), collection="hybrid", cache_dir=root / "cache")
    with Engine(settings=settings, encoder=encoder) as engine:
        assert engine.index(str(syn.products_jsonl)).indexed == 20
    store = ProductStore(settings.milvus_uri, collection="hybrid")
    try:
        yield syn, Retriever(encoder, store), store
    finally:
        store.close()


def _queries(syn) -> list[Query]:
    return [Query(image=q.image, instruction=q.instruction) for q in syn.eval_set.queries]


@pytest.mark.parametrize("mode", ["joint", "weighted", "fused"])
def test_every_mode_returns_k_distinct_hits_best_first(indexed, mode):
    syn, retriever, _ = indexed
    for query in _queries(syn):
        hits = retriever.search(query, SearchOptions(k=K, mode=mode)).hits
        assert len(hits) == K
        assert len({h.id for h in hits}) == K
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_weighted_with_zero_text_weight_orders_like_joint(indexed):
    syn, retriever, _ = indexed
    for query in _queries(syn):
        joint = retriever.search(query, SearchOptions(k=K, mode="joint")).hits
        weighted = retriever.search(query, SearchOptions(k=K, mode="weighted", weights=(1.0, 0.0))).hits
        assert [h.id for h in weighted] == [h.id for h in joint]
        for w, j in zip(weighted, joint, strict=True):
            assert w.score == pytest.approx((1.0 + j.score) / 2.0, abs=1e-5)


def test_fused_with_zero_text_weight_is_joint(indexed):
    syn, retriever, _ = indexed
    for query in _queries(syn):
        joint = retriever.search(query, SearchOptions(k=K, mode="joint")).hits
        fused = retriever.search(query, SearchOptions(k=K, mode="fused", weights=(1.0, 0.0))).hits
        assert [h.id for h in fused] == [h.id for h in joint]
        assert [h.score for h in fused] == pytest.approx([h.score for h in joint], abs=1e-6)


def _routes(
    retriever, store, query: Query
) -> tuple[dict[str, tuple[int, float]], dict[str, tuple[int, float]]]:
    """(rank, cosine) per id of the image route (joint vector) and the text route (instruction vector)."""
    joint = retriever.query_encoder.encode(query)
    text = retriever.query_encoder.encode_instruction(query)
    image_route = store.search(joint, k=K)
    text_route = store.search(text, k=K, field="text_vector")
    return (
        {h.id: (r, h.score) for r, h in enumerate(image_route, start=1)},
        {h.id: (r, h.score) for r, h in enumerate(text_route, start=1)},
    )


def test_weighted_scores_are_weighted_normalised_cosines_of_both_routes(indexed):
    syn, retriever, store = indexed
    weights = (0.6, 0.4)
    for query in _queries(syn):
        image_route, text_route = _routes(retriever, store, query)
        expected = {}
        for pid in set(image_route) | set(text_route):
            score = 0.0
            for w, route in zip(weights, (image_route, text_route), strict=True):
                if pid in route:
                    score += w * (1.0 + route[pid][1]) / 2.0
            expected[pid] = score
        hits = retriever.search(
            query, SearchOptions(k=K, mode="weighted", weights=weights, one_per_product=False)
        ).hits
        for hit in hits:
            assert hit.score == pytest.approx(expected[hit.id], abs=1e-5)
        left_out = [s for pid, s in expected.items() if pid not in {h.id for h in hits}]
        assert min(h.score for h in hits) >= max(left_out, default=-math.inf) - 1e-5


def test_rrf_scores_are_reciprocal_rank_sums_of_both_routes(indexed):
    syn, retriever, store = indexed
    rrf_k = 60
    for query in _queries(syn):
        image_route, text_route = _routes(retriever, store, query)
        expected = {
            pid: sum(1.0 / (rrf_k + route[pid][0]) for route in (image_route, text_route) if pid in route)
            for pid in set(image_route) | set(text_route)
        }
        hits = retriever.search(
            query, SearchOptions(k=K, mode="weighted", ranker="rrf", rrf_k=rrf_k, one_per_product=False)
        ).hits
        assert len(hits) == K
        for hit in hits:
            assert hit.score == pytest.approx(expected[hit.id], rel=1e-6)
        left_out = [s for pid, s in expected.items() if pid not in {h.id for h in hits}]
        assert min(h.score for h in hits) >= max(left_out, default=-math.inf) - 1e-12


@pytest.mark.parametrize(
    "weights",
    [(-0.5, 1.0), (0.0, 0.0), (math.nan, 1.0), (1.0, math.inf), (1.0,)],
)
def test_bad_weights_are_invalid_query_errors(indexed, weights):
    syn, retriever, _ = indexed
    with pytest.raises(InvalidQueryError) as err:
        retriever.search(_queries(syn)[0], SearchOptions(k=K, mode="weighted", weights=weights))
    assert str(err.value) == (
        f"weights must be two finite non-negative numbers (image, text) with a positive sum, got {weights!r}"
    )


def test_unknown_ranker_is_an_invalid_query_error(indexed):
    with pytest.raises(InvalidQueryError, match="ranker must be 'weighted' or 'rrf', got 'max'"):
        SearchOptions(k=K, mode="weighted", ranker="max")
