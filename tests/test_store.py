"""ProductStore contract, run on Milvus Lite and on a real Milvus server on 127.0.0.1 (see conftest.py).

Vectors are random unit vectors; an identical query vector must come back first with cosine score ~1.
"""

from __future__ import annotations

import math

import pytest

from mmsearch.errors import CollectionNotFoundError, EncoderMismatchError, InvalidQueryError, StoreError
from mmsearch.limits import MAX_K
from mmsearch.store import ProductFilter
from mmsearch.types import Product

DIM = 8


def make_products(n: int, **overrides) -> list[Product]:
    return [
        Product(
            id=f"p{i}",
            image=f"img{i}.jpg",
            title=f"title {i}",
            main_category="Electronics" if i % 2 else "Appliances",
            price=float(i) + 0.99,
            average_rating=3.0 + (i % 3),
            rating_number=10 * i,
            parent_asin=f"B{i:04d}",
            image_url=f"https://example.com/{i}.jpg",
            meta={"store": "s", "i": i},
            **overrides,
        )
        for i in range(n)
    ]


def test_upsert_returns_rows_written_and_count_matches(open_store, unit_vectors):
    store = open_store(dim=DIM)
    n = store.upsert(make_products(20), unit_vectors(20, DIM), unit_vectors(20, DIM, seed=1))
    assert n == 20
    assert store.count() == 20


def test_upsert_again_is_idempotent_and_updates_fields(open_store, unit_vectors):
    store = open_store(dim=DIM)
    products = make_products(10)
    store.upsert(products, unit_vectors(10, DIM), unit_vectors(10, DIM, seed=1))
    renamed = [Product(id=p.id, image=p.image, title="new " + p.title) for p in products]
    store.upsert(renamed, unit_vectors(10, DIM), unit_vectors(10, DIM, seed=1))
    assert store.count() == 10
    assert store.get(["p3"])[0].title == "new title 3"


def test_duplicate_ids_in_one_batch_keep_the_last(open_store, unit_vectors):
    store = open_store(dim=DIM)
    a, b = Product(id="dup", image="a", title="first"), Product(id="dup", image="b", title="second")
    assert store.upsert([a, b], unit_vectors(2, DIM), unit_vectors(2, DIM, seed=1)) == 1
    assert store.count() == 1
    assert store.get(["dup"])[0].title == "second"


def test_search_returns_the_identical_vector_first(open_store, unit_vectors):
    store = open_store(dim=DIM)
    vectors = unit_vectors(30, DIM)
    store.upsert(make_products(30), vectors, unit_vectors(30, DIM, seed=1))
    hits = store.search(vectors[7], k=5)
    assert [h.id for h in hits][0] == "p7"
    assert hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert len(hits) == 5
    assert all(hits[i].score >= hits[i + 1].score for i in range(4)), "hits must be sorted best first"


def test_search_hit_carries_the_stored_fields(open_store, unit_vectors):
    store = open_store(dim=DIM)
    vectors = unit_vectors(5, DIM)
    store.upsert(make_products(5), vectors, unit_vectors(5, DIM, seed=1))
    hit = store.search(vectors[2], k=1)[0]
    assert (hit.id, hit.title, hit.main_category, hit.parent_asin) == ("p2", "title 2", "Appliances", "B0002")
    assert (hit.price, hit.average_rating, hit.rating_number) == (2.99, 5.0, 20)
    assert (hit.image_url, hit.meta) == ("https://example.com/2.jpg", {"store": "s", "i": 2})


def test_unknown_numbers_come_back_as_none(open_store, unit_vectors):
    store = open_store(dim=DIM)
    vectors = unit_vectors(1, DIM)
    store.upsert([Product(id="bare", image="x")], vectors, vectors)
    hit = store.search(vectors[0], k=1)[0]
    assert (hit.price, hit.average_rating, hit.rating_number) == (None, None, None)


def test_search_on_text_vector_finds_the_title_embedding(open_store, unit_vectors):
    store = open_store(dim=DIM)
    if not store.has_text_vector:
        pytest.skip("this server has no multi-vector collections (Milvus < 2.4)")
    texts = unit_vectors(10, DIM, seed=5)
    store.upsert(make_products(10), unit_vectors(10, DIM), texts)
    assert store.search(texts[4], k=1, field="text_vector")[0].id == "p4"


