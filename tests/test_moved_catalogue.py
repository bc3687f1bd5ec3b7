"""Moved catalogues (issue 14): local image refs are stored relative to the catalogue root kept on the collection,
so after the folder moves, reranker panels and thumbnails fail clearly without `--root` and work with it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from api_support import index_demo_catalog

from mmsearch.api.errors import ImageUnavailableError
from mmsearch.api.thumbnails import Thumbnailer
from mmsearch.cli import main
from mmsearch.engine import Engine
from mmsearch.engine.parts import build_fetcher, resolve_ref
from mmsearch.errors import InvalidImageError, PathNotAllowedError


@pytest.fixture(scope="module")
def moved(tmp_path_factory):
    """The demo catalogue indexed under old/, then moved to new/ (the database stays where it was)."""
    base = tmp_path_factory.mktemp("moved")
    catalog, settings = index_demo_catalog(
        base / "old", smoke_cache=tmp_path_factory.getbasetemp() / "smoke-cache"
    )
    old_root = catalog.jsonl.parent.resolve()
    new_root = base / "new" / "catalog"
    new_root.parent.mkdir()
    shutil.move(str(old_root), str(new_root))
    return settings, old_root, new_root


def _hits(settings):
    with Engine(settings=settings) as engine:
        return engine.search(text="usb cable", k=5).hits


def test_index_stores_refs_relative_to_the_root_kept_on_the_collection(moved):
    settings, old_root, _ = moved
    with Engine(settings=settings) as engine:
        assert engine.store().catalogue_root() == str(old_root)
    refs = [h.image_url for h in _hits(settings)]
    assert refs and all(not Path(r).is_absolute() and r.startswith("images/") for r in refs)


def _search_json(settings, capsys, *extra) -> dict:
    argv = ["search", "--text", "usb cable", "-k", "3", "--rerank", "--json", "--smoke"]
    argv += ["--milvus-uri", settings.milvus_uri, "--collection", settings.collection, *extra]
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def test_rerank_after_a_move_reports_missing_images_without_root(moved, capsys, monkeypatch):
    settings, _, _ = moved
    monkeypatch.setenv("MMSEARCH_CACHE_DIR", str(settings.cache_dir))
    result = _search_json(settings, capsys)
    assert result["rerank"]["status"] != "ok"
    assert len(result["rerank"]["missing_images"]) == 3


def test_rerank_after_a_move_loads_every_image_with_root(moved, capsys, monkeypatch):
    settings, _, new_root = moved
    monkeypatch.setenv("MMSEARCH_CACHE_DIR", str(settings.cache_dir))
    result = _search_json(settings, capsys, "--root", str(new_root))
    assert result["rerank"]["missing_images"] == []


def test_thumbnail_after_a_move_names_root_without_it_and_renders_with_it(moved):
    settings, _, new_root = moved
    ref = _hits(settings)[0].image_url
    with (
        Engine(settings=settings) as engine,
        build_fetcher(settings) as fetcher,
        pytest.raises(ImageUnavailableError, match="--root"),
    ):
        Thumbnailer(fetcher, resolve=engine.resolve_ref).render(ref)
    with Engine(settings=settings, catalogue_root=new_root) as engine, build_fetcher(settings) as fetcher:
        assert Thumbnailer(fetcher, resolve=engine.resolve_ref).render(ref)[:2] == b"\xff\xd8"  # a JPEG


def test_a_relative_ref_may_not_escape_its_root(moved):
    _, _, new_root = moved
    with pytest.raises(PathNotAllowedError):
        resolve_ref("../../../etc/passwd", new_root)


def test_a_relative_ref_without_any_root_is_a_clear_error():
    with pytest.raises(InvalidImageError, match="--root"):
        resolve_ref("images/a.jpg", None)
