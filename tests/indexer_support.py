"""Test data for the indexer tests: generated product images in the Amazon schema, bad payloads, and a local
HTTP server on 127.0.0.1 that serves images, 404s, slow and flaky responses."""

from __future__ import annotations

import io
import json
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from PIL import Image


def product_image_bytes(seed: int, size: int = 72, fmt: str = "JPEG") -> bytes:
    """A distinct image per seed: blocky random colours (survive JPEG), so every product gets its own vector."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
    img = Image.fromarray(blocks).resize((size, size), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format=fmt, quality=95) if fmt == "JPEG" else img.save(buf, format=fmt)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A small PNG whose header declares width x height pixels (a decompression bomb when large)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def bad_payloads() -> dict[str, bytes]:
    """Name -> bytes that must each be refused by the fetcher/decoder."""
    good = product_image_bytes(999)
    return {
        "corrupt.jpg": good[:400] + bytes(range(256)) * 2 + good[-2:],  # valid headers, garbage scan data
        "truncated.jpg": good[: len(good) // 2],
        "not_an_image.jpg": b"<html><body>this is not an image</body></html>",
        "zero.jpg": b"",
        "bomb.png": png_header_only(60_000, 60_000),
    }


def amazon_record(
    asin: str, images: list[str], *, title: str = "", category: str = "Cell Phones", **extra
) -> dict:
    """One metadata record in the Amazon Reviews 2023 raw schema."""
    record = {
        "main_category": category,
        "title": title,
        "average_rating": 4.2,
        "rating_number": 17,
        "features": ["feature one"],
        "description": [],
        "price": "$12.99",
        "images": [{"thumb": None, "large": ref, "variant": "MAIN" if i == 0 else f"PT0{i}", "hi_res": None}
                   for i, ref in enumerate(images)],
        "videos": [],
        "store": "ACME",
        "categories": [],
        "details": {"Color": "Blue"},
        "parent_asin": asin,
        "bought_together": None,
    }  # fmt: skip
    record.update(extra)
    return record


def write_catalog(root: Path, n_products: int, images_per_product: int = 2, *, start_seed: int = 0) -> Path:
    """`root/products.jsonl` with n_products records whose images are local files under `root/img/` (relative)."""
    (root / "img").mkdir(parents=True, exist_ok=True)
    lines = []
    for p in range(n_products):
        refs = []
        for i in range(images_per_product):
            name = f"img/p{p}_{i}.jpg"
            (root / name).write_bytes(product_image_bytes(start_seed + p * images_per_product + i))
            refs.append(name)
        title = f"Product number {p}" if p % 3 else ""  # some untitled products
        lines.append(json.dumps(amazon_record(f"B{p:09d}", refs, title=title)))
    path = root / "products.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class ImageServer:
    """Routes: /img/<name> serves `files[name]`; /slow/<name> sleeps `slow_s` first; /flaky/<name> answers 503
    `flaky_failures` times per name, then the file; /trunc/<name> declares the file's length but sends half and
    closes; anything else is 404. `hits` counts requests per path."""

    files: dict[str, bytes] = field(default_factory=dict)
    slow_s: float = 2.0
    flaky_failures: int = 2
    hits: dict[str, int] = field(default_factory=dict)
    base: str = ""

    def url(self, route: str, name: str) -> str:
        return f"{self.base}/{route}/{name}"


@contextmanager
def serve_images(files: dict[str, bytes] | None = None, **kwargs) -> Iterator[ImageServer]:
    state = ImageServer(files=dict(files or {}), **kwargs)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output clean
            pass

        def do_GET(self):
            with lock:
                state.hits[self.path] = state.hits.get(self.path, 0) + 1
                count = state.hits[self.path]
            parts = self.path.strip("/").split("/", 1)
            route, name = (parts + [""])[:2]
            if route == "slow":
                time.sleep(state.slow_s)
            if route == "flaky" and count <= state.flaky_failures:
                self._send(503, b"busy")
                return
            if route in ("img", "slow", "flaky") and name in state.files:
                self._send(200, state.files[name], "image/jpeg")
                return
            if route == "trunc" and name in state.files:  # declares the full length, sends half, hangs up
                body = state.files[name]
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "image/jpeg")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass
                self.close_connection = True
                return
            self._send(404, b"not found")

        def _send(self, status: int, body: bytes, ctype: str = "text/plain") -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout tests)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
