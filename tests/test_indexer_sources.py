"""Data sources: Amazon-schema jsonl/parquet mapping, image folders, the bootcamp tarball, and located data errors."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from indexer_support import amazon_record, product_image_bytes, serve_images, write_catalog

from mmsearch.errors import DataSourceError
from mmsearch.indexer import bootcamp, sources
from mmsearch.indexer.records import MAX_ID_LENGTH, make_id, parse_price
from mmsearch.indexer.sources import HubSource, ImageFolderSource, JsonlSource, open_source


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def collect(source, errors: list | None = None):
    if errors is None:
        return list(source.products())
    return list(source.products(on_error=lambda *e: errors.append(e)))


def test_jsonl_record_maps_to_one_product_per_image(tmp_path):
    (tmp_path / "img").mkdir()
    record = amazon_record("B0TEST", ["img/a.jpg", "https://example.com/b.jpg"], title="  Blue  case ")
    products = collect(JsonlSource(write_jsonl(tmp_path / "products.jsonl", [record])))
    assert [p.id for p in products] == ["B0TEST:0", "B0TEST:1"]
    first = products[0]
    assert first.image == str((tmp_path / "img" / "a.jpg").resolve())
    assert products[1].image == "https://example.com/b.jpg"
    # stored verbatim: whitespace is normalised only for the model's input
    assert (first.title, first.main_category, first.parent_asin) == ("  Blue  case ", "Cell Phones", "B0TEST")
    assert (first.price, first.average_rating, first.rating_number) == (12.99, 4.2, 17)
    assert first.meta["store"] == "ACME"
    assert first.meta["details"] == {"Color": "Blue"}
    assert (first.meta["image_index"], first.meta["image_variant"]) == (0, "MAIN")


def test_ids_are_stable_across_reads(tmp_path):
    path = write_catalog(tmp_path, 4)
    assert [p.id for p in collect(JsonlSource(path))] == [p.id for p in collect(JsonlSource(path))]


def test_missing_parent_asin_names_file_and_line(tmp_path):
    path = write_jsonl(
        tmp_path / "products.jsonl", [amazon_record("B1", ["https://x/1.jpg"]), {"title": "no asin"}]
    )
    with pytest.raises(DataSourceError) as err:
        collect(JsonlSource(path))
    assert str(err.value) == f"{path}:2: missing parent_asin"


def test_bad_records_go_to_on_error_and_the_rest_is_read(tmp_path):
    path = write_jsonl(
        tmp_path / "products.jsonl",
        [
            amazon_record("B1", ["https://x/1.jpg"]),
            "{not json",
            "[1, 2]",
            amazon_record("B2", []),
            amazon_record("B3", ["https://x/3.jpg"]),
        ],
    )
    errors: list = []
    products = collect(JsonlSource(path), errors)
    assert [p.id for p in products] == ["B1:0", "B3:0"]
    assert [(where.rsplit(":", 1)[1], reason) for _, where, reason in errors] == [
        ("2", "invalid JSON (Expecting property name enclosed in double quotes at column 2)"),
        ("3", "expected a JSON object, got list"),
        ("4", "product 'B2' has no images"),
    ]


def test_image_entry_without_any_url_is_reported_with_its_id(tmp_path):
    record = amazon_record("B1", ["https://x/1.jpg", "https://x/2.jpg"])
    record["images"][1] = {"thumb": None, "large": "None", "hi_res": None, "variant": "PT01"}
    errors: list = []
    products = collect(JsonlSource(write_jsonl(tmp_path / "p.jsonl", [record])), errors)
    assert [p.id for p in products] == ["B1:0"]
    assert errors == [
        (
            "B1:1",
            f"{tmp_path / 'p.jsonl'}:1",
            "image 1 of 'B1' has no usable reference (large, hi_res, thumb)",
        )
    ]


def test_image_size_preference_is_large_then_hi_res_then_thumb(tmp_path):
    record = amazon_record("B1", [])
    record["images"] = [
        {"thumb": "https://x/t.jpg", "large": "https://x/l.jpg", "hi_res": "https://x/h.jpg"},
        {"thumb": "https://x/t.jpg", "large": None, "hi_res": "https://x/h.jpg"},
        {"thumb": "https://x/t.jpg", "large": None, "hi_res": None},
    ]
    products = collect(JsonlSource(write_jsonl(tmp_path / "p.jsonl", [record])))
    assert [p.image for p in products] == ["https://x/l.jpg", "https://x/h.jpg", "https://x/t.jpg"]


def test_hf_column_form_of_images_is_accepted(tmp_path):
    record = amazon_record("B1", [])
    record["images"] = {"large": ["https://x/1.jpg", "https://x/2.jpg"], "variant": ["MAIN", "PT01"]}
    products = collect(JsonlSource(write_jsonl(tmp_path / "p.jsonl", [record])))
    assert [(p.id, p.image, p.meta["image_variant"]) for p in products] == [
        ("B1:0", "https://x/1.jpg", "MAIN"),
        ("B1:1", "https://x/2.jpg", "PT01"),
    ]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (12.99, 12.99),
        ("$12.99", 12.99),
        ("1,299.00", 1299.0),
        ("from $5.49 - $9.99", 5.49),
        ("None", None),
        ("", None),
        ("—", None),
        (None, None),
        (-3, None),
        (float("nan"), None),
        (True, None),
    ],
)
def test_price_is_parsed_leniently(raw, expected):
    assert parse_price(raw) == expected


def test_unparsable_price_is_kept_in_meta(tmp_path):
    record = amazon_record("B1", ["https://x/1.jpg"], price="call for price")
    (product,) = collect(JsonlSource(write_jsonl(tmp_path / "p.jsonl", [record])))
    assert product.price is None
    assert product.meta["price_raw"] == "call for price"


def test_oversized_meta_drops_its_largest_fields(tmp_path):
    record = amazon_record("B1", ["https://x/1.jpg"], description=["x" * 20_000])
    (product,) = collect(JsonlSource(write_jsonl(tmp_path / "p.jsonl", [record])))
    assert "description" not in product.meta
    assert product.meta["_dropped"] == ["description"]
    assert product.meta["store"] == "ACME"


def test_limit_counts_images(tmp_path):
    path = write_catalog(tmp_path, 5, images_per_product=3)
    assert len(collect(JsonlSource(path, limit=7))) == 7


def test_max_images_per_product(tmp_path):
    path = write_catalog(tmp_path, 3, images_per_product=3)
    assert [p.id for p in collect(JsonlSource(path, max_images_per_product=1))] == [
        "B000000000:0",
        "B000000001:0",
        "B000000002:0",
    ]


def test_parquet_gives_the_same_products_as_jsonl(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = write_catalog(tmp_path, 3)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "products.parquet")
    from_parquet = collect(open_source(str(tmp_path / "products.parquet"), cache_dir=tmp_path))
    from_jsonl = collect(open_source(str(path), cache_dir=tmp_path))
    assert [(p.id, p.image, p.title, p.price) for p in from_parquet] == [
        (p.id, p.image, p.title, p.price) for p in from_jsonl
    ]


def test_gzipped_jsonl_is_read(tmp_path):
    import gzip

    path = write_catalog(tmp_path, 2)
    gz = tmp_path / "products.jsonl.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert [p.id for p in collect(open_source(str(gz), cache_dir=tmp_path))] == [
        p.id for p in collect(JsonlSource(path))
    ]


def test_image_folder_ids_are_relative_paths_in_sorted_order(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("b.jpg", "a.png", "sub/c.jpeg", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    source = ImageFolderSource(tmp_path)
    assert source.total == 3
    assert [p.id for p in collect(source)] == ["file:a.png", "file:b.jpg", "file:sub/c.jpeg"]


def test_empty_image_folder_is_an_error(tmp_path):
    with pytest.raises(DataSourceError, match=r"no image files found"):
        ImageFolderSource(tmp_path)


def test_overlong_id_is_hashed_under_the_limit():
    key = "k" * 1000
    pid = make_id("file", key)
    assert len(pid.encode()) <= MAX_ID_LENGTH
    assert pid == make_id("file", key)
    assert pid.startswith("file:sha1:")


def bootcamp_tarball(path: Path, n: int = 4) -> Path:
    """A tarball with the release asset's layout: images_folder/images/*.jpg plus images_folder/leopard.jpg."""
    with tarfile.open(path, "w:gz") as tar:
        members = {f"images_folder/images/{i:02d}XYZ._AC_.jpg": product_image_bytes(i) for i in range(n)}
        members["images_folder/leopard.jpg"] = product_image_bytes(100)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_bootcamp_tarball_yields_its_product_images_without_the_query_image(tmp_path):
    tarball = bootcamp_tarball(tmp_path / "amazon_reviews_2023_subset.tar.gz")
    source = open_source(f"bootcamp:{tarball}", cache_dir=tmp_path / "cache")
    products = collect(source)
    assert source.total == 4
    assert [p.id for p in products] == [f"bootcamp:{i:02d}XYZ._AC_.jpg" for i in range(4)]
    assert all(Path(p.image).is_file() for p in products)
    assert (products[0].title, products[0].main_category, products[0].price) == ("", "", None)


