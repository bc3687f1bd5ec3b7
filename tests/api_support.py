"""Test data for the API, web page and notebook tests: the generated demo catalog indexed into Milvus Lite.

`index_demo_catalog(root)` writes the catalog under `root/catalog`, indexes it with the real index pipeline and the
tiny smoke encoder into `root/milvus.db`, and returns the catalog and the settings the app should run with.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from mmsearch.config import Settings
from mmsearch.engine import Engine
from mmsearch.testing.catalog import DemoCatalog, write_demo_catalog

# An id with every character that breaks naive URL or expression handling.
ODD_ASIN = "odd/asin ?#&%+\"'é"


def odd_record() -> dict:
    return {
        "parent_asin": ODD_ASIN,
        "title": "Product With An Odd Id",
        "main_category": "Electronics",
        "price": "$1.00",
        "images": [{"large": "images/B0USBCCABLE.jpg", "variant": "MAIN"}],
    }


def index_demo_catalog(root: Path, *, smoke_cache: Path, **overrides) -> tuple[DemoCatalog, Settings]:
    catalog = write_demo_catalog(root / "catalog", extra_records=[odd_record()])
    defaults = {
        "milvus_uri": str(root / "milvus.db"),
        "collection": "demo_products",
        "cache_dir": smoke_cache,
        "smoke": True,
        "device": "cpu",
        "dtype": "float32",
    }
    settings = Settings(**{**defaults, **overrides})
    with Engine(settings=settings) as engine:
        report = engine.index(str(catalog.jsonl), workers=2)
    if report.failed:
        raise RuntimeError(f"indexing the demo catalog failed: {report.summary()}")
    return catalog, settings


def real_pipeline(settings: Settings, reranker=None):
    """The search pipeline an `Engine` assembles on `settings` (its store closes with the pipeline)."""
    engine = Engine(settings=settings, reranker=reranker)
    return engine.pipeline(rerank=reranker is not None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(app, *, timeout_s: float = 60.0) -> Iterator[str]:
    """Serve `app` with uvicorn on a free loopback port in a background thread; yields the base URL."""
    import uvicorn

    port = free_port()
    from mmsearch.api.server import uvicorn_options
    from mmsearch.config import Settings

    options = uvicorn_options(Settings())  # the edge settings `mmsearch serve` runs with
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **options))
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("uvicorn exited during start-up")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise TimeoutError(f"uvicorn did not start within {timeout_s:.0f} s")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
