"""Download and unpack the milvus-io/bootcamp Amazon Reviews 2023 subset, once, into the cache.

Entry point: `bootcamp_images_dir(path_or_None, cache_dir=...)` returns the folder holding the subset's images.
The release asset is a 19.6 MB tarball laid out as `images_folder/images/*.jpg` (about 900 product images named
by their Amazon image id) plus `images_folder/leopard.jpg` (the tutorial's query image). It carries no metadata.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

import httpx
from tqdm.auto import tqdm

from mmsearch.errors import DataSourceError

BOOTCAMP_URL = (
    "https://github.com/milvus-io/bootcamp/releases/download/data/amazon_reviews_2023_subset.tar.gz"
)
BOOTCAMP_FILE = "amazon_reviews_2023_subset.tar.gz"
_MAX_DOWNLOAD_BYTES = 500 * 1024 * 1024
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


def download(url: str, dest: Path, *, timeout: float = 60.0, desc: str | None = None) -> Path:
    """Stream `url` to `dest` with a progress bar; the file appears only when complete (`.part` + rename)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        with httpx.stream("GET", url, follow_redirects=True, timeout=timeout) as resp:
            if resp.status_code != 200:
                raise DataSourceError(f"{url}: HTTP {resp.status_code} {resp.reason_phrase}".rstrip())
            total = int(resp.headers.get("content-length", 0)) or None
            with (
                part.open("wb") as fh,
                tqdm(total=total, unit="B", unit_scale=True, desc=desc or dest.name, leave=False) as bar,
            ):
                size = 0
                for chunk in resp.iter_bytes(1 << 16):
                    size += len(chunk)
                    if size > _MAX_DOWNLOAD_BYTES:
                        raise DataSourceError(f"{url}: larger than {_MAX_DOWNLOAD_BYTES} bytes; refusing")
                    fh.write(chunk)
                    bar.update(len(chunk))
        os.replace(part, dest)
    except httpx.HTTPError as e:
        part.unlink(missing_ok=True)
        raise DataSourceError(
            f"cannot download {url} ({type(e).__name__}: {e}); offline? fetch the file elsewhere and pass "
            f"its local path, e.g. --source bootcamp:/path/to/{dest.name}"
        ) from e
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return dest


def _safe_members(tar: tarfile.TarFile, where: Path) -> list[tarfile.TarInfo]:
    """Regular files and folders only, with relative paths that stay inside the target."""
    members = []
    for m in tar.getmembers():
        name = Path(m.name)
        if name.is_absolute() or ".." in name.parts:
            raise DataSourceError(f"{where}: unsafe path {m.name!r} in the tarball")
        if m.isfile() or m.isdir():
            members.append(m)
    return members


def extract_tarball(tarball: str | Path, dest_root: Path) -> Path:
    """Extract `tarball` under `dest_root` once (a folder named after its path and size) and return the folder."""
    src = Path(tarball).expanduser().resolve()
    if not src.is_file():
        raise DataSourceError(f"{tarball}: no such tarball")
    stat = src.stat()
    key = hashlib.sha1(f"{src}|{stat.st_size}".encode()).hexdigest()[:10]
    stem = src.name.split(".")[0]
    dest = dest_root / f"{stem}-{key}"
    if dest.is_dir():
        return dest
    dest_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest_root, prefix=".extract-"))
    try:
        with tarfile.open(src, "r:*") as tar:
            members = _safe_members(tar, src)
            if hasattr(tarfile, "data_filter"):
                tar.extractall(tmp, members=members, filter="data")
            else:  # Python without extraction filters: members were checked above
                tar.extractall(tmp, members=members)  # noqa: S202
        os.replace(tmp, dest)  # a crash mid-extract leaves only the hidden temp folder
    except (tarfile.TarError, EOFError, OSError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataSourceError(f"{tarball}: not a readable tarball ({e})") from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _find_images_dir(root: Path) -> Path:
    """`images_folder/images` in the official layout; otherwise the folder itself."""
    candidates = [root / "images_folder" / "images", root / "images"]
    candidates += sorted(p for p in root.rglob("images") if p.is_dir())
    for c in candidates:
        if c.is_dir() and any(p.suffix.lower() in _IMAGE_SUFFIXES for p in c.iterdir()):
            return c
    return root


def bootcamp_images_dir(path: str | Path | None, *, cache_dir: Path) -> Path:
    """Folder of the subset's product images, from a local tarball or folder, or downloaded once (path None)."""
    base = Path(cache_dir) / "bootcamp"
    if path is None:
        tarball = base / BOOTCAMP_FILE
        if not tarball.is_file():
            download(BOOTCAMP_URL, tarball, desc="bootcamp subset")
        return _find_images_dir(extract_tarball(tarball, base))
    p = Path(path).expanduser()
    if p.is_dir():
        return _find_images_dir(p)
    if p.is_file():
        return _find_images_dir(extract_tarball(p, base))
    raise DataSourceError(
        f"{path}: no such tarball or folder; expected the {BOOTCAMP_FILE} release asset or its extracted folder"
    )


__all__ = ["BOOTCAMP_FILE", "BOOTCAMP_URL", "bootcamp_images_dir", "download", "extract_tarball"]
