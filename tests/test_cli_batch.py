"""`mmsearch search --queries FILE --out FILE` (issue 12): many queries from a jsonl file, results per input line,
bad lines reported and the rest searched; and `--json` echoing the same `query` block as the API. Smoke models on
Milvus Lite: no ranking is asserted except an indexed image queried as itself coming back first.
"""

from __future__ import annotations

import json

import pytest
from indexer_support import write_catalog

from mmsearch.cli import main
from mmsearch.cli_options import EXIT_OK, EXIT_PARTIAL, EXIT_USAGE


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-batch")
    catalog = write_catalog(root / "data", 4, images_per_product=1)
    common = ["--smoke", "--milvus-uri", str(root / "milvus.db"), "--collection", "batch_products"]
    mp = pytest.MonkeyPatch()
    mp.setenv("MMSEARCH_CACHE_DIR", str(root / "cache"))
    try:
        assert main(["index", *common, "--source", str(catalog), "--failure-log", str(root / "f.jsonl")]) == 0
    finally:
        mp.undo()
    return common, catalog.parent, root / "cache"


@pytest.fixture(autouse=True)
def _cache(indexed, monkeypatch):
    monkeypatch.setenv("MMSEARCH_CACHE_DIR", str(indexed[2]))


def _write(path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _read(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_queries_file_writes_one_result_per_line_with_its_line_number(indexed, tmp_path, capsys):
    common, data, _ = indexed
    queries = _write(
        data / "queries.jsonl",
        [
            json.dumps({"image": "img/p2_0.jpg", "k": 2}),
            json.dumps({"instruction": "a red mug", "k": 3, "mode": "fused", "weights": [0.5, 0.5]}),
            "",
            json.dumps(
                {"image": "img/p0_0.jpg", "instruction": "same but blue", "filters": {"min_price": 0}}
            ),
        ],
    )
    out = tmp_path / "results.jsonl"
    assert main(["search", *common, "--queries", queries, "--out", str(out), "--batch-size", "2"]) == EXIT_OK
    rows = _read(out)
    assert [r["line"] for r in rows] == [1, 2, 4]
    assert rows[0]["hits"][0]["id"] == "B000000002:0" and len(rows[0]["hits"]) == 2
    assert rows[1]["query"]["mode"] == "fused" and len(rows[1]["hits"]) == 3
    assert rows[2]["query"]["filters"] == {"min_price": 0.0}
    assert "searched 3 queries, 0 failed" in capsys.readouterr().err


def test_bad_lines_are_reported_per_line_and_the_rest_are_searched(indexed, tmp_path, capsys):
    common, data, _ = indexed
    queries = _write(
        tmp_path / "q.jsonl",
        [
            "{not json",
            json.dumps({"image": str(data / "img" / "missing.jpg")}),
            json.dumps({"instruction": "ok", "k": 1}),
            json.dumps({"instruction": "x", "colour": "red"}),
            json.dumps(["a list"]),
            json.dumps({"instruction": "x", "filters": {"min_price": -1}}),
        ],
    )
    out = tmp_path / "r.jsonl"
    assert main(["search", *common, "--queries", queries, "--out", str(out)]) == EXIT_PARTIAL
    rows = {r["line"]: r for r in _read(out)}
    assert sorted(rows) == [1, 2, 3, 4, 5, 6]
    assert rows[1]["error"] == "invalid_query" and rows[1]["message"].startswith("not valid JSON")
    assert rows[2]["error"] == "invalid_image"
    assert len(rows[3]["hits"]) == 1
    assert rows[4]["message"].startswith("unknown field 'colour'")
    assert rows[5]["message"] == "a query must be a JSON object, got list"
    assert rows[6]["error"] == "invalid_filter"
    err = capsys.readouterr().err
    assert "searched 1 queries, 5 failed (first: line 1: not valid JSON" in err


def test_queries_with_image_is_a_usage_error(indexed, tmp_path, capsys):
    common, data, _ = indexed
    queries = _write(tmp_path / "q.jsonl", [json.dumps({"instruction": "x"})])
    argv = ["search", *common, "--queries", queries, "--out", str(tmp_path / "r"), "--text", "x"]
    assert main(argv) == EXIT_USAGE
    assert capsys.readouterr().err.strip() == (
        "mmsearch search: error: --queries replaces --image/--text: give one or the other"
    )


def test_search_json_echoes_the_query_block_like_the_api(indexed, capsys):
    common, data, _ = indexed
    argv = ["search", *common, "--image", str(data / "img" / "p1_0.jpg"), "--text", "blue", "-k", "2"]
    assert main([*argv, "--category", "Cell Phones", "--json"]) == EXIT_OK
    query = json.loads(capsys.readouterr().out)["query"]
    assert query == {
        "has_image": True,
        "instruction": "blue",
        "k": 2,
        "mode": "joint",
        "weights": [0.7, 0.3],
        "ranker": "weighted",
        "rerank": False,
        "filters": {"category": "Cell Phones"},
        "one_per_product": True,
    }
