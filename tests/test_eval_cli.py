"""`mmsearch eval` through the CLI's `main()` in-process: synthetic and CIRR sets in smoke mode, and one-line errors."""

from __future__ import annotations

import json

import pytest
from eval_support import make_cirr

from mmsearch.cli import main
from mmsearch.evaluation.metrics import METRIC_NAMES


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """Tiny models, generated data and eval work files go under tmp_path, not the user's cache."""
    monkeypatch.setenv("MMSEARCH_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.slow
def test_eval_synthetic_smoke_prints_a_labelled_table_and_writes_json(tmp_path, cache, capsys):
    out = tmp_path / "report.json"
    argv = ["eval", "--queries", "synthetic", "--smoke", "--milvus-uri", str(tmp_path / "m.db")]
    argv += [
        "--synthetic-products",
        "12",
        "--synthetic-queries",
        "4",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "SMOKE MODE" in captured.out.splitlines()[0]
    assert "PLUMBING CHECK" in captured.out.splitlines()[1]
    assert "dataset synthetic: 4 queries, k=10, rerank off" in captured.out
    assert "gallery -> eval_synthetic_smoke: [SMOKE" in captured.err
    report = json.loads(out.read_text())
    assert report["smoke"] is True
    assert report["n_queries"] == 4
    # Issue 13: every mode side by side, each with one slot per product and with every image.
    assert list(report["modes"]) == [
        f"{mode}{suffix}"
        for mode in ("joint", "weighted", "fused", "hybrid-bm25")
        for suffix in ("", "/images")
    ]
    for mode in report["modes"].values():
        assert set(mode["retrieval"]) == set(METRIC_NAMES)
        assert all(0.0 <= v <= 1.0 for v in mode["retrieval"].values())
        assert mode["reranked"] is None
    assert report["settings"]["collection"] == "eval_synthetic_smoke"
    assert (cache / "eval" / "synthetic-s0-p12-q4" / "products.jsonl").is_file()


@pytest.mark.slow
def test_eval_with_the_smoke_phi3_reranker_reports_uplift_and_statuses(tmp_path, cache, capsys):
    out = tmp_path / "rerank.json"
    argv = ["eval", "--queries", "synthetic", "--smoke", "--rerank", "--milvus-uri", str(tmp_path / "m.db")]
    argv += ["--synthetic-products", "8", "--synthetic-queries", "2", "--modes", "joint", "-k", "4"]
    argv += ["--resamples", "200", "--out", str(out)]
    assert main(argv) == 0
    assert "rerank status (joint): " in capsys.readouterr().out
    mode = json.loads(out.read_text())["modes"]["joint"]
    assert sum(mode["rerank_status"].values()) == 2
    assert set(mode["uplift"]) == set(METRIC_NAMES)
    for ci in mode["uplift"].values():
        assert ci["low"] <= ci["mean"] <= ci["high"]
        assert ci["n_resamples"] == 200
    for row in mode["per_query"]:
        assert sorted(row["reranked_top"]) == sorted(row["top"])  # a reordering of the same candidates
        assert all(0.0 <= v <= 1.0 for v in row["reranked"].values())


@pytest.mark.slow
def test_eval_cirr_smoke_indexes_the_gallery_and_scores_each_query(tmp_path, cache, capsys):
    captions = make_cirr(tmp_path / "cirr")
    out = tmp_path / "cirr.json"
    argv = ["eval", "--queries", str(captions), "--format", "cirr", "--smoke", "--modes", "joint", "-k", "3"]
    argv += ["--milvus-uri", str(tmp_path / "m.db"), "--out", str(out)]
    assert main(argv) == 0
    assert "indexed 4, skipped 0" in capsys.readouterr().err
    report = json.loads(out.read_text())
    rows = report["modes"]["joint"]["per_query"]
    assert [r["query"] for r in rows] == ["cirr:11", "cirr:12"]
    # the reference image is excluded, so each query ranks the 3 other gallery images
    assert [sorted(r["top"]) for r in rows] == [
        sorted({"dev-1-0-img1", "dev-2-3-img0", "dev-7-1-img1"}),
        sorted({"dev-1-0-img0", "dev-1-0-img1", "dev-2-3-img0"}),
    ]
    assert all(r["retrieval"]["recall@5"] == 1.0 for r in rows)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["eval", "--modes", "joint"], "mmsearch eval: error: --queries is required"),
        (
            ["eval", "--queries", "synthetic", "--modes", "joint,magic"],
            "mmsearch eval: error: --modes: unknown mode 'magic'; expected a comma-separated subset of joint,weighted,fused",
        ),
        (["eval", "--queries", "nowhere.jsonl"], "mmsearch eval: error: query file nowhere.jsonl not found"),
        (
            ["eval", "--queries", "synthetic", "-k", "51"],
            "mmsearch eval: error: -k 51 is above the limit of 50",
        ),
    ],
)
def test_eval_user_mistakes_are_one_line_errors(cache, capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(message)
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1
