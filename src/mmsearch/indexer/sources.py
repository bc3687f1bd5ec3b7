"""Data sources for the indexer: each yields one `Product` per product image, in the Amazon Reviews 2023 schema.

Entry point: `open_source(spec, cache_dir=...)` for `bootcamp`, `bootcamp:<tarball|folder>`, `hub:<Category>`,
or a path to a `.jsonl[.gz]` / `.parquet` file or a folder of images.

Ids are deterministic, so re-indexing is an idempotent upsert:
- metadata records: `"<parent_asin>:<i>"`, `i` being the image's position in the record's `images` list;
- image folders and tarballs: `"file:<path relative to the folder>"` (`"bootcamp:<name>"` for the bootcamp subset).
An id longer than `MAX_ID_LENGTH` bytes keeps its prefix and replaces the rest by its SHA-1.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from mmsearch.errors import DataSourceError
from mmsearch.indexer.bootcamp import BOOTCAMP_URL, bootcamp_images_dir, extract_tarball
from mmsearch.indexer.images import is_url
from mmsearch.types import Product

MAX_ID_LENGTH = 512
MAX_META_BYTES = 8192
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
HUB_REPO = "McAuley-Lab/Amazon-Reviews-2023"
HUB_CATEGORIES = (
    "All_Beauty", "Amazon_Fashion", "Appliances", "Arts_Crafts_and_Sewing", "Automotive", "Baby_Products",
    "Beauty_and_Personal_Care", "Books", "CDs_and_Vinyl", "Cell_Phones_and_Accessories",
    "Clothing_Shoes_and_Jewelry", "Digital_Music", "Electronics", "Gift_Cards", "Grocery_and_Gourmet_Food",
    "Handmade_Products", "Health_and_Household", "Health_and_Personal_Care", "Home_and_Kitchen",
    "Industrial_and_Scientific", "Kindle_Store", "Magazine_Subscriptions", "Movies_and_TV", "Musical_Instruments",
    "Office_Products", "Patio_Lawn_and_Garden", "Pet_Supplies", "Software", "Sports_and_Outdoors",
    "Subscription_Boxes", "Tools_and_Home_Improvement", "Toys_and_Games", "Video_Games", "Unknown",
)  # fmt: skip
# Preference among the sizes of one Amazon image: `large` (~500 px) is plenty for a 224-px encoder.
IMAGE_KEYS = ("large", "hi_res", "thumb")
_MAPPED_KEYS = frozenset(
    {"parent_asin", "title", "main_category", "price", "average_rating", "rating_number", "images"}
)
_PRICE_RE = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?")

# on_error(id, where, reason): called for a bad record or image entry instead of raising.
ErrorHandler = Callable[[str, str, str], None]


class Source(ABC):
    """An iterable of `Product`s. `total` is the number of products when known cheaply (for the ETA), else None."""

    name: str = "source"
    total: int | None = None

    def __init__(self, *, limit: int | None = None):
        if limit is not None and limit < 1:
            raise DataSourceError(f"limit must be a positive number of images, got {limit}")
        self.limit = limit

    @abstractmethod
    def _products(self, on_error: ErrorHandler) -> Iterator[Product]: ...

    def products(self, on_error: ErrorHandler | None = None) -> Iterator[Product]:
        """Yield products, at most `limit`. Without `on_error` a bad record raises `DataSourceError`."""
        handler = on_error or _raise
        if self.limit is None:
            yield from self._products(handler)
            return
        for n, product in enumerate(self._products(handler), start=1):
            yield product
            if n >= self.limit:
                return

    def __iter__(self) -> Iterator[Product]:
        return self.products()


def _raise(id: str, where: str, reason: str) -> None:
    raise DataSourceError(f"{where}: {reason}")


def make_id(prefix: str, key: str) -> str:
    """`prefix:key`, or `prefix:sha1:<hex>` when that would exceed `MAX_ID_LENGTH` bytes."""
    out = f"{prefix}:{key}"
    if len(out.encode("utf-8")) <= MAX_ID_LENGTH:
        return out
    return f"{prefix[:400]}:sha1:{hashlib.sha1(key.encode('utf-8')).hexdigest()}"


# -- lenient field parsing -------------------------------------------------------------------------------------


def parse_price(value: Any) -> float | None:
    """`12.99`, `"$12.99"`, `"1,299.00"`, `"from $5 - $9"` (first number) -> float; `None`/`"None"`/`"—"` -> None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) and value >= 0 else None
    if isinstance(value, str):
        m = _PRICE_RE.search(value)
        return float(m.group(0).replace(",", "")) if m else None
    return None


def _parse_float(value: Any, lo: float, hi: float) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        x = float(str(value).replace(",", "")) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) and lo <= x <= hi else None


