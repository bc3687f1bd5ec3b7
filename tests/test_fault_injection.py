"""Fault injection: each stage of the index job raises for one chosen record; only that record fails, with that
stage in its failure entry, and every other record is indexed. Batched stages (encoder forward, upsert, title
embedding) fail for the whole batch whenever the chosen record is in it, so this also checks the batch splitting.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from indexer_support import amazon_record, product_image_bytes
from PIL import Image

from mmsearch.errors import IndexAbortedError
from mmsearch.indexer import jsonl, sources
from mmsearch.indexer.failures import FailureLog, read_failures
from mmsearch.indexer.job import IndexJob
from mmsearch.indexer.sources import JsonlSource
from mmsearch.media.fetch import ImageFetcher
from mmsearch.models.preprocess import CLIP_MEAN, CLIP_STD
from mmsearch.store import ProductStore
from mmsearch.testing import tiny_visual_bge_encoder

CHOSEN = "BCHOSEN"
CHOSEN_SIZE = (50, 40)
CHOSEN_RED = (
    3  # the chosen image is solid (3, 200, 100): its first pixel value identifies it after preprocessing
)
N_OTHERS = 7


class Injected(RuntimeError):
    pass


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    return tiny_visual_bge_encoder(tmp_path_factory.mktemp("tiny_bge"))


def chosen_image() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", CHOSEN_SIZE, (CHOSEN_RED, 200, 100)).save(buf, format="PNG")
    return buf.getvalue()


def write_catalogue(root: Path) -> Path:
    (root / "img").mkdir(parents=True)
    records = []
    for i in range(N_OTHERS):
        (root / "img" / f"B{i}.jpg").write_bytes(product_image_bytes(i))
        records.append(amazon_record(f"B{i}", [f"img/B{i}.jpg"], title=f"product {i}"))
    (root / "img" / f"{CHOSEN}.png").write_bytes(chosen_image())
    records.insert(3, amazon_record(CHOSEN, [f"img/{CHOSEN}.png"], title="the chosen one"))
    path = root / "products.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


class Wrapped:
    """Delegates to `inner`, except for the methods given as keyword arguments."""

    def __init__(self, inner: Any, **overrides: Any):
        self._inner = inner
        self.__dict__.update(overrides)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def is_chosen_pixels(pixels: torch.Tensor) -> torch.Tensor:
    value = (CHOSEN_RED / 255.0 - CLIP_MEAN[0]) / CLIP_STD[0]
    return torch.isclose(pixels[:, 0, 0, 0], torch.tensor(value), atol=1e-4)


def inject(stage: str, monkeypatch, encoder, store) -> tuple[Any, Any]:
    """Make `stage` raise for the chosen record; returns the (encoder, store) the job must use."""

    inner_encoder, inner_store = encoder, store

    def raise_if(cond: bool) -> None:
        if cond:
            raise Injected(f"injected {stage} fault")

    if stage == "read":
        original = jsonl._decode
        monkeypatch.setattr(
            jsonl, "_decode", lambda line: raise_if(CHOSEN.encode() in line) or original(line)
        )
    elif stage == "parse":
        original_loads = jsonl._loads
        monkeypatch.setattr(jsonl, "_loads", lambda text: raise_if(CHOSEN in text) or original_loads(text))
    elif stage == "validate":
        original_map = sources.products_from_record

        def mapped(record, **kw):
            raise_if(record.get("parent_asin") == CHOSEN)
            return original_map(record, **kw)

        monkeypatch.setattr(sources, "products_from_record", mapped)
    elif stage in ("resolve", "fetch", "decode"):
        method = {"resolve": "resolve", "fetch": "fetch_bytes", "decode": "decode"}[stage]
        original_method = getattr(ImageFetcher, method)

        def patched(self, ref, *args):
            raise_if(CHOSEN in str(args[-1] if args else ref))
            return original_method(self, ref, *args)

        monkeypatch.setattr(ImageFetcher, method, patched)
    elif stage == "preprocess":

        def preprocess(images):
            raise_if(any(img.size == CHOSEN_SIZE for img in images))
            return inner_encoder.preprocess(images)

        encoder = Wrapped(encoder, preprocess=preprocess)
    elif stage == "encode_image":

        def encode_pixels(pixels):
            raise_if(bool(is_chosen_pixels(pixels).any()))
            return inner_encoder.encode_pixels(pixels)

        encoder = Wrapped(encoder, encode_pixels=encode_pixels)
    elif stage == "encode_title":

        def encode_texts(texts):
            raise_if("the chosen one" in texts)
            return inner_encoder.encode_texts(texts)

        encoder = Wrapped(encoder, encode_texts=encode_texts)
    elif stage == "write":

        def upsert(products, image_vectors, text_vectors=None):
            raise_if(any(p.parent_asin == CHOSEN for p in products))
            return inner_store.upsert(products, image_vectors, text_vectors)

        store = Wrapped(store, upsert=upsert)
    return encoder, store


@pytest.mark.parametrize(
    ("injected", "stage"),
    [
        ("read", "read"),
        ("parse", "parse"),
        ("validate", "validate"),
        ("resolve", "resolve"),
        ("fetch", "fetch"),
        ("decode", "decode"),
        ("preprocess", "preprocess"),
        ("encode_image", "encode"),
        ("encode_title", "encode"),
        ("write", "write"),
    ],
)
def test_a_fault_in_one_stage_fails_only_the_chosen_record(injected, stage, encoder, tmp_path, monkeypatch):
    path = write_catalogue(tmp_path / "catalogue")
    with ProductStore(str(tmp_path / "milvus.db"), collection="products") as real_store:
        job_encoder, job_store = inject(injected, monkeypatch, encoder, real_store)
        with (
            ImageFetcher(cache_dir=None, retries=0) as fetcher,
            FailureLog(tmp_path / "failures.jsonl") as log,
        ):
            job = IndexJob(job_encoder, job_store, fetcher, log, batch_size=4, progress=False)
            report = job.run(JsonlSource(path))
        stored = real_store.existing_ids([f"B{i}:0" for i in range(N_OTHERS)] + [f"{CHOSEN}:0"])
    assert (report.indexed, report.failed) == (N_OTHERS, 1)
    assert stored == {f"B{i}:0" for i in range(N_OTHERS)}
    (entry,) = read_failures(tmp_path / "failures.jsonl")
    line_level = stage in ("read", "parse")
    expected_id = "" if line_level else (CHOSEN if stage == "validate" else f"{CHOSEN}:0")
    assert (entry["id"], entry["stage"]) == (expected_id, stage)
    assert f"injected {injected} fault" in entry["reason"]
    if line_level:
        assert entry["source"] == f"{path}:4"


def test_batches_failing_for_every_record_in_a_row_stop_the_run(encoder, tmp_path):
    path = write_catalogue(tmp_path / "catalogue")
    path.write_text(
        path.read_text() + (path.read_text() * 2).replace('"B', '"C')
    )  # 24 records, 6 batches of 4

    def broken(pixels):
        raise Injected("GPU fell off the bus")

    with (
        ProductStore(str(tmp_path / "milvus.db"), collection="products") as store,
        ImageFetcher(cache_dir=None) as fetcher,
        FailureLog(None) as log,
    ):
        job = IndexJob(
            Wrapped(encoder, encode_pixels=broken), store, fetcher, log, batch_size=4, progress=False
        )
        with pytest.raises(
            IndexAbortedError, match=r"every record of the last 3 batches failed at encode or write"
        ):
            job.run(JsonlSource(path))
    assert log.count == 12  # the three batches, each split down to its records, then the run stops
