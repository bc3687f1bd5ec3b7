"""Milvus Lite's database lifetime: lock probing, opening, and a process-wide reference count.

Entry points: `open_lite(uri, timeout=...) -> (client, path)` and `release_lite(path)`. Milvus Lite allows one
process per database (a file lock) and keeps a database open for the whole process even after its clients close;
this module reports a database held by another process as `StoreLockedError` (pointing to server mode) and
releases a database once this process's last store on it closes, so another process can open it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import threading
from pathlib import Path

from pymilvus import MilvusClient, MilvusException

from mmsearch.errors import CollectionNotFoundError, StoreError, StoreLockedError
from mmsearch.store.calls import quiet

# Milvus Lite flushes and indexes a full memtable inside the write that fills it, and builds missing indexes on
# load: over 30 s for an HNSW segment of ~40k 768-d rows on 2 cores. Those calls get this much longer.
LITE_WRITE_TIMEOUT_S = 900.0

_lite_open: dict[str, int] = {}
_lite_guard = threading.Lock()


def _lite_lock_files(path: Path) -> list[Path]:
    # milvus-lite 3.x: the .db is a directory holding LOCK; 2.5.x: a file beside a hidden `.name.lock`.
    return [path / "LOCK", path.parent / f".{path.name}.lock"]


def lock_holder(path: Path) -> Path | None:
    """The lock file of Milvus Lite database `path` if another process holds it, else None."""
    for lock in _lite_lock_files(path):
        if not lock.is_file():
            continue
        # 3.x takes a flock(), 2.5.x a POSIX lockf(); the two do not see each other, so probe both.
        with open(lock, "ab") as fh:
            for take, release in ((fcntl.flock, fcntl.LOCK_UN), (fcntl.lockf, fcntl.LOCK_UN)):
                try:
                    take(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as err:
                    if err.errno in (errno.EAGAIN, errno.EACCES):
                        return lock
                    continue
                take(fh, release)
    return None


def open_lite(uri: str, *, timeout: float, create: bool = True) -> tuple[MilvusClient, str]:
    """Open the Milvus Lite database at `uri` (a path ending in .db) and count it as held by this process.

    Args:
        create: make the database (and its folder) when missing; False raises `CollectionNotFoundError` instead,
            so a search never leaves an empty database behind.
    Raises:
        StoreLockedError: another process holds the database. StoreError: the path or the open is bad.
    """
    if not uri.endswith(".db"):
        raise StoreError(
            f"Milvus Lite path {uri!r} must end with .db; for a server use a URI like http://host:19530"
        )
    path = Path(uri).expanduser().resolve()
    if not create and not path.exists():
        raise CollectionNotFoundError(
            f"no Milvus Lite database at {path}; run `mmsearch index` first (or `mmsearch demo` for an offline "
            "demo), or point --milvus-uri / MMSEARCH_MILVUS_URI at an existing one"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    with _lite_guard:
        ours = str(path) in _lite_open
    # Probe before opening: a failed open can disturb the evidence (milvus-lite 2.5 recreates its lock file).
    # Never probe a database this process holds: that would trip over our own lock.
    lock = None if ours else lock_holder(path)
    if lock is None:
        try:
            with quiet("pymilvus", "milvus_lite", "grpc", "root"):
                client = MilvusClient(str(path), timeout=timeout, dedicated=True)
        except MilvusException as err:
            lock = lock_holder(path)
            if lock is None:
                raise StoreError(f"cannot open Milvus Lite database {path}: {err.message}") from None
    if lock is not None:
        raise StoreLockedError(
            f"Milvus Lite database {path} is in use by another process (lock file {lock}). "
            "Milvus Lite allows one process per database: stop the other process, or serve the "
            f"database with `milvus-lite server --data-dir {path} --host 127.0.0.1 --port 19530` and "
            "use server mode: MMSEARCH_MILVUS_URI=http://127.0.0.1:19530"
        )
    with _lite_guard:
        _lite_open[str(path)] = _lite_open.get(str(path), 0) + 1
    return client, str(path)


def release_lite(path: str) -> None:
    """Drop one reference to the database at `path`; the last one releases it (and its lock) in Milvus Lite."""
    with _lite_guard:
        _lite_open[path] -= 1
        if _lite_open[path] > 0:
            return
        del _lite_open[path]
    with contextlib.suppress(Exception), quiet("milvus_lite"):
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(path)


__all__ = ["LITE_WRITE_TIMEOUT_S", "lock_holder", "open_lite", "release_lite"]
