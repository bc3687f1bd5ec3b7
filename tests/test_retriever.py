"""Retriever and SearchPipeline on real Milvus Lite with the tiny random-weight Visualized BGE.

Random weights mean no ranking is asserted except where identical input implies it (an indexed image queried
as itself must come back first with cosine 1).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from indexer_support import write_catalog

from mmsearch.config import Settings
from mmsearch.engine import Engine
from mmsearch.errors import EncoderMismatchError, InvalidQueryError, UnknownCategoryError
from mmsearch.pipelines import SearchPipeline, SearchRequest
from mmsearch.reranker.base import Reranker, RerankQuery, RerankResult, RetrievalOrderReranker
from mmsearch.retriever import Query, Retriever, SearchOptions
from mmsearch.store import ProductFilter, ProductStore
from mmsearch.testing import tiny_visual_bge_encoder


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """A Lite collection with 6 products x 2 images, indexed by the real job; returns (encoder, uri, data_dir)."""
    root = tmp_path_factory.mktemp("retriever")
    encoder = tiny_visual_bge_encoder(root / "bge")
    catalog = write_catalog(root / "data", 6, images_per_product=2)
    settings = Settings(milvus_uri=str(root / "milvus.db"), collection="products", cache_dir=root / "cache")
    with Engine(settings=settings, encoder=encoder) as engine:
        report = engine.index(str(catalog))
    assert report.indexed == 12
    return encoder, settings.milvus_uri, root / "data"


@pytest.fixture
def retriever(indexed) -> Iterator[Retriever]:
    encoder, uri, _ = indexed
    with ProductStore(uri, collection="products") as store:
        yield Retriever(encoder, store)


def test_image_only_query_returns_its_own_product_first(retriever, indexed):
    result = retriever.search(Query(image=indexed[2] / "img" / "p4_1.jpg"), SearchOptions(k=5))
    assert result.hits[0].id == "B000000004:1"
    assert result.hits[0].score == pytest.approx(1.0, abs=1e-4)


def test_search_returns_k_distinct_hits_sorted_by_score(retriever, indexed):
    result = retriever.search(
        Query(image=indexed[2] / "img" / "p0_0.jpg", instruction="a phone case with this on it"),
        SearchOptions(k=7, one_per_product=False),
    )
    ids = [h.id for h in result.hits]
    scores = [h.score for h in result.hits]
    assert len(ids) == 7 and len(set(ids)) == 7
    assert scores == sorted(scores, reverse=True)


def test_text_only_query_is_accepted(retriever):
    result = retriever.search(Query(instruction="red running shoes"), SearchOptions(k=3))
    assert len(result.hits) == 3
    assert all(np.isfinite(h.score) for h in result.hits)


def test_search_reports_encode_and_search_timings(retriever):
    result = retriever.search(Query(instruction="mug"), SearchOptions(k=2))
    assert set(result.timings) == {"encode_ms", "search_ms"}
    assert all(v >= 0 for v in result.timings.values())


def test_category_filter_with_no_match_in_a_known_category_is_empty(retriever):
    filters = ProductFilter(category="Cell Phones", min_price=10_000)
    assert retriever.search(Query(instruction="case"), SearchOptions(k=10, filters=filters)).hits == []


def test_unknown_category_is_an_error_naming_the_known_ones(retriever):
    """Issue 13: an unknown category used to return nothing, silently."""
    with pytest.raises(UnknownCategoryError) as err:
        retriever.search(
            Query(instruction="case"), SearchOptions(k=10, filters=ProductFilter(category="Nope"))
        )
    assert str(err.value) == (
        "unknown category 'Nope' (categories match exactly); known categories: 'Cell Phones'. "
        "List them with `mmsearch categories` or GET /categories."
    )


def test_query_without_image_or_text_is_rejected():
    with pytest.raises(
        InvalidQueryError, match="a query needs an image, an instruction, or both; got neither"
    ):
        Query(instruction="   ")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"k": 0}, "k must be an integer between 1 and 1000, got 0"),
        ({"mode": "magic"}, "mode must be one of joint, weighted, fused, hybrid-bm25; got 'magic'"),
        ({"weights": (-1.0, 1.0)}, "weights must be two finite non-negative numbers"),
        ({"weights": (0.0, 0.0)}, "weights must be two finite non-negative numbers"),
        ({"ranker": "borda"}, "ranker must be 'weighted' or 'rrf', got 'borda'"),
    ],
)
def test_search_options_reject_bad_values(options, message):
    with pytest.raises(InvalidQueryError, match=message.replace("(", r"\(").replace(")", r"\)")):
        SearchOptions(**options)


def test_retriever_refuses_a_collection_built_with_another_encoder(indexed, tmp_path):
    _, uri, _ = indexed
    other = tiny_visual_bge_encoder(tmp_path / "other", seed=1)
    with ProductStore(uri, collection="products") as store, pytest.raises(EncoderMismatchError):
        Retriever(other, store)


# ---------------------------------------------------------------- pipeline


class _Reverse(Reranker):
    """A test reranker that reverses the retrieval order, to check the pipeline applies and reports it."""

    def _rerank(self, query: RerankQuery, hits) -> RerankResult:
        order = list(range(len(hits)))[::-1]
        return RerankResult(
            hits=[hits[i] for i in order], order=order, timings={"prefill_ms": 1.0, "decode_ms": 2.0}
        )


@pytest.fixture
def pipeline_parts(indexed) -> Iterator[tuple]:
    encoder, uri, data = indexed
    with ProductStore(uri, collection="products") as store:
        yield Retriever(encoder, store), data


def test_pipeline_without_rerank_keeps_retrieval_order(pipeline_parts):
    retriever, data = pipeline_parts
    result = SearchPipeline(retriever).run(SearchRequest(image=data / "img" / "p2_0.jpg", k=4))
    assert result.hits == result.retrieved
    assert result.rerank is None and result.rerank_status == "off"
    assert {"encode_ms", "search_ms", "total_ms"} <= set(result.timings)


def test_pipeline_applies_reranker_order_and_reports_rank_changes(pipeline_parts):
    retriever, data = pipeline_parts
    result = SearchPipeline(retriever, _Reverse()).run(
        SearchRequest(image=data / "img" / "p2_0.jpg", instruction="similar", k=4, rerank=True)
    )
    assert [h.id for h in result.hits] == [h.id for h in reversed(result.retrieved)]
    assert [(c["before"], c["after"]) for c in result.rank_changes()] == [(4, 1), (3, 2), (2, 3), (1, 4)]
    assert result.timings["rerank_prefill_ms"] == 1.0 and result.timings["rerank_decode_ms"] == 2.0


def test_pipeline_retrieval_order_reranker_reports_ok(pipeline_parts):
    retriever, data = pipeline_parts
    result = SearchPipeline(retriever, RetrievalOrderReranker()).run(
        SearchRequest(image=data / "img" / "p1_1.jpg", k=3, rerank=True)
    )
    assert result.rerank_status == "ok"
    assert result.hits == result.retrieved


def test_pipeline_rerank_without_reranker_is_a_clear_error(pipeline_parts):
    retriever, _ = pipeline_parts
    with pytest.raises(
        InvalidQueryError, match="reranking was requested but this pipeline has no reranker loaded"
    ):
        SearchPipeline(retriever).run(SearchRequest(instruction="mug", rerank=True))


def test_pipeline_bounds_k_by_max_k(pipeline_parts):
    retriever, _ = pipeline_parts
    with pytest.raises(InvalidQueryError, match="k must be an integer between 1 and 5, got 6"):
        SearchPipeline(retriever, max_k=5).run(SearchRequest(instruction="mug", k=6))


def test_pipeline_result_to_dict_is_json_ready(pipeline_parts):
    import json

    retriever, data = pipeline_parts
    result = SearchPipeline(retriever, _Reverse()).run(
        SearchRequest(image=data / "img" / "p0_0.jpg", k=3, rerank=True)
    )
    payload = json.loads(json.dumps(result.to_dict()))
    assert [h["rank"] for h in payload["hits"]] == [1, 2, 3]
    assert payload["rerank"]["status"] == "ok"


# ---------------------------------------------------------------------------------------------------------------
# Issue 13: one slot per product by default, and the hybrid-bm25 mode, through the real index job.


@pytest.mark.parametrize("mode", ["joint", "weighted", "fused", "hybrid-bm25"])
def test_every_mode_gives_one_slot_per_product_by_default(retriever, indexed, mode):
    result = retriever.search(
        Query(image=indexed[2] / "img" / "p0_0.jpg", instruction="product number"),
        SearchOptions(k=6, mode=mode),
    )
    parents = [h.parent_asin for h in result.hits]
    assert len(parents) == 6 and len(set(parents)) == 6, parents


def test_one_per_product_off_lists_every_image(retriever, indexed):
    result = retriever.search(
        Query(image=indexed[2] / "img" / "p0_0.jpg"), SearchOptions(k=12, one_per_product=False)
    )
    assert len({h.id for h in result.hits}) == 12


def test_hybrid_bm25_brings_the_title_words_forward(retriever, indexed):
    """'number 4' matches product 4's title exactly; the tiny random encoder knows nothing of it."""
    query = Query(image=indexed[2] / "img" / "p0_0.jpg", instruction="number 4")
    fused = retriever.search(
        query, SearchOptions(k=3, mode="hybrid-bm25", ranker="weighted", weights=(0.1, 0.9))
    )
    assert fused.mode == "hybrid-bm25"
    assert fused.hits[0].parent_asin == "B000000004", [h.title for h in fused.hits]


def test_hybrid_bm25_without_instruction_is_a_clear_error(retriever, indexed):
    with pytest.raises(InvalidQueryError, match="mode hybrid-bm25 matches the instruction's words"):
        retriever.search(Query(image=indexed[2] / "img" / "p0_0.jpg"), SearchOptions(mode="hybrid-bm25"))
