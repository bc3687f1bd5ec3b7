"""EmbeddingGemma title vectors through sentence-transformers, on a tiny random model in the real repo's layout
(modules.json, Gemma 3 text model, mean pooling, two dense layers, normalize), loaded offline (issue 15)."""

from __future__ import annotations

import numpy as np
import pytest

from mmsearch.errors import ConfigError, ModelLoadError
from mmsearch.models.title_encoder import SentenceTransformerTitleEncoder
from mmsearch.testing import build_tiny_embeddinggemma, tiny_embeddinggemma
from mmsearch.testing.embeddinggemma import PROMPTS

TITLES = ["Red leopard print phone case", "Wireless earbuds", "Stainless steel blender"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_embeddinggemma(tmp_path_factory.mktemp("gemma"))


@pytest.fixture(scope="module")
def full(model_dir):
    return tiny_embeddinggemma(model_dir, dim=768)


@pytest.mark.parametrize("dim", [512, 256, 128])
def test_matryoshka_vectors_are_the_renormalised_head_of_the_full_vector(model_dir, full, dim):
    cut = tiny_embeddinggemma(model_dir, dim=dim)
    head = full.encode_documents(TITLES)[:, :dim]
    expected = head / np.linalg.norm(head, axis=1, keepdims=True)
    got = cut.encode_documents(TITLES)
    assert got.shape == (3, dim)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_titles_and_queries_use_the_repos_document_and_query_prompts(full):
    raw = full.model.encode(
        [PROMPTS["document"] + TITLES[0], PROMPTS["query"] + TITLES[0]], convert_to_numpy=True
    )
    raw = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    np.testing.assert_allclose(full.encode_documents(TITLES[:1])[0], raw[0], atol=1e-5)
    np.testing.assert_allclose(full.encode_queries(TITLES[:1])[0], raw[1], atol=1e-5)


def test_model_id_records_the_truncated_size(model_dir, full):
    assert full.model_id.endswith("/768")
    assert tiny_embeddinggemma(model_dir, dim=128).model_id == full.model_id[: -len("768")] + "128"


def test_a_size_beyond_the_models_output_is_refused(model_dir):
    with pytest.raises(ConfigError, match="between 1 and 768, got 1024"):
        tiny_embeddinggemma(model_dir, dim=1024)


def test_float16_is_refused_before_loading(model_dir):
    with pytest.raises(ConfigError, match="float16"):
        SentenceTransformerTitleEncoder.from_pretrained(model_dir, device="cpu", dtype="float16")


def test_a_directory_without_the_sentence_transformers_layout_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="lacks modules.json"):
        SentenceTransformerTitleEncoder.from_pretrained(tmp_path, device="cpu", local_files_only=True)


def test_loads_offline_from_a_local_directory(model_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    enc = SentenceTransformerTitleEncoder.from_pretrained(model_dir, dim=256, device="cpu", dtype="float32")
    assert enc.encode_queries(["a red case"]).shape == (1, 256)
