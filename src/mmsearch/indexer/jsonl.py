"""Read JSON Lines as bytes, one line at a time, so one bad line is that line's failure and nothing more.

Entry point: `read_jsonl(fh, name) -> Iterator[(where, record, failure)]` over any binary file object (a local
file, gzip, a hub stream): exactly one of `record` / `failure` is set. Per line:
- lines are split on b"\\n" only (U+2028 inside a string stays inside it), a trailing b"\\r" is dropped;
- a line longer than `MAX_LINE_BYTES` is skipped to its end without being held in memory ("read" failure);
- a UTF-8 BOM on the first line is accepted, blank lines are skipped;
- each line is decoded as strict UTF-8 on its own ("read" failure naming the byte offset);
- JSON errors, numbers Python refuses (over 4300 digits) and nesting deeper than `MAX_DEPTH` are "parse" failures.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import IO, Any

from mmsearch.indexer.boundary import Failure

MAX_LINE_BYTES = 16 * 1024 * 1024  # the largest Amazon Reviews 2023 metadata records are well under 1 MiB
MAX_DEPTH = 64  # real records nest 3-4 levels deep
_CHUNK = 1 << 20
_BOM = b"\xef\xbb\xbf"


def iter_lines(fh: IO[bytes], max_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[int, bytes | None, int]]:
    """(line number, line without b"\\n" or None when too long, line length in bytes), reading in 1 MiB chunks."""
    buf = bytearray()
    lineno = 0
    too_long = False
    length = 0
    while True:
        chunk = fh.read(_CHUNK)
        if not chunk:
            break
        start = 0
        while True:
            nl = chunk.find(b"\n", start)
            piece = chunk[start:] if nl < 0 else chunk[start:nl]
            length += len(piece)
            if not too_long:
                buf += piece
                if len(buf) > max_bytes:
                    too_long = True
                    buf = bytearray()
            if nl < 0:
                break
            lineno += 1
            yield lineno, None if too_long else bytes(buf), length
            buf, too_long, length = bytearray(), False, 0
            start = nl + 1
    if length or buf:
        yield lineno + 1, None if too_long else bytes(buf), length


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Whether `value` nests deeper than `limit` (iterative: no recursion to overflow)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _decode(line: bytes) -> str:
    return line.decode("utf-8")


def _loads(text: str) -> Any:
    return json.loads(text)


def parse_line(line: bytes, where: str, *, max_depth: int = MAX_DEPTH) -> tuple[Any, Failure | None]:
    """Decode and parse one line: (record, None) or (None, failure). Never raises for a bad line."""
    try:
        text = _decode(line)
    except UnicodeDecodeError as e:
        return None, Failure.of("read", "", where, f"invalid UTF-8 at byte {e.start} ({e.reason})")
    except Exception as e:  # the boundary: any other decoding problem is this line's failure
        return None, Failure.of("read", "", where, e)
    try:
        record = _loads(text)
    except json.JSONDecodeError as e:
        return None, Failure.of("parse", "", where, f"invalid JSON ({e.msg} at column {e.colno})")
    except RecursionError:
        return None, Failure.of("parse", "", where, f"JSON nested deeper than {max_depth} levels")
    except ValueError as e:  # e.g. an integer literal over Python's 4300-digit limit
        return None, Failure.of("parse", "", where, f"invalid JSON ({e})")
    except Exception as e:  # the boundary, again
        return None, Failure.of("parse", "", where, e)
    if _depth_exceeds(record, max_depth):
        return None, Failure.of("parse", "", where, f"JSON nested deeper than {max_depth} levels")
    return record, None


def read_jsonl(
    fh: IO[bytes],
    name: str,
    *,
    max_line_bytes: int = MAX_LINE_BYTES,
    max_depth: int = MAX_DEPTH,
    first_line: int = 1,
) -> Iterator[tuple[str, Any, Failure | None]]:
    """(where, record, None) per good line and (where, None, failure) per bad one; see the module docstring.

    `first_line`: the file's line number of `fh`'s first line (a reader of one byte range of a file).
    """
    for lineno, line, length in iter_lines(fh, max_line_bytes):
        lineno += first_line - 1
        where = f"{name}:{lineno}"
        if line is None:
            reason = f"line is {length} bytes long; the limit is {max_line_bytes}"
            yield where, None, Failure.of("read", "", where, reason)
            continue
        if lineno == 1 and line.startswith(_BOM):
            line = line[len(_BOM) :]
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line.strip():
            continue
        record, failure = parse_line(line, where, max_depth=max_depth)
        yield where, record, failure


__all__ = ["MAX_DEPTH", "MAX_LINE_BYTES", "iter_lines", "parse_line", "read_jsonl"]
