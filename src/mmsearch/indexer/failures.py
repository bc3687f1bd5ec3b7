"""Failure log for the indexer: one JSON line per item that could not be indexed (id, source, stage, reason, time).

Entry point: `FailureLog(path)`. Each record is written and flushed at once, so a crash or `kill -9` loses
nothing already reported. `path=None` keeps the records in memory only (tests, dry runs). `id` is the product id
("" when the record never got one, e.g. a line that is not JSON: then `source` is `file:line`), `stage` is where
it failed (see `mmsearch.indexer.boundary.STAGES`). Every field is made valid text, URLs in it are redacted and
long fields are cut, so a hostile record cannot break or bloat the log, nor leak a credential into it.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from mmsearch.errors import ConfigError
from mmsearch.sanitize import redact

MAX_FIELD_CHARS = 2000


class FailureLog:
    """Append-only jsonl log of failed items. Thread-safe; the file is created on the first failure."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path is not None else None
        self.count = 0
        self.last: dict[str, Any] | None = None
        self._fh: IO[str] | None = None
        self._lock = threading.Lock()
        if self.path is not None and self.path.is_dir():
            raise ConfigError(
                f"failure log {self.path} is a directory; expected a file path such as failures.jsonl"
            )

    def record(self, id: str, source: str, reason: str, stage: str = "") -> None:
        """Append one failure and flush it to the OS right away."""
        entry = {
            "id": _field(id),
            "source": _field(source),
            "stage": stage,
            "reason": _field(reason),
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        with self._lock:
            self.count += 1
            self.last = entry
            if self.path is None:
                return
            if self._fh is None:
                self._fh = self._open(self.path)
            self._fh.write(json.dumps(entry, ensure_ascii=False) + "\n")
            self._fh.flush()

    @staticmethod
    def _open(path: Path) -> IO[str]:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return path.open("a", encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"cannot write the failure log {path}: {e.strerror or e}") from e

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None

    def __enter__(self) -> FailureLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _field(value: object) -> str:
    text = redact(str(value))
    return text if len(text) <= MAX_FIELD_CHARS else f"{text[: MAX_FIELD_CHARS - 1]}…"


def read_failures(path: str | Path) -> list[dict[str, Any]]:
    """Read a failure log back (a torn last line from a crash is ignored)."""
    out = []
    p = Path(path)
    if not p.exists():
        return out
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


__all__ = ["FailureLog", "read_failures"]