def test_bootcamp_ids_do_not_depend_on_how_the_subset_is_given(tmp_path):
    tarball = bootcamp_tarball(tmp_path / "amazon_reviews_2023_subset.tar.gz")
    from_tar = collect(open_source(str(tarball), cache_dir=tmp_path / "cache"))
    folder = Path(from_tar[0].image).parent.parent  # the extracted images_folder
    from_folder = collect(open_source(f"bootcamp:{folder}", cache_dir=tmp_path / "cache"))
    assert [p.id for p in from_tar] == [p.id for p in from_folder]


def test_bootcamp_download_happens_once(tmp_path, monkeypatch):
    data = bootcamp_tarball(tmp_path / "asset.tar.gz").read_bytes()
    with serve_images({"asset.tar.gz": data}) as srv:
        monkeypatch.setattr(bootcamp, "BOOTCAMP_URL", srv.url("img", "asset.tar.gz"))
        first = collect(open_source("bootcamp", cache_dir=tmp_path / "cache"))
        second = collect(open_source("bootcamp", cache_dir=tmp_path / "cache"))
        assert srv.hits == {"/img/asset.tar.gz": 1}
    assert len(first) == 4
    assert [p.id for p in first] == [p.id for p in second]


def test_bootcamp_download_failure_says_how_to_pass_a_local_copy(tmp_path, monkeypatch):
    with serve_images() as srv:
        monkeypatch.setattr(bootcamp, "BOOTCAMP_URL", srv.url("img", "gone.tar.gz"))
        with pytest.raises(DataSourceError, match=r"gone\.tar\.gz: HTTP 404 Not Found"):
            open_source("bootcamp", cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob("*.part"))


