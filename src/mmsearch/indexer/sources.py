"""Data sources for the indexer: each yields one `Product` per product image, in the Amazon Reviews 2023 schema.

Entry point: `open_source(spec, cache_dir=...)` for `bootcamp`, `bootcamp:<tarball|folder>`, `hub:<Category>`,
or a path to a `.jsonl[.gz]` / `.parquet` file or a folder of images.

Ids are deterministic, so re-indexing is an idempotent upsert:
- metadata records: `"<parent_asin>:<i>"`, `i` being the image's position in the record's `images` list;
- image folders and tarballs: `"file:<path relative to the folder>"` (`"bootcamp:<name>"` for the bootcamp subset).
An id longer than 512 bytes keeps its prefix and replaces the rest by its SHA-1 (`records.make_id`).

`Source.stream()` yields `Product`s and, in stream order, a `boundary.Failure` for each line or image entry that
cannot be read, parsed, validated or resolved; `Source.products(on_error)` is the same stream with failures handed
to a callback. Local image paths must resolve (symlinks followed) under `allowed_roots`: the catalogue's own
folder plus any `allow_paths` (`--allow-path`).
"""

from __future__ import annotations

import gzip
import logging
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

from mmsearch.errors import DataSourceError
from mmsearch.indexer.bootcamp import BOOTCAMP_URL, bootcamp_images_dir, extract_tarball
from mmsearch.indexer.boundary import Failure, allowed_roots
from mmsearch.indexer.jsonl import read_jsonl
from mmsearch.indexer.records import (
    ErrorHandler,
    RecordError,
    make_id,
    products_from_record,
)
from mmsearch.types import Product

RawRecords = Iterator[tuple[str, Any, Failure | None]]

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


class Source(ABC):  # noqa: B024 (subclasses override _products or _items; RecordSource adds an abstract one)
    """An iterable of `Product`s. `total` is the number of products when known cheaply (for the ETA), else None.

    `allowed_roots`: the folders local image paths may resolve under (None: any path, for sources whose paths
    are built from a listing of one folder, which also sets them).
    """

    name: str = "source"
    total: int | None = None
    allowed_roots: list[Path] | None = None
    # Set by the index pipeline: local image refs under this folder are stored relative to it (moved catalogues).
    relative_to: Path | None = None

    def catalogue_root(self) -> Path | None:
        """The folder this source's local image paths belong to (jsonl/parquet folder, image folder), or None."""
        root = getattr(self, "base_dir", None) or getattr(self, "root", None)
        return Path(root).resolve() if root is not None else None

    def __init__(self, *, limit: int | None = None):
        if limit is not None and limit < 1:
            raise DataSourceError(f"limit must be a positive number of images, got {limit}")
        self.limit = limit

    def _products(self, on_error: ErrorHandler) -> Iterator[Product]:
        """Products, reporting bad entries to `on_error(id, where, reason)`; override this or `_items`."""
        raise NotImplementedError(f"{type(self).__name__} implements neither _products nor _items")

    def _items(self) -> Iterator[Product | Failure]:
        pending: deque[Failure] = deque()

        def on_error(id: str, where: str, reason: str) -> None:
            pending.append(Failure.of("validate", id, where, reason))

        for product in self._products(on_error):
            while pending:
                yield pending.popleft()
            yield product
        yield from pending

    def prepare(self) -> None:  # noqa: B027 (an optional hook, deliberately a no-op by default)
        """Do the slow or failure-prone setup now (network), before the caller loads models. Default: nothing."""

    def stream(self) -> Iterator[Product | Failure]:
        """Products (at most `limit`) and the failures met on the way, in stream order."""
        n = 0
        for item in self._items():
            if isinstance(item, Product) and self.relative_to is not None:
                item = replace(item, image_url=relative_ref(item.image_url, self.relative_to))
            yield item
            if isinstance(item, Product):
                n += 1
                if self.limit is not None and n >= self.limit:
                    return

    def products(self, on_error: ErrorHandler | None = None) -> Iterator[Product]:
        """Yield products, at most `limit`. Without `on_error` a bad record raises `DataSourceError`."""
        handler = on_error or _raise
        for item in self.stream():
            if isinstance(item, Failure):
                handler(item.id, item.where, item.reason)
            else:
                yield item

    def __iter__(self) -> Iterator[Product]:
        return self.products()


def relative_ref(ref: str, root: Path) -> str:
    """A local absolute path under `root` as a POSIX path relative to it; anything else (URLs, bytes) unchanged."""
    if not isinstance(ref, str) or "://" in ref or not Path(ref).is_absolute():
        return ref
    try:
        return Path(ref).relative_to(root).as_posix()
    except ValueError:
        return ref  # outside the catalogue (--allow-path): stays absolute


def _raise(id: str, where: str, reason: str) -> None:
    raise DataSourceError(f"{where}: {reason}")


# -- metadata records (jsonl, parquet, hub) --------------------------------------------------------------------


