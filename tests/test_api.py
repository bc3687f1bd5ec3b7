"""HTTP API tests: TestClient with the lifespan, the tiny smoke encoder, and the generated catalog in Milvus Lite.

One behaviour per test; each asserts the status code and the JSON body (the message included for errors).
"""

from __future__ import annotations

import io
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import pytest
from api_support import ODD_ASIN, index_demo_catalog, real_pipeline
from fastapi.testclient import TestClient
from PIL import Image

from mmsearch.api.app import create_app
from mmsearch.api.dependencies import get_settings
from mmsearch.api.forms import FORM_OVERHEAD_BYTES
from mmsearch.engine import Engine
from mmsearch.pipelines import SearchPipeline
from mmsearch.reranker.base import RetrievalOrderReranker

MAX_IMAGE_BYTES = 120_000
MAX_IMAGE_PIXELS = 300 * 300
MAX_K = 12
QUERY_ASIN = "B0ZEBRACASE"


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    return index_demo_catalog(
        root,
        smoke_cache=tmp_path_factory.getbasetemp() / "smoke-cache",
        max_image_bytes=MAX_IMAGE_BYTES,
        max_image_pixels=MAX_IMAGE_PIXELS,
        max_k=MAX_K,
    )


def with_baseline_reranker(settings) -> SearchPipeline:
    """The real pipeline plus the retrieval-order reranker (the baseline every model reranker falls back to)."""
    return real_pipeline(settings, reranker=RetrievalOrderReranker())


@pytest.fixture(scope="module")
def client(indexed):
    _, settings = indexed
    app = create_app(pipeline_factory=with_baseline_reranker)
    app.dependency_overrides[get_settings] = lambda: settings
    with TestClient(app) as c:
        yield c


def jpeg(size=(64, 64), colour=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="JPEG")
    return buf.getvalue()


def upload(data: bytes, name="query.jpg", content_type="image/jpeg"):
    return {"image": (name, data, content_type)}


def ids(body) -> list[str]:
    return [h["id"] for h in body["hits"]]


# ---------------------------------------------------------------- search


