"""Query-set loaders: our jsonl format, CIRR and FashionIQ (small fixtures in their published layouts), the synthetic set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eval_support import CIRR_NAMES, FIQ_NAMES, make_cirr, make_fashioniq, png

from mmsearch.errors import DataSourceError
from mmsearch.evaluation.datasets import (
    GalleryItem,
    load_cirr,
    load_fashioniq,
    load_queries_jsonl,
    write_gallery_jsonl,
)
from mmsearch.evaluation.synthetic import generate_synthetic_set
from mmsearch.indexer.sources import open_source


def _lines(path: Path, *records) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


# -- our jsonl format -------------------------------------------------------------------------------------------


def test_jsonl_reads_graded_and_listed_relevance_with_relative_images(tmp_path):
    png(tmp_path / "q" / "a.png")
    path = _lines(
        tmp_path / "queries.jsonl",
        {"id": "one", "image": "q/a.png", "instruction": " a mug like this ", "relevant": {"P1": 2, "P2": 1}},
        {"instruction": "red shirt", "relevant": ["P3", "P4"], "exclude": ["P9"]},
    )
    qs = load_queries_jsonl(path).queries
    assert [q.id for q in qs] == ["one", "queries.jsonl:2"]
    assert qs[0].image == str((tmp_path / "q" / "a.png").resolve())
    assert qs[0].instruction == "a mug like this"
    assert qs[0].relevance == {"P1": 2.0, "P2": 1.0}
    assert qs[1].image is None
    assert qs[1].relevance == {"P3": 1.0, "P4": 1.0}
    assert qs[1].exclude == ("P9",)


def test_jsonl_limit_keeps_the_first_queries(tmp_path):
    path = _lines(tmp_path / "q.jsonl", *({"instruction": f"t{i}", "relevant": ["x"]} for i in range(5)))
    assert [q.instruction for q in load_queries_jsonl(path, limit=2).queries] == ["t0", "t1"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "invalid JSON"),
        ({"instruction": "x"}, "missing 'relevant'"),
        ({"instruction": "x", "relevant": {"P1": 0}}, "grade of 'P1' must be a number > 0, got 0"),
        ({"instruction": "x", "relevant": []}, "'relevant' is empty"),
        (
            {"instruction": "x", "relevant": "P1"},
            "'relevant' must be a list of ids or an object id -> grade, got str",
        ),
        ({"relevant": ["P1"]}, "a query needs an 'image', an 'instruction', or both; got neither"),
        ({"image": "nope.png", "relevant": ["P1"]}, "nope.png not found"),
        ({"instruction": "x", "relevant": ["P1"], "colour": "red"}, "unknown keys ['colour']"),
        ([1, 2], "expected a JSON object, got list"),
    ],
)
def test_jsonl_errors_name_file_and_line(tmp_path, line, message):
    path = _lines(tmp_path / "bad.jsonl", {"instruction": "fine", "relevant": ["P0"]}, line)
    with pytest.raises(DataSourceError) as err:
        load_queries_jsonl(path)
    assert str(err.value).startswith(f"{path}:2: ")
    assert message in str(err.value)


def test_jsonl_duplicate_ids_are_refused(tmp_path):
    path = _lines(
        tmp_path / "d.jsonl",
        {"id": "a", "instruction": "x", "relevant": ["P"]},
        {"id": "a", "instruction": "y", "relevant": ["P"]},
    )
    with pytest.raises(DataSourceError, match=rf"{path}:2: duplicate query id 'a' \(first at {path}:1\)"):
        load_queries_jsonl(path)


def test_jsonl_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(DataSourceError, match=f"query file {tmp_path / 'none.jsonl'} not found"):
        load_queries_jsonl(tmp_path / "none.jsonl")


def test_jsonl_empty_file_is_refused(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    with pytest.raises(DataSourceError, match="no queries"):
        load_queries_jsonl(path)


# -- CIRR -------------------------------------------------------------------------------------------------------


def test_cirr_loads_queries_targets_and_gallery(tmp_path):
    captions = make_cirr(tmp_path / "cirr")
    es = load_cirr(captions)
    q = es.queries[0]
    assert q.id == "cirr:11"
    assert q.instruction == "make the dog sit on a red sofa"
    assert q.image == str((tmp_path / "cirr" / "img_raw" / "dev" / "dev-1-0-img0.png").resolve())
    assert q.relevance == {"dev-2-3-img0": 1.0}
    assert q.exclude == ("dev-1-0-img0",)
    assert [g.id for g in es.gallery] == CIRR_NAMES
    assert all(Path(g.image).is_file() for g in es.gallery)


def test_cirr_images_root_and_split_can_be_given(tmp_path):
    captions = make_cirr(tmp_path / "cirr")
    moved = tmp_path / "elsewhere"
    (tmp_path / "cirr" / "img_raw").rename(moved)
    es = load_cirr(
        captions, images_root=moved, splits=tmp_path / "cirr" / "image_splits" / "split.rc2.val.json"
    )
    assert es.queries[1].image == str((moved / "dev" / "dev-7-1-img1.png").resolve())


def test_cirr_test_split_without_targets_is_explained(tmp_path):
    captions = make_cirr(tmp_path / "cirr", [{"pairid": 5, "reference": "dev-1-0-img0", "caption": "x"}])
    with pytest.raises(DataSourceError) as err:
        load_cirr(captions)
    assert str(err.value) == (
        f"{captions}: entry 0 (pairid 5): missing or empty 'target_hard' "
        "(the CIRR test split has no public targets; use the val split)"
    )


def test_cirr_unknown_reference_image_is_named(tmp_path):
    entry = {"pairid": 6, "reference": "dev-9-9-img0", "target_hard": "dev-1-0-img1", "caption": "x"}
    captions = make_cirr(tmp_path / "cirr", [entry])
    with pytest.raises(
        DataSourceError,
        match=r"entry 0 \(pairid 6\): reference image 'dev-9-9-img0' is not in .*split.rc2.val.json",
    ):
        load_cirr(captions)


def test_cirr_missing_images_folder_points_to_the_option(tmp_path):
    captions = make_cirr(tmp_path / "cirr", with_images=False)
    with pytest.raises(
        DataSourceError, match=r"CIRR images folder .*img_raw does not exist; .* with --images"
    ):
        load_cirr(captions)


def test_cirr_missing_gallery_images_are_counted(tmp_path):
    captions = make_cirr(tmp_path / "cirr")
    (tmp_path / "cirr" / "img_raw" / "dev" / "dev-7-1-img1.png").unlink()
    with pytest.raises(
        DataSourceError, match=r"1 of 4 gallery images are missing under .* \(first: .*dev-7-1-img1.png\)"
    ):
        load_cirr(captions)


def test_cirr_invalid_json_names_the_line(tmp_path):
    captions = make_cirr(tmp_path / "cirr")
    captions.write_text('[\n  {"pairid": 1,\n   "reference" "x"}\n]')
    with pytest.raises(DataSourceError, match=rf"{captions}:3: invalid JSON"):
        load_cirr(captions)


def test_cirr_split_must_map_names_to_paths(tmp_path):
    captions = make_cirr(tmp_path / "cirr")
    (tmp_path / "cirr" / "image_splits" / "split.rc2.val.json").write_text(json.dumps(CIRR_NAMES))
    with pytest.raises(DataSourceError, match="expected a JSON object mapping image names to relative paths"):
        load_cirr(captions)


# -- FashionIQ --------------------------------------------------------------------------------------------------


def test_fashioniq_joins_captions_and_finds_png_or_jpg(tmp_path):
    es = load_fashioniq(make_fashioniq(tmp_path / "fiq"))
    assert [q.instruction for q in es.queries] == ["is black and shorter and has no sleeves", "is green"]
    assert es.queries[0].relevance == {"B00B2": 1.0}
    assert es.queries[0].exclude == ()
    assert es.queries[1].image.endswith("B00B2.jpg")
    assert [g.id for g in es.gallery] == FIQ_NAMES
    assert {g.main_category for g in es.gallery} == {"fashioniq/dress"}


def test_fashioniq_target_outside_the_split_is_named(tmp_path):
    captions = make_fashioniq(
        tmp_path / "fiq", [{"target": "B0ZZZ", "candidate": "B00A1", "captions": ["a", "b"]}]
    )
    with pytest.raises(
        DataSourceError, match=r"entry 0: target image 'B0ZZZ' is not in .*split.dress.val.json"
    ):
        load_fashioniq(captions)


def test_fashioniq_captions_must_be_a_list_of_strings(tmp_path):
    captions = make_fashioniq(
        tmp_path / "fiq", [{"target": "B00B2", "candidate": "B00A1", "captions": "short"}]
    )
    with pytest.raises(DataSourceError, match="entry 0: 'captions' must be a list of strings, got 'short'"):
        load_fashioniq(captions)


def test_fashioniq_test_split_without_target_is_explained(tmp_path):
    captions = make_fashioniq(tmp_path / "fiq", [{"candidate": "B00A1", "captions": ["a", "b"]}])
    with pytest.raises(
        DataSourceError,
        match="missing or empty 'target' \\(the FashionIQ test split has no public targets\\)",
    ):
        load_fashioniq(captions)


def test_fashioniq_missing_captions_file_is_named(tmp_path):
    with pytest.raises(
        DataSourceError, match=f"FashionIQ captions file {tmp_path / 'cap.dress.val.json'} not found"
    ):
        load_fashioniq(tmp_path / "cap.dress.val.json", images_dir=tmp_path, splits=tmp_path / "s.json")


# -- gallery files and the synthetic set ------------------------------------------------------------------------


def test_gallery_jsonl_is_read_by_the_indexer_as_one_product_per_image(tmp_path):
    img = png(tmp_path / "img" / "x.png")
    path = write_gallery_jsonl(
        [GalleryItem("dev-1", str(img), title="a dog", main_category="cirr")], tmp_path / "g.jsonl"
    )
    products = list(open_source(str(path), cache_dir=tmp_path / "cache"))
    assert [(p.id, p.parent_asin, p.title, p.main_category) for p in products] == [
        ("dev-1:0", "dev-1", "a dog", "cirr")
    ]
    assert products[0].image == str(img.resolve())


def test_synthetic_set_is_deterministic_by_seed(tmp_path):
    a = generate_synthetic_set(tmp_path / "a", n_products=12, n_queries=4, seed=3)
    b = generate_synthetic_set(tmp_path / "b", n_products=12, n_queries=4, seed=3)
    assert [q.relevance for q in a.eval_set.queries] == [q.relevance for q in b.eval_set.queries]
    assert [q.instruction for q in a.eval_set.queries] == [q.instruction for q in b.eval_set.queries]
    for pa, pb in zip(a.products, b.products, strict=True):
        assert Path(pa.image).read_bytes() == Path(pb.image).read_bytes()
    assert Path(a.eval_set.queries[0].image).read_bytes() == Path(b.eval_set.queries[0].image).read_bytes()


def test_synthetic_seed_changes_the_set(tmp_path):
    a = generate_synthetic_set(tmp_path / "a", n_products=12, n_queries=4, seed=0)
    b = generate_synthetic_set(tmp_path / "b", n_products=12, n_queries=4, seed=1)
    assert [p.parent_asin for p in a.products] != [p.parent_asin for p in b.products]
    assert Path(a.products[0].image).read_bytes() != Path(b.products[0].image).read_bytes()


def test_synthetic_product_does_not_depend_on_set_size(tmp_path):
    small = generate_synthetic_set(tmp_path / "s", n_products=5, n_queries=2)
    large = generate_synthetic_set(tmp_path / "l", n_products=30, n_queries=2)
    for ps, pl in zip(small.products, large.products[:5], strict=True):
        assert (ps.parent_asin, ps.title) == (pl.parent_asin, pl.title)
        assert Path(ps.image).read_bytes() == Path(pl.image).read_bytes()


def test_synthetic_relevance_follows_type_pattern_and_colour(tmp_path):
    syn = generate_synthetic_set(tmp_path / "s", n_products=60, n_queries=20)
    by_asin = {p.parent_asin: p for p in syn.products}
    for q in syn.eval_set.queries:
        top = [by_asin[a] for a, g in q.relevance.items() if g == 2]
        assert top, f"query {q.id} has no grade-2 product"
        looks = {(p.pattern, p.colour) for p in top}
        assert len(looks) == 1
        assert all(p.product_type in q.instruction for p in top)
        for asin, g in q.relevance.items():
            p = by_asin[asin]
            assert (p.pattern, p.colour) in looks
            assert (g == 2) == (p.product_type in q.instruction)
        unlabelled = [p for a, p in by_asin.items() if a not in q.relevance]
        assert all((p.pattern, p.colour) not in looks for p in unlabelled)


def test_synthetic_files_are_readable_by_the_indexer_and_the_query_loader(tmp_path):
    syn = generate_synthetic_set(tmp_path / "s", n_products=8, n_queries=3)
    products = list(open_source(str(syn.products_jsonl), cache_dir=tmp_path / "cache"))
    assert [p.parent_asin for p in products] == [p.parent_asin for p in syn.products]
    assert all(p.title and p.main_category and p.price is not None for p in products)
    assert all(Path(p.image).is_file() for p in products)
    assert load_queries_jsonl(syn.queries_jsonl).queries == syn.eval_set.queries


def test_synthetic_refuses_zero_products(tmp_path):
    with pytest.raises(ValueError, match="n_products must be an integer >= 1, got 0"):
        generate_synthetic_set(tmp_path, n_products=0)


def test_synthetic_titles_carry_brands_that_every_other_query_names(tmp_path):
    """Issue 13: brand and model words live in titles only, so lexical fusion has something to find."""
    syn = generate_synthetic_set(tmp_path / "syn", n_products=30, n_queries=6, seed=3)
    by_asin = {p.parent_asin: p for p in syn.products}
    assert all(p.brand and p.brand in p.title for p in syn.products)
    assert all(p.model in p.title if p.product_type == "phone case" else not p.model for p in syn.products)
    assert all(p.model for p in syn.products if p.product_type == "phone case")
    branded = syn.eval_set.queries[1::2]
    assert branded and all(" from " in q.instruction for q in branded)
    for q in branded:
        exact = [by_asin[a] for a, g in q.relevance.items() if g == 2]
        assert exact, f"{q.id}: the named product must be in the gallery"
        for p in exact:
            assert f"from {p.brand}" in q.instruction and (not p.model or f"for {p.model}" in q.instruction)
    assert all(" from " not in q.instruction for q in syn.eval_set.queries[0::2])
