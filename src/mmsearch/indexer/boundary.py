"""The per-record fault boundary of every indexing engine: one bad record becomes one `Failure`, never a dead run.

Entry points:
- `Failure.of(stage, id, where, error)`: the failure entry for an exception (valid text, redacted, bounded);
- `run_isolated(fn, items)`: run a batched stage (encoder forward, upsert) and, when it raises, split the batch
  in halves until each bad item stands alone, so the good items still go through;
- `FATAL_ERRORS`: run-level errors (store unreachable, encoder mismatch...) that no boundary swallows.

Who emits what: sources yield `Failure`s for the read, parse, validate and resolve stages (`Source.stream()`);
`indexer.prepare.prepare_product` returns one for resolve, fetch, decode and preprocess; the engines use
`run_isolated` for encode and write. The local job and the Ray engine share all of these, so a record fails the
same way, with the same stage and reason, whichever engine runs it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from mmsearch.errors import (
    CollectionNotFoundError,
    ConfigError,
    EncoderMismatchError,
    MMSearchError,
    ModelLoadError,
    StoreLockedError,
    StoreUnavailableError,
)
from mmsearch.sanitize import redact

T = TypeVar("T")
R = TypeVar("R")

# In the order a record meets them.
STAGES = ("read", "parse", "validate", "resolve", "fetch", "decode", "preprocess", "encode", "write")
MAX_REASON_CHARS = 500
# Errors that concern the run, not one record: splitting a batch would only repeat them for every item.
FATAL_ERRORS: tuple[type[BaseException], ...] = (
    StoreUnavailableError,
    StoreLockedError,
    EncoderMismatchError,
    CollectionNotFoundError,
    ConfigError,
    ModelLoadError,
)


@dataclass(frozen=True)
class Failure:
    """One record that could not be indexed.

    Attributes:
        id: the product id, or "" when the record never got one (a line that is not JSON).
        where: `file:line` for reading to validation; the (redacted) image reference from resolution on.
        stage: one of `STAGES`.
        reason: what went wrong, one line, redacted and bounded.
    """

    id: str
    where: str
    stage: str
    reason: str

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"unknown stage {self.stage!r}; expected one of {', '.join(STAGES)}")

    @classmethod
    def of(cls, stage: str, id: str, where: str, error: BaseException | str) -> Failure:
        """The entry for `error`: our own errors by their message, anything else prefixed with its type."""
        if isinstance(error, str):
            text = error
        elif isinstance(error, MMSearchError):
            text = error.message
        else:
            text = f"{type(error).__name__}: {error}"
        text = " ".join(redact(text).split())
        if len(text) > MAX_REASON_CHARS:
            text = text[: MAX_REASON_CHARS - 1] + "…"
        return cls(id=redact(id), where=redact(where), stage=stage, reason=text or type(error).__name__)

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "where": self.where, "stage": self.stage, "reason": self.reason}


def run_isolated(
    fn: Callable[[list[T]], R], items: Sequence[T]
) -> tuple[list[tuple[list[T], R]], list[tuple[T, Exception]]]:
    """Run `fn` on `items`; if it raises, bisect until the failing items are isolated.

    Returns:
        (done, failed): `done` holds (sub-batch, fn's result) in input order; `failed` holds (item, error) for
        each item that fails on its own. A fatal error (`FATAL_ERRORS`, or anything not an `Exception`) is
        re-raised at once. A batch of n with one bad item costs about 2 log2(n) extra calls.
    """
    items = list(items)
    if not items:
        return [], []
    try:
        return [(items, fn(items))], []
    except FATAL_ERRORS:
        raise
    except Exception as e:
        if len(items) == 1:
            return [], [(items[0], e)]
    mid = len(items) // 2
    done_a, failed_a = run_isolated(fn, items[:mid])
    done_b, failed_b = run_isolated(fn, items[mid:])
    return done_a + done_b, failed_a + failed_b


def allowed_roots(base_dir: str | Path | None, extra: Sequence[str | Path] = ()) -> list[Path]:
    """The folders a catalogue's local image paths may resolve under: its own folder plus `extra`."""
    roots = [Path(base_dir)] if base_dir is not None else []
    return roots + [Path(p) for p in extra]


__all__ = [
    "FATAL_ERRORS",
    "MAX_REASON_CHARS",
    "STAGES",
    "Failure",
    "allowed_roots",
    "run_isolated",
]
