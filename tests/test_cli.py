"""`mmsearch` as a user runs it: index then search in smoke mode on Milvus Lite, and one-line errors for mistakes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from indexer_support import write_catalog

from mmsearch.cli import main


@pytest.fixture(scope="module")
def smoke_env(tmp_path_factory):
    """A catalog indexed through `mmsearch index --smoke`; returns (common argv, data dir, cache dir)."""
    root = tmp_path_factory.mktemp("cli")
    catalog = write_catalog(root / "data", 4, images_per_product=1)
    common = ["--smoke", "--milvus-uri", str(root / "milvus.db"), "--collection", "cli_products"]
    return common, catalog, root / "cache"


@pytest.fixture(autouse=True)
def _cache(smoke_env, monkeypatch):
    monkeypatch.setenv("MMSEARCH_CACHE_DIR", str(smoke_env[2]))


@pytest.fixture(scope="module")
def indexed(smoke_env):
    common, catalog, cache = smoke_env
    mp = pytest.MonkeyPatch()
    mp.setenv("MMSEARCH_CACHE_DIR", str(cache))
    try:
        assert (
            main(["index", *common, "--source", str(catalog), "--failure-log", str(cache / "f.jsonl")]) == 0
        )
    finally:
        mp.undo()
    return smoke_env


def test_index_prints_a_summary(indexed, capsys):
    common, catalog, _ = indexed
    # Re-running is idempotent: everything is skipped as already present.
    assert main(["index", *common, "--source", str(catalog)]) == 0
    out = capsys.readouterr().out
    assert "skipped 4" in out or "4 skipped" in out, out


def test_search_json_ranks_the_query_image_first(indexed, capsys):
    common, catalog, _ = indexed
    image = catalog.parent / "img" / "p2_0.jpg"
    assert main(["search", *common, "--image", str(image), "-k", "3", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["smoke"] is True
    assert payload["hits"][0]["id"] == "B000000002:0"
    assert len(payload["hits"]) == 3
    assert {"encode_ms", "search_ms", "total_ms"} <= set(payload["timings"])


def test_search_table_is_labelled_as_smoke(indexed, capsys):
    common, catalog, _ = indexed
    assert main(["search", *common, "--text", "phone case", "-k", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("[SMOKE MODE: tiny random-weight models")
    assert "rank" in out and "score" in out and "timings:" in out


@pytest.mark.slow
def test_search_with_rerank_prints_no_warnings(smoke_env, tmp_path):
    """In a fresh process (each warning prints once per process), with every warning category shown."""
    _, catalog, cache = smoke_env
    # A database of its own: Milvus Lite allows one process per file, and this process holds the shared one.
    common = ["--smoke", "--milvus-uri", str(tmp_path / "milvus.db"), "--collection", "quiet"]
    assert main(["index", *common, "--source", str(catalog), "--failure-log", str(tmp_path / "f.jsonl")]) == 0
    image = sorted((catalog.parent / "img").iterdir())[0]
    cmd = [sys.executable, "-W", "default", "-m", "mmsearch.cli", "search", *common]
    cmd += ["--image", str(image), "--text", "phone case", "--rerank", "-k", "2", "--json"]
    env = {**os.environ, "MMSEARCH_CACHE_DIR": str(cache)}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["rerank"]["stats"]["passes"] >= 1, "the reranker ran"
    assert "warning" not in proc.stderr.lower(), proc.stderr


def test_search_without_image_or_text_is_one_line_error(indexed, capsys):
    common, _, _ = indexed
    assert main(["search", *common]) == 2
    err = capsys.readouterr().err
    assert (
        err
        == 'mmsearch search: error: a query needs --image PATH_OR_URL, --text "...", or both; got neither\n'
    )


def test_search_with_inverted_price_range_is_one_line_error(indexed, capsys):
    common, _, _ = indexed
    assert main(["search", *common, "--text", "x", "--min-price", "50", "--max-price", "10"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mmsearch search: error:") and err.count("\n") == 1
    assert "min_price" in err


def test_search_on_an_empty_store_says_to_index_first(tmp_path, capsys):
    uri = str(tmp_path / "empty.db")
    assert main(["search", "--smoke", "--milvus-uri", uri, "--text", "mug"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mmsearch search: error:") and err.count("\n") == 1
    assert "index" in err


def test_search_with_missing_image_file_is_one_line_error(indexed, capsys, tmp_path):
    common, _, _ = indexed
    assert main(["search", *common, "--image", str(tmp_path / "nope.jpg")]) == 2
    assert capsys.readouterr().err == f"mmsearch search: error: {tmp_path / 'nope.jpg'}: file not found\n"


def test_bad_weights_option_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["search", "--text", "x", "--weights", "abc"])
    assert exit_info.value.code == 2
    assert "expected two numbers 'IMAGE,TEXT'" in capsys.readouterr().err


def test_missing_real_weights_offline_is_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    argv = [
        "search",
        "--milvus-uri",
        str(tmp_path / "m.db"),
        "--encoder-weights",
        str(tmp_path / "missing.pth"),
    ]
    assert main([*argv, "--text", "mug"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mmsearch search: error:") and err.count("\n") == 1
    assert "missing.pth" in err


def test_search_hybrid_bm25_mode_runs_in_smoke_mode(indexed, capsys):
    common, catalog, _ = indexed
    args = ["search", *common, "--text", "number 2", "--mode", "hybrid-bm25", "--all-images", "--json"]
    assert main(args) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["mode"] == "hybrid-bm25"
    assert payload["query"]["one_per_product"] is False


def test_categories_command_lists_counts(indexed, capsys):
    common, _, _ = indexed
    assert main(["categories", *common, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed == [{"name": "Cell Phones", "count": 4}]


def test_search_with_an_unknown_category_exits_2_with_suggestions(indexed, capsys):
    common, _, _ = indexed
    assert main(["search", *common, "--text", "case", "--category", "cell phones"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(
        "mmsearch search: error: unknown category 'cell phones' (categories match exactly); "
    )
    assert "did you mean 'Cell Phones'?" in err
