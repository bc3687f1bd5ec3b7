"""Choosing encoders (issue 15): `--encoder clip|siglip` and `--title-encoder embeddinggemma[:dim]` index and search
end to end on Milvus Lite with tiny random-weight models, the stamp refuses a mix, and `eval` compares encoders."""

from __future__ import annotations

import json

import pytest
from indexer_support import write_catalog
from pydantic import ValidationError

from mmsearch.cli import main
from mmsearch.config import EncoderSpec, Settings, TitleEncoderSpec

PAIRS = {"clip_same": ("clip", "same"), "siglip_gemma": ("siglip", "embeddinggemma:256")}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("encoders")
    catalog = write_catalog(root / "data", 4, images_per_product=1)
    return root, catalog


@pytest.fixture(autouse=True)
def _cache(env, monkeypatch):
    monkeypatch.setenv("MMSEARCH_CACHE_DIR", str(env[0] / "cache"))


def argv(env, collection: str, encoder: str, titles: str) -> list[str]:
    root, _ = env
    return ["--smoke", "--milvus-uri", str(root / "milvus.db"), "--collection", collection] + [
        "--encoder",
        encoder,
        "--title-encoder",
        titles,
    ]


@pytest.fixture(scope="module")
def indexed(env):
    mp = pytest.MonkeyPatch()
    mp.setenv("MMSEARCH_CACHE_DIR", str(env[0] / "cache"))
    try:
        for collection, (encoder, titles) in PAIRS.items():
            assert main(["index", *argv(env, collection, encoder, titles), "--source", str(env[1])]) == 0
    finally:
        mp.undo()
    return env


@pytest.mark.parametrize("collection", sorted(PAIRS))
def test_image_search_finds_the_indexed_image_first(indexed, capsys, collection):
    image = indexed[1].parent / "img" / "p2_0.jpg"
    assert (
        main(["search", *argv(indexed, collection, *PAIRS[collection]), "--image", str(image), "--json"]) == 0
    )
    payload = json.loads(capsys.readouterr().out)
    assert payload["mode"] == "fused", "a dual encoder's default mode is fused"
    assert payload["hits"][0]["id"] == "B000000002:0"


@pytest.mark.parametrize("collection", sorted(PAIRS))
def test_weighted_search_with_an_instruction_runs_on_the_title_vectors(indexed, capsys, collection):
    image = indexed[1].parent / "img" / "p1_0.jpg"
    args = ["--image", str(image), "--text", "Product number 1", "--mode", "weighted", "-k", "3", "--json"]
    assert main(["search", *argv(indexed, collection, *PAIRS[collection]), *args]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["mode"] == "weighted" and len(payload["hits"]) == 3


def test_joint_mode_with_a_dual_encoder_is_a_one_line_error(indexed, capsys):
    args = ["--text", "red case", "--mode", "joint"]
    assert main(["search", *argv(indexed, "clip_same", *PAIRS["clip_same"]), *args]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # above it: transformers' weight-loading bar
    assert last.startswith("mmsearch search: error: mode 'joint' is not available with encoder 'clip:")
    assert "it supports fused" in last and "joint" not in last.split("it supports")[1]


def test_searching_with_another_image_encoder_is_refused(indexed, capsys):
    assert main(["search", *argv(indexed, "clip_same", "siglip", "same"), "--text", "case"]) == 2
    err = capsys.readouterr().err
    assert "was built with encoder 'clip:" in err and "this run uses encoder 'siglip:" in err


def test_searching_with_another_title_encoder_is_refused(indexed, capsys):
    assert (
        main(["search", *argv(indexed, "siglip_gemma", "siglip", "embeddinggemma:128"), "--text", "case"])
        == 2
    )
    err = capsys.readouterr().err
    assert "(dim 256)" in err and "title encoder 'embeddinggemma@" in err and "(dim 128)" in err


def test_an_unknown_encoder_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["search", "--text", "x", "--encoder", "resnet"])
    assert exit_.value.code == 2
    assert (
        "unknown encoder 'resnet'; expected visualized-bge-base|visualized-bge-m3|clip"
        in capsys.readouterr().err
    )


def test_eval_compares_encoders_side_by_side_in_one_run(env, capsys, tmp_path):
    out = tmp_path / "cmp.json"
    args = [
        "--queries",
        "synthetic",
        "--synthetic-products",
        "8",
        "--synthetic-queries",
        "3",
        "--resamples",
        "10",
    ]
    pairs = ["--encoder", "clip", "--encoder", "siglip", "--title-encoder", "embeddinggemma:128"]
    assert (
        main(["eval", "--smoke", "--milvus-uri", str(tmp_path / "e.db"), *pairs, *args, "--out", str(out)])
        == 0
    )
    table = capsys.readouterr().out
    assert "PLUMBING ONLY" in table
    runs = json.loads(out.read_text())["runs"]
    assert [(r["encoder"], r["title_encoder"]) for r in runs] == [
        ("clip", "embeddinggemma:128"),
        ("siglip", "embeddinggemma:128"),
    ]
    for run in runs:
        scored = set(run["report"]["modes"])
        assert {"weighted", "fused"} <= scored and not any(m.startswith("joint") for m in scored)
        assert run["skipped_modes"] == ["joint"]
        assert run["vector_bytes_per_product"] == 4 * (run["dim"] + 128)
        assert run["report"]["n_queries"] == 3


def test_settings_read_the_encoder_choice_from_the_environment(monkeypatch):
    monkeypatch.setenv("MMSEARCH_ENCODER", "siglip:/models/siglip-base")
    monkeypatch.setenv("MMSEARCH_TITLE_ENCODER", "embeddinggemma:512")
    settings = Settings()
    assert settings.encoder_spec == EncoderSpec("siglip", "/models/siglip-base")
    assert settings.title_encoder_spec == TitleEncoderSpec("embeddinggemma", 512)


def test_a_size_embeddinggemma_was_not_trained_for_is_refused():
    with pytest.raises(ValidationError, match="EmbeddingGemma sizes are 768, 512, 256, 128"):
        Settings(title_encoder="embeddinggemma:300")
