"""Labelled query sets for `mmsearch eval`: our jsonl format and loaders for CIRR and FashionIQ (val) from local files.

Entry points: `load_queries_jsonl(path)`, `load_cirr(captions)`, `load_fashioniq(captions)`; each returns an `EvalSet`.
CIRR and FashionIQ also return their gallery, which `write_gallery_jsonl` turns into a products file in the
Amazon schema for the indexer. Users bring the images; annotations follow the published layouts:

    cirr/captions/cap.rc2.val.json          [{"pairid", "reference", "target_hard", "caption", "img_set", ...}]
    cirr/image_splits/split.rc2.val.json    {"dev-0-0-img0": "./dev/dev-0-0-img0.png", ...}
    cirr/img_raw/dev/...                    the NLVR2 images (paths above are relative to img_raw)
    fashioniq/captions/cap.dress.val.json   [{"candidate", "target", "captions": [two texts]}]
    fashioniq/image_splits/split.dress.val.json   ["B000ALGQSY", ...]
    fashioniq/images/B000ALGQSY.png         (or .jpg)

Our jsonl format, one query per line (image paths relative to the file):
    {"id": "q1", "image": "queries/leopard.png", "instruction": "a phone case with this pattern",
     "relevant": {"B0ABC": 2, "B0DEF": 1}, "exclude": ["B0XYZ"]}
`relevant` may also be a list of ids (grade 1 each). Ids match a hit's `id` or its `parent_asin`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmsearch.errors import DataSourceError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
FASHIONIQ_CATEGORIES = ("dress", "shirt", "toptee")
_QUERY_KEYS = {"id", "image", "instruction", "relevant", "exclude"}


@dataclass(frozen=True)
class EvalQuery:
    """One labelled query. `relevance` maps ids to grades > 0; `exclude` ids are dropped from the ranking."""

    id: str
    image: str | None
    instruction: str
    relevance: dict[str, float]
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True)
class GalleryItem:
    """One gallery image to index; `id` becomes the product's `parent_asin`, which labels refer to."""

    id: str
    image: str
    title: str = ""
    main_category: str = ""


@dataclass
class EvalSet:
    """Queries plus, for benchmark datasets, the gallery they are ranked against (None: an existing index).

    `source` is an indexer source (e.g. a products.jsonl) holding the gallery, when one already exists on disk.
    """

    name: str
    queries: list[EvalQuery]
    gallery: list[GalleryItem] | None = None
    source: str | None = None
    info: dict[str, Any] = field(default_factory=dict)


# -- our jsonl format -------------------------------------------------------------------------------------------


def _id_list(value: Any, where: str, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(i, str | int) and str(i).strip() for i in value):
        raise DataSourceError(f"{where}: {key!r} must be a list of non-empty ids, got {value!r}")
    return [str(i).strip() for i in value]


def _relevance(value: Any, where: str) -> dict[str, float]:
    if value is None:
        raise DataSourceError(f"{where}: missing 'relevant' (a list of ids, or an object id -> grade > 0)")
    if isinstance(value, list):
        grades = dict.fromkeys(_id_list(value, where, "relevant"), 1.0)
    elif isinstance(value, dict):
        grades = {}
        for key, grade in value.items():
            ok = isinstance(grade, int | float) and not isinstance(grade, bool) and math.isfinite(grade)
            if not ok or grade <= 0:
                raise DataSourceError(f"{where}: grade of {key!r} must be a number > 0, got {grade!r}")
            if not str(key).strip():
                raise DataSourceError(f"{where}: 'relevant' has an empty id")
            grades[str(key).strip()] = float(grade)
    else:
        raise DataSourceError(
            f"{where}: 'relevant' must be a list of ids or an object id -> grade, got {type(value).__name__}"
        )
    if not grades:
        raise DataSourceError(f"{where}: 'relevant' is empty; every query needs at least one relevant id")
    return grades


