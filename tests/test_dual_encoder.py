"""CLIP and SigLIP through `DualEncoder` on tiny random-weight checkpoints saved by transformers' `save_pretrained`
and loaded through the same `from_pretrained` path as real ones (issue 15)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mmsearch.errors import ModelLoadError, UnsupportedModeError
from mmsearch.models.dual_encoder import DualEncoder
from mmsearch.testing import build_tiny_dual_encoder, tiny_dual_encoder

KINDS = ("clip", "siglip")
TEXTS = ["red leopard phone case", "a blue silicone cover for a galaxy with a longer title", "earbuds"]


def images(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(n)
    return [Image.fromarray(rng.integers(0, 256, (40 + 7 * i, 50, 3), dtype=np.uint8)) for i in range(n)]


@pytest.fixture(scope="module", params=KINDS)
def encoder(request, tmp_path_factory) -> DualEncoder:
    return tiny_dual_encoder(request.param, tmp_path_factory.mktemp(request.param), batch_size=2)


def test_outputs_are_unit_rows_of_the_projection_size(encoder):
    vecs = np.concatenate([encoder.encode_images(images(3)), encoder.encode_texts(TEXTS)])
    assert vecs.shape == (6, encoder.dim) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)


def test_image_vectors_match_the_native_model_on_its_processor_output(encoder):
    imgs = images(3)
    pixels = encoder.image_processor(images=imgs, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        ref = encoder.model.get_image_features(pixel_values=pixels).pooler_output
    ref = torch.nn.functional.normalize(ref, dim=-1).numpy()
    np.testing.assert_allclose(encoder.encode_images(imgs), ref, atol=1e-5)


def test_text_vectors_do_not_depend_on_the_batch(encoder):
    """SigLIP pools the last position, so its texts must be padded to the full window, not to the batch's longest."""
    together = encoder.encode_texts(TEXTS)
    alone = np.concatenate([encoder.encode_texts([t]) for t in TEXTS])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_joint_embedding_is_refused_with_the_modes_to_use(encoder):
    assert {"weighted", "fused"} <= encoder.capabilities and not encoder.supports_joint
    with pytest.raises(
        UnsupportedModeError, match=r"no joint image\+instruction embedding; use mode fused or"
    ):
        encoder.encode_multimodal(images(1), ["in blue"])


def test_model_id_names_the_kind_and_changes_with_the_weights(tmp_path):
    a = tiny_dual_encoder("clip", tmp_path / "a", seed=0)
    b = tiny_dual_encoder("clip", tmp_path / "b", seed=1)
    assert a.model_id.startswith("clip:") and b.model_id.startswith("clip:")
    assert a.model_id != b.model_id


def test_a_checkpoint_of_the_other_kind_is_refused(tmp_path):
    path = build_tiny_dual_encoder("clip", tmp_path / "clip")
    with pytest.raises(ModelLoadError, match="holds a 'clip' model, expected 'siglip'"):
        DualEncoder.from_pretrained("siglip", path, device="cpu", local_files_only=True)


def test_a_missing_directory_names_the_path(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        DualEncoder.from_pretrained("clip", tmp_path / "nope", device="cpu", local_files_only=True)
