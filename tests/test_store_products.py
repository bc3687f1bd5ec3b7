"""Issue 13 in the store: BM25 title search fused with the dense vector (`lexical_search`), one slot per product
(`one_per_product`) and category facets, on Milvus Lite and on the loopback server (BM25 needs >= 2.5, so those
tests skip on 2.3.5)."""

from __future__ import annotations

import pytest

from mmsearch.errors import FeatureUnavailableError, UnknownCategoryError
from mmsearch.store import ProductFilter
from mmsearch.store.facets import closest_categories
from mmsearch.types import Product

DIM = 8
TITLES = [
    "OtterBox Defender case for iPhone 15",
    "Leopard print phone case",
    "Samsung Galaxy S23 fast charger",
    "Anker USB-C cable 2 m",
    "Ceramic cat mug",
    "Stainless steel kettle",
]


def catalogue(images_per_product: int = 1) -> list[Product]:
    """One product per title, each with `images_per_product` images (rows) sharing its parent_asin."""
    return [
        Product(
            id=f"B{i}:{j}",
            image=f"{i}-{j}.jpg",
            title=title,
            main_category="Cell Phones" if i < 4 else "Home",
            parent_asin=f"B{i}",
        )
        for i, title in enumerate(TITLES)
        for j in range(images_per_product)
    ]


def test_lexical_search_finds_the_brand_the_dense_vector_misses(open_store, store_backend, unit_vectors):
    store_backend.skip_without_bm25()
    store = open_store(dim=DIM)
    products = catalogue()
    images = unit_vectors(len(products), DIM)
    store.upsert(products, images, unit_vectors(len(products), DIM, seed=1))
    # The dense query is the kettle's own image; only the title words point at the OtterBox case.
    dense_only = store.search(images[5], k=1)
    fused = store.lexical_search(images[5], "otterbox iphone", k=2, ranker="weighted", weights=(0.3, 0.7))
    assert dense_only[0].id == "B5:0"
    assert fused[0].id == "B0:0", [h.id for h in fused]


def test_lexical_search_rrf_keeps_both_sides(open_store, store_backend, unit_vectors):
    store_backend.skip_without_bm25()
    store = open_store(dim=DIM)
    products = catalogue()
    images = unit_vectors(len(products), DIM)
    store.upsert(products, images, unit_vectors(len(products), DIM, seed=1))
    ids = [h.id for h in store.lexical_search(images[5], "anker cable", k=3, ranker="rrf")]
    assert {"B5:0", "B3:0"} <= set(ids)


def test_lexical_search_honours_filters(open_store, store_backend, unit_vectors):
    store_backend.skip_without_bm25()
    store = open_store(dim=DIM)
    products = catalogue()
    images = unit_vectors(len(products), DIM)
    store.upsert(products, images, unit_vectors(len(products), DIM, seed=1))
    hits = store.lexical_search(images[0], "otterbox", k=6, filters=ProductFilter(category="Home"))
    assert hits and {h.main_category for h in hits} == {"Home"}


def test_lexical_search_needs_text(open_store, store_backend, unit_vectors):
    store_backend.skip_without_bm25()
    store = open_store(dim=DIM)
    with pytest.raises(Exception, match="lexical search needs one non-empty text per query vector"):
        store.lexical_search(unit_vectors(1, DIM)[0], "  ")


def test_server_without_bm25_says_which_version_is_needed(open_store, store_backend, unit_vectors):
    if store_backend.supports_bm25:
        pytest.skip("only Milvus < 2.5 servers lack BM25 functions")
    store = open_store(dim=DIM)
    assert store.info()["bm25"] is False
    with pytest.raises(
        FeatureUnavailableError, match=r"BM25 title search \(mode hybrid-bm25\) needs Milvus >= 2.5"
    ):
        store.lexical_search(unit_vectors(1, DIM)[0], "otterbox")


def test_collection_without_the_bm25_field_says_how_to_reindex(store_backend, unit_vectors):
    """A collection indexed before issue 13 (no title_sparse) gets an error that says to re-index."""
    from mmsearch.store.schema import EncoderStamp, build_schema

    stamp = EncoderStamp("test-encoder", DIM, text_vector=False)
    with store_backend.open() as store:
        client = store._client  # the store's own connection: Milvus Lite allows one per database
        index = client.prepare_index_params()
        index.add_index(field_name="image_vector", index_type="FLAT", metric_type="COSINE")
        client.create_collection(
            store_backend.collection,
            schema=build_schema(DIM, with_text_vector=False, description=stamp.description()),
            index_params=index,
            properties=stamp.properties(),
            consistency_level="Strong",
        )
        with pytest.raises(FeatureUnavailableError) as err:
            store.lexical_search(unit_vectors(1, DIM)[0], "otterbox")
    if store_backend.supports_bm25:
        assert "has no BM25 title field (title_sparse)" in str(err.value)
        assert "run `mmsearch index` again" in str(err.value)


