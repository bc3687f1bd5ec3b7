"""`POST /search/batch` (issue 12): several queries in one JSON body, images as URLs fetched under the upload
limits or as ids of indexed products, each result (or error) in its query's slot. Smoke models on Milvus Lite:
only an indexed image queried as itself is asserted to come back first.
"""

from __future__ import annotations

import pytest
from api_support import index_demo_catalog
from fastapi.testclient import TestClient
from indexer_support import serve_images

from mmsearch.api.app import create_app
from mmsearch.api.batch import QUERY_SCHEMA
from mmsearch.pipelines.batch import QUERY_FIELDS

QUERY_ASIN = "B0ZEBRACASE"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("api-batch")
    catalog, settings = index_demo_catalog(
        root,
        smoke_cache=tmp_path_factory.getbasetemp() / "smoke-cache",
        serve_max_batch=4,
        serve_fetch_allow_private=True,  # the test image server is on loopback
    )
    with TestClient(create_app(settings, with_reranker=False)) as c:
        yield c, catalog


def test_batch_answers_each_query_in_order(served):
    c, catalog = served
    with serve_images({"zebra.jpg": catalog.image_path(QUERY_ASIN).read_bytes()}) as images:
        body = {
            "queries": [
                {"image_id": f"{QUERY_ASIN}:0", "k": 3},
                {"instruction": "stainless steel toaster", "k": 2, "filters": {"max_price": 1000}},
                {"image": images.url("img", "zebra.jpg"), "instruction": "phone case", "mode": "fused"},
            ]
        }
        resp = c.post("/search/batch", json=body)
    assert resp.status_code == 200, resp.text
    first, second, third = resp.json()["results"]
    assert [r["index"] for r in (first, second, third)] == [0, 1, 2]
    assert first["hits"][0]["id"] == f"{QUERY_ASIN}:0" and len(first["hits"]) == 3
    assert len(second["hits"]) == 2 and second["query"]["filters"] == {"max_price": 1000.0}
    assert third["query"]["has_image"] is True and third["mode"] == "fused"
    assert all(h["image_url"].startswith("/images?id=") for r in (first, second, third) for h in r["hits"])


def test_a_bad_query_gets_its_error_and_the_others_are_served(served):
    c, _ = served
    body = {
        "queries": [
            {"instruction": "case", "k": 2},
            {"image": "/etc/passwd"},
            {"image_id": "no-such-product"},
            {"instruction": "case", "colour": "red"},
        ]
    }
    results = c.post("/search/batch", json=body).json()["results"]
    assert len(results[0]["hits"]) == 2
    assert results[1] == {
        "index": 1,
        "error": "invalid_image",
        "message": "image must be an http(s) URL here; upload files to POST /search",
    }
    assert results[2]["error"] == "invalid_query" and "no-such-product" in results[2]["message"]
    assert results[3]["message"].startswith("unknown field 'colour'")


def test_an_unreachable_image_url_fails_only_its_query(served):
    c, _ = served
    with serve_images({}) as images:
        body = {"queries": [{"image": images.url("img", "missing.jpg")}, {"instruction": "toaster", "k": 1}]}
        results = c.post("/search/batch", json=body).json()["results"]
    assert results[0]["error"] == "invalid_image" and "404" in results[0]["message"]
    assert len(results[1]["hits"]) == 1


def test_more_queries_than_max_batch_is_refused(served):
    c, _ = served
    resp = c.post("/search/batch", json={"queries": [{"instruction": "x"}] * 5})
    assert resp.status_code == 422
    assert resp.json() == {
        "error": "invalid_query",
        "message": "a batch holds 1 to 4 queries (MMSEARCH_SERVE_MAX_BATCH), got 5",
    }


def test_batch_body_must_be_json(served):
    c, _ = served
    resp = c.post("/search/batch", data={"instruction": "x"})
    assert resp.status_code == 415
    assert resp.json()["error"] == "unsupported_media_type"


def test_batch_endpoint_is_in_the_openapi_schema_with_every_query_field(served):
    c, _ = served
    spec = c.get("/openapi.json").json()
    body = spec["paths"]["/search/batch"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["properties"]["queries"]["items"]["properties"]) == set(QUERY_FIELDS)
    assert set(QUERY_SCHEMA["properties"]) == set(QUERY_FIELDS)


def test_a_filter_value_with_a_lone_surrogate_is_a_422_class_error_not_a_store_error(served):
    c, _ = served
    raw = '{"queries": [{"instruction": "case", "filters": {"category": "Phones\\ud800"}}]}'
    resp = c.post("/search/batch", content=raw, headers={"content-type": "application/json"})
    assert resp.status_code == 200, resp.text
    (result,) = resp.json()["results"]
    assert result["error"] == "invalid_filter"
    assert "lone UTF-16 surrogate" in result["message"]


def test_client_urls_on_private_addresses_are_refused_by_default(tmp_path_factory):
    root = tmp_path_factory.mktemp("api-batch-ssrf")
    _, settings = index_demo_catalog(root, smoke_cache=tmp_path_factory.getbasetemp() / "smoke-cache")
    with (
        serve_images({"x.jpg": b"never read"}) as images,
        TestClient(create_app(settings, with_reranker=False)) as c,
    ):
        urls = [
            images.url("img", "x.jpg"),
            "http://10.0.0.1/x.jpg",
            "http://[::1]/x.jpg",
            "http://169.254.169.254/",
        ]
        r = c.post("/search/batch", json={"queries": [{"image": u, "k": 1} for u in urls]})
        assert images.hits == {}  # refused before any connection
    assert r.status_code == 200
    results = r.json()["results"]
    assert [q["error"] for q in results] == ["invalid_image"] * 4
    assert all("not a public address" in q["message"] for q in results)
