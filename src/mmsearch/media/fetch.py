"""Fetch, cache, decode and validate product images from URLs, local paths or bytes.

Entry point: `ImageFetcher`. URLs go through one pooled `httpx.Client` with timeouts, retries with exponential
backoff (timeouts, connection errors, 429 and 5xx; never other 4xx), a byte limit enforced while streaming, and an
on-disk cache keyed by the URL's hash. Every image is decoded through `mmsearch.media.decode.open_image`, so any bad
input ends as an `InvalidImageError` naming the source and the reason. URLs in messages are redacted (no
credentials, no query string). With `allowed_roots`, local paths must resolve under one of those folders, and only
regular files are read (`media.decode.read_regular_file`). The indexer calls the three steps apart (`resolve`,
`fetch_bytes`, `decode`) so a failure names its stage; `open` does all three.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import httpx
from PIL import Image

from mmsearch.errors import ConfigError, ImageTooLargeError, InvalidImageError
from mmsearch.media.decode import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    confine,
    open_image,
    read_regular_file,
)
from mmsearch.sanitize import redact, redact_url

T = TypeVar("T")
R = TypeVar("R")

USER_AGENT = "mmsearch-indexer/0.1 (+https://github.com/milvus-io/bootcamp)"
_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")


def is_url(ref: object) -> bool:
    return isinstance(ref, str) and ref.startswith(("http://", "https://"))


def url_scheme(ref: str) -> str | None:
    """The scheme of a URL-looking reference (`data`, `ftp`, `http`...), None for a plain path."""
    m = _SCHEME.match(ref)
    return m.group(1).lower() if m else None


class _Retryable(Exception):
    """A transient failure worth another attempt; carries the user-facing reason."""


class ImageFetcher:
    """Turns an image reference (URL, local path, `file://` URL or raw bytes) into a validated PIL image.

    Args:
        cache_dir: directory for downloaded bytes (`<cache_dir>/<sha256[:2]>/<sha256>`); None disables the cache.
        max_bytes / max_pixels: bounds on the encoded size and on width*height.
        timeout: seconds for connect/read of each attempt, and the total budget of one download attempt.
        retries: extra attempts after the first for transient failures.
        backoff: first retry delay in seconds, doubled each time (with up to 25% jitter).
        max_workers: thread-pool size for `map`, and the HTTP connection pool size.
        allowed_roots: folders local paths must resolve under (symlinks followed); None allows any local path
            (a user's own query image), an empty list allows none.
        transport: optional httpx transport (tests).
    """

    def __init__(
        self,
        *,
        cache_dir: str | Path | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        timeout: float = 15.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_workers: int = 8,
        allowed_roots: Sequence[str | Path] | None = None,
        transport: httpx.BaseTransport | None = None,
    ):
        if max_workers < 1:
            raise ConfigError(f"max_workers must be >= 1, got {max_workers}")
        if retries < 0:
            raise ConfigError(f"retries must be >= 0, got {retries}")
        if timeout <= 0:
            raise ConfigError(f"timeout must be > 0 seconds, got {timeout}")
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_workers = max_workers
        self.allowed_roots = None if allowed_roots is None else [Path(r) for r in allowed_roots]
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=max_workers, max_keepalive_connections=max_workers),
            follow_redirects=True,
            headers={"User-Agent": USER_AGENT},
            transport=transport,
        )
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self.stats = {"downloaded": 0, "cache_hits": 0, "retries": 0}
        self._stats_lock = threading.Lock()

    # -- bytes -------------------------------------------------------------------------------------------------

    def resolve(self, ref: str | Path | bytes) -> str | Path | bytes:
        """Check a reference before any I/O: http(s) URLs pass, other schemes (data:, ftp:...) are refused,
        a `file://` URL becomes its path, and a local path must lie under `allowed_roots` when those are set.

        Raises:
            InvalidImageError: an unsupported scheme; `PathNotAllowedError` for a path outside the roots.
        """
        if isinstance(ref, bytes | bytearray | memoryview) or is_url(ref):
            return ref
        text = str(ref)
        if text.startswith("file://"):
            text = text[len("file://") :]
        elif isinstance(ref, str) and (scheme := url_scheme(text)) is not None:
            raise InvalidImageError(
                f"{redact_url(text)}: unsupported URL scheme {scheme + ':'!r}; expected http(s) or a local path"
            )
        if self.allowed_roots is not None:
            return confine(text, self.allowed_roots)
        return Path(text)

    def fetch_bytes(self, ref: str | Path | bytes) -> bytes:
        """Return the encoded bytes behind `ref`, bounded by `max_bytes`. Raises `InvalidImageError`."""
        if isinstance(ref, bytes | bytearray | memoryview):
            data = bytes(ref)
            if len(data) > self.max_bytes:
                raise ImageTooLargeError(f"<{len(data)} bytes>: exceeds the limit of {self.max_bytes} bytes")
            return data
        if is_url(ref):
            return self._get_url(str(ref))
        path = self.resolve(ref)
        return read_regular_file(path, self.max_bytes, roots=self.allowed_roots)

    def decode(self, data: bytes, ref: str | Path | bytes) -> Image.Image:
        """Decode fetched bytes with the pixel and aspect bounds; errors name `ref` (redacted)."""
        try:
            return open_image(data, max_bytes=self.max_bytes, max_pixels=self.max_pixels)
        except InvalidImageError as e:
            # open_image names bytes as "<n bytes>"; name the URL or path the user knows instead.
            anonymous = f"<{len(data)} bytes>"
            if isinstance(ref, str | Path) and e.message.startswith(anonymous):
                raise type(e)(f"{redact_url(str(ref))}{e.message[len(anonymous) :]}") from None
            raise

    def _count(self, key: str) -> None:
        with self._stats_lock:
            self.stats[key] += 1

    def _cache_path(self, url: str) -> Path | None:
        if self.cache_dir is None:
            return None
        key = hashlib.sha256(url.encode("utf-8")).hexdigest()
        return self.cache_dir / key[:2] / key

    def _get_url(self, url: str) -> bytes:
        cached = self._cache_path(url)
        if cached is not None and cached.is_file():
            try:
                data = cached.read_bytes()
            except OSError:
                data = b""
            if 0 < len(data) <= self.max_bytes:
                self._count("cache_hits")
                return data
        data = self._download(url)
        self._count("downloaded")
        if cached is not None:
            _atomic_write(cached, data)
        return data

    def _download(self, url: str) -> bytes:
        attempt = 0
        while True:
            try:
                return self._download_once(url)
            except _Retryable as e:
                if attempt >= self.retries:
                    raise InvalidImageError(
                        f"{redact_url(url)}: {e} (gave up after {attempt + 1} attempts)"
                    ) from None
                delay = self.backoff * (2**attempt) * (1 + 0.25 * random.random())
                attempt += 1
                self._count("retries")
                time.sleep(delay)

    def _download_once(self, url: str) -> bytes:
        shown = redact_url(url)
        deadline = time.monotonic() + self.timeout
        try:
            with self._client.stream("GET", url) as resp:
                if resp.status_code in _RETRY_STATUS:
                    raise _Retryable(f"HTTP {resp.status_code}")
                if resp.status_code != 200:
                    raise InvalidImageError(f"{shown}: HTTP {resp.status_code} {resp.reason_phrase}".rstrip())
                declared = resp.headers.get("content-length")
                if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
                    raise ImageTooLargeError(
                        f"{shown}: {declared} bytes exceeds the limit of {self.max_bytes} bytes"
                    )
                chunks: list[bytes] = []
                size = 0
                for chunk in resp.iter_bytes():
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise ImageTooLargeError(f"{shown}: more than {self.max_bytes} bytes (the limit)")
                    chunks.append(chunk)
                    # httpx's timeout is per read; a slow drip must not run forever.
                    if time.monotonic() > deadline:
                        raise _Retryable(f"timed out after {self.timeout:g} s")
                return b"".join(chunks)
        except httpx.TimeoutException:
            raise _Retryable(f"timed out after {self.timeout:g} s") from None
        except httpx.TransportError as e:
            raise _Retryable(f"connection failed ({type(e).__name__}: {redact(str(e))})") from None
        except (httpx.InvalidURL, httpx.UnsupportedProtocol, ValueError) as e:
            raise InvalidImageError(f"{shown}: invalid URL ({redact(str(e))})") from None

    # -- images ------------------------------------------------------------------------------------------------

    def open(self, ref: str | Path | bytes) -> Image.Image:
        """Fetch and decode one image with the byte and pixel bounds. Raises `InvalidImageError`."""
        return self.decode(self.fetch_bytes(ref), ref)

    def map(
        self, fn: Callable[[T], R], items: Iterable[T], *, window: int | None = None
    ) -> Iterator[Future[R]]:
        """Run `fn` over `items` on the thread pool, yielding futures in input order.

        At most `window` (default 2 x max_workers) calls are in flight, so a long input is never submitted at once.
        If iterating `items` raises, the futures already submitted are yielded first, then the error is raised.
        """
        pool = self._ensure_pool()
        limit = window or 2 * self.max_workers
        pending: deque[Future[R]] = deque()
        input_error: Exception | None = None
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= limit:
                    yield pending.popleft()
        except Exception as e:  # the input failed: still hand out the work already submitted, then re-raise
            input_error = e
        while pending:
            yield pending.popleft()
        if input_error is not None:
            raise input_error

    def _ensure_pool(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="mmsearch-fetch")
            return self._pool

    def close(self) -> None:
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None
        self._client.close()

    def __enter__(self) -> ImageFetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _atomic_write(path: Path, data: bytes) -> None:
    """Write to a temp file beside `path`, then rename, so readers never see a partial file. Best effort."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".part-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError:
        # A read-only or full cache must not fail the fetch itself.
        pass


__all__ = ["USER_AGENT", "ImageFetcher", "is_url", "url_scheme"]
