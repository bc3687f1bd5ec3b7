"""Resolve model files from a hub id or a local path, and load state dicts safely (`weights_only=True`).

Entry points: `resolve_file(repo_or_path, filename)`, `resolve_dir(repo_or_path, required=...)`,
`load_state_dict_file(path)`. Every failure (offline, missing file, bad repo id, corrupt checkpoint) becomes a
one-paragraph `ModelLoadError` that names what was looked for and how to pass a local path instead.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import socket
import urllib.parse
import zipfile
from collections.abc import Sequence
from pathlib import Path

import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub import hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import validate_repo_id

from mmsearch.errors import ModelLoadError

_PATH_PREFIXES = ("/", "./", "../", "~", ".\\", "..\\")
_FILE_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".json")


def is_local_reference(repo_or_path: str | os.PathLike[str]) -> bool:
    """True when the string names something on disk (existing, or shaped like a path) rather than a hub repo id."""
    text = os.fspath(repo_or_path)
    if Path(text).expanduser().exists():
        return True
    return (
        text.startswith(_PATH_PREFIXES)
        or text.endswith(_FILE_SUFFIXES)
        or text.count("/") > 1
        or "\\" in text
    )


def _hint(what: str, hint: str | None) -> str:
    return (
        f" To use local files, {hint}." if hint else f" To use local files, pass a local path for the {what}."
    )


def _hub_reachable(timeout: float = 3.0) -> bool:
    """One TCP connect to the hub endpoint: offline, huggingface_hub would retry for ~25 s before failing."""
    url = urllib.parse.urlparse(hf_constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def _hub_call(repo_id: str, filename: str | None, what: str, hint: str | None, call, local_files_only: bool):  # noqa: ANN001
    """Run a huggingface_hub download and turn its exceptions into one readable `ModelLoadError`.

    `call(local_files_only)` does the download. When the hub cannot be reached, only the cache is consulted.
    """
    target = f"{filename!r} from hub repo {repo_id!r}" if filename else f"hub repo {repo_id!r}"
    try:
        validate_repo_id(repo_id)
        if not local_files_only and not hf_constants.HF_HUB_OFFLINE and not _hub_reachable():
            local_files_only = True
        return call(local_files_only)
    except HFValidationError as e:
        raise ModelLoadError(
            f"{what}: {repo_id!r} is neither an existing local path nor a valid hub repo id ({e})."
            + _hint(what, hint)
        ) from None
    except LocalEntryNotFoundError:
        raise ModelLoadError(
            f"{what}: {target} is not in the local cache and the hub cannot be reached (offline?)."
            + _hint(what, hint)
        ) from None
    except (RepositoryNotFoundError, GatedRepoError):
        raise ModelLoadError(
            f"{what}: hub repo {repo_id!r} does not exist or is not accessible." + _hint(what, hint)
        ) from None
    except RevisionNotFoundError:
        raise ModelLoadError(
            f"{what}: hub repo {repo_id!r} has no such revision." + _hint(what, hint)
        ) from None
    except EntryNotFoundError:
        raise ModelLoadError(
            f"{what}: hub repo {repo_id!r} has no file {filename!r}." + _hint(what, hint)
        ) from None
    except OSError as e:  # network errors, disk full, permissions
        raise ModelLoadError(
            f"{what}: could not fetch {target} ({type(e).__name__}: {e})." + _hint(what, hint)
        ) from None


def resolve_file(
    repo_or_path: str | os.PathLike[str],
    filename: str,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    local_files_only: bool = False,
    what: str = "model file",
    hint: str | None = None,
) -> Path:
    """Return a local path to `filename`.

    Args:
        repo_or_path: a local file (used as is), a local directory (must contain `filename`), or a hub repo id
            (downloaded with `hf_hub_download` into the huggingface cache or `cache_dir`).
        filename: the file wanted inside a directory or repo.
        cache_dir: huggingface cache directory; None uses the huggingface default (`HF_HOME`).
        local_files_only: never touch the network; only the cache.
        what / hint: named in error messages ("Visualized BGE weights"; "pass weights=/path/to/file.pth").
    Raises:
        ModelLoadError: nothing usable was found; the message says what and how to pass a local path.
    """
    if is_local_reference(repo_or_path):
        path = Path(repo_or_path).expanduser()
        if path.is_file():
            return path
        if path.is_dir():
            candidate = path / filename
            if candidate.is_file():
                return candidate
            raise ModelLoadError(
                f"{what}: directory {str(path)!r} has no file {filename!r}." + _hint(what, hint)
            )
        raise ModelLoadError(f"{what}: local path {str(path)!r} does not exist." + _hint(what, hint))
    repo_id = os.fspath(repo_or_path)
    local = _hub_call(
        repo_id,
        filename,
        what,
        hint,
        lambda local_only: hf_hub_download(
            repo_id, filename, cache_dir=cache_dir, local_files_only=local_only
        ),
        local_files_only,
    )
    return Path(local)


def resolve_dir(
    repo_or_path: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    allow_patterns: Sequence[str] | None = None,
    required: Sequence[str] = ("config.json",),
    local_files_only: bool = False,
    what: str = "model directory",
    hint: str | None = None,
) -> Path:
    """Return a local directory holding `required` files: a local dir as is, or a hub snapshot.

    `allow_patterns` limits what a hub snapshot downloads (e.g. config and tokenizer files, not weights).
    """
    if is_local_reference(repo_or_path):
        path = Path(repo_or_path).expanduser()
        if not path.is_dir():
            kind = "is a file, expected a directory" if path.exists() else "does not exist"
            raise ModelLoadError(f"{what}: local path {str(path)!r} {kind}." + _hint(what, hint))
    else:
        repo_id = os.fspath(repo_or_path)
        patterns = list(allow_patterns) if allow_patterns is not None else None
        path = Path(
            _hub_call(
                repo_id,
                None,
                what,
                hint,
                lambda local_only: snapshot_download(
                    repo_id, cache_dir=cache_dir, allow_patterns=patterns, local_files_only=local_only
                ),
                local_files_only,
            )
        )
    missing = [name for name in required if not (path / name).is_file()]
    if missing:
        raise ModelLoadError(f"{what}: {str(path)!r} lacks {', '.join(missing)}." + _hint(what, hint))
    return path


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Load a `.pth`/`.pt`/`.bin` (torch zip, `weights_only=True`) or `.safetensors` file as a tensor dict."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except FileNotFoundError:
        raise ModelLoadError(f"checkpoint {str(path)!r} does not exist.") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(
            f"checkpoint {str(path)!r} cannot be loaded as a state dict with weights_only=True "
            f"(corrupt, truncated or not a PyTorch/safetensors file): {first_line}"
        ) from None
    if not isinstance(sd, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in sd.items()):
        raise ModelLoadError(
            f"checkpoint {str(path)!r} holds a {type(sd).__name__}, expected a dict of tensors."
        )
    return sd


def state_dict_fingerprint(sd: dict[str, torch.Tensor], length: int = 12) -> str:
    """Short content hash: names, shapes, dtypes and the first/last values of every tensor (fast on GBs)."""
    digest = hashlib.sha256()
    for name in sorted(sd):
        t = sd[name].detach().reshape(-1)
        digest.update(f"{name}:{tuple(sd[name].shape)}:{t.dtype}".encode())
        for part in (t[:64], t[-64:]):
            digest.update(part.contiguous().cpu().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:length]


__all__ = [
    "is_local_reference",
    "load_state_dict_file",
    "resolve_dir",
    "resolve_file",
    "state_dict_fingerprint",
]
