"""Error translation for Milvus calls: pymilvus and gRPC failures become one-line `StoreError`s.

Entry points: `milvus_call(what, collection=..., uri=...)`, a context manager around one client call, and
`quiet(*loggers)`, which silences library loggers that would print a traceback for a failure we report in one line.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import grpc
from pymilvus import MilvusException

from mmsearch.errors import StoreError, StoreUnavailableError


@contextlib.contextmanager
def quiet(*names: str) -> Iterator[None]:
    """Silence library loggers (and their children) that print tracebacks for failures we report in one line."""
    loggers = [logging.getLogger(n) for n in names]
    saved = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for lg, level in zip(loggers, saved, strict=True):
            lg.setLevel(level)


@contextlib.contextmanager
def milvus_call(what: str, *, collection: str, uri: str) -> Iterator[None]:
    """Turn pymilvus failures into one-line `StoreError`s that name the operation and the collection.

    Raises:
        StoreUnavailableError: the server is unreachable or a transport error got through pymilvus.
        StoreError: any other Milvus failure.
    """
    try:
        yield
    except MilvusException as err:
        message = f"Milvus {what} on collection {collection!r} at {uri} failed: {err.message}"
        if err.code in (2, 503) or "unavailable" in str(err.message).lower():
            raise StoreUnavailableError(message) from None
        raise StoreError(message) from None
    except grpc.RpcError as err:  # pymilvus lets some transport errors through unwrapped
        code = err.code() if callable(getattr(err, "code", None)) else None
        detail = err.details() if callable(getattr(err, "details", None)) else str(err)
        raise StoreUnavailableError(
            f"Milvus {what} on collection {collection!r} at {uri} failed: {code}: {detail}"
        ) from None


__all__ = ["milvus_call", "quiet"]