def test_tarball_with_escaping_path_is_refused(tmp_path):
    path = tmp_path / "evil.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("../escape.jpg")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(DataSourceError, match=r"unsafe path '\.\./escape\.jpg' in the tarball"):
        open_source(str(path), cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache" / "escape.jpg").exists()


def test_not_a_tarball_is_a_clear_error(tmp_path):
    path = tmp_path / "amazon_reviews_2023_subset.tar.gz"
    path.write_bytes(b"this is not gzip")
    with pytest.raises(DataSourceError, match=r"not a readable tarball"):
        open_source(str(path), cache_dir=tmp_path / "cache")


def test_unknown_source_path_lists_what_is_expected(tmp_path):
    with pytest.raises(DataSourceError) as err:
        open_source(str(tmp_path / "nothing.jsonl"), cache_dir=tmp_path)
    assert str(err.value).startswith(
        f"source '{tmp_path / 'nothing.jsonl'}': no such file or folder; expected"
    )


def test_unknown_hub_category_suggests_the_right_spelling():
    with pytest.raises(
        DataSourceError,
        match=r"unknown Amazon Reviews 2023 category 'electronics'; did you mean 'Electronics'\?",
    ):
        HubSource("electronics")


def test_hub_unreachable_is_a_one_line_error_with_the_local_alternative(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr("huggingface_hub.hf_hub_download", offline)
    source = open_source("hub:Cell_Phones_and_Accessories", cache_dir=Path("."))
    with pytest.raises(DataSourceError) as err:
        source.prepare()
    message = str(err.value)
    assert message.startswith(
        f"hf://datasets/{sources.HUB_REPO}/raw/meta_categories/meta_Cell_Phones_and_Accessories.jsonl: "
        "cannot download (OSError: Network is unreachable)"
    )
    assert "pass its local path as --source" in message
    assert "\n" not in message


class _FakeHubFS:
    """Stands in for `huggingface_hub.HfFileSystem`: serves one jsonl and records what was opened."""

    opened: list[str] = []
    data = b""

    def open(self, path, mode="rb", block_size=None):
        self.opened.append(path)
        return io.BytesIO(self.data)


def test_hub_source_with_a_limit_streams_the_category_file_and_stops_early(monkeypatch):
    records = [amazon_record(f"B{i}", [f"https://x/{i}_{j}.jpg" for j in range(3)]) for i in range(50)]
    records.insert(1, {"title": "no asin"})
    _FakeHubFS.data = "".join(json.dumps(r) + "\n" for r in records).encode()
    _FakeHubFS.opened = []
    monkeypatch.setattr("huggingface_hub.HfFileSystem", _FakeHubFS)
    errors: list = []
    products = collect(open_source("hub:Electronics", cache_dir=Path("."), limit=4), errors)
    assert _FakeHubFS.opened == [f"datasets/{sources.HUB_REPO}/raw/meta_categories/meta_Electronics.jsonl"]
    assert [p.id for p in products] == ["B0:0", "B0:1", "B0:2", "B1:0"]
    assert products[0].image == "https://x/0_0.jpg"
    assert errors == [
        (
            "",
            f"hf://datasets/{sources.HUB_REPO}/raw/meta_categories/meta_Electronics.jsonl:2",
            "missing parent_asin",
        )
    ]
