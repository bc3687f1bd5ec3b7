"""Load Phi-3 Vision (hub id or local dir) into our native model, strictly by the official safetensors names.

Entry point: `load_phi3_vision("microsoft/Phi-3-vision-128k-instruct") -> (model, processor)`. The model is built
without allocating weights, every checkpoint key must match a parameter (same shape) and every parameter must be
in the checkpoint, or a `ModelLoadError` lists the differences. Sharded checkpoints (`model.safetensors.index.json`)
and accelerate device maps are supported.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from accelerate import init_empty_weights
from safetensors import safe_open
from transformers import GenerationConfig

from mmsearch.errors import ModelLoadError
from mmsearch.limits import resolve_device, resolve_dtype
from mmsearch.models.checkpoints import resolve_dir
from mmsearch.models.phi3_vision import Phi3VisionConfig, Phi3VisionForCausalLM
from mmsearch.models.phi3_vision_processor import Phi3VisionProcessor
from mmsearch.models.quantize import quantize_int8_weight_only

DEFAULT_MODEL = "microsoft/Phi-3-vision-128k-instruct"
HUB_PATTERNS = ["*.json", "*.safetensors", "tokenizer.model"]
_HINT = (
    "download microsoft/Phi-3-vision-128k-instruct where the hub is reachable and pass its directory "
    "(config.json, model-*.safetensors + model.safetensors.index.json, tokenizer.json, tokenizer_config.json, "
    "preprocessor_config.json), e.g. MMSEARCH_RERANKER_MODEL=/models/Phi-3-vision-128k-instruct"
)
QUANTIZE_MODES = ("none", "int8")


def checkpoint_files(directory: Path) -> dict[str, Path]:
    """{tensor name: safetensors file} from `model.safetensors.index.json` or a single `model.safetensors`."""
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        missing = sorted({f for f in weight_map.values() if not (directory / f).is_file()})
        if missing:
            raise ModelLoadError(
                f"{str(directory)!r}: shards named in {index.name} are missing: {', '.join(missing)}"
            )
        return {name: directory / f for name, f in weight_map.items()}
    single = directory / "model.safetensors"
    if single.is_file():
        with safe_open(str(single), framework="pt") as f:
            return {name: single for name in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    raise ModelLoadError(
        f"{str(directory)!r} has neither model.safetensors nor model.safetensors.index.json. To use local files, {_HINT}."
    )


def _check_keys(model: torch.nn.Module, files: dict[str, Path], directory: Path) -> None:
    """Strict key and shape check against the checkpoint headers, before any tensor is read."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(files))
    unexpected = sorted(set(files) - set(expected))
    wrong = []
    by_file: dict[Path, list[str]] = {}
    for name, path in files.items():
        by_file.setdefault(path, []).append(name)
    for path, names in by_file.items():
        with safe_open(str(path), framework="pt") as f:
            for name in names:
                if name in expected and tuple(f.get_slice(name).get_shape()) != expected[name]:
                    wrong.append(
                        f"{name}: checkpoint {tuple(f.get_slice(name).get_shape())}, model {expected[name]}"
                    )
    if missing or unexpected or wrong:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", wrong)):
            if items:
                shown = ", ".join(items[:5]) + (f", ... ({len(items)} in all)" if len(items) > 5 else "")
                parts.append(f"{label}: {shown}")
        raise ModelLoadError(
            f"checkpoint {str(directory)!r} does not match the Phi-3 Vision architecture of its config.json; "
            + "; ".join(parts)
        )


def load_weights_strict(
    model: Phi3VisionForCausalLM, directory: Path, *, dtype: torch.dtype, device: torch.device
) -> None:
    """Fill a (possibly meta) model from the official safetensors: all keys used, none missing, shapes equal."""
    files = checkpoint_files(directory)
    _check_keys(model, files, directory)
    by_file: dict[Path, list[str]] = {}
    for name, path in files.items():
        by_file.setdefault(path, []).append(name)
    for path, names in by_file.items():  # one shard at a time keeps the peak memory at one shard
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            shard = {name: f.get_tensor(name).to(dtype) for name in names}
        model.load_state_dict(shard, strict=False, assign=True)
    model.to(device)  # non-persistent buffers (RoPE inv_freq, CLIP position_ids)


