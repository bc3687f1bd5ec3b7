"""Batched search and read consistency of `ProductStore`, on Milvus Lite and a loopback Milvus server (issue 12).

A batch of nq query vectors goes to Milvus in one call and comes back as one hit list per query, equal to what
nq single searches return.
"""

from __future__ import annotations

import pytest

import mmsearch.store.milvus as store_module
from mmsearch.errors import InvalidQueryError, StoreError
from mmsearch.store import ProductFilter
from mmsearch.types import Product

DIM = 8
N = 40


def _products(n: int) -> list[Product]:
    return [
        Product(
            id=f"p{i}",
            image="",
            title=f"title {i}",
            main_category="Even" if i % 2 == 0 else "Odd",
            price=float(i),
            image_url=f"https://example.com/{i}.jpg",
        )
        for i in range(n)
    ]


@pytest.fixture
def filled(open_store, unit_vectors):
    store = open_store(dim=DIM)
    images, texts = unit_vectors(N, DIM), unit_vectors(N, DIM, seed=1)
    store.upsert(_products(N), images, texts)
    return store, images, texts


def _ids(hits) -> list[str]:
    return [h.id for h in hits]


def test_search_batch_returns_one_list_per_query_equal_to_single_searches(filled):
    store, images, _ = filled
    batch = store.search_batch(images[:6], k=5)
    assert [_ids(hits) for hits in batch] == [_ids(store.search(q, k=5)) for q in images[:6]]
    assert [hits[0].id for hits in batch] == [f"p{i}" for i in range(6)]


def test_search_batch_makes_one_milvus_call(filled, monkeypatch):
    store, images, _ = filled
    calls = []
    real = store._client.search
    monkeypatch.setattr(
        store._client, "search", lambda *a, **kw: calls.append(len(kw["data"])) or real(*a, **kw)
    )
    store.search_batch(images[:7], k=3)
    assert calls == [7]


def test_search_batch_applies_the_filter_to_every_query(filled):
    store, images, _ = filled
    batch = store.search_batch(images[:4], k=5, filters=ProductFilter(category="Odd"))
    assert all(h.main_category == "Odd" for hits in batch for h in hits)
    assert [hits[0].id for hits in batch[1::2]] == ["p1", "p3"]


def test_search_batch_selective_filter_scores_each_query_exactly_on_lite(filled, store_backend, monkeypatch):
    if store_backend.name != "lite":
        pytest.skip("the exact path for selective filters is Lite's")
    store, images, _ = filled
    monkeypatch.setattr(store_module, "EXACT_FILTER_MAX_ROWS", N)
    batch = store.search_batch(images[10:13], k=2, filters=ProductFilter(min_price=10.0))
    assert [hits[0].id for hits in batch] == ["p10", "p11", "p12"]
    assert all(h.price >= 10.0 for hits in batch for h in hits)


def test_search_batch_of_zero_queries_is_empty(filled):
    store, _, _ = filled
    assert store.search_batch(filled[1][:0], k=3) == []


def test_search_batch_with_wrong_shape_names_the_argument(filled):
    store, images, _ = filled
    with pytest.raises(InvalidQueryError) as err:
        store.search_batch(images[0], k=3)
    assert str(err.value) == f"vectors must have shape (nq, {DIM}), got ({DIM},)"


def test_hybrid_search_batch_equals_single_hybrid_searches(filled, store_backend):
    store_backend.skip_without_hybrid()
    store, images, texts = filled
    batch = store.hybrid_search_batch(images[:5], texts[:5], k=4, ranker="rrf")
    assert [_ids(hits) for hits in batch] == [
        _ids(store.hybrid_search(i, t, k=4, ranker="rrf")) for i, t in zip(images[:5], texts[:5], strict=True)
    ]


def test_hybrid_search_batch_refuses_unpaired_rows(filled, store_backend):
    store_backend.skip_without_hybrid()
    store, images, texts = filled
    with pytest.raises(InvalidQueryError) as err:
        store.hybrid_search_batch(images[:3], texts[:2], k=4)
    assert str(err.value) == "image_vectors and text_vectors must have the same number of rows, got 3 and 2"


def test_unknown_consistency_level_is_refused(store_backend):
    with pytest.raises(StoreError) as err:
        store_backend.open(consistency="Sometimes")
    assert (
        str(err.value) == "consistency must be one of Strong, Session, Bounded, Eventually, got 'Sometimes'"
    )


def test_store_reads_at_bounded_consistency_by_default(store_backend):
    from mmsearch.store import ProductStore

    with ProductStore(store_backend.uri, collection=store_backend.collection) as store:
        assert store.consistency == "Bounded"


def test_session_consistency_reads_its_own_writes(open_store, unit_vectors):
    store = open_store(dim=DIM, consistency="Session")
    vectors = unit_vectors(5, DIM, seed=3)
    store.upsert(_products(5), vectors, vectors)
    assert store.count() == 5
    assert store.search(vectors[4], k=1)[0].id == "p4"


def test_per_call_consistency_overrides_the_store_level(filled, monkeypatch):
    store, images, _ = filled
    seen = []
    real = store._client.search
    monkeypatch.setattr(
        store._client, "search", lambda *a, **kw: seen.append(kw["consistency_level"]) or real(*a, **kw)
    )
    store.search(images[0], k=1)
    store.search(images[0], k=1, consistency="Bounded")
    assert seen == ["Strong", "Bounded"]  # the test store reads at Strong (conftest)
