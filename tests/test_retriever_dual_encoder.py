"""What each retrieval mode sends to Milvus with a dual encoder (tiny CLIP) and a separate title encoder (tiny
EmbeddingGemma), on real Milvus Lite (issue 15). The store is wrapped to record the query vectors it receives."""

from __future__ import annotations

import numpy as np
import pytest
from indexer_support import write_catalog
from PIL import Image

from mmsearch.config import Settings
from mmsearch.engine import Engine
from mmsearch.errors import UnsupportedModeError
from mmsearch.retriever import Query, Retriever, SearchOptions
from mmsearch.store import ProductStore
from mmsearch.testing import tiny_dual_encoder, tiny_embeddinggemma

WEIGHTS = (0.6, 0.4)


class RecordingStore:
    """A real `ProductStore` that remembers each search call's name and query arrays."""

    def __init__(self, store: ProductStore):
        self.store = store
        self.calls: list[tuple[str, list[np.ndarray]]] = []

    def __getattr__(self, name):
        return getattr(self.store, name)

    def search_batch(self, vectors, **kwargs):
        self.calls.append(("search", [np.asarray(vectors)]))
        return self.store.search_batch(vectors, **kwargs)

    def hybrid_search_batch(self, image_vectors, text_vectors, **kwargs):
        self.calls.append(("hybrid", [np.asarray(image_vectors), np.asarray(text_vectors)]))
        return self.store.hybrid_search_batch(image_vectors, text_vectors, **kwargs)


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("dual")
    encoder = tiny_dual_encoder("clip", root / "clip")
    titles = tiny_embeddinggemma(root / "gemma", dim=128)
    catalog = write_catalog(root / "data", 4, images_per_product=1)
    settings = Settings(milvus_uri=str(root / "m.db"), collection="dual", cache_dir=root / "cache")
    with Engine(settings=settings, encoder=encoder, title_encoder=titles) as engine:
        report = engine.index(str(catalog))
    assert report.indexed == 4
    return encoder, titles, settings.milvus_uri, Image.open(root / "data" / "img" / "p1_0.jpg").convert("RGB")


@pytest.fixture
def retriever(parts):
    encoder, titles, uri, _ = parts
    with ProductStore(uri, collection="dual") as store:
        yield Retriever(encoder, RecordingStore(store), title_encoder=titles)


def test_fused_adds_the_instructions_clip_text_vector_to_the_image_vector(retriever, parts):
    encoder, _, _, image = parts
    retriever.search(Query(image=image, instruction="in red"), SearchOptions(mode="fused", weights=WEIGHTS))
    ((kind, (sent,)),) = retriever.store.calls
    mixed = WEIGHTS[0] * encoder.encode_images([image])[0] + WEIGHTS[1] * encoder.encode_texts(["in red"])[0]
    assert kind == "search"
    np.testing.assert_allclose(sent[0], mixed / np.linalg.norm(mixed), atol=1e-5)


def test_weighted_sends_the_image_vector_and_the_title_encoders_query_vector(retriever, parts):
    encoder, titles, _, image = parts
    retriever.search(Query(image=image, instruction="in red"), SearchOptions(mode="weighted"))
    ((kind, (image_q, title_q)),) = retriever.store.calls
    assert kind == "hybrid" and title_q.shape == (1, 128)
    np.testing.assert_allclose(image_q[0], encoder.encode_images([image])[0], atol=1e-5)
    np.testing.assert_allclose(title_q[0], titles.encode_queries(["in red"])[0], atol=1e-5)


def test_weighted_without_an_instruction_searches_the_image_vectors_alone(retriever, parts):
    retriever.search(Query(image=parts[3]), SearchOptions(mode="weighted"))
    assert [kind for kind, _ in retriever.store.calls] == ["search"]


def test_the_default_mode_of_a_dual_encoder_is_fused(retriever, parts):
    assert retriever.search(Query(image=parts[3]), SearchOptions(k=2)).mode == "fused"


def test_joint_is_refused_before_anything_is_encoded_or_searched(retriever, parts):
    with pytest.raises(UnsupportedModeError, match="mode 'joint' is not available"):
        retriever.search(Query(image=parts[3], instruction="in red"), SearchOptions(mode="joint"))
    assert retriever.store.calls == []
