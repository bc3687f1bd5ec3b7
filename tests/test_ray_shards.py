"""Shard planning for the Ray engine: shards together yield exactly the source's products and record errors,
with the same ids and `where` strings. Pure Python, no Ray cluster."""

from __future__ import annotations

import json

import pytest
from indexer_support import amazon_record

from mmsearch.indexer.sources import ImageFolderSource, JsonlSource, ParquetSource
from mmsearch.pipelines.ray_shards import JsonlRangeSource, ParquetRangeSource, plan_shards


def read_all(sources) -> tuple[list[tuple[str, str]], list[tuple[str, str, str]]]:
    products, errors = [], []
    for source in sources:
        for p in source.products(on_error=lambda *e: errors.append(e)):
            products.append((p.id, p.image))
    return products, errors


@pytest.fixture
def catalogue(tmp_path):
    lines = [
        json.dumps(amazon_record(f"B{i:04d}", [f"img/{i}_a.jpg", f"img/{i}_b.jpg"], title="t" * 50))
        for i in range(40)
    ]
    lines[7] = "{broken json"
    lines[21] = ""
    lines[30] = json.dumps({"title": "no asin"})
    path = tmp_path / "products.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_jsonl_byte_range_shards_yield_the_same_products_and_errors_as_the_whole_file(catalogue):
    shards = plan_shards(JsonlSource(catalogue), target_bytes=2000)
    assert len(shards) > 5 and all(isinstance(s, JsonlRangeSource) for s in shards)
    assert read_all(shards) == read_all([JsonlSource(catalogue)])


def test_jsonl_shard_errors_name_the_files_line(catalogue):
    _, errors = read_all(plan_shards(JsonlSource(catalogue), target_bytes=2000))
    assert [(where, reason) for _, where, reason in errors] == [
        (f"{catalogue}:8", "invalid JSON (Expecting property name enclosed in double quotes at column 2)"),
        (f"{catalogue}:31", "missing parent_asin"),
    ]


def test_small_file_or_a_limit_stays_one_shard(catalogue):
    assert len(plan_shards(JsonlSource(catalogue))) == 1
    limited = JsonlSource(catalogue, limit=5)
    assert plan_shards(limited, target_bytes=2000) == [limited]


def test_parquet_row_group_shards_yield_the_same_products_as_the_whole_file(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    records = [amazon_record(f"P{i:04d}", [f"/abs/{i}.jpg"]) for i in range(30)]
    for r in records:
        r.pop("details")
        r.pop("bought_together")
    path = tmp_path / "products.parquet"
    pq.write_table(pa.Table.from_pylist(records), path, row_group_size=4)
    shards = plan_shards(ParquetSource(path), target_bytes=1)
    assert len(shards) == 8 and all(isinstance(s, ParquetRangeSource) for s in shards)
    assert read_all(shards) == read_all([ParquetSource(path)])


def test_image_folder_shards_are_slices_of_the_sorted_file_list(tmp_path):
    for i in range(10):
        (tmp_path / f"{i:02d}.jpg").write_bytes(b"x")
    shards = plan_shards(ImageFolderSource(tmp_path), folder_shard=3)
    assert [len(s.files) for s in shards] == [3, 3, 3, 1]
    assert read_all(shards) == read_all([ImageFolderSource(tmp_path)])


def test_importing_mmsearch_and_its_index_entry_points_does_not_import_ray():
    import subprocess
    import sys

    code = (
        "import sys, mmsearch, mmsearch.cli, mmsearch.pipelines.index, mmsearch.pipelines.ray_engine; "
        "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