def _parse_count(value: Any) -> int | None:
    x = _parse_float(value, 0, 1e15)
    return int(x) if x is not None else None


def _text(value: Any) -> str:
    if value is None:
        return ""
    return " ".join(str(value).split())


def _bounded_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe copy of `meta` under MAX_META_BYTES: the largest fields go first, named in `_dropped`."""
    safe = json.loads(json.dumps(meta, default=str, ensure_ascii=False))
    sizes = {k: len(json.dumps(v, ensure_ascii=False)) for k, v in safe.items()}
    dropped: list[str] = []
    while safe and len(json.dumps(safe, ensure_ascii=False).encode("utf-8")) > MAX_META_BYTES:
        biggest = max(safe, key=lambda k: sizes.get(k, 0))
        safe.pop(biggest)
        dropped.append(biggest)
        safe["_dropped"] = dropped
        sizes["_dropped"] = 0
    return safe


# -- metadata records (jsonl, parquet, hub) --------------------------------------------------------------------


class RecordError(ValueError):
    """One record cannot be used; the message is the reason (the caller adds where)."""


def _image_entries(value: Any) -> list[tuple[int, Any]]:
    """Normalise `images` to [(index, entry)]: a list of dicts or strings, or HF's dict-of-lists column form."""
    if value is None:
        return []
    if isinstance(value, dict):
        columns = {k: v for k, v in value.items() if isinstance(v, list)}
        n = max((len(v) for v in columns.values()), default=0)
        value = [{k: (v[i] if i < len(v) else None) for k, v in columns.items()} for i in range(n)]
    if not isinstance(value, list):
        raise RecordError(f"images must be a list, got {type(value).__name__}")
    return list(enumerate(value))


def _pick_ref(entry: Any) -> tuple[str | None, str]:
    """(reference, variant) of one image entry; reference None when the entry has no usable string."""
    if isinstance(entry, str):
        return (entry.strip() or None), ""
    if isinstance(entry, dict):
        variant = _text(entry.get("variant"))
        for key in IMAGE_KEYS:
            ref = entry.get(key)
            if isinstance(ref, str) and ref.strip() and ref.strip().lower() not in ("none", "null"):
                return ref.strip(), variant
        return None, variant
    return None, ""


def _resolve(ref: str, base_dir: Path | None) -> str | None:
    if is_url(ref):
        return ref
    path = ref[len("file://") :] if ref.startswith("file://") else ref
    p = Path(path).expanduser()
    if not p.is_absolute():
        if base_dir is None:
            return None
        p = base_dir / p
    return str(p.resolve())


def products_from_record(
    record: Any,
    *,
    where: str,
    base_dir: Path | None,
    on_error: ErrorHandler,
    max_images: int | None = None,
) -> list[Product]:
    """Map one metadata record to one `Product` per usable image. Raises `RecordError` for an unusable record."""
    if not isinstance(record, dict):
        raise RecordError(f"expected a JSON object, got {type(record).__name__}")
    raw_asin = record.get("parent_asin")
    if raw_asin is None or not str(raw_asin).strip():
        raise RecordError("missing parent_asin")
    if not isinstance(raw_asin, str | int):
        raise RecordError(f"parent_asin must be a string, got {type(raw_asin).__name__}")
    asin = str(raw_asin).strip()
    entries = _image_entries(record.get("images"))
    if not entries:
        raise RecordError(f"product {asin!r} has no images")

    price = parse_price(record.get("price"))
    base_meta = {k: v for k, v in record.items() if k not in _MAPPED_KEYS}
    raw_price = record.get("price")
    if price is None and isinstance(raw_price, str) and raw_price.strip().lower() not in ("", "none", "null"):
        base_meta["price_raw"] = raw_price
    common = {
        "title": _text(record.get("title")),
        "main_category": _text(record.get("main_category")),
        "price": price,
        "average_rating": _parse_float(record.get("average_rating"), 0.0, 5.0),
        "rating_number": _parse_count(record.get("rating_number")),
        "parent_asin": asin,
    }
    out = []
    for index, entry in entries:
        if max_images is not None and len(out) >= max_images:
            break
        pid = make_id(asin, str(index))
        ref, variant = _pick_ref(entry)
        if ref is None:
            on_error(
                pid, where, f"image {index} of {asin!r} has no usable reference ({', '.join(IMAGE_KEYS)})"
            )
            continue
        resolved = _resolve(ref, base_dir)
        if resolved is None:
            on_error(pid, where, f"image {index} of {asin!r}: {ref!r} is neither a URL nor an absolute path")
            continue
        meta = _bounded_meta({**base_meta, "image_index": index, "image_variant": variant})
        out.append(Product(id=pid, image=resolved, image_url=resolved, meta=meta, **common))
    return out


