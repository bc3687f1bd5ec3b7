"""The HTTP edge under hostile clients (issue 12), against a real uvicorn on loopback with the options
`mmsearch serve` uses: a stalled body or an overstated Content-Length gets 408, oversized headers 431, a client that
hangs up is logged at info (never a 500), and hits never carry server paths.
"""

from __future__ import annotations

import logging
import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest
from api_support import index_demo_catalog, running_server

from mmsearch.api.app import create_app
from mmsearch.api.server import check_workers
from mmsearch.errors import ConfigError

BODY_TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("api-edge")
    catalog, settings = index_demo_catalog(
        root, smoke_cache=tmp_path_factory.getbasetemp() / "smoke-cache", serve_body_timeout_s=BODY_TIMEOUT_S
    )
    with running_server(create_app(settings, with_reranker=False)) as url:
        yield url, catalog, settings


def _raw(url: str, head: bytes, body: bytes = b"", *, wait_s: float = 10.0) -> bytes:
    """Send a hand-written request, then read until the server closes the connection (or `wait_s`)."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=wait_s) as s:
        s.sendall(head + body)
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pass
    return b"".join(chunks)


def _post_head(length: int) -> bytes:
    return (
        f"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def test_overstated_content_length_gets_408_and_the_connection_closes(served):
    url, _, _ = served
    t0 = time.monotonic()
    reply = _raw(url, _post_head(1000), b"instruction=case")
    assert reply.startswith(b"HTTP/1.1 408 "), reply[:200]
    assert b'"error":"request_timeout"' in reply
    assert time.monotonic() - t0 < 10, "the server must cut the stalled body off by itself"


def test_a_body_that_stalls_midway_gets_408(served):
    url, _, _ = served
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=15) as s:
        s.sendall(_post_head(40) + b"instruction=")
        time.sleep(BODY_TIMEOUT_S / 3)
        s.sendall(b"ca")  # trickles, then stops
        reply = s.recv(65536)
    assert reply.startswith(b"HTTP/1.1 408 "), reply[:200]


def test_oversized_request_headers_get_431(served):
    url, _, _ = served
    resp = httpx.get(url + "/healthz", headers={"X-Big": "a" * 100_000}, timeout=30)
    assert resp.status_code == 431
    assert resp.json()["error"] == "headers_too_large"


def test_client_disconnect_is_logged_at_info_never_as_a_500(served, caplog):
    url, _, _ = served
    caplog.set_level(logging.INFO, logger="mmsearch.api")
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as s:
        s.sendall(_post_head(1000) + b"instruction=")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(
        "client disconnected" in r.getMessage() for r in caplog.records
    ):
        time.sleep(0.1)
    mine = [r for r in caplog.records if r.name == "mmsearch.api"]
    assert any(r.levelno == logging.INFO and "client disconnected" in r.getMessage() for r in mine)
    assert not [r for r in mine if r.levelno >= logging.ERROR], [r.getMessage() for r in mine]
    assert httpx.get(url + "/healthz", timeout=30).status_code == 200


def test_hits_carry_image_endpoint_urls_never_server_paths(served):
    url, catalog, settings = served
    image = catalog.image_path("B0ZEBRACASE").read_bytes()
    resp = httpx.post(
        url + "/search", files={"image": ("q.jpg", image, "image/jpeg")}, data={"k": "5"}, timeout=60
    )
    assert resp.status_code == 200, resp.text
    hits = resp.json()["hits"]
    assert all(h["image_url"].startswith("/images?id=") for h in hits)
    assert str(catalog.root) not in resp.text and str(settings.cache_dir) not in resp.text
    assert httpx.get(url + hits[0]["image_url"], timeout=30).headers["content-type"] == "image/jpeg"


def test_more_than_one_worker_on_milvus_lite_is_refused(served):
    _, _, settings = served
    with pytest.raises(ConfigError) as err:
        check_workers(settings, 2)
    assert str(err.value).startswith(
        f"--workers 2 needs a Milvus server: Milvus Lite ({settings.milvus_uri})"
    )
    check_workers(settings.model_copy(update={"milvus_uri": "http://127.0.0.1:19530"}), 4)