def test_get_keeps_requested_order_skips_missing_and_has_nan_score(open_store, unit_vectors):
    store = open_store(dim=DIM)
    store.upsert(make_products(5), unit_vectors(5, DIM), unit_vectors(5, DIM, seed=1))
    hits = store.get(["p4", "missing", "p1"])
    assert [h.id for h in hits] == ["p4", "p1"]
    assert all(math.isnan(h.score) for h in hits)


def test_existing_ids_returns_only_stored_ids(open_store, unit_vectors):
    store = open_store(dim=DIM)
    store.upsert(make_products(5), unit_vectors(5, DIM), unit_vectors(5, DIM, seed=1))
    assert store.existing_ids(["p0", "p4", "p9", "x"]) == {"p0", "p4"}


ODD_IDS = [
    'quote"inside',
    "single'quote",
    "back\\slash",
    "trailing\\",
    "new\nline",
    "tab\tand\rcr",
    "unicode é 漢字 🎉",
    '" or 1==1 or id == "',
    "') or ('1'=='1",
]


def test_ids_with_quotes_backslashes_and_newlines_round_trip(open_store, unit_vectors):
    """Regression guard for the DESIGN rule: VARCHAR ids with quotes, backslashes and newlines round-trip."""
    store = open_store(dim=DIM)
    vectors = unit_vectors(len(ODD_IDS), DIM)
    products = [Product(id=i, image="x", title=f"row {n}") for n, i in enumerate(ODD_IDS)]
    store.upsert(products, vectors, vectors)
    assert store.count() == len(ODD_IDS)
    assert store.existing_ids(ODD_IDS) == set(ODD_IDS)
    assert [h.id for h in store.get(ODD_IDS)] == ODD_IDS
    for n, odd in enumerate(ODD_IDS):
        assert store.search(vectors[n], k=1)[0].id == odd
        assert [h.id for h in store.search(vectors[n], k=3, filters=ProductFilter(ids=[odd]))] == [odd]


@pytest.mark.parametrize("ranker", ["weighted", "rrf"])
def test_hybrid_search_ranks_the_matching_pair_first(open_store, store_backend, unit_vectors, ranker):
    store_backend.skip_without_hybrid()
    store = open_store(dim=DIM)
    images, texts = unit_vectors(20, DIM), unit_vectors(20, DIM, seed=1)
    store.upsert(make_products(20), images, texts)
    hits = store.hybrid_search(images[6], texts[6], k=5, ranker=ranker)
    assert hits[0].id == "p6"
    assert len(hits) == 5


def test_hybrid_weighted_score_is_the_weighted_similarity(open_store, store_backend, unit_vectors):
    store_backend.skip_without_hybrid()
    store = open_store(dim=DIM)
    images, texts = unit_vectors(3, DIM), unit_vectors(3, DIM, seed=1)
    store.upsert(make_products(3), images, texts)
    hit = store.hybrid_search(images[1], texts[1], k=1, weights=(0.6, 0.4))[0]
    assert hit.id == "p1"
    assert hit.score == pytest.approx(1.0, abs=1e-3)


def test_collection_without_text_vector_refuses_hybrid_search(open_store, unit_vectors):
    store = open_store(dim=DIM, with_text_vector=False)
    vectors = unit_vectors(3, DIM)
    store.upsert(make_products(3), vectors)
    with pytest.raises(StoreError) as err:
        store.hybrid_search(vectors[0], vectors[0])
    assert str(err.value) == (
        f"collection {store.collection!r} at {store.uri} has no text_vector: it was created on a Milvus server "
        "without multi-vector support (< 2.4). Hybrid search needs Milvus >= 2.4 or Milvus Lite."
    )


def test_server_without_multi_vector_creates_image_only_collection(open_store, store_backend, unit_vectors):
    if store_backend.supports_hybrid:
        pytest.skip("only Milvus < 2.4 servers lack multi-vector collections")
    store = open_store(dim=DIM, with_text_vector=True)
    assert store.has_text_vector is False
    vectors = unit_vectors(2, DIM)
    assert store.upsert(make_products(2), vectors, vectors) == 2  # text vectors are ignored there


