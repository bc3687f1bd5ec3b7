"""`mmsearch index --smoke` as a subprocess on a generated hostile catalogue (tests/hostile_catalogue.py): it
finishes, exits 3, indexes exactly the good records, logs one entry per bad one with its stage, opens no file
outside the allowed folders (an audit hook watches the canary's folder), leaks no secret, and a re-run adds nothing.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hostile_catalogue import SECRET_PASSWORD, SECRET_TOKEN, build_hostile_catalogue
from indexer_support import serve_images

from mmsearch.indexer.failures import read_failures
from mmsearch.store import ProductStore

RUN_TIMEOUT_S = 600
# Runs the real CLI entry point with a Python audit hook that logs every open() under the canary's folder.
AUDITED_CLI = textwrap.dedent(
    """
    import os, sys
    watch = os.path.realpath(os.environ["CANARY_DIR"])
    fd = os.open(os.environ["CANARY_LOG"], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    def hook(event, args):
        if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            path = os.path.realpath(os.fsdecode(args[0]))
            if path == watch or path.startswith(watch + os.sep):
                os.write(fd, (path + "\\n").encode())
    sys.addaudithook(hook)
    from mmsearch.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)
SUMMARY = re.compile(r"indexed (\d+), skipped (\d+) \(already present\), failed (\d+)")


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """The catalogue, its image server, and the results of two runs (the second must add nothing)."""
    base = tmp_path_factory.mktemp("hostile")
    cache = tmp_path_factory.mktemp("cache")
    # The slow route outlasts the fetch timeout by 3 s; good loopback fetches keep 3 s of headroom on a loaded CI box.
    with serve_images(slow_s=6.0) as server:
        cat = build_hostile_catalogue(base / "catalogue", server, base / "outside")
        env = {
            **os.environ,
            "MMSEARCH_CACHE_DIR": str(cache),
            "MMSEARCH_FETCH_TIMEOUT_S": "3",
            "MMSEARCH_FETCH_RETRIES": "0",
            "CANARY_DIR": str(cat.canary.parent),
            "CANARY_LOG": str(base / "canary.log"),
        }

        def run(n: int) -> subprocess.CompletedProcess:
            verbose = ["-v"] if n == 2 else []  # -v: INFO logs (httpx logs each URL) must be redacted too
            args = [
                *verbose,
                "index",
                "--smoke",
                "--source",
                str(cat.path),
                "--allow-path",
                str(cat.allow_dir),
            ]
            args += ["--milvus-uri", str(base / "milvus.db"), "--collection", "hostile", "--batch-size", "8"]
            args += ["--failure-log", str(base / f"failures{n}.jsonl")]
            return subprocess.run(
                [sys.executable, "-c", AUDITED_CLI, *args],
                env=env,
                capture_output=True,
                text=True,
                timeout=RUN_TIMEOUT_S,
            )

        first, second = run(1), run(2)
    return cat, base, first, second


def counts(proc: subprocess.CompletedProcess) -> tuple[int, int, int]:
    m = SUMMARY.search(proc.stdout)
    assert m, f"no summary line in stdout {proc.stdout!r}; stderr tail: {proc.stderr[-2000:]}"
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def test_the_generator_covers_at_least_40_kinds(hostile):
    cat, *_ = hostile
    assert len(cat.kinds) >= 40, cat.kinds


def test_run_finishes_with_exit_3_and_exact_counts(hostile):
    cat, _, first, _ = hostile
    assert first.returncode == 3, first.stderr[-2000:]
    assert counts(first) == (cat.writes, 0, len(cat.failures))
    assert "Traceback" not in first.stderr


def test_every_failed_record_has_one_entry_with_its_stage(hostile):
    cat, base, *_ = hostile
    entries = read_failures(base / "failures1.jsonl")
    got = sorted((e["id"], e["stage"], e["source"] if not e["id"] else "") for e in entries)
    want = sorted((pid, stage, f"{cat.path}:{line}" if not pid else "") for pid, stage, line in cat.failures)
    assert got == want
    assert all(e["reason"] for e in entries)


def test_store_holds_exactly_the_good_records_as_given(hostile):
    cat, base, *_ = hostile
    with ProductStore(str(base / "milvus.db"), collection="hostile") as store:
        assert store.count() == len(cat.unique_ids)
        assert {h.id for h in store.get(sorted(cat.unique_ids))} == cat.unique_ids
        checked = {e.indexed[0]: e.title for e in cat.lines if e.title is not None}
        titles = {h.id: h.title for h in store.get(sorted(checked))}
    assert titles == checked  # verbatim, made valid; the later duplicate wins


def test_no_file_outside_the_allowed_folders_is_opened(hostile):
    _, base, *_ = hostile
    log = base / "canary.log"
    assert not log.exists() or log.read_text() == ""


def test_no_secret_reaches_the_output_or_the_failure_log(hostile):
    _, base, first, second = hostile
    texts = [first.stdout, first.stderr, second.stdout, second.stderr]
    texts += [(base / f"failures{n}.jsonl").read_text() for n in (1, 2)]
    for text in texts:
        assert SECRET_PASSWORD not in text
        assert SECRET_TOKEN not in text


def test_a_second_run_adds_nothing(hostile):
    cat, base, _, second = hostile
    assert second.returncode == 3
    assert counts(second) == (0, len(cat.unique_ids), len(cat.failures))
    with ProductStore(str(base / "milvus.db"), collection="hostile") as store:
        assert store.count() == len(cat.unique_ids)


def test_fifo_source_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "products.jsonl"
    os.mkfifo(fifo)
    proc = subprocess.run(
        [sys.executable, "-m", "mmsearch.cli", "index", "--smoke", "--source", str(fifo)],
        env={**os.environ, "MMSEARCH_CACHE_DIR": str(tmp_path / "cache")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "not a regular file" in proc.stderr


def test_every_record_failing_exits_non_zero(tmp_path):
    catalog = tmp_path / "products.jsonl"
    catalog.write_text('{"parent_asin": "A", "images": ["img/none.jpg"]}\nnot json\n')
    proc = subprocess.run(
        [sys.executable, "-m", "mmsearch.cli", "index", "--smoke", "--source", str(catalog)]
        + ["--milvus-uri", str(tmp_path / "m.db"), "--failure-log", str(tmp_path / "f.jsonl")],
        env={**os.environ, "MMSEARCH_CACHE_DIR": str(tmp_path / "cache")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert counts(proc) == (0, 0, 2)
    assert Path(tmp_path / "f.jsonl").is_file()
