"""The HTTP API with a dual encoder and EmbeddingGemma title vectors (issue 15): /healthz names both encoders and
the modes that apply; a search without a mode gets the encoder's default; joint is a 422 with one message."""

from __future__ import annotations

import pytest
from api_support import index_demo_catalog
from fastapi.testclient import TestClient

from mmsearch.api.app import create_app

QUERY_ASIN = "B0ZEBRACASE"


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    return index_demo_catalog(
        tmp_path_factory.mktemp("api_siglip"),
        smoke_cache=tmp_path_factory.getbasetemp() / "smoke-cache",
        encoder="siglip",
        title_encoder="embeddinggemma:128",
    )


@pytest.fixture(scope="module")
def client(indexed):
    with TestClient(create_app(indexed[1], with_reranker=False)) as c:
        yield c


def test_healthz_names_both_encoders_and_the_modes_that_apply(client):
    models = client.get("/healthz").json()["models"]
    assert models["encoder"]["id"].startswith("siglip:")
    assert {"fused", "weighted"} <= set(models["encoder"]["modes"]) and "joint" not in models["encoder"][
        "modes"
    ]
    assert models["title_encoder"]["id"].endswith("/128") and models["title_encoder"]["dim"] == 128


def test_a_search_without_a_mode_uses_the_encoders_default(client, indexed):
    image = indexed[0].image_path(QUERY_ASIN).read_bytes()
    resp = client.post("/search", files={"image": ("q.jpg", image, "image/jpeg")}, data={"k": "3"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["mode"] == "fused" and body["query"]["mode"] == "fused"
    assert body["hits"][0]["parent_asin"] == QUERY_ASIN


def test_joint_mode_is_a_422_naming_the_modes_to_use(client):
    resp = client.post("/search", data={"instruction": "zebra case", "mode": "joint"})
    assert resp.status_code == 422
    assert resp.json()["error"] == "unsupported_mode"
    assert "mode 'joint' is not available with encoder 'siglip:" in resp.json()["message"]
