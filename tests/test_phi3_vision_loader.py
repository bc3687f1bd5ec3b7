"""Phi-3 Vision loading (strict keys, shards, dtypes, device maps, errors) and cached generation, on the tiny checkpoint."""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import LogitsProcessor, LogitsProcessorList

from mmsearch.errors import ConfigError, ModelLoadError
from mmsearch.models.hf_cache import output_cache
from mmsearch.models.phi3_vision_loader import load_phi3_vision
from mmsearch.testing import build_tiny_phi3_vision

KIT_PARAMS = Path(__file__).parent / "data" / "parity" / "phi3_vision" / "params.json"
PROMPT = "<|user|>\n<|image_1|>\nWhich product matches?<|end|>\n<|assistant|>\n"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return build_tiny_phi3_vision(tmp_path_factory.mktemp("tiny_phi3v"))


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    return load_phi3_vision(str(tiny_dir), device="cpu", dtype="float32")  # numerics compared at 1e-5


@pytest.fixture(scope="module")
def batch(tiny):
    _, processor = tiny
    return processor(PROMPT, [Image.new("RGB", (500, 300), (200, 30, 30))])


def greedy(model, batch, n=6, **kwargs) -> list[int]:
    out = model.generate(**batch, max_new_tokens=n, do_sample=False, **kwargs)
    return out[0, batch["input_ids"].shape[1] :].tolist()


class ForceToken(LogitsProcessor):
    """Forces `token` at generation step `step` (0-based)."""

    def __init__(self, prompt_len: int, step: int, token: int):
        self.prompt_len, self.step, self.token = prompt_len, step, token

    def __call__(self, input_ids, scores):
        if input_ids.shape[1] - self.prompt_len == self.step:
            scores = torch.full_like(scores, -float("inf"))
            scores[:, self.token] = 0.0
        return scores


def test_tiny_checkpoint_is_in_the_official_format(tiny_dir):
    def patterns(names):
        return {re.sub(r"\.layers\.\d+\.", ".layers.*.", n) for n in names}

    names = load_file(str(tiny_dir / "model.safetensors"))
    official = [p["name"] for p in json.loads(KIT_PARAMS.read_text())["params"]]
    assert patterns(names) == patterns(official), "the official key names (tiny layer counts)"
    config = json.loads((tiny_dir / "config.json").read_text())
    assert config["model_type"] == "phi3_v" and config["rope_scaling"]["type"] == "su"
    for name in ("tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"):
        assert (tiny_dir / name).is_file()


def test_tiny_builder_is_deterministic(tmp_path, tiny_dir):
    again = build_tiny_phi3_vision(tmp_path / "again")
    digest = [hashlib.sha256((d / "model.safetensors").read_bytes()).hexdigest() for d in (tiny_dir, again)]
    assert digest[0] == digest[1]


def test_tiny_model_generates_with_the_kv_cache_like_full_recompute(tiny, batch):
    model, _ = tiny
    assert greedy(model, batch, eos_token_id=None) == greedy(model, batch, eos_token_id=None, use_cache=False)


def test_images_are_encoded_once_per_cached_generation(tiny, batch):
    model, _ = tiny
    calls = []
    handle = model.model.vision_embed_tokens.register_forward_hook(lambda *_: calls.append(1))
    try:
        greedy(model, batch, n=5, eos_token_id=None)
    finally:
        handle.remove()
    assert len(calls) == 1


def test_cache_is_rebuilt_with_the_images_when_longrope_switches(tmp_path, tiny, batch):
    """With original_max_position_embeddings just above the prompt, the 3rd new token is computed after the switch."""
    directory = build_tiny_phi3_vision(tmp_path / "short_rope")
    config = json.loads((directory / "config.json").read_text())
    config["original_max_position_embeddings"] = batch["input_ids"].shape[1] + 1
    (directory / "config.json").write_text(json.dumps(config))
    model, _ = load_phi3_vision(str(directory), device="cpu", dtype="float32")
    calls = []
    model.model.vision_embed_tokens.register_forward_hook(lambda *_: calls.append(1))
    cached = greedy(model, batch, n=5, eos_token_id=None)
    assert len(calls) == 2, "images merged at prefill and again into the rebuilt cache"
    assert cached == greedy(model, batch, n=5, eos_token_id=None, use_cache=False)


