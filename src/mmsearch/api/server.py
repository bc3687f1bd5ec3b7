"""Runs the API under uvicorn: one process, or several worker processes against a Milvus server.

Entry points: `serve(settings, host=..., port=..., workers=N)` (what `mmsearch serve` calls), `uvicorn_options`
(also used by tests that run a real server), and `app_from_env` (the factory each worker process imports).
Milvus Lite allows one process per database file, so more than one worker needs a server URI; each worker loads
its own models and has its own batching queues.
"""

from __future__ import annotations

import os
from typing import Any

from mmsearch.config import Settings
from mmsearch.errors import ConfigError

# h11 buffers at most this much of an incomplete request head. It is well above `serve_max_header_bytes`, so an
# oversized head reaches `EdgeGuard` and gets 431; beyond it, h11 itself refuses the connection with 400.
H11_MAX_HEAD_BYTES = 1024 * 1024
_RERANKER_ENV = "MMSEARCH_SERVE_RERANKER"


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """uvicorn settings of the HTTP edge (the rest of it lives in `mmsearch.api.edge`)."""
    return {
        "h11_max_incomplete_event_size": max(H11_MAX_HEAD_BYTES, 4 * settings.serve_max_header_bytes),
        "timeout_keep_alive": 5,
    }


def check_workers(settings: Settings, workers: int) -> None:
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    if workers > 1 and not settings.is_server_uri:
        raise ConfigError(
            f"--workers {workers} needs a Milvus server: Milvus Lite ({settings.milvus_uri}) allows one process "
            "per database file. Run one worker, or serve the data from a Milvus server "
            "(MMSEARCH_MILVUS_URI=http://host:19530; see docs/SERVING.md)"
        )


def app_from_env():
    """The app as one of several worker processes builds it: settings from `MMSEARCH_*`."""
    from mmsearch.api.app import create_app

    return create_app(Settings(), with_reranker=os.environ.get(_RERANKER_ENV, "1") != "0")


def serve(settings: Settings, *, host: str, port: int, workers: int = 1, with_reranker: bool = True) -> None:
    import uvicorn

    check_workers(settings, workers)
    options = {"host": host, "port": port, "log_level": "info", **uvicorn_options(settings)}
    if workers == 1:
        from mmsearch.api.app import create_app

        uvicorn.run(create_app(settings, with_reranker=with_reranker), **options)
        return
    # Worker processes are spawned fresh: hand them the settings through the environment they read.
    for name, value in settings.model_dump(exclude_unset=True).items():
        os.environ[f"MMSEARCH_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    os.environ[_RERANKER_ENV] = "1" if with_reranker else "0"
    uvicorn.run("mmsearch.api.server:app_from_env", factory=True, workers=workers, **options)


__all__ = ["H11_MAX_HEAD_BYTES", "app_from_env", "check_workers", "serve", "uvicorn_options"]
