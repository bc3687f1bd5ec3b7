"""Checkpoint resolution and loading: local paths, hub ids offline, corrupt files, and the one-line errors users see."""

from __future__ import annotations

import json

import pytest
import torch

from mmsearch.errors import ModelLoadError
from mmsearch.models.checkpoints import (
    is_local_reference,
    load_state_dict_file,
    resolve_dir,
    resolve_file,
    state_dict_fingerprint,
)
from mmsearch.models.encoder import VisualizedBGEEncoder
from mmsearch.testing import build_tiny_visual_bge


class NotATensor:
    """A custom class: `weights_only=True` must refuse to unpickle it."""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_visual_bge(tmp_path_factory.mktemp("tiny"))


@pytest.mark.parametrize(
    ("ref", "local"),
    [
        ("BAAI/bge-visualized", False),
        ("bert-base-uncased", False),
        ("./weights", True),
        ("/abs/x", True),
        ("models/Visualized_m3.pth", True),
        ("a/b/c", True),
    ],
)
def test_local_reference_detection(ref, local):
    assert is_local_reference(ref) is local


def test_resolve_file_returns_a_local_file_as_is(tiny):
    assert resolve_file(tiny.weights_path, "ignored.pth") == tiny.weights_path


def test_resolve_file_finds_file_in_local_directory(tiny):
    assert resolve_file(tiny.weights_path.parent, tiny.weights_path.name) == tiny.weights_path


def test_resolve_file_names_missing_file_in_directory(tmp_path):
    with pytest.raises(
        ModelLoadError, match=rf"weights: directory '{tmp_path}' has no file 'Visualized_m3.pth'"
    ):
        resolve_file(tmp_path, "Visualized_m3.pth", what="weights")


def test_resolve_file_names_missing_local_path(tmp_path):
    missing = tmp_path / "nowhere" / "w.pth"
    with pytest.raises(
        ModelLoadError, match=rf"local path '{missing}' does not exist\. To use local files, do X\."
    ):
        resolve_file(missing, "w.pth", hint="do X")


def test_offline_hub_id_gives_clear_error(tmp_path):
    with pytest.raises(ModelLoadError) as err:
        resolve_file("BAAI/bge-visualized", "Visualized_base_en_v1.5.pth", tmp_path, local_files_only=True)
    assert str(err.value) == (
        "model file: 'Visualized_base_en_v1.5.pth' from hub repo 'BAAI/bge-visualized' is not in the local cache "
        "and the hub cannot be reached (offline?). To use local files, pass a local path for the model file."
    )


def test_offline_hub_snapshot_gives_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match=r"hub repo 'BAAI/bge-m3' is not in the local cache"):
        resolve_dir("BAAI/bge-m3", tmp_path, local_files_only=True)


def test_invalid_repo_id_gives_clear_error(tmp_path):
    with pytest.raises(
        ModelLoadError, match=r"'bad id!' is neither an existing local path nor a valid hub repo id"
    ):
        resolve_file("bad id!", "w.pth", tmp_path, local_files_only=True)


def test_resolve_dir_requires_config(tmp_path):
    with pytest.raises(ModelLoadError, match=rf"'{tmp_path}' lacks config\.json"):
        resolve_dir(tmp_path)


def test_resolve_dir_refuses_a_file(tiny):
    with pytest.raises(ModelLoadError, match="is a file, expected a directory"):
        resolve_dir(tiny.weights_path)


def test_load_corrupt_checkpoint_gives_clear_error(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"definitely not a zip or pickle")
    with pytest.raises(
        ModelLoadError, match=rf"checkpoint '{bad}' cannot be loaded as a state dict with weights_only"
    ):
        load_state_dict_file(bad)


def test_load_truncated_checkpoint_gives_clear_error(tmp_path, tiny):
    cut = tmp_path / "cut.pth"
    cut.write_bytes(tiny.weights_path.read_bytes()[:100_000])
    with pytest.raises(ModelLoadError, match="corrupt, truncated or not a PyTorch/safetensors file"):
        load_state_dict_file(cut)


def test_load_refuses_arbitrary_pickled_objects(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"x": NotATensor()}, path)
    with pytest.raises(ModelLoadError, match="cannot be loaded as a state dict with weights_only=True"):
        load_state_dict_file(path)


def test_load_refuses_non_dict_checkpoint(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(ModelLoadError, match="holds a list, expected a dict of tensors"):
        load_state_dict_file(path)


def test_safetensors_checkpoint_loads(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({"a": torch.arange(3.0)}, str(path))
    assert torch.equal(load_state_dict_file(path)["a"], torch.arange(3.0))


def test_fingerprint_changes_with_any_tensor_value():
    sd = {"a": torch.zeros(10), "b": torch.ones(3)}
    changed = {"a": torch.zeros(10), "b": torch.tensor([1.0, 1.0, 2.0])}
    assert state_dict_fingerprint(sd) != state_dict_fingerprint(changed)


def test_encoder_missing_weights_message_says_how_to_pass_local_path(tmp_path, tiny):
    with pytest.raises(
        ModelLoadError, match=r"MMSEARCH_ENCODER_WEIGHTS=/path/to/Visualized_base_en_v1\.5\.pth"
    ):
        VisualizedBGEEncoder.from_pretrained("base", weights=tmp_path, text_model=tiny.text_model_dir)


def test_encoder_offline_text_model_message_says_how_to_pass_local_dir(tmp_path, tiny):
    with pytest.raises(
        ModelLoadError, match=r"BAAI/bge-base-en-v1\.5.*MMSEARCH_ENCODER_TEXT_MODEL=/path/to/dir"
    ):
        VisualizedBGEEncoder.from_pretrained(
            "base", weights=tiny.weights_path, cache_dir=tmp_path, local_files_only=True
        )


def test_encoder_refuses_text_model_of_the_other_variant(tiny):
    with pytest.raises(
        ModelLoadError, match="variant 'm3' expects a 'xlm-roberta' text model.*has model_type 'bert'"
    ):
        VisualizedBGEEncoder.from_pretrained("m3", weights=tiny.weights_path, text_model=tiny.text_model_dir)


def test_encoder_refuses_checkpoint_that_is_not_visualized_bge(tmp_path, tiny):
    path = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(
        ModelLoadError, match="not a Visualized BGE checkpoint: tensor 'model_visual.visual.cls_token'"
    ):
        VisualizedBGEEncoder.from_pretrained("base", weights=path, text_model=tiny.text_model_dir)


def test_encoder_refuses_unreadable_text_config(tmp_path, tiny):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match=r"text model config '.*config\.json' is unusable"):
        VisualizedBGEEncoder.from_pretrained("base", weights=tiny.weights_path, text_model=tmp_path)


def test_encoder_refuses_unsupported_text_architecture(tmp_path, tiny):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ModelLoadError, match="model_type 'gpt2' is not supported"):
        VisualizedBGEEncoder.from_pretrained("base", weights=tiny.weights_path, text_model=tmp_path)


def test_encoder_refuses_text_config_of_another_width(tmp_path, tiny):
    config = json.loads((tiny.text_model_dir / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "hidden_size": 384}))
    for f in tiny.text_model_dir.iterdir():
        if f.name != "config.json":
            (tmp_path / f.name).write_bytes(f.read_bytes())
    with pytest.raises(
        ModelLoadError,
        match="does not match the text model config: EVA width 768 must equal the text hidden size 384",
    ):
        VisualizedBGEEncoder.from_pretrained("base", weights=tiny.weights_path, text_model=tmp_path)
