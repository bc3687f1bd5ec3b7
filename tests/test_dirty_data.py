"""One test per dirty-data defect of issue 10, through the public entry points (sources, fetcher, job, filters, CLI).

Each failed on the code before the fault boundary: a run-killer (surrogate title, invalid UTF-8 line, deep JSON),
a hang (FIFO image), a leak (paths outside the catalogue, credentials in the failure log), a 4 GiB resize
(60000x3 image), a lost update (first duplicate kept), a rewritten title, a filter that reached Milvus, exit 0.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hostile_catalogue import SECRET_PASSWORD
from indexer_support import amazon_record, product_image_bytes, serve_images

from mmsearch.cli import build_parser, main
from mmsearch.errors import InvalidFilterError, InvalidImageError
from mmsearch.indexer.failures import FailureLog, read_failures
from mmsearch.indexer.job import IndexJob
from mmsearch.indexer.sources import JsonlSource
from mmsearch.media.decode import open_image
from mmsearch.media.fetch import ImageFetcher
from mmsearch.store import ProductFilter, ProductStore
from mmsearch.testing import tiny_visual_bge_encoder


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    return tiny_visual_bge_encoder(tmp_path_factory.mktemp("tiny_bge"))


@pytest.fixture
def store(tmp_path) -> Iterator[ProductStore]:
    with ProductStore(str(tmp_path / "milvus.db"), collection="products") as s:
        yield s


def catalogue(root: Path, records: list) -> Path:
    """products.jsonl under `root`, each record a dict (JSON-encoded) or raw bytes; images under root/img."""
    (root / "img").mkdir(parents=True, exist_ok=True)
    path = root / "products.jsonl"
    path.write_bytes(
        b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in records)
    )
    return path


def good(root: Path, asin: str, seed: int, **extra) -> dict:
    (root / "img").mkdir(parents=True, exist_ok=True)
    (root / "img" / f"{asin}.jpg").write_bytes(product_image_bytes(seed))
    return amazon_record(asin, [f"img/{asin}.jpg"], **extra)


def index(encoder, store, path: Path, tmp_path: Path):
    with (
        ImageFetcher(cache_dir=None, timeout=2.0, retries=0) as fetcher,
        FailureLog(tmp_path / "failures.jsonl") as log,
    ):
        report = IndexJob(encoder, store, fetcher, log, batch_size=4, progress=False).run(JsonlSource(path))
    return report, read_failures(tmp_path / "failures.jsonl")


def read_with_errors(path: Path) -> tuple[list[str], list[tuple[str, str, str]]]:
    errors: list[tuple[str, str, str]] = []
    ids = [p.id for p in JsonlSource(path).products(on_error=lambda *e: errors.append(e))]
    return ids, errors


# -- run-killers --------------------------------------------------------------------------------------------------


def test_title_with_a_lone_surrogate_is_indexed_with_a_replacement_character(encoder, store, tmp_path):
    path = catalogue(tmp_path, [good(tmp_path, "B1", 1, title="case \ud800 cover"), good(tmp_path, "B2", 2)])
    report, failures = index(encoder, store, path, tmp_path)
    assert (report.indexed, report.failed, failures) == (2, 0, [])
    assert store.get(["B1:0"])[0].title == "case \ufffd cover"


def test_a_line_of_invalid_utf8_fails_alone_and_later_lines_are_read(tmp_path):
    path = catalogue(
        tmp_path,
        [good(tmp_path, "B1", 1), b'{"parent_asin": "B2", "title": "caf\xe9"}', good(tmp_path, "B3", 3)],
    )
    ids, errors = read_with_errors(path)
    assert ids == ["B1:0", "B3:0"]
    assert errors == [("", f"{path}:2", "invalid UTF-8 at byte 35 (invalid continuation byte)")]


def test_deeply_nested_json_fails_alone(tmp_path):
    deep = b'{"parent_asin": "B2", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    path = catalogue(tmp_path, [good(tmp_path, "B1", 1), deep, good(tmp_path, "B3", 3)])
    ids, errors = read_with_errors(path)
    assert ids == ["B1:0", "B3:0"]
    assert errors == [("", f"{path}:2", "JSON nested deeper than 64 levels")]


def test_bom_blank_lines_and_crlf_are_accepted(tmp_path):
    path = tmp_path / "products.jsonl"
    a, b = good(tmp_path, "B1", 1), good(tmp_path, "B2", 2)
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(a).encode() + b"\r\n\r\n   \n" + json.dumps(b).encode())
    assert read_with_errors(path) == (["B1:0", "B2:0"], [])


# -- hangs and reads outside the catalogue --------------------------------------------------------------------------


def test_a_named_pipe_as_an_image_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    outcome: list[BaseException | object] = []

    def read() -> None:
        try:
            with ImageFetcher(cache_dir=None) as fetcher:
                outcome.append(fetcher.open(str(fifo)))
        except BaseException as e:  # noqa: BLE001 (handed to the assertion below)
            outcome.append(e)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=10)
    if reader.is_alive():  # unblock the reader so the test process can end, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("reading a FIFO blocked")
    assert isinstance(outcome[0], InvalidImageError)
    assert str(outcome[0]) == f"{fifo}: a named pipe (FIFO), not a regular file"


@pytest.mark.parametrize("how", ["absolute", "dotdot", "symlink", "file_url"])
def test_an_image_path_escaping_the_catalogue_is_refused(tmp_path, how):
    root, outside = tmp_path / "catalogue", tmp_path / "outside"
    outside.mkdir()
    canary = outside / "canary.jpg"
    canary.write_bytes(product_image_bytes(7))
    (root / "img").mkdir(parents=True)
    (root / "img" / "link.jpg").symlink_to(canary)
    ref = {
        "absolute": str(canary),
        "dotdot": "img/../../outside/canary.jpg",
        "symlink": "img/link.jpg",
        "file_url": f"file://{canary}",
    }[how]
    path = catalogue(root, [amazon_record("B1", [ref]), good(root, "B2", 2)])
    ids, errors = read_with_errors(path)
    assert ids == ["B2:0"]
    ((pid, where, reason),) = errors
    assert (pid, where) == ("B1:0", f"{path}:1")
    assert f"outside the allowed folders ({root}); pass --allow-path DIR" in reason


def test_allow_path_widens_the_allowed_folders(tmp_path):
    root, extra = tmp_path / "catalogue", tmp_path / "shared_images"
    extra.mkdir()
    (extra / "a.jpg").write_bytes(product_image_bytes(3))
    path = catalogue(root, [amazon_record("B1", [str(extra / "a.jpg")])])
    errors: list = []
    source = JsonlSource(path, allow_paths=[extra])
    assert [p.id for p in source.products(on_error=lambda *e: errors.append(e))] == ["B1:0"]
    assert errors == []


def test_the_fetcher_refuses_a_path_outside_its_roots_at_read_time(tmp_path):
    (tmp_path / "root").mkdir()
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(product_image_bytes(1))
    with (
        ImageFetcher(cache_dir=None, allowed_roots=[tmp_path / "root"]) as fetcher,
        pytest.raises(InvalidImageError, match="outside the allowed folders"),
    ):
        fetcher.open(str(tmp_path / "root" / ".." / "secret.jpg"))


# -- leaks -----------------------------------------------------------------------------------------------------------


def test_credentials_and_query_strings_never_reach_the_failure_log(encoder, store, tmp_path):
    with serve_images({}) as srv:
        host = srv.base.removeprefix("http://")
        url = f"http://user:{SECRET_PASSWORD}@{host}/img/missing.jpg?sig={SECRET_PASSWORD}"
        path = catalogue(tmp_path, [amazon_record("B1", [url])])
        report, failures = index(encoder, store, path, tmp_path)
    assert report.failed == 1
    assert SECRET_PASSWORD not in (tmp_path / "failures.jsonl").read_text()
    assert SECRET_PASSWORD not in (report.first_failure or "")
    assert failures[0]["source"] == f"http://{host}/img/missing.jpg?***"  # image_url drops the userinfo
    assert failures[0]["reason"] == f"http://***@{host}/img/missing.jpg?***: HTTP 404 Not Found"


# -- memory ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(60000, 3), (3, 60000)])
def test_an_extreme_aspect_ratio_is_refused_from_the_header(size):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size).save(buf, format="PNG")
    with pytest.raises(InvalidImageError, match=r"has an aspect ratio of 20000:1, over the limit of 50:1"):
        open_image(buf.getvalue())


# -- updates and verbatim text -----------------------------------------------------------------------------------


def test_titles_are_stored_verbatim(encoder, store, tmp_path):
    title = "  Case\tfor\nphones\u2028(blue)  "
    path = catalogue(tmp_path, [good(tmp_path, "B1", 1, title=title)])
    index(encoder, store, path, tmp_path)
    assert store.get(["B1:0"])[0].title == title


def test_the_later_of_two_records_with_one_id_wins(encoder, store, tmp_path):
    first = good(tmp_path, "B1", 1, title="old title", price="$5.00")
    later = dict(first, title="new title", price="$4.00")
    path = catalogue(tmp_path, [first, good(tmp_path, "B2", 2), later])
    index(encoder, store, path, tmp_path)
    (hit,) = store.get(["B1:0"])
    assert (hit.title, hit.price) == ("new title", 4.0)


# -- filters and exit codes ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [("category", "Phones\udc80"), ("parent_asin", "\ud800"), ("category", "a\x00b"), ("ids", ("x\udfff",))],
)
def test_a_filter_value_that_is_not_valid_text_is_refused(field, value):
    with pytest.raises(InvalidFilterError):
        ProductFilter(**{field: value})


def test_cli_search_with_an_invalid_category_exits_2_before_touching_milvus(tmp_path, capsys):
    db = tmp_path / "never_created.db"
    code = main(
        ["search", "--smoke", "--text", "case", "--category", "Phones\udcff", "--milvus-uri", str(db)]
    )
    out, err = capsys.readouterr()
    assert code == 2
    assert err.startswith("mmsearch search: error: invalid filter category='Phones\\udcff': ")
    assert not db.exists()


def test_index_help_documents_the_exit_codes():
    sub = build_parser()._subparsers._group_actions[0].choices["index"]
    text = sub.format_help()
    for code in (
        "0  every record was indexed",
        "3  the run completed, but some records failed",
        "2  the run",
    ):
        assert code in text


def test_the_store_row_mapping_makes_any_product_text_valid_and_byte_bounded():
    from mmsearch.store.rows import product_to_row
    from mmsearch.store.schema import VARCHAR_MAX_BYTES
    from mmsearch.types import Product

    limit = VARCHAR_MAX_BYTES["title"]
    row = product_to_row(Product(id="p1", image="", title="\ud800" + "é" * limit, main_category="a\x00b"))
    assert row["title"].startswith("\ufffdé")
    assert len(row["title"].encode("utf-8")) <= limit  # cut on a character boundary: encodes cleanly
    assert row["main_category"] == "ab"