def test_search_image_only_ranks_query_product_first(client, indexed):
    catalog, _ = indexed
    resp = client.post("/search", files=upload(catalog.image_path(QUERY_ASIN).read_bytes()), data={"k": "5"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert len(body["hits"]) == 5
    assert body["hits"][0]["id"] == f"{QUERY_ASIN}:0"
    assert body["hits"][0]["title"] == catalog.title(QUERY_ASIN)
    assert body["hits"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert body["query"]["has_image"] is True


def test_search_text_only_title_side_ranks_matching_title_first(client, indexed):
    catalog, _ = indexed
    title = catalog.title("B0TOASTER01")
    resp = client.post("/search", data={"instruction": title, "k": "3", "mode": "weighted", "weights": "0,1"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["hits"][0]["title"] == title
    assert body["mode"] == "weighted"
    assert body["query"] == {
        "has_image": False,
        "instruction": title,
        "k": 3,
        "mode": "weighted",
        "weights": [0.0, 1.0],
        "ranker": "weighted",
        "one_per_product": True,
        "rerank": False,
        "filters": None,
    }


def test_search_hybrid_bm25_matches_the_title_words(client, indexed):
    """Issue 13: the instruction's BM25 match on titles, fused with the dense vector (weights dense, lexical)."""
    catalog, _ = indexed
    resp = client.post(
        "/search",
        files=upload(catalog.query_image.read_bytes()),
        data={"instruction": "stainless toaster", "k": "3", "mode": "hybrid-bm25", "weights": "0.1,0.9"},
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["mode"], body["query"]["mode"]) == ("hybrid-bm25", "hybrid-bm25")
    assert body["hits"][0]["title"] == catalog.title("B0TOASTER01")


def test_search_one_per_product_is_a_form_field(client, indexed):
    resp = client.post("/search", data={"instruction": "case", "one_per_product": "maybe"})
    assert resp.status_code == 422
    assert resp.json()["message"] == "one_per_product must be true or false, got 'maybe'"


def test_categories_lists_every_stored_category_with_counts(client, indexed):
    catalog, _ = indexed
    resp = client.get("/categories")
    assert resp.status_code == 200, resp.text
    expected: dict[str, int] = {}
    for record in catalog.records:
        if record.get("main_category"):
            expected[record["main_category"]] = expected.get(record["main_category"], 0) + len(
                record["images"]
            )
    got = {c["name"]: c["count"] for c in resp.json()["categories"]}
    assert got == expected


def test_search_with_an_unknown_category_is_422_with_suggestions(client, indexed):
    """Issue 13: a category in the wrong case used to return nothing with 200."""
    resp = client.post("/search", data={"instruction": "toaster", "category": "appliances"})
    assert resp.status_code == 422
    body = resp.json()
    assert (body["error"], body["suggestions"]) == ("unknown_category", ["Appliances"])
    assert body["message"].startswith(
        "unknown category 'appliances' (categories match exactly); did you mean"
    )


def test_search_hits_carry_product_fields_and_thumbnail_urls(client, indexed):
    catalog, _ = indexed
    resp = client.post("/search", files=upload(catalog.image_path(QUERY_ASIN).read_bytes()), data={"k": "3"})
    assert resp.status_code == 200
    first = resp.json()["hits"][0]
    assert first["rank"] == 1
    assert first["price"] == 10.99
    assert first["average_rating"] == 4.1
    assert first["rating_number"] == 402
    assert first["main_category"] == "Cell Phones & Accessories"
    assert first["thumbnail_url"] == "/images?id=" + quote(first["id"], safe="")


def test_search_reports_stage_timings_and_smoke_flag(client):
    resp = client.post("/search", data={"instruction": "phone case", "k": "2"})
    assert resp.status_code == 200
    body = resp.json()
    assert body["smoke"] is True
    assert set(body["timings"]) >= {"encode_ms", "search_ms", "total_ms"}
    assert all(v >= 0 for v in body["timings"].values())
    assert body["rerank"] is None


def test_search_scores_are_in_descending_order(client):
    resp = client.post("/search", data={"instruction": "leopard print phone case", "k": "10"})
    assert resp.status_code == 200
    scores = [h["score"] for h in resp.json()["hits"]]
    assert len(scores) == 10
    assert scores == sorted(scores, reverse=True)


def test_search_with_rerank_reports_status_reasons_and_rank_changes(client, indexed):
    catalog, _ = indexed
    resp = client.post(
        "/search",
        files=upload(catalog.image_path(QUERY_ASIN).read_bytes()),
        data={"k": "4", "rerank": "true"},
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["rerank"]["status"] == "ok"
    assert body["rerank"]["reasons"] == "retrieval order"
    assert body["rerank"]["order"] == [0, 1, 2, 3]
    assert body["rank_changes"] == [
        {"id": i, "before": n + 1, "after": n + 1} for n, i in enumerate(ids(body))
    ]
    assert "rerank_ms" in body["timings"]


def test_search_category_filter_keeps_only_that_category(client):
    resp = client.post(
        "/search", data={"instruction": "something to buy", "k": "12", "category": "Appliances"}
    )
    assert resp.status_code == 200
    body = resp.json()
    assert {h["main_category"] for h in body["hits"]} == {"Appliances"}
    assert len(body["hits"]) == 3  # the catalog holds three appliances
    assert body["query"]["filters"] == {"category": "Appliances"}


def test_search_price_range_filter_bounds_prices(client):
    resp = client.post(
        "/search", data={"instruction": "gift", "k": "12", "min_price": "10", "max_price": "20"}
    )
    assert resp.status_code == 200
    prices = [h["price"] for h in resp.json()["hits"]]
    assert prices and all(10 <= p <= 20 for p in prices)


# ---------------------------------------------------------------- limits and bad input


def test_upload_over_image_limit_returns_413(client):
    big = b"\xff\xd8" + b"\0" * (MAX_IMAGE_BYTES + 10)
    resp = client.post("/search", files=upload(big, name="big.jpg"), data={"k": "3"})
    assert resp.status_code == 413
    assert resp.json() == {
        "error": "image_too_large",
        "message": f"uploaded image 'big.jpg' is larger than the limit of {MAX_IMAGE_BYTES} bytes",
    }


def test_body_over_request_limit_returns_413_from_content_length(client):
    limit = MAX_IMAGE_BYTES + FORM_OVERHEAD_BYTES
    big = b"\0" * (limit + 1)
    resp = client.post("/search", files=upload(big, name="huge.jpg"))
    assert resp.status_code == 413
    body = resp.json()
    assert body["error"] == "request_too_large"
    assert body["message"].endswith(
        f"bytes; the limit is {limit} bytes (images up to {MAX_IMAGE_BYTES} bytes)"
    )


def test_streamed_body_over_limit_returns_413_without_content_length(client):
    limit = MAX_IMAGE_BYTES + FORM_OVERHEAD_BYTES
    boundary = "mmsearchboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="s.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()

    def chunks():
        yield head
        for _ in range(limit // 16384 + 2):
            yield b"\0" * 16384

    resp = client.post(
        "/search", content=chunks(), headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    assert resp.status_code == 413
    assert resp.json() == {
        "error": "request_too_large",
        "message": f"request body is more than {limit} bytes; the limit is {limit} bytes "
        f"(images up to {MAX_IMAGE_BYTES} bytes)",
    }


def test_upload_that_is_not_an_image_returns_422_whatever_its_content_type(client):
    resp = client.post("/search", files=upload(b"hello", name="notes.txt", content_type="image/jpeg"))
    assert resp.status_code == 422
    assert resp.json() == {
        "error": "invalid_image",
        "message": "uploaded image 'notes.txt': not an image (cannot identify format)",
    }


def test_jpeg_declared_as_octet_stream_is_accepted_by_its_bytes(client):
    """Issue 12: a valid JPEG sent as application/octet-stream was refused with 415."""
    resp = client.post("/search", files=upload(jpeg(), name="blob", content_type="application/octet-stream"))
    assert resp.status_code == 200, resp.text


def test_image_in_a_format_outside_the_upload_list_returns_415(client):
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (0, 90, 200)).save(buf, format="TIFF")
    resp = client.post("/search", files=upload(buf.getvalue(), name="scan.tif", content_type="image/jpeg"))
    assert resp.status_code == 415
    assert resp.json() == {
        "error": "unsupported_media_type",
        "message": "uploaded image 'scan.tif' is TIFF; expected one of BMP, GIF, JPEG, MPO, PNG, WEBP",
    }


def test_json_body_returns_415(client):
    resp = client.post("/search", json={"instruction": "phone case"})
    assert resp.status_code == 415
    body = resp.json()
    assert body["error"] == "unsupported_media_type"
    assert body["message"].startswith("request content type 'application/json' is not accepted")


def test_no_image_and_no_text_returns_422(client):
    resp = client.post("/search", data={"instruction": "   ", "k": "3"})
    assert resp.status_code == 422
    assert resp.json() == {
        "error": "invalid_query",
        "message": "a query needs an image, an instruction, or both; got neither",
    }


@pytest.mark.parametrize("k", ["0", str(MAX_K + 1)])
def test_k_out_of_range_returns_422(client, k):
    resp = client.post("/search", data={"instruction": "case", "k": k})
    assert resp.status_code == 422
    assert resp.json() == {
        "error": "invalid_query",
        "message": f"k must be an integer between 1 and {MAX_K}, got {k}",
    }


def test_k_not_an_integer_returns_422(client):
    resp = client.post("/search", data={"instruction": "case", "k": "nine"})
    assert resp.status_code == 422
    assert resp.json() == {"error": "invalid_query", "message": "k must be an integer, got 'nine'"}


def test_non_numeric_filter_value_returns_422(client):
    resp = client.post("/search", data={"instruction": "case", "min_price": "cheap"})
    assert resp.status_code == 422
    assert resp.json() == {
        "error": "invalid_filter",
        "message": "invalid filter min_price='cheap': expected a number",
    }


def test_inverted_price_range_returns_422(client):
    resp = client.post("/search", data={"instruction": "case", "min_price": "30", "max_price": "5"})
    assert resp.status_code == 422
    body = resp.json()
    assert body["error"] == "invalid_filter"
    assert "min_price 30.0 is greater than max_price 5.0" in body["message"]


def test_unknown_mode_returns_422(client):
    resp = client.post("/search", data={"instruction": "case", "mode": "magic"})
    assert resp.status_code == 422
    assert resp.json() == {
        "error": "invalid_query",
        "message": "mode must be one of joint, weighted, fused, hybrid-bm25; got 'magic'",
    }


def test_unknown_form_field_returns_422(client):
    resp = client.post("/search", data={"text": "case"})
    assert resp.status_code == 422
    body = resp.json()
    assert body["error"] == "invalid_query"
    assert body["message"].startswith("unknown form field 'text'; expected any of image, instruction, k")


def test_corrupt_image_returns_422(client):
    good = jpeg()
    corrupt = good[:200] + b"\x00\x01garbage" * 40
    resp = client.post("/search", files=upload(corrupt, name="broken.jpg"))
    assert resp.status_code == 422
    body = resp.json()
    assert body["error"] == "invalid_image"
    assert body["message"].startswith("uploaded image 'broken.jpg': ")


def test_image_over_pixel_limit_returns_422(client):
    buf = io.BytesIO()
    Image.new("RGB", (400, 400), (10, 10, 10)).save(buf, format="PNG")
    resp = client.post("/search", files=upload(buf.getvalue(), name="wide.png", content_type="image/png"))
    assert resp.status_code == 422
    assert resp.json() == {
        "error": "invalid_image",
        "message": f"uploaded image 'wide.png': 400x400 = 160000 pixels exceeds the limit of {MAX_IMAGE_PIXELS}",
    }


# ---------------------------------------------------------------- images, health, docs


def test_images_endpoint_serves_jpeg_thumbnail_for_odd_id(client):
    resp = client.get("/images", params={"id": f"{ODD_ASIN}:0"})
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "image/jpeg"
    thumb = Image.open(io.BytesIO(resp.content))
    assert thumb.format == "JPEG" and max(thumb.size) <= 320


def test_images_path_form_serves_percent_encoded_id(client):
    resp = client.get("/images/" + quote(f"{ODD_ASIN}:0", safe=""))
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "image/jpeg"


def test_images_unknown_id_returns_404(client):
    resp = client.get("/images", params={"id": 'no such "id"'})
    assert resp.status_code == 404
    assert resp.json() == {"error": "product_not_found", "message": "no product with id 'no such \"id\"'"}


def test_healthz_reports_milvus_collection_count_and_models(client, indexed):
    catalog, settings = indexed
    resp = client.get("/healthz")
    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] == "ok"
    assert body["smoke"] is True
    assert body["milvus"]["reachable"] is True
    assert body["milvus"]["collection"] == settings.collection
    assert body["milvus"]["count"] == len(catalog.records)
    assert body["models"]["encoder"]["id"] == body["milvus"]["encoder_id"]
    assert body["models"]["reranker"]["class"] == "RetrievalOrderReranker"
    assert body["error"] is None


def test_openapi_documents_the_endpoints(client):
    resp = client.get("/openapi.json")
    assert resp.status_code == 200
    paths = resp.json()["paths"]
    assert {"/search", "/images", "/healthz"} <= set(paths)
    assert "multipart/form-data" in paths["/search"]["post"]["requestBody"]["content"]
    assert client.get("/docs").status_code == 200


def test_page_is_served_at_root(client):
    resp = client.get("/")
    assert resp.status_code == 200
    assert "<title>mmsearch" in resp.text
    assert client.get("/static/app.js").status_code == 200


def test_unknown_endpoint_returns_json_404(client):
    resp = client.get("/nope")
    assert resp.status_code == 404
    assert resp.json() == {"error": "not_found", "message": "no such endpoint: GET /nope"}


# ---------------------------------------------------------------- failures of the service itself


def test_rerank_requested_without_reranker_returns_422(indexed):
    _, settings = indexed
    with TestClient(create_app(settings, with_reranker=False)) as c:
        resp = c.post("/search", data={"instruction": "case", "rerank": "true"})
    assert resp.status_code == 422
    assert resp.json() == {
        "error": "invalid_query",
        "message": "reranking was requested but this pipeline has no reranker loaded",
    }


def test_missing_collection_returns_404_with_hint(tmp_path, indexed):
    _, settings = indexed
    empty = settings.model_copy(update={"milvus_uri": str(tmp_path / "empty.db")})
    with TestClient(create_app(empty, with_reranker=False)) as c:
        resp = c.post("/search", data={"instruction": "case"})
        health = c.get("/healthz")
    assert resp.status_code == 404
    assert resp.json()["error"] == "collection_not_found"
    assert "run `mmsearch index` first" in resp.json()["message"]
    assert health.status_code == 503
    assert health.json()["error"]["code"] == "collection_not_found"


def test_service_recovers_once_the_collection_is_indexed(tmp_path, indexed):
    catalog, settings = indexed
    fresh = settings.model_copy(update={"milvus_uri": str(tmp_path / "later.db")})
    with TestClient(create_app(fresh, with_reranker=False, retry_interval_s=0)) as c:
        before = c.post("/search", data={"instruction": "case"})
        engine = c.app.state.engine
        encoder = engine.encoder
        with Engine(settings=fresh, encoder=encoder) as indexer:
            indexer.index(str(catalog.jsonl), workers=1)
        after = c.post("/search", data={"instruction": "case", "k": "3"})
    assert before.status_code == 404
    assert before.json()["error"] == "collection_not_found"
    assert after.status_code == 200
    assert len(after.json()["hits"]) == 3
    assert engine.encoder is encoder, "the encoder is loaded once, not on every retry"


def test_store_locked_by_another_process_returns_503(tmp_path, indexed):
    import subprocess

    _, settings = indexed
    db = tmp_path / "held.db"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from mmsearch.store import ProductStore; "
            f"s = ProductStore({str(db)!r}, collection='held'); print('ready', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        locked = settings.model_copy(update={"milvus_uri": str(db)})
        with TestClient(create_app(locked, with_reranker=False)) as c:
            resp = c.post("/search", data={"instruction": "case"})
            health = c.get("/healthz")
    finally:
        holder.communicate(input="", timeout=30)
    assert resp.status_code == 503
    body = resp.json()
    assert body["error"] == "store_locked"
    assert "is in use by another process" in body["message"]
    assert "MMSEARCH_MILVUS_URI=http://127.0.0.1:19530" in body["message"]
    assert health.status_code == 503
    assert health.json()["status"] == "unavailable"
    assert health.json()["error"]["code"] == "store_locked"


class _Exploding(SearchPipeline):
    """A pipeline whose search fails with an unexpected (non-domain) exception."""

    def __init__(self, real: SearchPipeline):
        super().__init__(real.retriever, real.reranker, max_k=real.max_k, smoke=real.smoke)

    def retrieve_many(self, requests):
        raise RuntimeError("secret internal detail /etc/passwd")


def test_unexpected_error_returns_generic_500_without_traceback(indexed, caplog):
    _, settings = indexed
    app = create_app(settings, pipeline_factory=lambda s: _Exploding(real_pipeline(s)))
    with TestClient(app, raise_server_exceptions=False) as c:
        resp = c.post("/search", data={"instruction": "case"})
    assert resp.status_code == 500
    body = resp.json()
    assert body["error"] == "internal_error"
    assert body["message"].startswith("internal server error (incident ")
    assert "secret" not in resp.text and "Traceback" not in resp.text
    incident = body["message"].split("incident ")[1].split(")")[0]
    logged = [r for r in caplog.records if r.name == "mmsearch.api" and incident in r.getMessage()]
    assert logged and logged[0].exc_info is not None, "the server log must carry the traceback"


# ---------------------------------------------------------------- concurrency


class _Observed(SearchPipeline):
    """Wraps the real pipeline and records the most searches ever running at the same time."""

    def __init__(self, real: SearchPipeline):
        super().__init__(real.retriever, real.reranker, max_k=real.max_k, smoke=real.smoke)
        self.real = real
        self.running = 0
        self.max_running = 0
        self.lock = threading.Lock()

    def retrieve_many(self, requests):
        with self.lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        try:
            return self.real.retrieve_many(requests)
        finally:
            with self.lock:
                self.running -= 1


def test_concurrent_searches_all_succeed_match_sequential_and_never_overlap(indexed):
    catalog, settings = indexed
    observed: list[_Observed] = []

    def factory(s):
        observed.append(_Observed(real_pipeline(s)))
        return observed[-1]

    asins = ["B0ZEBRACASE", "B0LEOPCASE1", "B0TOASTER01", "B0EARBUDS01"] * 2
    images = [catalog.image_path(a).read_bytes() for a in asins]
    with TestClient(create_app(settings, pipeline_factory=factory)) as c:

        def search(i: int):
            return c.post(
                "/search", files=upload(images[i]), data={"k": "5", "instruction": f"query {i % 4}"}
            )

        sequential = [search(i) for i in range(8)]
        with ThreadPoolExecutor(8) as pool:
            concurrent = list(pool.map(search, range(8)))
    assert [r.status_code for r in concurrent] == [200] * 8
    assert [ids(r.json()) for r in concurrent] == [ids(r.json()) for r in sequential]
    assert observed[0].max_running == 1, "searches must run one at a time on the inference worker"


class _Gated(SearchPipeline):
    """Wraps the real pipeline; each search waits until the test opens the gate."""

    def __init__(self, real: SearchPipeline):
        super().__init__(real.retriever, real.reranker, max_k=real.max_k, smoke=real.smoke)
        self.real = real
        self.entered = threading.Event()
        self.gate = threading.Event()

    def retrieve_many(self, requests):
        self.entered.set()
        self.gate.wait(timeout=30)
        return self.real.retrieve_many(requests)


def test_full_queue_returns_503_server_busy(indexed):
    _, settings = indexed
    gated: list[_Gated] = []

    def factory(s):
        gated.append(_Gated(real_pipeline(s)))
        return gated[-1]

    app = create_app(settings, pipeline_factory=factory, max_pending=1)
    with TestClient(app) as c, ThreadPoolExecutor(1) as pool:
        first = pool.submit(c.post, "/search", data={"instruction": "first"})
        assert gated[0].entered.wait(timeout=30)
        second = c.post("/search", data={"instruction": "second"})
        gated[0].gate.set()
        assert first.result(timeout=60).status_code == 200
    assert second.status_code == 503
    assert second.json() == {
        "error": "server_busy",
        "message": "1 searches are already queued (the limit is 1); retry in a few seconds",
    }


@pytest.mark.slow
def test_search_with_smoke_phi3_reranker_returns_a_flagged_permutation(indexed):
    """The whole path with the tiny random Phi-3 Vision: any status is allowed, but never a lost candidate."""
    catalog, settings = indexed
    with TestClient(create_app(settings, with_reranker=True)) as c:
        health = c.get("/healthz").json()
        resp = c.post(
            "/search",
            files=upload(catalog.image_path(QUERY_ASIN).read_bytes()),
            data={"instruction": "phone case with this image theme", "k": "4", "rerank": "true"},
        )
    assert health["models"]["reranker"]["class"] == "Phi3VisionReranker"
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["rerank"]["status"] in ("ok", "repaired", "degraded", "fallback")
    assert sorted(body["rerank"]["order"]) == [0, 1, 2, 3]
    if body["rerank"]["status"] != "ok":
        assert body["rerank"]["reason"], "a repaired or fallback result must say why"
    assert sorted(c["before"] for c in body["rank_changes"]) == [1, 2, 3, 4]
    assert {"rerank_ms", "rerank_prefill_ms", "rerank_decode_ms"} <= set(body["timings"])


@pytest.mark.slow
@pytest.mark.server
def test_api_serves_from_a_milvus_server(milvus_server, tmp_path_factory):
    """Same app, same code path, `MMSEARCH_MILVUS_URI=http://...`: a real Milvus server process on loopback."""
    import uuid

    from pymilvus import MilvusClient

    root = tmp_path_factory.mktemp("api-server")
    collection = f"api_{uuid.uuid4().hex[:10]}"
    try:
        catalog, settings = index_demo_catalog(
            root,
            smoke_cache=tmp_path_factory.getbasetemp() / "smoke-cache",
            milvus_uri=milvus_server.uri,
            collection=collection,
            milvus_consistency="Strong",  # the API reads right after the index run wrote
        )
        with TestClient(create_app(settings, with_reranker=False)) as c:
            health = c.get("/healthz").json()
            resp = c.post(
                "/search", files=upload(catalog.image_path(QUERY_ASIN).read_bytes()), data={"k": "3"}
            )
    finally:
        client = MilvusClient(milvus_server.uri, timeout=10)
        if client.has_collection(collection):
            client.drop_collection(collection)
        client.close()
    assert health["milvus"]["mode"] == "server"
    assert health["milvus"]["count"] == len(catalog.records)
    assert resp.status_code == 200, resp.text
    assert resp.json()["hits"][0]["id"] == f"{QUERY_ASIN}:0"