@pytest.mark.parametrize("kind", ["search", "hybrid", "lexical"])
def test_one_per_product_gives_k_distinct_products_with_their_best_image(
    open_store, store_backend, unit_vectors, kind
):
    if kind == "hybrid":
        store_backend.skip_without_hybrid()
    if kind == "lexical":
        store_backend.skip_without_bm25()
    store = open_store(dim=DIM)
    products = catalogue(images_per_product=4)
    images = unit_vectors(len(products), DIM)
    texts = unit_vectors(len(products), DIM, seed=1)
    store.upsert(products, images, texts)
    query = images[9]  # product B2, image 1
    if kind == "search":
        plain = store.search(query, k=4)
        grouped = store.search(query, k=4, one_per_product=True)
    elif kind == "hybrid":
        plain = store.hybrid_search(query, texts[9], k=4)
        grouped = store.hybrid_search(query, texts[9], k=4, one_per_product=True)
    else:
        plain = store.lexical_search(query, "charger case mug", k=4)
        grouped = store.lexical_search(query, "charger case mug", k=4, one_per_product=True)
    keys = [h.parent_asin for h in grouped]
    assert len(keys) == 4 and len(set(keys)) == 4, f"one slot per product: {keys}"
    best = {}
    for hit in plain:
        best.setdefault(hit.parent_asin, hit.id)
    if kind == "search":
        assert grouped[0].id == "B2:1", "the product's best-scoring image fills its slot"
    scores = {h.id: h.score for h in plain}
    for hit in grouped:
        if hit.parent_asin in best:
            assert hit.id == best[hit.parent_asin], "a product's slot shows its best image"
            if kind == "search":  # fused scores depend on each route's fetch depth, which grouping deepens
                assert hit.score == pytest.approx(scores[hit.id], abs=1e-5), "grouping must not change scores"


def test_one_per_product_without_group_by_over_fetches_until_k_products(
    open_store, store_backend, unit_vectors
):
    """The dedupe path (servers < 2.4, old collections): many images per product still give k products."""
    store = open_store(dim=DIM)
    products = catalogue(images_per_product=12)
    images = unit_vectors(len(products), DIM)
    store.upsert(products, images, unit_vectors(len(products), DIM, seed=1))
    store._group_by = lambda stamp, hybrid: False  # force the over-fetch path on any backend
    hits = store.search(images[0], k=6, one_per_product=True)
    assert sorted(h.parent_asin for h in hits) == [f"B{i}" for i in range(6)]


def test_images_without_parent_asin_are_each_their_own_product(open_store, unit_vectors):
    store = open_store(dim=DIM)
    products = [Product(id=f"file:{i}.jpg", image=f"{i}.jpg") for i in range(5)]
    images = unit_vectors(5, DIM)
    store.upsert(products, images, images)
    assert len(store.search(images[0], k=5, one_per_product=True)) == 5


def test_categories_counts_images_per_category_most_first(open_store, unit_vectors):
    store = open_store(dim=DIM)
    products = catalogue(images_per_product=2) + [Product(id="nocat", image="x.jpg")]
    store.upsert(products, unit_vectors(len(products), DIM), unit_vectors(len(products), DIM, seed=1))
    assert store.categories() == {"Cell Phones": 8, "Home": 4}


def test_categories_see_this_stores_own_writes(open_store, unit_vectors):
    store = open_store(dim=DIM)
    store.upsert(catalogue()[:1], unit_vectors(1, DIM), unit_vectors(1, DIM, seed=1))
    assert store.categories() == {"Cell Phones": 1}
    more = [Product(id="k1", image="k.jpg", main_category="Appliances")]
    store.upsert(more, unit_vectors(1, DIM, seed=2), unit_vectors(1, DIM, seed=3))
    assert store.categories() == {"Appliances": 1, "Cell Phones": 1}


@pytest.mark.parametrize(
    ("asked", "suggested"),
    [("cell phones", ["Cell Phones"]), ("Cell Phone", ["Cell Phones"]), ("Hom", ["Home"])],
)
def test_unknown_category_suggests_the_closest_names(open_store, unit_vectors, asked, suggested):
    store = open_store(dim=DIM)
    products = catalogue()
    store.upsert(products, unit_vectors(len(products), DIM), unit_vectors(len(products), DIM, seed=1))
    with pytest.raises(UnknownCategoryError) as err:
        store.check_category(asked)
    assert err.value.suggestions == suggested
    assert str(err.value) == (
        f"unknown category {asked!r} (categories match exactly); did you mean {suggested[0]!r}? "
        "List them with `mmsearch categories` or GET /categories."
    )


def test_a_known_category_passes_the_check(open_store, unit_vectors):
    store = open_store(dim=DIM)
    store.upsert(catalogue(), unit_vectors(6, DIM), unit_vectors(6, DIM, seed=1))
    store.check_category("Home")  # no error: matching stays exact


def test_closest_categories_without_any_match_is_empty():
    assert closest_categories("Furniture", ["Cell Phones", "Home"]) == []
