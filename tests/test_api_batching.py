"""The API's scheduler (issue 12): concurrent searches share encoder passes and Milvus calls, a rerank runs on its
own queue and never delays retrieval-only searches, and both queues are bounded (503) and reported by /healthz.
Smoke encoder over the demo catalogue in Milvus Lite; the reranker is the retrieval-order baseline behind a gate.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from api_support import index_demo_catalog, real_pipeline
from fastapi.testclient import TestClient

from mmsearch.api.app import create_app
from mmsearch.pipelines import SearchPipeline
from mmsearch.reranker.base import Reranker, RetrievalOrderReranker

N = 8


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    root = tmp_path_factory.mktemp("api-batching")
    return index_demo_catalog(root, smoke_cache=tmp_path_factory.getbasetemp() / "smoke-cache")


class GatedReranker(Reranker):
    """The retrieval-order baseline, after waiting for the test to open the gate (at most 30 s)."""

    name = "gated"

    def __init__(self):
        self.entered = threading.Event()
        self.gate = threading.Event()

    def _rerank(self, query, hits):
        self.entered.set()
        self.gate.wait(timeout=30)
        return RetrievalOrderReranker()._rerank(query, hits)


def _factory(parts: dict):
    def build(settings) -> SearchPipeline:
        pipeline = real_pipeline(settings, reranker=parts.setdefault("reranker", GatedReranker()))
        encoder = pipeline.retriever.encoder
        calls = parts.setdefault("encoder_calls", [])
        for name in ("encode_images", "encode_texts", "encode_multimodal"):
            real = getattr(encoder, name)
            setattr(encoder, name, lambda *a, _n=name, _r=real: calls.append((_n, len(a[0]))) or _r(*a))
        parts["pipeline"] = pipeline
        return pipeline

    return build


def test_concurrent_searches_share_encoder_passes(indexed):
    _, settings = indexed
    # A long window and max_batch = N: the N requests form one batch as soon as they have all arrived.
    settings = settings.model_copy(update={"serve_batch_window_ms": 3000.0, "serve_max_batch": N})
    parts: dict = {}
    with TestClient(create_app(settings, pipeline_factory=_factory(parts))) as c:
        parts["encoder_calls"].clear()
        with ThreadPoolExecutor(N) as pool:
            responses = list(
                pool.map(lambda i: c.post("/search", data={"instruction": f"case {i}", "k": "3"}), range(N))
            )
        health = c.get("/healthz").json()
    assert [r.status_code for r in responses] == [200] * N
    assert len(parts["encoder_calls"]) < N, parts["encoder_calls"]
    assert sum(n for _, n in parts["encoder_calls"]) == N
    assert health["queue"]["largest_batch"] > 1
    assert all(r.json()["query"]["instruction"] == f"case {i}" for i, r in enumerate(responses))


def test_a_slow_rerank_does_not_delay_retrieval_only_searches(indexed):
    _, settings = indexed
    parts: dict = {}
    with (
        TestClient(create_app(settings, pipeline_factory=_factory(parts))) as c,
        ThreadPoolExecutor(1) as pool,
    ):
        reranked = pool.submit(
            c.post, "/search", data={"instruction": "phone case", "k": "4", "rerank": "true"}
        )
        assert parts["reranker"].entered.wait(timeout=30), "the rerank never started"
        plain = [c.post("/search", data={"instruction": f"toaster {i}", "k": "3"}) for i in range(3)]
        still_reranking = not reranked.done()
        health = c.get("/healthz").json()
        parts["reranker"].gate.set()
        assert reranked.result(timeout=60).status_code == 200
    assert [r.status_code for r in plain] == [200, 200, 200]
    assert still_reranking, "the retrieval-only searches must finish while the rerank is still running"
    assert health["queue"]["rerank"]["pending"] == 1
    assert reranked.result().json()["rerank"]["status"] == "ok"


def test_a_full_rerank_queue_answers_503_and_retrieval_still_serves(indexed):
    _, settings = indexed
    settings = settings.model_copy(update={"serve_max_rerank_queued": 1})
    parts: dict = {}
    with (
        TestClient(create_app(settings, pipeline_factory=_factory(parts))) as c,
        ThreadPoolExecutor(1) as pool,
    ):
        first = pool.submit(c.post, "/search", data={"instruction": "case", "k": "4", "rerank": "true"})
        assert parts["reranker"].entered.wait(timeout=30)
        second = c.post("/search", data={"instruction": "case", "k": "4", "rerank": "true"})
        plain = c.post("/search", data={"instruction": "case", "k": "4"})
        parts["reranker"].gate.set()
        assert first.result(timeout=60).status_code == 200
    assert second.status_code == 503
    assert second.json() == {
        "error": "server_busy",
        "message": "1 reranks are already queued (the limit is 1); retry in a few seconds, or search without rerank",
    }
    assert plain.status_code == 200


def test_healthz_reports_queue_depth_and_batching_settings(indexed):
    _, settings = indexed
    settings = settings.model_copy(
        update={"serve_batch_window_ms": 2.0, "serve_max_batch": 4, "serve_max_queued": 9}
    )
    with TestClient(create_app(settings, pipeline_factory=_factory({}))) as c:
        queue = c.get("/healthz").json()["queue"]
    assert queue == {
        "queued": 0,
        "in_flight": 0,
        "max_queued": 9,
        "window_ms": 2.0,
        "max_batch": 4,
        "batches": 0,
        "mean_batch": None,
        "largest_batch": 0,
        "rerank": {"pending": 0, "max_pending": settings.serve_max_rerank_queued, "completed": 0},
    }