class RecordSource(Source):
    """Products from an iterable of (where, record-or-error) pairs; the subclasses supply the records."""

    base_dir: Path | None = None

    def __init__(self, *, limit: int | None = None, max_images_per_product: int | None = None):
        super().__init__(limit=limit)
        self.max_images = max_images_per_product
        self.total = limit

    @abstractmethod
    def _records(self) -> Iterator[tuple[str, Any, str | None]]:
        """Yield (where, record, parse_error); record is None when parse_error is set."""

    def _products(self, on_error: ErrorHandler) -> Iterator[Product]:
        for where, record, parse_error in self._records():
            if parse_error is not None:
                on_error("", where, parse_error)
                continue
            try:
                found = products_from_record(
                    record, where=where, base_dir=self.base_dir, on_error=on_error, max_images=self.max_images
                )
            except RecordError as e:
                asin = record.get("parent_asin") if isinstance(record, dict) else None
                on_error(str(asin or ""), where, str(e))
                continue
            yield from found


def _json_lines(fh: Iterable[str], name: str) -> Iterator[tuple[str, Any, str | None]]:
    for lineno, line in enumerate(fh, start=1):
        if not line.strip():
            continue
        where = f"{name}:{lineno}"
        try:
            yield where, json.loads(line), None
        except json.JSONDecodeError as e:
            yield where, None, f"invalid JSON ({e.msg} at column {e.colno})"


class JsonlSource(RecordSource):
    """A local `.jsonl` / `.jsonl.gz` file in the Amazon Reviews 2023 metadata schema."""

    def __init__(self, path: str | Path, **kwargs: Any):
        super().__init__(**kwargs)
        self.path = Path(path)
        self.name = str(path)
        self.base_dir = self.path.resolve().parent

    def _records(self) -> Iterator[tuple[str, Any, str | None]]:
        try:
            opener = gzip.open if self.path.suffix == ".gz" else open
            with opener(self.path, "rt", encoding="utf-8") as fh:
                yield from _json_lines(fh, self.name)
        except (OSError, UnicodeDecodeError, EOFError) as e:
            raise DataSourceError(f"{self.name}: cannot read ({e})") from e


class ParquetSource(RecordSource):
    """A local `.parquet` file with the same columns; rows are read in batches."""

    def __init__(self, path: str | Path, **kwargs: Any):
        super().__init__(**kwargs)
        self.path = Path(path)
        self.name = str(path)
        self.base_dir = self.path.resolve().parent

    def _records(self) -> Iterator[tuple[str, Any, str | None]]:
        try:
            import pyarrow.parquet as pq
        except ImportError as e:
            raise DataSourceError(f"{self.name}: reading parquet needs pyarrow (pip install pyarrow)") from e
        try:
            pf = pq.ParquetFile(self.path)
            row = 0
            for batch in pf.iter_batches(batch_size=1024):
                for record in batch.to_pylist():
                    row += 1
                    yield f"{self.name}:row {row}", record, None
        except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid derives from ValueError
            raise DataSourceError(f"{self.name}: not a readable parquet file ({e})") from e


class HubSource(RecordSource):
    """One category's raw metadata jsonl from the hub dataset `McAuley-Lab/Amazon-Reviews-2023`.

    With a limit the file is streamed and reading stops early; without one it is downloaded to the HF cache
    once (the files are large: hundreds of MB to GB), so a resumed run does not fetch it again.
    """

    def __init__(self, category: str, **kwargs: Any):
        super().__init__(**kwargs)
        if category not in HUB_CATEGORIES:
            close = [c for c in HUB_CATEGORIES if c.lower() == category.lower()]
            hint = (
                f"; did you mean {close[0]!r}?"
                if close
                else f"; expected one of: {', '.join(HUB_CATEGORIES)}"
            )
            raise DataSourceError(f"unknown Amazon Reviews 2023 category {category!r}{hint}")
        self.category = category
        self.filename = f"raw/meta_categories/meta_{category}.jsonl"
        self.name = f"hf://datasets/{HUB_REPO}/{self.filename}"

    def _open(self) -> IO[bytes]:
        try:
            if self.limit is not None:
                from huggingface_hub import HfFileSystem

                return HfFileSystem().open(f"datasets/{HUB_REPO}/{self.filename}", "rb", block_size=1 << 20)
            from huggingface_hub import hf_hub_download

            local = hf_hub_download(HUB_REPO, self.filename, repo_type="dataset")
            return open(local, "rb")  # noqa: SIM115 (closed by the caller's with-block)
        # The hub client raises many types (offline, 404, auth); all mean "cannot read".
        except Exception as e:
            raise DataSourceError(
                f"{self.name}: cannot download ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                f"offline? download meta_{self.category}.jsonl elsewhere and pass its local path as --source"
            ) from e

    def _records(self) -> Iterator[tuple[str, Any, str | None]]:
        with self._open() as raw:
            text = io.TextIOWrapper(raw, encoding="utf-8")
            try:
                yield from _json_lines(text, self.name)
            except (OSError, UnicodeDecodeError) as e:
                raise DataSourceError(f"{self.name}: reading failed ({e})") from e


