"""FailureLog: one flushed JSON line per failure, readable while the job still runs."""

from __future__ import annotations

import json

import pytest

from mmsearch.errors import ConfigError
from mmsearch.indexer.failures import FailureLog, read_failures


def test_each_record_is_on_disk_before_the_log_is_closed(tmp_path):
    path = tmp_path / "failures.jsonl"
    log = FailureLog(path)
    log.record("B1:0", "https://x/1.jpg", "HTTP 404 Not Found")
    line = json.loads(path.read_text())  # read while still open: flushed per record
    assert {k: line[k] for k in ("id", "source", "reason")} == {
        "id": "B1:0",
        "source": "https://x/1.jpg",
        "reason": "HTTP 404 Not Found",
    }
    assert line["time"].endswith("+00:00")
    log.close()


def test_file_is_created_only_on_the_first_failure(tmp_path):
    with FailureLog(tmp_path / "sub" / "f.jsonl") as log:
        assert not (tmp_path / "sub").exists()
        log.record("a", "s", "r")
    assert (tmp_path / "sub" / "f.jsonl").is_file()


def test_records_append_across_runs(tmp_path):
    path = tmp_path / "f.jsonl"
    for run in range(2):
        with FailureLog(path) as log:
            log.record(f"id{run}", "s", "r")
    assert [r["id"] for r in read_failures(path)] == ["id0", "id1"]


def test_torn_last_line_is_ignored_when_reading(tmp_path):
    path = tmp_path / "f.jsonl"
    with FailureLog(path) as log:
        log.record("a", "s", "r")
    with path.open("a") as fh:
        fh.write('{"id": "b", "sou')  # a crash mid-write
    assert [r["id"] for r in read_failures(path)] == ["a"]


def test_memory_only_log_counts(tmp_path):
    log = FailureLog(None)
    log.record("a", "s", "r")
    assert (log.count, log.last["id"]) == (1, "a")


def test_directory_path_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"is a directory; expected a file path such as failures\.jsonl"):
        FailureLog(tmp_path)
