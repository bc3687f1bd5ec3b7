"""A newcomer's first hour (issue 14): the offline demo, early one-line errors, help and version, --reindex, no
clutter, and the README's library example. Errors that must come "before any model loads" are checked with the
model builders replaced by ones that fail the test if called."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import mmsearch
from mmsearch.cli import build_parser, main
from mmsearch.engine import Engine
from mmsearch.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """A fresh working directory and cache, with the Hugging Face hub switched off."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MMSEARCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("MMSEARCH_MILVUS_URI", "MMSEARCH_COLLECTION", "MMSEARCH_SMOKE"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@pytest.fixture
def no_models(monkeypatch):
    """Any model load fails the test: the errors under test must come first."""

    def refuse(*_args, **_kwargs):
        raise AssertionError("a model was loaded before the argument error")

    for name in ("build_encoder", "build_title_encoder", "build_reranker"):
        monkeypatch.setattr(f"mmsearch.engine.engine.{name}", refuse)


def run_cli(argv, capsys) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


# -- early, one-line errors ----------------------------------------------------------------------------------------


def test_k_zero_is_one_line_without_the_usage_block(capsys):
    code, _, err = run_cli(["search", "--text", "mug", "-k", "0"], capsys)
    assert (code, err) == (2, "mmsearch search: error: argument -k: expected a positive integer, got 0\n")


def test_k_above_the_limit_names_the_flag_and_the_variable_before_any_model_loads(offline, no_models, capsys):
    code, _, err = run_cli(["search", "--text", "mug", "-k", "10000"], capsys)
    assert code == 2
    assert err == (
        "mmsearch search: error: -k 10000 is above the limit of 50 (raise it with MMSEARCH_MAX_K, at most 1000)\n"
    )


def test_empty_query_names_both_flags(offline, no_models, capsys):
    code, _, err = run_cli(["search", "--text", "   "], capsys)
    assert code == 2
    assert (
        err
        == 'mmsearch search: error: a query needs --image PATH_OR_URL, --text "...", or both; got neither\n'
    )


def test_a_text_file_given_as_the_image_fails_before_any_model_loads(offline, no_models, capsys):
    (offline / "notes.txt").write_text("not a picture")
    code, _, err = run_cli(["search", "--image", "notes.txt", "--smoke"], capsys)
    assert (code, err) == (2, "mmsearch search: error: notes.txt: not an image (cannot identify format)\n")


def test_every_missing_model_part_in_one_message_with_flags_and_smoke(offline, no_models, capsys):
    argv = ["search", "--text", "mug", "--rerank", "--encoder-weights", "/nowhere/w.pth"]
    argv += ["--encoder-text-model", "/nowhere/bge", "--reranker-model", "/nowhere/phi3"]
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and err.count("\n") == 1
    for flag in ("--encoder-weights", "--encoder-text-model", "--reranker-model", "--smoke"):
        assert flag in err, f"{flag} missing from: {err}"
    for env in ("MMSEARCH_ENCODER_WEIGHTS", "MMSEARCH_ENCODER_TEXT_MODEL", "MMSEARCH_RERANKER_MODEL"):
        assert env in err


def test_search_never_creates_a_database(offline, no_models, capsys):
    code, _, err = run_cli(["search", "--text", "mug", "--smoke"], capsys)
    assert code == 2
    assert f"no Milvus Lite database at {offline / 'mmsearch.db'}; run `mmsearch index` first" in err
    assert not (offline / "mmsearch.db").exists()


# -- help and version ----------------------------------------------------------------------------------------------


def test_version(capsys):
    code, out, _ = run_cli(["--version"], capsys)
    assert (code, out) == (0, f"mmsearch {mmsearch.__version__}\n")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_option_has_help_and_every_command_an_example():
    parser = build_parser()
    for name, sub in _subparsers(parser).items():
        assert "example" in (sub.epilog or ""), f"`mmsearch {name}` has no example in its epilog"
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"`mmsearch {name}` option {action.option_strings or action.dest} has no help"


def test_help_shows_defaults():
    text = _subparsers(build_parser())["search"].format_help()
    assert "(default: 9)" in text  # -k
    assert "$MMSEARCH_MILVUS_URI or ./mmsearch.db" in text


def test_bench_runs_from_any_directory_under_its_own_name(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(
        [sys.executable, "-m", "mmsearch.cli", "bench", "store", "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: mmsearch bench store")


def test_bench_help_lists_each_benchmark_with_its_description():
    text = _subparsers(build_parser())["bench"].format_help()
    assert re.search(r"^  store +Milvus store benchmark on our workload", text, flags=re.M), text


# -- offline first run, --reindex, eval's own database ------------------------------------------------------------


@pytest.mark.slow
def test_demo_indexes_offline_then_its_printed_search_runs_and_reindex_re_embeds(offline, capsys):
    code, out, _ = run_cli(["demo"], capsys)
    assert code == 0
    assert "indexed 18, skipped 0" in out
    command = next(line.strip() for line in out.splitlines() if line.strip().startswith("mmsearch search"))
    argv = [a.strip('"') for a in re.findall(r'"[^"]*"|\S+', command)][1:]
    code, out, err = run_cli([*argv, "--json"], capsys)
    assert code == 0, err
    assert '"hits"' in out
    code, out, _ = run_cli(["index", "--source", "demo", "--smoke", "--collection", "demo_products"], capsys)
    assert (code, "skipped 18 (already present)" in out) == (0, True)
    code, out, _ = run_cli(
        ["index", "--source", "demo", "--smoke", "--collection", "demo_products", "--reindex"], capsys
    )
    assert (code, "indexed 18, skipped 0" in out) == (0, True)
    assert sorted(p.name for p in offline.iterdir()) == ["cache", "mmsearch.db"]


def test_eval_uses_its_own_database_by_default(offline, monkeypatch):
    seen = {}

    def capture(args, settings):
        seen["uri"] = settings.milvus_uri
        return 0

    monkeypatch.setattr("mmsearch.evaluation.cli.run_eval_command", capture)
    assert main(["eval", "--queries", "synthetic", "--smoke"]) == 0
    assert seen["uri"] == str(offline / "cache" / "eval" / "eval.db")
    assert main(["eval", "--queries", "synthetic", "--smoke", "--milvus-uri", "mine.db"]) == 0
    assert seen["uri"] == "mine.db"


# -- the library entry point ---------------------------------------------------------------------------------------


def test_explicit_engine_arguments_beat_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MMSEARCH_COLLECTION", "from_env")
    monkeypatch.setenv("MMSEARCH_MAX_K", "20")
    engine = Engine(str(tmp_path / "x.db"), collection="explicit")
    assert (engine.settings.collection, engine.settings.max_k) == ("explicit", 20)
    engine.close()


def test_unknown_engine_option_is_refused():
    with pytest.raises(ConfigError, match="unknown Engine option"):
        Engine(collectoin="typo")


@pytest.mark.slow
def test_readme_library_example_runs(offline):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Library", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)
    assert len(code.strip().splitlines()) <= 6, "the README example should stay about five lines"
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    assert len(namespace["result"].hits) == 3
    assert (offline / "demo.db").exists() and not (offline / "mmsearch.db").exists()
