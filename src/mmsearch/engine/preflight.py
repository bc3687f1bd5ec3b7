"""Checks that need no model: are the model files where the settings say, before minutes of loading start.

Entry point: `check_model_parts(settings, rerank=...)` raises one `ModelLoadError` listing every missing part, each
with the CLI flag and environment variable that set it, and a pointer to `--smoke`. A local path that does not
exist is missing; a hub id is missing only when the hub is off (`HF_HUB_OFFLINE=1`) and it is not in the cache.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from mmsearch.config import ENCODER_VARIANTS, Settings
from mmsearch.errors import ModelLoadError

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def _is_local(ref: str) -> bool:
    return (
        ref.startswith(("/", ".", "~"))
        or ref.endswith((".pth", ".bin", ".safetensors"))
        or not _HUB_ID.fullmatch(ref)
    )


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _in_hub_cache(repo: str, filename: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub ships with transformers
        return True
    return isinstance(try_to_load_from_cache(repo, filename), str)


def _missing(ref: str, filename: str, what: str, flag: str, env: str) -> str | None:
    if _is_local(ref):
        if Path(ref).expanduser().exists():
            return None
        return f"{what} {ref!r} not found ({flag} / {env})"
    if _offline() and not _in_hub_cache(ref, filename):
        return f"{what} {ref!r} is not in the Hugging Face cache and HF_HUB_OFFLINE is set ({flag} / {env})"
    return None


def check_model_parts(settings: Settings, *, rerank: bool = False) -> None:
    """Raise one `ModelLoadError` naming every model part that cannot be found; smoke mode needs none."""
    if settings.smoke:
        return
    spec = ENCODER_VARIANTS[settings.encoder_variant]
    checks = [
        (
            settings.encoder_weights,
            str(spec["weights_file"]),
            "Visualized BGE weights",
            "--encoder-weights",
            "MMSEARCH_ENCODER_WEIGHTS",
        ),
        (
            settings.text_model_id,
            "config.json",
            "BGE text model",
            "--encoder-text-model",
            "MMSEARCH_ENCODER_TEXT_MODEL",
        ),
    ]
    if rerank:
        checks.append(
            (
                settings.reranker_model,
                "config.json",
                "Phi-3 Vision reranker",
                "--reranker-model",
                "MMSEARCH_RERANKER_MODEL",
            )
        )
    problems = [p for p in (_missing(*c) for c in checks) if p]
    if problems:
        raise ModelLoadError(
            "missing model files: "
            + "; ".join(problems)
            + ". Pass local paths or hub ids, or add --smoke (MMSEARCH_SMOKE=1) for tiny random-weight models "
            "that check the plumbing offline"
        )


__all__ = ["check_model_parts"]
