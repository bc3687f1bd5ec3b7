"""Where `mmsearch bench` finds the benchmark scripts, and what each one measures (its docstring's first line).

Entry points: `BENCHMARKS` (name -> script file), `script_path(name)`, `describe(name)`. The scripts live in the
repository's `benchmarks/` folder; they are found relative to this package (a source checkout or an editable
install), or wherever `MMSEARCH_BENCHMARKS_DIR` points, so the command works from any directory.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

from mmsearch.errors import ConfigError

BENCHMARKS = {
    "encode": "encode_throughput.py",
    "rerank": "rerank_latency.py",
    "store": "milvus_store.py",
    "index": "index_throughput.py",
    "query": "query_latency.py",
    "api": "api_latency.py",
}


def benchmarks_dir() -> Path | None:
    """The folder holding the scripts: $MMSEARCH_BENCHMARKS_DIR, else `benchmarks/` beside `src/`, else None."""
    override = os.environ.get("MMSEARCH_BENCHMARKS_DIR")
    candidates = [Path(override)] if override else []
    candidates.append(
        Path(__file__).resolve().parents[2] / "benchmarks"
    )  # src/mmsearch/bench.py -> repo root
    return next((c for c in candidates if (c / BENCHMARKS["encode"]).is_file()), None)


def script_path(name: str) -> Path:
    """The script of benchmark `name`; `ConfigError` naming where it looked when it is not there."""
    folder = benchmarks_dir()
    if folder is None:
        raise ConfigError(
            "the benchmark scripts were not found beside this installation of mmsearch (they live in the "
            "repository's benchmarks/ folder); install from a checkout (pip install -e .) or set "
            "MMSEARCH_BENCHMARKS_DIR=/path/to/benchmarks"
        )
    return folder / BENCHMARKS[name]


def describe(name: str) -> str:
    """The first line of the script's docstring, read without running it ('' when the script is missing)."""
    folder = benchmarks_dir()
    if folder is None:
        return "(scripts not found: set MMSEARCH_BENCHMARKS_DIR)"
    try:
        doc = ast.get_docstring(ast.parse((folder / BENCHMARKS[name]).read_text(encoding="utf-8")))
    except (OSError, SyntaxError):
        return ""
    first = " ".join((doc or "").strip().split("\n\n")[0].split())
    for stop in (": ", ". "):
        if stop in first:
            first = first[: first.index(stop)]
    return first if len(first) <= 100 else first[:99] + "…"


__all__ = ["BENCHMARKS", "benchmarks_dir", "describe", "script_path"]