def build_empty_model(config: Phi3VisionConfig) -> Phi3VisionForCausalLM:
    """The model with parameters on the meta device (no memory, no random init) and real float32 buffers.

    Never call `.to(dtype)` on it before filling: that would round the RoPE `inv_freq` buffers to bf16.
    """
    with init_empty_weights(include_buffers=False):
        return Phi3VisionForCausalLM(config)


def _generation_config(
    directory: Path, config: Phi3VisionConfig, processor: Phi3VisionProcessor
) -> GenerationConfig:
    if (directory / "generation_config.json").is_file():
        gen = GenerationConfig.from_pretrained(str(directory))
    else:
        gen = GenerationConfig.from_model_config(config)
    eos = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
    # A chat turn ends with <|end|>; the hub config only names </s>.
    gen.eos_token_id = sorted({i for i in eos if i is not None} | set(processor.stop_token_ids))
    if gen.pad_token_id is None:
        gen.pad_token_id = processor.tokenizer.pad_token_id
    return gen


def load_phi3_vision(
    model: str = DEFAULT_MODEL,
    *,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    num_crops: int = 4,
    cache_dir: str | Path | None = None,
    device_map: str | dict | None = None,
    attn_implementation: str = "sdpa",
    quantize: str = "none",
) -> tuple[Phi3VisionForCausalLM, Phi3VisionProcessor]:
    """Load the model (eval mode) and its processor from a hub id or a local checkpoint directory.

    Args:
        model: hub repo id (downloaded with `snapshot_download`, json + safetensors + tokenizer only) or local dir.
        device: "auto" (cuda > mps > cpu) or a torch device; ignored when `device_map` is given.
        dtype: "auto" (bf16 on CUDA; on CPU bf16 with AMX-BF16 or AVX512-BF16, else fp32), "float32", "bfloat16",
            "float16" or a torch dtype.
        num_crops: HD crops per image (the hub default is 16; 4 is ~2.6x fewer image tokens).
        cache_dir: huggingface cache directory for hub downloads.
        device_map: accelerate device map ("auto", "balanced", or {module: device}) to spread a large model.
        attn_implementation: "sdpa" or "eager" (the official config asks for flash_attention_2, not needed here).
        quantize: "none", or "int8": weight-only int8 decoder and LM head (`mmsearch.models.quantize`; the CLIP
            tower and projector stay in `dtype`). Decode reads half the bytes; logits move by ~1% of their spread.
    Raises:
        ModelLoadError: the checkpoint is missing, offline, incomplete, or does not match the architecture.
    """
    if quantize not in QUANTIZE_MODES:
        raise ModelLoadError(f"quantize must be one of {', '.join(QUANTIZE_MODES)}; got {quantize!r}")
    directory = resolve_dir(
        model,
        cache_dir,
        allow_patterns=HUB_PATTERNS,
        required=("config.json", "tokenizer.json"),
        what="Phi-3 Vision checkpoint",
        hint=_HINT,
    )
    try:
        raw = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        raw["_attn_implementation"] = attn_implementation
        config = Phi3VisionConfig(**{k: v for k, v in raw.items() if k not in ("model_type", "auto_map")})
    except (ValueError, TypeError, KeyError) as e:
        raise ModelLoadError(
            f"{str(directory / 'config.json')!r} is not a usable Phi-3 Vision config: {e}"
        ) from None
    config.vision_config._attn_implementation = attn_implementation
    processor = Phi3VisionProcessor.from_pretrained(directory, num_crops=num_crops)
    target = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, target, memory_bound=True)  # decode streams ~8 GB a token
    net = build_empty_model(config)
    if device_map is None:
        load_weights_strict(net, directory, dtype=torch_dtype, device=target)
    else:
        from accelerate import load_checkpoint_and_dispatch

        _check_keys(net, checkpoint_files(directory), directory)
        index = directory / "model.safetensors.index.json"
        net = load_checkpoint_and_dispatch(
            net,
            str(index if index.is_file() else directory / "model.safetensors"),
            device_map=device_map,
            no_split_module_classes=list(Phi3VisionForCausalLM._no_split_modules),
            dtype=torch_dtype,
        )
    net.generation_config = _generation_config(directory, config, processor)
    if quantize == "int8":
        quantize_int8_weight_only(net, skip=("vision_embed_tokens",))
    return net.eval(), processor


__all__ = [
    "DEFAULT_MODEL",
    "build_empty_model",
    "checkpoint_files",
    "load_phi3_vision",
    "load_weights_strict",
]