def _image_path(value: Any, base: Path, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise DataSourceError(f"{where}: 'image' must be a path string, got {value!r}")
    path = Path(value).expanduser()
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        raise DataSourceError(f"{where}: query image {path} not found")
    return str(path.resolve())


def _jsonl_records(path: Path) -> Iterator[tuple[str, Any]]:
    try:
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                where = f"{path}:{lineno}"
                try:
                    yield where, json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataSourceError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
    except FileNotFoundError:
        raise DataSourceError(f"query file {path} not found") from None
    except UnicodeDecodeError as e:
        raise DataSourceError(f"{path}: not UTF-8 text ({e.reason})") from None


def load_queries_jsonl(path: str | Path, *, limit: int | None = None) -> EvalSet:
    """Read labelled queries in our jsonl format; any problem raises `DataSourceError` naming file:line."""
    path = Path(path)
    base = path.resolve().parent
    queries: list[EvalQuery] = []
    seen: dict[str, str] = {}
    for where, record in _jsonl_records(path):
        if limit is not None and len(queries) >= limit:
            break
        if not isinstance(record, dict):
            raise DataSourceError(f"{where}: expected a JSON object, got {type(record).__name__}")
        unknown = sorted(set(record) - _QUERY_KEYS)
        if unknown:
            raise DataSourceError(f"{where}: unknown keys {unknown}; expected some of {sorted(_QUERY_KEYS)}")
        qid = str(record.get("id") or f"{path.name}:{where.rsplit(':', 1)[1]}")
        if qid in seen:
            raise DataSourceError(f"{where}: duplicate query id {qid!r} (first at {seen[qid]})")
        seen[qid] = where
        instruction = record.get("instruction") or ""
        if not isinstance(instruction, str):
            raise DataSourceError(
                f"{where}: 'instruction' must be a string, got {type(instruction).__name__}"
            )
        image = _image_path(record.get("image"), base, where)
        if image is None and not instruction.strip():
            raise DataSourceError(
                f"{where}: a query needs an 'image', an 'instruction', or both; got neither"
            )
        exclude = tuple(_id_list(record["exclude"], where, "exclude")) if "exclude" in record else ()
        queries.append(
            EvalQuery(qid, image, instruction.strip(), _relevance(record.get("relevant"), where), exclude)
        )
    if not queries:
        raise DataSourceError(f"{path}: no queries (the file is empty)")
    return EvalSet(name=f"jsonl:{path.name}", queries=queries, info={"path": str(path)})


def write_queries_jsonl(queries: list[EvalQuery], path: str | Path) -> Path:
    """Write queries in our jsonl format (image paths made relative to the file's folder where possible)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.resolve().parent
    with open(path, "w", encoding="utf-8") as fh:
        for q in queries:
            image = q.image
            if image is not None and Path(image).is_relative_to(base):
                image = str(Path(image).relative_to(base))
            record: dict[str, Any] = {"id": q.id, "image": image, "instruction": q.instruction}
            record["relevant"] = q.relevance
            if q.exclude:
                record["exclude"] = list(q.exclude)
            fh.write(json.dumps(record) + "\n")
    return path


def write_gallery_jsonl(items: list[GalleryItem], path: str | Path) -> Path:
    """Write the gallery as Amazon-schema product records (one image each) that `mmsearch index` reads."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for item in items:
            record = {
                "parent_asin": item.id,
                "title": item.title,
                "main_category": item.main_category,
                "images": [{"large": str(Path(item.image).resolve()), "variant": "MAIN"}],
            }
            fh.write(json.dumps(record) + "\n")
    return path


# -- CIRR and FashionIQ ------------------------------------------------------------------------------------------


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise DataSourceError(f"{what} file {path} not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataSourceError(f"{path}:{e.lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
    except UnicodeDecodeError as e:
        raise DataSourceError(f"{path}: not UTF-8 text ({e.reason})") from None


def _default_split(captions: Path) -> Path:
    # captions/cap.<x>.<split>.json -> image_splits/split.<x>.<split>.json (both datasets use this layout)
    return captions.resolve().parent.parent / "image_splits" / captions.name.replace("cap.", "split.", 1)


def _text_field(entry: dict[str, Any], key: str, where: str, hint: str = "") -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value.strip():
        raise DataSourceError(f"{where}: missing or empty {key!r}{hint}")
    return value.strip()


def _check_images(items: list[GalleryItem], root: Path, flag: str) -> None:
    missing = [item.image for item in items if not Path(item.image).is_file()]
    if missing:
        raise DataSourceError(
            f"{len(missing)} of {len(items)} gallery images are missing under {root} (first: {missing[0]}); "
            f"download the images and pass their folder with {flag}"
        )


def _read_benchmark_files(
    captions: str | Path, splits: str | Path | None, benchmark: str
) -> tuple[Path, Path, list, Any]:
    """Read a composed-retrieval benchmark's captions file (a JSON list) and its image-split file."""
    captions = Path(captions)
    splits_path = Path(splits) if splits is not None else _default_split(captions)
    entries = _read_json(captions, f"{benchmark} captions")
    names = _read_json(splits_path, f"{benchmark} image split")
    if not isinstance(entries, list):
        raise DataSourceError(
            f"{captions}: expected a JSON list of query entries, got {type(entries).__name__}"
        )
    return captions, splits_path, entries, names


def _benchmark_set(
    benchmark: str, captions: Path, splits_path: Path, images: Path, queries: list, gallery: list
) -> EvalSet:
    """Check a loaded benchmark has queries and its gallery images exist, and wrap it as an `EvalSet`."""
    if not queries:
        raise DataSourceError(f"{captions}: no queries (the list is empty)")
    _check_images(gallery, images, "--images")
    return EvalSet(
        name=f"{benchmark}:{captions.name}",
        queries=queries,
        gallery=gallery,
        info={"captions": str(captions), "splits": str(splits_path), "images": str(images)},
    )


def load_cirr(
    captions: str | Path,
    *,
    images_root: str | Path | None = None,
    splits: str | Path | None = None,
    limit: int | None = None,
) -> EvalSet:
    """CIRR val: queries (reference image + caption -> target_hard) and the val gallery from the image split.

    The reference image is excluded from each query's ranking, as in CIRR's protocol. `images_root` is the
    folder the split's relative paths start from (default: `<cirr>/img_raw`).
    """
    captions, splits_path, entries, names = _read_benchmark_files(captions, splits, "CIRR")
    root = Path(images_root) if images_root is not None else captions.resolve().parent.parent / "img_raw"
    if not isinstance(names, dict) or not all(isinstance(v, str) for v in names.values()):
        raise DataSourceError(f"{splits_path}: expected a JSON object mapping image names to relative paths")
    if not root.is_dir():
        raise DataSourceError(
            f"CIRR images folder {root} does not exist; get the NLVR2 images (see the CIRR README) and pass "
            "the folder holding dev/ with --images"
        )
    gallery = [GalleryItem(id=name, image=str((root / rel).resolve())) for name, rel in names.items()]
    queries = []
    for n, entry in enumerate(entries):
        if limit is not None and len(queries) >= limit:
            break
        where = f"{captions}: entry {n}"
        if not isinstance(entry, dict):
            raise DataSourceError(f"{where}: expected a JSON object, got {type(entry).__name__}")
        if "pairid" in entry:
            where += f" (pairid {entry['pairid']})"
        reference = _text_field(entry, "reference", where)
        target = _text_field(
            entry, "target_hard", where, " (the CIRR test split has no public targets; use the val split)"
        )
        caption = _text_field(entry, "caption", where)
        for role, name in (("reference", reference), ("target_hard", target)):
            if name not in names:
                raise DataSourceError(f"{where}: {role} image {name!r} is not in {splits_path}")
        queries.append(
            EvalQuery(
                id=f"cirr:{entry.get('pairid', n)}",
                image=str((root / names[reference]).resolve()),
                instruction=caption,
                relevance={target: 1.0},
                exclude=(reference,),
            )
        )
    return _benchmark_set("cirr", captions, splits_path, root, queries, gallery)


def _find_image(folder: Path, name: str) -> Path:
    for suffix in IMAGE_SUFFIXES:
        candidate = folder / f"{name}{suffix}"
        if candidate.is_file():
            return candidate.resolve()
    return (folder / f"{name}{IMAGE_SUFFIXES[0]}").resolve()


def load_fashioniq(
    captions: str | Path,
    *,
    images_dir: str | Path | None = None,
    splits: str | Path | None = None,
    limit: int | None = None,
) -> EvalSet:
    """FashionIQ val for one category: candidate image + both captions -> target, against that category's split.

    The two relative captions are joined with " and ", the usual way to make one instruction of them.
    `images_dir` holds `<asin>.png` or `.jpg` files (default: `<fashioniq>/images`).
    """
    captions, splits_path, entries, names = _read_benchmark_files(captions, splits, "FashionIQ")
    folder = Path(images_dir) if images_dir is not None else captions.resolve().parent.parent / "images"
    if not isinstance(names, list) or not all(isinstance(v, str) and v for v in names):
        raise DataSourceError(f"{splits_path}: expected a JSON list of image names")
    if not folder.is_dir():
        raise DataSourceError(
            f"FashionIQ images folder {folder} does not exist; download the images and pass their folder "
            "with --images"
        )
    category = captions.name.split(".")[1] if captions.name.count(".") >= 2 else ""
    main_category = f"fashioniq/{category}" if category else "fashioniq"
    gallery = [
        GalleryItem(id=name, image=str(_find_image(folder, name)), main_category=main_category)
        for name in names
    ]
    in_split = set(names)
    queries = []
    for n, entry in enumerate(entries):
        if limit is not None and len(queries) >= limit:
            break
        where = f"{captions}: entry {n}"
        if not isinstance(entry, dict):
            raise DataSourceError(f"{where}: expected a JSON object, got {type(entry).__name__}")
        candidate = _text_field(entry, "candidate", where)
        target = _text_field(entry, "target", where, " (the FashionIQ test split has no public targets)")
        texts = entry.get("captions")
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise DataSourceError(f"{where}: 'captions' must be a list of strings, got {texts!r}")
        parts = [t.strip().strip(".").strip() for t in texts]
        instruction = " and ".join(p for p in parts if p)
        if not instruction:
            raise DataSourceError(f"{where}: all captions are empty")
        for role, name in (("candidate", candidate), ("target", target)):
            if name not in in_split:
                raise DataSourceError(f"{where}: {role} image {name!r} is not in {splits_path}")
        queries.append(
            EvalQuery(
                id=f"fashioniq:{category}:{n}",
                image=str(_find_image(folder, candidate)),
                instruction=instruction,
                relevance={target: 1.0},
            )
        )
    return _benchmark_set("fashioniq", captions, splits_path, folder, queries, gallery)


__all__ = [
    "FASHIONIQ_CATEGORIES",
    "IMAGE_SUFFIXES",
    "EvalQuery",
    "EvalSet",
    "GalleryItem",
    "load_cirr",
    "load_fashioniq",
    "load_queries_jsonl",
    "write_gallery_jsonl",
    "write_queries_jsonl",
]
