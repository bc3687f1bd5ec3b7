"""ImageFetcher against a local HTTP server: retries, timeouts, cache, byte limit, and bad payloads."""

from __future__ import annotations

import socket

import pytest
from indexer_support import bad_payloads, png_header_only, product_image_bytes, serve_images

from mmsearch.errors import ConfigError, ImageTooLargeError, InvalidImageError
from mmsearch.media.fetch import ImageFetcher


def fetcher(tmp_path=None, **kwargs) -> ImageFetcher:
    options = {"timeout": 2.0, "retries": 2, "backoff": 0.01, "max_workers": 4}
    options.update(kwargs)
    return ImageFetcher(cache_dir=(tmp_path / "cache") if tmp_path else None, **options)


def test_fetch_url_decodes_the_served_image():
    with serve_images({"a.jpg": product_image_bytes(1, size=40)}) as srv, fetcher() as f:
        img = f.open(srv.url("img", "a.jpg"))
    assert img.size == (40, 40)


def test_404_fails_at_once_without_retry():
    with serve_images() as srv, fetcher() as f:
        url = srv.url("img", "missing.jpg")
        with pytest.raises(InvalidImageError, match=r"missing\.jpg: HTTP 404 Not Found$"):
            f.fetch_bytes(url)
        assert srv.hits["/img/missing.jpg"] == 1


def test_503_is_retried_with_backoff_until_it_succeeds():
    body = product_image_bytes(2)
    with serve_images({"b.jpg": body}, flaky_failures=2) as srv, fetcher(retries=3) as f:
        assert f.fetch_bytes(srv.url("flaky", "b.jpg")) == body
        assert srv.hits["/flaky/b.jpg"] == 3
        assert f.stats["retries"] == 2


def test_persistent_503_gives_up_after_the_retry_budget():
    with serve_images({"c.jpg": b"x"}, flaky_failures=100) as srv, fetcher(retries=2) as f:
        with pytest.raises(InvalidImageError, match=r"HTTP 503 \(gave up after 3 attempts\)"):
            f.fetch_bytes(srv.url("flaky", "c.jpg"))
        assert srv.hits["/flaky/c.jpg"] == 3


def test_slow_server_times_out():
    message = r"d\.jpg: timed out after 0\.3 s \(gave up after 1 attempts\)"
    with (
        serve_images({"d.jpg": b"x"}, slow_s=1.5) as srv,
        fetcher(timeout=0.3, retries=0) as f,
        pytest.raises(InvalidImageError, match=message),
    ):
        f.fetch_bytes(srv.url("slow", "d.jpg"))


def test_refused_connection_is_reported():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed right after: nothing listens there
    with fetcher(retries=0) as f, pytest.raises(InvalidImageError, match=r"connection failed \(ConnectError"):
        f.fetch_bytes(f"http://127.0.0.1:{port}/x.jpg")


def test_downloaded_bytes_are_served_from_the_disk_cache(tmp_path):
    body = product_image_bytes(3)
    with serve_images({"e.jpg": body}) as srv:
        url = srv.url("img", "e.jpg")
        with fetcher(tmp_path) as f:
            assert f.fetch_bytes(url) == body
        with fetcher(tmp_path) as f2:
            assert f2.fetch_bytes(url) == body
            assert f2.stats["cache_hits"] == 1
        assert srv.hits["/img/e.jpg"] == 1


def test_cache_holds_no_partial_files(tmp_path):
    with serve_images({"f.jpg": product_image_bytes(4)}) as srv, fetcher(tmp_path) as f:
        f.fetch_bytes(srv.url("img", "f.jpg"))
    files = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert len(files) == 1
    assert not files[0].name.startswith(".part-")


def test_byte_limit_refuses_a_large_download():
    with (
        serve_images({"big.jpg": b"\xff" * 5000}) as srv,
        fetcher(max_bytes=1024) as f,
        pytest.raises(ImageTooLargeError, match=r"big\.jpg: 5000 bytes exceeds the limit of 1024 bytes"),
    ):
        f.fetch_bytes(srv.url("img", "big.jpg"))


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("corrupt.jpg", "corrupt or truncated image"),
        ("truncated.jpg", "corrupt or truncated image"),
        ("not_an_image.jpg", "not an image"),
        ("zero.jpg", "zero-byte file"),
        ("bomb.png", "decompression bomb refused"),
    ],
)
def test_bad_payload_is_refused_with_its_reason(name, reason):
    with (
        serve_images(bad_payloads()) as srv,
        fetcher(max_pixels=1_000_000) as f,
        pytest.raises(InvalidImageError, match=reason),
    ):
        f.open(srv.url("img", name))


def test_pixel_limit_is_checked_from_the_header_and_names_the_url():
    with serve_images({"wide.png": png_header_only(2000, 1000)}) as srv, fetcher(max_pixels=1_000_000) as f:
        url = srv.url("img", "wide.png")
        with pytest.raises(InvalidImageError) as err:
            f.open(url)
    assert str(err.value) == f"{url}: 2000x1000 = 2000000 pixels exceeds the limit of 1000000"


def test_local_paths_and_file_urls_are_read(tmp_path):
    path = tmp_path / "g.png"
    path.write_bytes(product_image_bytes(5, size=30, fmt="PNG"))
    with fetcher() as f:
        assert f.open(str(path)).size == (30, 30)
        assert f.open(f"file://{path}").size == (30, 30)


def test_missing_local_file_names_the_path(tmp_path):
    with fetcher() as f, pytest.raises(InvalidImageError, match=r"nope\.jpg: file not found"):
        f.open(str(tmp_path / "nope.jpg"))


def test_map_yields_results_in_input_order():
    with fetcher(max_workers=4) as f:
        results = [fut.result() for fut in f.map(lambda x: x * x, range(50), window=5)]
    assert results == [x * x for x in range(50)]


def test_invalid_worker_count_is_a_config_error():
    with pytest.raises(ConfigError, match="max_workers must be >= 1, got 0"):
        ImageFetcher(max_workers=0)
