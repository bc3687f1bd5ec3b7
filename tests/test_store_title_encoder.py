"""The collection stamp records the title encoder (id and Matryoshka size) beside the image encoder, the title
field's dimension follows it, and a run with another title encoder is refused (issue 15). Milvus Lite."""

from __future__ import annotations

import numpy as np
import pytest

from mmsearch.errors import EncoderMismatchError
from mmsearch.store import ProductStore
from mmsearch.store.schema import EncoderStamp
from mmsearch.types import Product

DIM, TITLE_DIM = 8, 4


def unit(n: int, dim: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def products(n: int) -> list[Product]:
    return [
        Product(id=f"p{i}", image=f"img{i}.jpg", title=f"title {i}", main_category="Cell Phones")
        for i in range(n)
    ]


@pytest.fixture
def store(tmp_path):
    s = ProductStore(str(tmp_path / "t.db"), collection="titles")
    s.ensure_collection(
        encoder_id="clip:x@1", dim=DIM, title_encoder_id="embeddinggemma@2/4", title_dim=TITLE_DIM
    )
    yield s
    s.close()


def test_title_vectors_have_the_title_encoders_size(store):
    images, titles = unit(6, DIM, 0), unit(6, TITLE_DIM, 1)
    store.upsert(products(6), images, titles)
    assert store.search(titles[2], k=1, field="text_vector")[0].id == "p2"
    assert store.hybrid_search(images[4], titles[4], k=1)[0].id == "p4"
    info = store.info()
    assert (info["dim"], info["title_encoder_id"], info["title_dim"]) == (
        DIM,
        "embeddinggemma@2/4",
        TITLE_DIM,
    )


def test_image_sized_title_vectors_are_refused(store):
    with pytest.raises(ValueError, match=r"text_vectors must have shape \(2, 4\), got \(2, 8\)"):
        store.upsert(products(2), unit(2, DIM, 0), unit(2, DIM, 1))


def test_another_title_encoder_is_refused_and_named(store, tmp_path):
    store.close()
    again = ProductStore(str(tmp_path / "t.db"), collection="titles")
    with again, pytest.raises(EncoderMismatchError) as err:
        again.check_encoder(
            encoder_id="clip:x@1", dim=DIM, title_encoder_id="embeddinggemma@2/8", title_dim=8
        )
    assert "title vectors from 'embeddinggemma@2/4' (dim 4)" in str(err.value)
    assert "title encoder 'embeddinggemma@2/8' (dim 8)" in str(err.value)


def test_the_image_encoders_own_text_tower_does_not_match_a_separate_title_encoder(store, tmp_path):
    store.close()
    again = ProductStore(str(tmp_path / "t.db"), collection="titles")
    with again, pytest.raises(EncoderMismatchError, match="title vectors from 'embeddinggemma@2/4'"):
        again.ensure_collection(encoder_id="clip:x@1", dim=DIM)


def test_the_same_encoders_reopen_the_collection(store, tmp_path):
    store.upsert(products(3), unit(3, DIM, 0), unit(3, TITLE_DIM, 1))
    store.close()
    with ProductStore(str(tmp_path / "t.db"), collection="titles") as again:
        again.check_encoder(
            encoder_id="clip:x@1", dim=DIM, title_encoder_id="embeddinggemma@2/4", title_dim=4
        )
        assert again.count() == 3


def test_a_stamp_without_title_fields_means_the_image_encoder_made_the_titles():
    """Collections written before issue 15 carry only encoder_id and dim."""
    described = {
        "fields": [
            {"name": "image_vector", "params": {"dim": 8}},
            {"name": "text_vector", "params": {"dim": 8}},
        ],
        "properties": {"mmsearch.encoder_id": "visualized-bge-base@abc", "mmsearch.dim": "8"},
    }
    stamp = EncoderStamp.from_collection(described)
    assert stamp == EncoderStamp("visualized-bge-base@abc", 8, True, "visualized-bge-base@abc", 8)
