"""`mmsearch index` through the real CLI entry point, in smoke mode (tiny random weights) on Milvus Lite."""

from __future__ import annotations

import pytest
from indexer_support import write_catalog

from mmsearch.cli import main
from mmsearch.store import ProductStore


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")  # the tiny smoke checkpoint is built once for the module


@pytest.fixture
def cache_env(shared_cache, monkeypatch):
    monkeypatch.setenv("MMSEARCH_CACHE_DIR", str(shared_cache))
    return shared_cache


def index_args(tmp_path, source: str, *extra: str) -> list[str]:
    return [
        "index",
        "--smoke",
        "--source",
        source,
        "--milvus-uri",
        str(tmp_path / "milvus.db"),
        "--collection",
        "products",
        "--failure-log",
        str(tmp_path / "failures.jsonl"),
        *extra,
    ]


def test_index_prints_a_one_line_summary_marked_as_smoke(tmp_path, cache_env, capsys):
    catalog = write_catalog(tmp_path / "data", 3, images_per_product=2)
    assert main(index_args(tmp_path, str(catalog), "--limit", "5", "--batch-size", "2")) == 0
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(
        "[SMOKE: tiny random-weight models, not search quality] indexed 5, skipped 0 (already present), failed 0 in "
    )
    assert "SMOKE MODE" in err
    with ProductStore(str(tmp_path / "milvus.db"), collection="products") as store:
        assert store.count() == 5


def test_max_images_per_product_option(tmp_path, cache_env, capsys):
    catalog = write_catalog(tmp_path / "data", 3, images_per_product=2)
    assert main(index_args(tmp_path, str(catalog), "--max-images-per-product", "1")) == 0
    assert "indexed 3," in capsys.readouterr().out


def test_missing_source_is_one_line_on_stderr_and_exit_2(tmp_path, cache_env, capsys):
    missing = tmp_path / "nope.jsonl"
    assert main(index_args(tmp_path, str(missing))) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.strip().splitlines() == [
        f"mmsearch index: error: source '{missing}': no such file or folder; expected 'bootcamp', "
        "'bootcamp:<tarball or folder>', 'hub:<Category>', or a path to a .jsonl, .jsonl.gz or .parquet file, "
        "an image folder or a .tar.gz of images"
    ]