@pytest.mark.parametrize("name", ["cache", "past_key_values"])
def test_a_cached_step_takes_the_cache_under_either_keyword_without_warnings(tiny, batch, name):
    model, _ = tiny
    ids = batch["input_ids"]
    images = {"pixel_values": batch["pixel_values"], "image_sizes": batch["image_sizes"]}
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("error")
        full = model(input_ids=ids, **images, logits_to_keep=1).logits
        prefix = model(input_ids=ids[:, :-1], **images, use_cache=True)
        step = model(input_ids=ids[:, -1:], use_cache=True, **{name: output_cache(prefix)}).logits
    torch.testing.assert_close(step, full, atol=1e-5, rtol=0)


def with_filler(batch, processor, total: int) -> dict:
    """`batch` with ordinary text tokens inserted before `<|end|>` until the prompt is `total` tokens long."""
    ids = batch["input_ids"]
    at = int((ids[0] == processor.tokenizer.convert_tokens_to_ids("<|end|>")).nonzero()[0, 0])
    filler = torch.full((1, total - ids.shape[1]), 300, dtype=ids.dtype)
    ids = torch.cat([ids[:, :at], filler, ids[:, at:]], dim=1)
    return {**batch, "input_ids": ids, "attention_mask": torch.ones_like(ids)}


def test_generation_across_4096_positions_switches_to_the_long_rope_factors(tiny, batch):
    """A 4094-token prompt: new tokens 1-3 are predicted from <= 4096 positions (short factors), 4-5 from more (long).

    Before the switch each step's logits equal a full forward of the sequence so far (short factors); after it, they
    equal a full forward with the long factors throughout, so no cache entry kept a short-factor rotation.
    """
    model, processor = tiny
    limit = model.config.original_max_position_embeddings
    assert limit == 4096
    long_batch = with_filler(batch, processor, total=limit - 2)
    calls = []
    handle = model.model.vision_embed_tokens.register_forward_hook(lambda *_: calls.append(1))
    try:
        out = model.generate(
            **long_batch,
            max_new_tokens=5,
            do_sample=False,
            eos_token_id=None,
            output_logits=True,
            return_dict_in_generate=True,
        )
    finally:
        handle.remove()
    assert len(calls) == 2, "images merged at prefill and again into the cache rebuilt at the switch"
    images = {"pixel_values": long_batch["pixel_values"], "image_sizes": long_batch["image_sizes"]}
    with torch.inference_mode():
        short = model(input_ids=out.sequences[:, :limit], **images, logits_to_keep=1).logits
        long = model(input_ids=out.sequences[:, :-1], **images, logits_to_keep=2).logits
    torch.testing.assert_close(out.logits[2][:, None], short, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.stack(out.logits[3:], dim=1), long, atol=1e-5, rtol=0)


def test_logits_processors_steer_generation(tiny, batch):
    model, _ = tiny
    forced = LogitsProcessorList([ForceToken(batch["input_ids"].shape[1], step=1, token=300)])
    assert greedy(model, batch, n=3, eos_token_id=None, logits_processor=forced)[1] == 300


def test_generation_stops_at_the_end_of_turn_token(tiny, batch):
    model, processor = tiny
    end = processor.tokenizer.convert_tokens_to_ids("<|end|>")
    assert end in model.generation_config.eos_token_id
    forced = LogitsProcessorList([ForceToken(batch["input_ids"].shape[1], step=2, token=end)])
    tokens = greedy(model, batch, n=10, logits_processor=forced)
    assert tokens[2] == end and len(tokens) == 3


def test_sharded_checkpoint_loads_like_a_single_file(tmp_path, tiny_dir, tiny, batch):
    sd = load_file(str(tiny_dir / "model.safetensors"))
    names = sorted(sd)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    for f in tiny_dir.iterdir():
        if f.name != "model.safetensors":
            (sharded / f.name).write_bytes(f.read_bytes())
    for shard, keys in shards.items():
        save_file({k: sd[k] for k in keys}, str(sharded / shard))
    index = {"metadata": {}, "weight_map": {k: shard for shard, keys in shards.items() for k in keys}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    model, _ = load_phi3_vision(str(sharded), device="cpu", dtype="float32")
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, tiny[0](**batch).logits)


