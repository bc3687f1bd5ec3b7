"""IndexJob end to end: tiny random-weight Visualized BGE, real Milvus Lite in tmp_path, a loopback image server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from indexer_support import amazon_record, bad_payloads, product_image_bytes, serve_images, write_catalog

from mmsearch.errors import DataSourceError, EncoderMismatchError
from mmsearch.indexer.failures import FailureLog, read_failures
from mmsearch.indexer.job import IndexJob, IndexReport
from mmsearch.indexer.sources import JsonlSource, Source
from mmsearch.media.fetch import ImageFetcher
from mmsearch.store import ProductStore
from mmsearch.testing import tiny_visual_bge_encoder
from mmsearch.types import Product


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    return tiny_visual_bge_encoder(tmp_path_factory.mktemp("tiny_bge"))


@pytest.fixture
def store(tmp_path) -> Iterator[ProductStore]:
    with ProductStore(str(tmp_path / "milvus.db"), collection="products") as s:
        yield s


def run_job(encoder, store, source: Source, tmp_path: Path, **kwargs) -> IndexReport:
    fetch_options = {"timeout": 2.0, "retries": 1, "backoff": 0.01, **kwargs.pop("fetch_options", {})}
    with (
        ImageFetcher(cache_dir=tmp_path / "cache", **fetch_options) as f,
        FailureLog(tmp_path / "failures.jsonl") as log,
    ):
        job = IndexJob(
            encoder, store, f, log, batch_size=kwargs.pop("batch_size", 4), progress=False, **kwargs
        )
        return job.run(source)


def test_indexed_image_is_rank_1_for_itself_as_an_image_only_query(encoder, store, tmp_path):
    catalog = write_catalog(tmp_path / "data", 8, images_per_product=2)
    report = run_job(encoder, store, JsonlSource(catalog), tmp_path)
    assert (report.indexed, report.failed) == (16, 0)
    for pid, file in [
        ("B000000000:0", "p0_0.jpg"),
        ("B000000003:1", "p3_1.jpg"),
        ("B000000007:0", "p7_0.jpg"),
    ]:
        query = encoder.encode_images([str(tmp_path / "data" / "img" / file)])[0]
        hits = store.search(query, k=5)
        assert hits[0].id == pid, f"{file} should retrieve its own product first, got {[h.id for h in hits]}"
        assert hits[0].score == pytest.approx(1.0, abs=1e-4)


def test_stored_fields_come_from_the_record(encoder, store, tmp_path):
    catalog = write_catalog(tmp_path / "data", 2, images_per_product=1)
    run_job(encoder, store, JsonlSource(catalog), tmp_path)
    (hit,) = store.get(["B000000001:0"])
    assert (hit.title, hit.main_category, hit.price, hit.parent_asin) == (
        "Product number 1",
        "Cell Phones",
        12.99,
        "B000000001",
    )
    assert hit.image_url == str((tmp_path / "data" / "img" / "p1_0.jpg").resolve())


def test_rerun_skips_everything_without_encoding(encoder, store, tmp_path):
    source = JsonlSource(write_catalog(tmp_path / "data", 5, images_per_product=2))
    run_job(encoder, store, source, tmp_path)
    again = run_job(encoder, store, source, tmp_path)
    assert (again.indexed, again.skipped_existing, again.failed, again.batches) == (0, 10, 0, 0)
    assert store.count() == 10


def test_partial_run_then_full_run_indexes_only_the_rest(encoder, store, tmp_path):
    catalog = write_catalog(tmp_path / "data", 5, images_per_product=2)
    first = run_job(encoder, store, JsonlSource(catalog, limit=3), tmp_path)
    second = run_job(encoder, store, JsonlSource(catalog), tmp_path)
    assert (first.indexed, second.indexed, second.skipped_existing) == (3, 7, 3)
    assert store.count() == 10


def test_repeated_id_in_one_run_keeps_the_later_record(encoder, store, tmp_path):
    catalog = write_catalog(tmp_path / "data", 3, images_per_product=1)
    lines = catalog.read_text().splitlines()
    newer = json.loads(lines[1]) | {"title": "newer title", "price": "$1.50"}
    catalog.write_text("\n".join([*lines, json.dumps(newer)]) + "\n")
    report = run_job(encoder, store, JsonlSource(catalog), tmp_path, batch_size=2)
    assert (report.indexed, report.duplicates, report.failed) == (4, 1, 0)  # written twice, stored once
    assert store.count() == 3
    (hit,) = store.get(["B000000001:0"])
    assert (hit.title, hit.price) == ("newer title", 1.5)


def test_rerun_with_a_repeated_id_adds_nothing(encoder, store, tmp_path):
    catalog = write_catalog(tmp_path / "data", 2, images_per_product=1)
    catalog.write_text(catalog.read_text() * 2)
    run_job(encoder, store, JsonlSource(catalog), tmp_path)
    again = run_job(encoder, store, JsonlSource(catalog), tmp_path)
    assert (again.indexed, again.skipped_existing, again.duplicates, again.batches) == (0, 2, 2, 0)


def test_bad_inputs_land_in_the_failure_log_and_the_rest_is_indexed(encoder, store, tmp_path):
    good = {f"good{i}.jpg": product_image_bytes(i) for i in range(4)}
    with serve_images({**good, **bad_payloads()}, slow_s=1.0, flaky_failures=1) as srv:
        expected_failures = {
            "BCORRUPT:0": "corrupt or truncated image",
            "BTRUNC:0": "corrupt or truncated image",
            "BNOTIMG:0": "not an image",
            "BZERO:0": "zero-byte file",
            "BBOMB:0": "decompression bomb refused",
            "B404:0": "HTTP 404 Not Found",
            "BSLOW:0": "timed out after 0.3 s",
            "BLOCAL:0": "file not found",
        }
        records = [amazon_record(f"BGOOD{i}", [srv.url("img", f"good{i}.jpg")]) for i in range(3)]
        records += [
            amazon_record(
                "BFLAKY", [srv.url("flaky", "good3.jpg")]
            ),  # 503 once, then served: retried, indexed
            amazon_record("BCORRUPT", [srv.url("img", "corrupt.jpg")]),
            amazon_record("BTRUNC", [srv.url("img", "truncated.jpg")]),
            amazon_record("BNOTIMG", [srv.url("img", "not_an_image.jpg")]),
            amazon_record("BZERO", [srv.url("img", "zero.jpg")]),
            amazon_record("BBOMB", [srv.url("img", "bomb.png")]),
            amazon_record("B404", [srv.url("img", "missing.jpg")]),
            amazon_record("BSLOW", [srv.url("slow", "good0.jpg")]),
            amazon_record("BLOCAL", ["img/not_there.jpg"]),
            {"title": "a record without parent_asin"},
        ]
        path = tmp_path / "products.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        report = run_job(
            encoder, store, JsonlSource(path), tmp_path, fetch_options={"timeout": 0.3, "max_pixels": 10**6}
        )
    assert (report.indexed, report.failed) == (4, 9)
    assert store.count() == 4
    logged = {r["id"]: r for r in read_failures(tmp_path / "failures.jsonl")}
    assert set(logged) == {*expected_failures, ""}
    for pid, reason in expected_failures.items():
        assert reason in logged[pid]["reason"], f"{pid}: {logged[pid]['reason']}"
    assert logged[""] == {**logged[""], "source": f"{path}:13", "reason": "missing parent_asin"}


def test_indexing_with_another_encoder_is_refused(encoder, store, tmp_path):
    catalog = write_catalog(tmp_path / "data", 1, images_per_product=1)
    run_job(encoder, store, JsonlSource(catalog), tmp_path)
    other = tiny_visual_bge_encoder(tmp_path / "other_bge", seed=1)
    with pytest.raises(EncoderMismatchError) as err:
        run_job(other, store, JsonlSource(catalog), tmp_path)
    assert str(err.value).startswith(
        f"collection 'products' at {tmp_path / 'milvus.db'} was built with encoder {encoder.model_id!r} (dim 768), "
        f"but this run uses encoder {other.model_id!r} (dim 768)."
    )
    assert store.count() == 1


class _FailingSource(Source):
    """Yields `good` products, then fails like a network drop in the middle of a hub file."""

    name = "failing"

    def __init__(self, products: list[Product]):
        super().__init__()
        self.before_failure = products

    def _products(self, on_error):
        yield from self.before_failure
        raise DataSourceError("hub.jsonl:9: reading failed (connection reset)")


def test_source_failure_mid_run_stops_the_job_and_keeps_written_batches(encoder, store, tmp_path):
    catalog = write_catalog(tmp_path / "data", 4, images_per_product=2)
    products = list(JsonlSource(catalog).products())
    with pytest.raises(DataSourceError, match=r"^hub\.jsonl:9: reading failed \(connection reset\)$"):
        run_job(encoder, store, _FailingSource(products), tmp_path, batch_size=4)
    assert store.count() == 8  # every batch before the failure was written: a re-run resumes from here


def test_title_vector_falls_back_to_category_then_to_the_image_vector(encoder):
    job = IndexJob(encoder, store=None, fetcher=None, failure_log=FailureLog(None), progress=False)
    products = [
        Product(id="a", image="", title="red phone case", main_category="Cell Phones"),
        Product(id="b", image="", title="  ", main_category="Cell Phones"),
        Product(id="c", image="", title="", main_category=""),
    ]
    image_vectors = encoder.encode_images([product_image_bytes(i) for i in range(3)])
    out = job._title_vectors(products, image_vectors)
    np.testing.assert_allclose(out[0], encoder.encode_texts(["red phone case"])[0], atol=1e-5)
    np.testing.assert_allclose(out[1], encoder.encode_texts(["Cell Phones"])[0], atol=1e-5)
    np.testing.assert_array_equal(out[2], image_vectors[2])


def test_title_without_tokens_falls_back_to_the_image_vector_and_spares_the_batch(encoder):
    job = IndexJob(encoder, store=None, fetcher=None, failure_log=FailureLog(None), progress=False)
    products = [
        Product(id="a", image="", title="red phone case"),
        Product(id="b", image="", title="\u200b"),  # a zero-width space: no tokens at all
    ]
    image_vectors = encoder.encode_images([product_image_bytes(i) for i in range(2)])
    out = job._title_vectors(products, image_vectors)
    np.testing.assert_allclose(out[0], encoder.encode_texts(["red phone case"])[0], atol=1e-5)
    np.testing.assert_array_equal(out[1], image_vectors[1])


def test_summary_is_one_line_with_counts_failures_and_throughput():
    report = IndexReport(
        indexed=880,
        skipped_existing=20,
        failed=2,
        first_failure="https://x/1.jpg: HTTP 404 Not Found",
        failure_log="failures.jsonl",
        elapsed_s=11.0,
        items_per_s=80.0,
        read_s=3.0,
        encode_s=7.5,
        write_s=1.25,
        wait_s=0.5,
    )
    assert report.summary() == (
        "indexed 880, skipped 20 (already present), failed 2 (first: https://x/1.jpg: HTTP 404 Not Found; "
        "see failures.jsonl) in 11.0 s, 80.0 items/s (read 3.0 s, encode 7.5 s, write 1.2 s, encoder waited 0.5 s)"
    )
