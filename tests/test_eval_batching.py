"""The eval harness encodes each query once per run and searches in batches for every mode (issue 12), with the
same rankings as searching one query at a time. Synthetic set, tiny random Visualized BGE, Milvus Lite."""

from __future__ import annotations

import pytest

from mmsearch.config import Settings
from mmsearch.engine import Engine
from mmsearch.evaluation import harness
from mmsearch.evaluation.harness import evaluate, ranking_keys
from mmsearch.evaluation.synthetic import generate_synthetic_set
from mmsearch.pipelines import SearchPipeline, SearchRequest
from mmsearch.retriever import Retriever
from mmsearch.store import ProductStore
from mmsearch.testing import tiny_visual_bge_encoder

MODES = ("joint", "weighted", "fused")
N_QUERIES = 7


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval-batching")
    syn = generate_synthetic_set(root / "synthetic", n_products=20, n_queries=N_QUERIES, seed=1)
    encoder = tiny_visual_bge_encoder(root / "bge")
    settings = Settings(milvus_uri=str(root / "milvus.db"), collection="synthetic", cache_dir=root / "cache")
    with Engine(settings=settings, encoder=encoder) as engine:
        assert engine.index(str(syn.products_jsonl)).indexed == 20
    store = ProductStore(settings.milvus_uri, collection="synthetic")
    try:
        yield syn, Retriever(encoder, store)
    finally:
        store.close()


def test_each_query_is_encoded_once_per_run_for_all_modes(synthetic, monkeypatch):
    syn, retriever = synthetic
    monkeypatch.setattr(harness, "EVAL_BATCH", 4)  # two chunks
    encoded, searched = [], []
    real_encode, real_search = retriever.encode, retriever.store.search_batch
    monkeypatch.setattr(
        retriever, "encode", lambda qs, **kw: encoded.append(len(qs)) or real_encode(qs, **kw)
    )
    monkeypatch.setattr(
        retriever.store, "search_batch", lambda v, **kw: searched.append(len(v)) or real_search(v, **kw)
    )
    evaluate(retriever, syn.eval_set, modes=MODES, k=5)
    assert encoded == [4, 3], "one encoding per query for the whole run, in chunks"
    assert sum(searched) == 2 * N_QUERIES and max(searched) > 1, "joint and fused search in batches"


def test_batched_eval_ranks_like_one_query_at_a_time(synthetic):
    syn, retriever = synthetic
    report = evaluate(retriever, syn.eval_set, modes=MODES, k=5)
    pipeline = SearchPipeline(retriever, max_k=1000)
    for mode in MODES:
        for query, row in zip(syn.eval_set.queries, report.modes[mode].per_query, strict=True):
            single = pipeline.run(
                SearchRequest(image=query.image, instruction=query.instruction, k=5, mode=mode)
            )
            assert row["top"] == ranking_keys(single.retrieved, query, 5), (mode, query.id)