def test_device_map_auto_loads_and_generates(tiny_dir, tiny, batch):
    model, _ = load_phi3_vision(str(tiny_dir), device_map="auto", dtype="float32")
    assert greedy(model, batch, eos_token_id=None) == greedy(tiny[0], batch, eos_token_id=None)


def test_bfloat16_weights_keep_float32_rope_buffers(tiny_dir, batch):
    model, _ = load_phi3_vision(str(tiny_dir), device="cpu", dtype="bfloat16")
    assert model.lm_head.weight.dtype == torch.bfloat16
    assert model.model.vision_embed_tokens.sub_GN.dtype == torch.bfloat16
    assert model.model.rotary_emb.inv_freq.dtype == torch.float32
    assert len(greedy(model, batch, n=2, eos_token_id=None)) == 2


def _rewrite(tiny_dir: Path, dest: Path, edit) -> Path:
    dest.mkdir()
    for f in tiny_dir.iterdir():
        if f.name != "model.safetensors":
            (dest / f.name).write_bytes(f.read_bytes())
    sd = load_file(str(tiny_dir / "model.safetensors"))
    edit(sd)
    save_file(sd, str(dest / "model.safetensors"))
    return dest


def test_missing_key_is_reported(tmp_path, tiny_dir):
    directory = _rewrite(tiny_dir, tmp_path / "m", lambda sd: sd.pop("model.vision_embed_tokens.glb_GN"))
    with pytest.raises(ModelLoadError, match=r"does not match .*missing: model\.vision_embed_tokens\.glb_GN"):
        load_phi3_vision(str(directory), device="cpu")


def test_unexpected_key_is_reported(tmp_path, tiny_dir):
    def add_alias(sd):
        sd["model.vision_embed_tokens.wte.weight"] = sd["model.embed_tokens.weight"].clone()

    directory = _rewrite(tiny_dir, tmp_path / "u", add_alias)
    with pytest.raises(ModelLoadError, match=r"unexpected: model\.vision_embed_tokens\.wte\.weight"):
        load_phi3_vision(str(directory), device="cpu")


def test_shape_mismatch_is_reported(tmp_path, tiny_dir):
    def shrink(sd):
        sd["lm_head.weight"] = sd["lm_head.weight"][:10]

    directory = _rewrite(tiny_dir, tmp_path / "s", shrink)
    with pytest.raises(
        ModelLoadError, match=re.escape("lm_head.weight: checkpoint (10, 64), model (448, 64)")
    ):
        load_phi3_vision(str(directory), device="cpu")


def test_directory_without_weights_is_reported(tmp_path, tiny_dir):
    directory = _rewrite(tiny_dir, tmp_path / "w", lambda sd: None)
    (directory / "model.safetensors").unlink()
    with pytest.raises(
        ModelLoadError, match="has neither model.safetensors nor model.safetensors.index.json"
    ):
        load_phi3_vision(str(directory), device="cpu")


def test_missing_local_directory_names_the_path(tmp_path):
    missing = tmp_path / "no_such_checkpoint"
    with pytest.raises(ModelLoadError, match=f"local path {re.escape(repr(str(missing)))} does not exist"):
        load_phi3_vision(str(missing))


def test_unreachable_hub_id_names_the_repo_and_how_to_pass_a_directory():
    with pytest.raises(ModelLoadError) as err:
        load_phi3_vision("mmsearch-tests/no-such-phi3-vision-repo")
    message = str(err.value)
    assert "'mmsearch-tests/no-such-phi3-vision-repo'" in message
    assert "MMSEARCH_RERANKER_MODEL=" in message


def test_unknown_dtype_is_rejected(tiny_dir):
    with pytest.raises(
        ConfigError, match="unknown dtype 'int8'; expected one of auto, float32, bfloat16, float16"
    ):
        load_phi3_vision(str(tiny_dir), dtype="int8")


def test_num_crops_argument_overrides_the_preprocessor_config(tiny_dir):
    _, processor = load_phi3_vision(str(tiny_dir), num_crops=2)
    out = processor("<|image_1|>", [Image.new("RGB", (900, 300))])
    assert processor.num_crops == 2 and out["pixel_values"].shape[1] == 3
