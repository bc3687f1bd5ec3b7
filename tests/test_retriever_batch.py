"""Batched retrieval (issue 12): many queries encoded in one pass and searched in one Milvus call per group of
equal options, with the same hits as one query at a time. Real Milvus Lite, tiny random-weight Visualized BGE.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from indexer_support import write_catalog

from mmsearch.config import Settings
from mmsearch.engine import Engine
from mmsearch.errors import InvalidImageError, InvalidQueryError
from mmsearch.pipelines import SearchPipeline, SearchRequest
from mmsearch.retriever import Query, Retriever, SearchOptions
from mmsearch.store import ProductFilter, ProductStore
from mmsearch.testing import tiny_visual_bge_encoder


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    root = tmp_path_factory.mktemp("retriever-batch")
    encoder = tiny_visual_bge_encoder(root / "bge")
    catalog = write_catalog(root / "data", 6, images_per_product=2)
    settings = Settings(milvus_uri=str(root / "milvus.db"), collection="products", cache_dir=root / "cache")
    with Engine(settings=settings, encoder=encoder) as engine:
        assert engine.index(str(catalog)).indexed == 12
    return encoder, settings.milvus_uri, root / "data"


@pytest.fixture
def retriever(indexed) -> Iterator[Retriever]:
    encoder, uri, _ = indexed
    with ProductStore(uri, collection="products") as store:
        yield Retriever(encoder, store)


def _queries(data) -> list[Query]:
    return [
        Query(image=data / "img" / "p1_0.jpg"),
        Query(instruction="red running shoes"),
        Query(image=data / "img" / "p3_1.jpg", instruction="same but blue"),
        Query(image=data / "img" / "p5_0.jpg"),
        Query(instruction="a mug"),
    ]


def _ids(result) -> list[str]:
    return [h.id for h in result.hits]


@pytest.mark.parametrize("mode", ["joint", "weighted", "fused"])
def test_search_many_returns_what_single_searches_return(retriever, indexed, mode):
    queries = _queries(indexed[2])
    options = [SearchOptions(k=k, mode=mode) for k in (3, 5, 4, 2, 6)]
    batch = retriever.search_many(queries, options)
    single = [retriever.search(q, o) for q, o in zip(queries, options, strict=True)]
    assert [_ids(r) for r in batch] == [_ids(r) for r in single]
    assert [len(r.hits) for r in batch] == [3, 5, 4, 2, 6]
    assert all(r.batch_size == 5 and r.mode == mode for r in batch)


def test_search_many_keeps_each_querys_filter(retriever, indexed):
    queries = _queries(indexed[2])[:2]
    options = [
        SearchOptions(k=4),
        SearchOptions(k=4, filters=ProductFilter(ids=["B000000002:0", "B000000002:1"])),
    ]
    joint, filtered = retriever.search_many(queries, options)
    assert {h.id for h in filtered.hits} <= {"B000000002:0", "B000000002:1"}
    assert len(joint.hits) == 4


def test_search_many_encodes_each_kind_of_query_in_one_encoder_call(retriever, indexed, monkeypatch):
    calls = []
    encoder = retriever.encoder
    for name in ("encode_images", "encode_texts", "encode_multimodal"):
        real = getattr(encoder, name)
        monkeypatch.setattr(
            encoder, name, lambda *a, _n=name, _r=real: calls.append((_n, len(a[0]))) or _r(*a)
        )
    queries = [Query(instruction=f"query {i}") for i in range(7)]
    retriever.search_many(queries, [SearchOptions(k=2)] * 7)
    assert calls == [("encode_texts", 7)]


def test_search_many_searches_a_group_of_equal_options_in_one_store_call(retriever, indexed, monkeypatch):
    calls = []
    real = retriever.store.search_batch
    monkeypatch.setattr(
        retriever.store, "search_batch", lambda v, **kw: calls.append(len(v)) or real(v, **kw)
    )
    queries = [Query(instruction=f"query {i}") for i in range(6)]
    retriever.search_many(queries, [SearchOptions(k=k) for k in (1, 2, 3, 1, 2, 3)])
    assert calls == [6]


def test_search_many_needs_one_options_per_query(retriever):
    with pytest.raises(InvalidQueryError) as err:
        retriever.search_many([Query(instruction="x")], [])
    assert str(err.value) == "got 1 queries and 0 options; expected one each"


def test_retrieve_many_reports_a_bad_request_in_its_slot_and_serves_the_rest(retriever, indexed):
    pipeline = SearchPipeline(retriever)
    data = indexed[2]
    requests = [
        SearchRequest(image=data / "img" / "p1_0.jpg", k=3),
        SearchRequest(image=data / "img" / "missing.jpg", k=3),
        SearchRequest(instruction="shoes", k=30_000),
        SearchRequest(instruction="shoes", k=2),
    ]
    good, missing, bad_k, text = pipeline.retrieve_many(requests)
    assert good.hits[0].id == "B000000001:0"
    assert isinstance(missing, InvalidImageError)
    assert isinstance(bad_k, InvalidQueryError) and "k must be" in str(bad_k)
    assert len(text.hits) == 2 and text.batch_size == 2