# -- image folders and tarballs --------------------------------------------------------------------------------


class ImageFolderSource(Source):
    """Every image file under a folder (sorted, recursive), one product each, with no metadata but the file."""

    def __init__(
        self,
        root: str | Path,
        *,
        id_prefix: str = "file",
        exclude: Iterable[str] = (),
        extra_meta: dict[str, Any] | None = None,
        limit: int | None = None,
    ):
        super().__init__(limit=limit)
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataSourceError(f"{self.root}: not a folder of images")
        self.name = str(root)
        self.id_prefix = id_prefix
        self.extra_meta = dict(extra_meta or {})
        skip = set(exclude)
        self.files = sorted(
            p
            for p in self.root.rglob("*")
            if p.suffix.lower() in IMAGE_EXTENSIONS
            and p.name not in skip
            and not p.name.startswith(".")
            and p.is_file()
        )
        if not self.files:
            raise DataSourceError(
                f"{self.root}: no image files found (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})"
            )
        self.total = min(len(self.files), limit) if limit else len(self.files)

    def _products(self, on_error: ErrorHandler) -> Iterator[Product]:
        for path in self.files:
            rel = path.relative_to(self.root).as_posix()
            ref = str(path.resolve())
            yield Product(
                id=make_id(self.id_prefix, rel),
                image=ref,
                image_url=ref,
                meta={**self.extra_meta, "file": rel},
            )


def bootcamp_source(
    path: str | Path | None, *, cache_dir: Path, limit: int | None = None
) -> ImageFolderSource:
    """The milvus-io/bootcamp Amazon Reviews 2023 subset (~900 images, no titles, prices or categories).

    `path` is a local tarball or an extracted folder; None downloads `BOOTCAMP_URL` once into `cache_dir`.
    The tarball holds only image files (named by their Amazon image id) plus the tutorial's query image
    `leopard.jpg`, which is left out. So these products carry the file name and nothing else.
    """
    images_dir = bootcamp_images_dir(path, cache_dir=cache_dir)
    return ImageFolderSource(
        images_dir,
        id_prefix="bootcamp",
        exclude={"leopard.jpg"},
        extra_meta={"dataset": "milvus-io/bootcamp amazon_reviews_2023_subset"},
        limit=limit,
    )


def open_source(
    spec: str,
    *,
    cache_dir: str | Path,
    limit: int | None = None,
    max_images_per_product: int | None = None,
) -> Source:
    """Build the source named by `spec` (see the module docstring). Raises `DataSourceError` for a bad spec."""
    cache = Path(cache_dir)
    record_kwargs = {"limit": limit, "max_images_per_product": max_images_per_product}
    if spec == "bootcamp":
        return bootcamp_source(None, cache_dir=cache, limit=limit)
    if spec.startswith("bootcamp:"):
        return bootcamp_source(spec[len("bootcamp:") :], cache_dir=cache, limit=limit)
    if spec.startswith("hub:"):
        return HubSource(spec[len("hub:") :], **record_kwargs)
    path = Path(spec).expanduser()
    expected = (
        "expected 'bootcamp', 'bootcamp:<tarball or folder>', 'hub:<Category>', "
        "or a path to a .jsonl, .jsonl.gz or .parquet file, an image folder or a .tar.gz of images"
    )
    if not path.exists():
        raise DataSourceError(f"source {spec!r}: no such file or folder; {expected}")
    if path.is_dir():
        return ImageFolderSource(path, limit=limit)
    name = path.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
        return JsonlSource(path, **record_kwargs)
    if name.endswith(".parquet"):
        return ParquetSource(path, **record_kwargs)
    if name.endswith((".tar.gz", ".tgz", ".tar")):
        if name.startswith("amazon_reviews_2023_subset"):
            return bootcamp_source(path, cache_dir=cache, limit=limit)
        return ImageFolderSource(extract_tarball(path, cache / "sources"), limit=limit)
    raise DataSourceError(f"source {spec!r}: unsupported file type; {expected}")


__all__ = [
    "BOOTCAMP_URL",
    "HUB_CATEGORIES",
    "HUB_REPO",
    "IMAGE_EXTENSIONS",
    "MAX_ID_LENGTH",
    "ErrorHandler",
    "HubSource",
    "ImageFolderSource",
    "JsonlSource",
    "ParquetSource",
    "RecordError",
    "RecordSource",
    "Source",
    "bootcamp_source",
    "make_id",
    "open_source",
    "parse_price",
    "products_from_record",
]