def test_encoder_mismatch_names_both_encoders(open_store, store_backend):
    open_store(dim=DIM, encoder_id="enc-a")
    other = store_backend.open()
    with pytest.raises(EncoderMismatchError) as err:
        other.ensure_collection(encoder_id="enc-b", dim=DIM)
    other.close()
    assert str(err.value) == (
        f"collection {store_backend.collection!r} at {store_backend.uri} was built with encoder 'enc-a' (dim {DIM}), "
        f"but this run uses encoder 'enc-b' (dim {DIM}). Use the same encoder, or index into another collection "
        "(--collection / MMSEARCH_COLLECTION)."
    )


def test_dimension_mismatch_is_an_encoder_mismatch(open_store, store_backend):
    open_store(dim=DIM, encoder_id="enc-a")
    with store_backend.open() as other, pytest.raises(EncoderMismatchError, match=r"\(dim 8\).*\(dim 16\)"):
        other.check_encoder(encoder_id="enc-a", dim=16)


def test_check_encoder_on_missing_collection_says_to_index_first(store_backend):
    with store_backend.open() as store, pytest.raises(CollectionNotFoundError) as err:
        store.check_encoder(encoder_id="enc", dim=DIM)
    assert str(err.value) == (
        f"collection {store_backend.collection!r} does not exist at {store_backend.uri}; run `mmsearch index` first"
    )


def test_reopened_store_searches_without_ensure(open_store, store_backend, unit_vectors):
    store = open_store(dim=DIM)
    vectors = unit_vectors(10, DIM)
    store.upsert(make_products(10), vectors, vectors)
    store.close()
    with store_backend.open() as again:
        again.check_encoder(encoder_id="test-encoder/random-unit-vectors", dim=DIM)
        assert again.search(vectors[3], k=1)[0].id == "p3"


def test_upsert_with_wrong_vector_shape_names_the_argument(open_store, unit_vectors):
    store = open_store(dim=DIM)
    with pytest.raises(ValueError) as err:
        store.upsert(make_products(3), unit_vectors(3, DIM + 1), unit_vectors(3, DIM))
    assert str(err.value) == f"image_vectors must have shape (3, {DIM}), got (3, {DIM + 1})"


def test_upsert_without_text_vectors_on_a_hybrid_collection_is_refused(open_store, unit_vectors):
    store = open_store(dim=DIM)
    if not store.has_text_vector:
        pytest.skip("this server has no multi-vector collections (Milvus < 2.4)")
    with pytest.raises(ValueError) as err:
        store.upsert(make_products(2), unit_vectors(2, DIM))
    assert (
        str(err.value) == f"text_vectors is required: collection {store.collection!r} has a text_vector field"
    )


def test_search_with_wrong_dimension_names_the_argument(open_store, unit_vectors):
    store = open_store(dim=DIM)
    with pytest.raises(InvalidQueryError) as err:
        store.search(unit_vectors(1, 4)[0])
    assert str(err.value) == f"vector must have shape ({DIM},), got (4,)"


@pytest.mark.parametrize("k", [0, -1, 100_000, 2.5, True])
def test_search_with_bad_k_is_refused_before_any_call(store_backend, unit_vectors, k):
    with store_backend.open() as store, pytest.raises(InvalidQueryError) as err:
        store.search(unit_vectors(1, DIM)[0], k=k)
    assert str(err.value) == f"k must be an integer between 1 and {MAX_K}, got {k!r}"


def test_info_reports_encoder_count_and_mode(open_store, store_backend, unit_vectors):
    store = open_store(dim=DIM)
    store.upsert(make_products(4), unit_vectors(4, DIM), unit_vectors(4, DIM))
    info = store.info()
    assert (info["mode"], info["collection"], info["exists"]) == (
        store_backend.name,
        store_backend.collection,
        True,
    )
    assert (info["count"], info["encoder_id"], info["dim"]) == (4, "test-encoder/random-unit-vectors", DIM)


def test_flush_keeps_rows_searchable(open_store, unit_vectors):
    store = open_store(dim=DIM)
    vectors = unit_vectors(6, DIM)
    store.upsert(make_products(6), vectors, vectors)
    store.flush()
    assert store.count() == 6
    assert store.search(vectors[2], k=1)[0].id == "p2"
