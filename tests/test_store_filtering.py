"""Filtered search against real Milvus (Lite and a loopback server) over one shared catalogue per backend.

Each group of rows has its own category, so every test can tell exactly which rows a filter let through,
and hostile values sit next to rows that would match if the value escaped its string literal.
"""

from __future__ import annotations

import numpy as np
import pytest

import mmsearch.store.milvus as store_module
from mmsearch.store import ProductFilter
from mmsearch.types import Product

DIM = 8

HOSTILE = [
    '" or 1==1 or main_category == "',
    '") or (main_category != "',
    "' or 1==1 or '",
    "A\\",
    'A\\" or main_category != "',
    "A\nor 1==1",
    "A\r\n) or (1==1",
    "Électronique 漢字 🎉",
    "A') || ('1'=='1",
    'main_category != ""',
]

# (id, category, price, rating)
ROWS = (
    [(f"a{i}", "A", 1.0, 4.0) for i in range(4)]
    + [(f"b{i}", "B", 1.0, 4.0) for i in range(6)]
    + [("empty", "", 1.0, 4.0)]
    + [("cheap", "prices", 5.0, 4.0), ("edge_lo", "prices", 19.99, 4.0), ("mid", "prices", 25.0, 4.0),
       ("edge_hi", "prices", 30.01, 4.0), ("dear", "prices", 99.0, 4.0), ("unknown", "prices", None, 4.0)]
    + [("low", "ratings", 1.0, 3.9), ("ok", "ratings", 1.0, 4.0), ("top", "ratings", 5.0, 5.0),
       ("unrated", "ratings", 1.0, None)]
    + [(f"hostile{n}", value, 1.0, 4.0) for n, value in enumerate(HOSTILE)]
)  # fmt: skip


@pytest.fixture(scope="module")
def catalogue(module_store_backend, unit_vectors):
    """(store, query vector near every row) over ROWS; the query ranks the whole catalogue within k=100."""
    store = module_store_backend.open()
    store.ensure_collection(encoder_id="test-encoder", dim=DIM)
    vectors = unit_vectors(len(ROWS), DIM)
    products = [Product(id=i, image="x", main_category=c, price=p, average_rating=r) for i, c, p, r in ROWS]
    store.upsert(products, vectors, vectors)
    centre = vectors.mean(axis=0)
    yield store, centre / np.linalg.norm(centre)
    store.close()


def ids_for(catalogue, **conditions) -> list[str]:
    store, query = catalogue
    return sorted(h.id for h in store.search(query, k=100, filters=ProductFilter(**conditions)))


def test_unfiltered_search_sees_the_whole_catalogue(catalogue):
    store, query = catalogue
    assert len(store.search(query, k=100)) == len(ROWS)


def test_category_filter_returns_only_that_category(catalogue):
    assert ids_for(catalogue, category="A") == ["a0", "a1", "a2", "a3"]


def test_price_range_includes_both_boundaries(catalogue):
    assert ids_for(catalogue, category="prices", min_price=19.99, max_price=30.01) == [
        "edge_hi",
        "edge_lo",
        "mid",
    ]


def test_price_ceiling_excludes_unknown_prices(catalogue):
    assert ids_for(catalogue, category="prices", max_price=10) == ["cheap"]


def test_price_floor_excludes_unknown_prices(catalogue):
    assert ids_for(catalogue, category="prices", min_price=0) == [
        "cheap",
        "dear",
        "edge_hi",
        "edge_lo",
        "mid",
    ]


def test_min_rating_excludes_lower_and_unknown_ratings(catalogue):
    assert ids_for(catalogue, category="ratings", min_rating=4) == ["ok", "top"]


def test_conditions_are_anded(catalogue):
    assert ids_for(catalogue, category="ratings", min_rating=4, min_price=2) == ["top"]


def test_ids_filter_restricts_to_the_listed_ids(catalogue):
    assert ids_for(catalogue, ids=["a1", "b2", "nope"]) == ["a1", "b2"]


@pytest.mark.parametrize("n", range(len(HOSTILE)), ids=[repr(h) for h in HOSTILE])
def test_hostile_category_neither_breaks_nor_widens_the_query(catalogue, n):
    """Rows "A", "B" and "" would match if the value escaped its literal; only the row holding it may come back."""
    assert ids_for(catalogue, category=HOSTILE[n]) == [f"hostile{n}"]


@pytest.mark.parametrize("n", range(len(HOSTILE)), ids=[repr(h) for h in HOSTILE])
def test_hostile_category_prefix_matches_nothing(catalogue, n):
    assert ids_for(catalogue, category=HOSTILE[n] + "x") == []


def test_hostile_category_is_also_safe_in_hybrid_search(catalogue, module_store_backend):
    module_store_backend.skip_without_hybrid()
    store, query = catalogue
    hits = store.hybrid_search(query, query, k=100, filters=ProductFilter(category=HOSTILE[0]))
    assert [h.id for h in hits] == ["hostile0"]


@pytest.mark.parametrize("n", range(len(HOSTILE)), ids=[repr(h) for h in HOSTILE])
def test_hostile_category_is_safe_in_filtered_ann_search(catalogue, monkeypatch, n):
    """On Lite, small filtered sets are scored exactly; force Milvus' own filtered ANN search here too."""
    monkeypatch.setattr(store_module, "EXACT_FILTER_MAX_ROWS", 0)
    assert ids_for(catalogue, category=HOSTILE[n]) == [f"hostile{n}"]


def test_price_range_in_filtered_ann_search(catalogue, monkeypatch):
    monkeypatch.setattr(store_module, "EXACT_FILTER_MAX_ROWS", 0)
    assert ids_for(catalogue, category="prices", min_price=19.99, max_price=30.01) == [
        "edge_hi",
        "edge_lo",
        "mid",
    ]


def test_exact_filtered_scores_equal_cosine_similarity(catalogue, unit_vectors):
    store, query = catalogue
    vectors = unit_vectors(len(ROWS), DIM)
    hits = store.search(query, k=4, filters=ProductFilter(category="A"))
    expected = {f"a{i}": float(vectors[i] @ query) for i in range(4)}
    assert [h.id for h in hits] == sorted(expected, key=expected.get, reverse=True)
    for h in hits:
        assert h.score == pytest.approx(expected[h.id], abs=1e-5)