class RecordSource(Source):
    """Products from an iterable of (where, record-or-failure) triples; the subclasses supply the records."""

    base_dir: Path | None = None

    def __init__(
        self,
        *,
        limit: int | None = None,
        max_images_per_product: int | None = None,
        allow_paths: Sequence[str | Path] = (),
    ):
        super().__init__(limit=limit)
        self.max_images = max_images_per_product
        self.total = limit
        self.allow_paths = [Path(p) for p in allow_paths]
        self.allowed_roots = allowed_roots(self.base_dir, self.allow_paths)

    @abstractmethod
    def _records(self) -> RawRecords:
        """Yield (where, record, failure); record is None when failure is set."""

    def _items(self) -> Iterator[Product | Failure]:
        for where, record, failure in self._records():
            if failure is not None:
                yield failure
                continue
            yield from record_items(
                record,
                where=where,
                base_dir=self.base_dir,
                max_images=self.max_images,
                roots=self.allowed_roots,
            )


def record_items(
    record: Any, *, where: str, base_dir: Path | None, max_images: int | None, roots: list[Path] | None
) -> list[Product | Failure]:
    """`products_from_record` inside the fault boundary: any error is this record's "validate" failure."""
    try:
        return products_from_record(
            record, where=where, base_dir=base_dir, max_images=max_images, roots=roots
        )
    except Exception as e:  # the boundary: an unexpected shape must not end the run
        asin = record.get("parent_asin") if isinstance(record, dict) else None
        asin = asin if isinstance(asin, str | int) and not isinstance(asin, bool) else ""
        return [Failure.of("validate", str(asin), where, e if not isinstance(e, RecordError) else str(e))]


class LocalFileSource(RecordSource):
    """A record source read from one local file; relative image paths resolve against its folder."""

    def __init__(self, path: str | Path, **kwargs: Any):
        self.path = Path(path)
        self.name = str(path)
        self.base_dir = self.path.resolve().parent
        super().__init__(**kwargs)


class JsonlSource(LocalFileSource):
    """A local `.jsonl` / `.jsonl.gz` file in the Amazon Reviews 2023 metadata schema, read as bytes."""

    def _records(self) -> RawRecords:
        opener: Callable[..., IO[bytes]] = gzip.open if self.path.suffix == ".gz" else open
        try:
            fh = opener(self.path, "rb")
        except OSError as e:
            raise DataSourceError(f"{self.name}: cannot read ({e.strerror or e})") from e
        with fh:
            try:
                yield from read_jsonl(fh, self.name)
            except (OSError, EOFError) as e:  # a truncated gzip, a disk error: nothing after this is readable
                raise DataSourceError(f"{self.name}: cannot read further ({e})") from e


class ParquetSource(LocalFileSource):
    """A local `.parquet` file with the same columns; rows are read in batches."""

    def _records(self) -> RawRecords:
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
    once (the files are large: hundreds of MB to GB), so a resumed run does not fetch it again. Its records
    have no folder: local image paths are allowed only under `allow_paths`.
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
        self._handle: IO[bytes] | None = None

    def prepare(self) -> None:
        """Reach the hub now (stream opened, or whole file downloaded), so a failure comes before any model load."""
        if self._handle is None:
            self._handle = self._open()

    def _open(self) -> IO[bytes]:
        from huggingface_hub import HfFileSystem, hf_hub_download  # configures its logger on first import

        # The hub client logs each of its own retries as a warning; our one-line error says it all.
        hub_log = logging.getLogger("huggingface_hub")
        level = hub_log.level
        hub_log.setLevel(logging.ERROR)
        try:
            if self.limit is not None:
                return HfFileSystem().open(f"datasets/{HUB_REPO}/{self.filename}", "rb", block_size=1 << 20)
            local = hf_hub_download(HUB_REPO, self.filename, repo_type="dataset")
            return open(local, "rb")  # noqa: SIM115 (closed by _records' with-block)
        # The hub client raises many types (offline, 404, auth); all mean "cannot read".
        except Exception as e:
            first_line = str(e).splitlines()[0] if str(e) else ""
            raise DataSourceError(
                f"{self.name}: cannot download ({type(e).__name__}: {first_line}); "
                f"offline? download meta_{self.category}.jsonl elsewhere and pass its local path as --source"
            ) from e
        finally:
            hub_log.setLevel(level)

    def _records(self) -> RawRecords:
        raw, self._handle = (self._handle or self._open()), None
        with raw:
            try:
                yield from read_jsonl(raw, self.name)
            except OSError as e:
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
        self.allowed_roots = [self.root]
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
    allow_paths: Sequence[str | Path] = (),
) -> Source:
    """Build the source named by `spec` (see the module docstring). Raises `DataSourceError` for a bad spec.

    `allow_paths`: folders beyond the catalogue's own that local image paths in metadata records may resolve to.
    """
    cache = Path(cache_dir)
    for folder in allow_paths:
        if not Path(folder).is_dir():
            raise DataSourceError(f"--allow-path {folder}: not a folder")
    record_kwargs = {
        "limit": limit,
        "max_images_per_product": max_images_per_product,
        "allow_paths": allow_paths,
    }
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
    if not path.is_file():  # a FIFO or device would block the reader or never end
        raise DataSourceError(f"source {spec!r}: not a regular file; {expected}")
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
    "HubSource",
    "ImageFolderSource",
    "JsonlSource",
    "ParquetSource",
    "RecordSource",
    "Source",
    "bootcamp_source",
    "open_source",
    "record_items",
]
