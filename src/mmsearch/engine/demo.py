"""The offline demo: a generated catalogue (drawn product images in the Amazon jsonl schema) for `index --source demo`.

Entry point: `write_demo(out_dir) -> (products_jsonl, query_image)`. The catalogue comes from `mmsearch.testing`,
which only the assembly point imports. Its images are drawings: a run over them checks the plumbing, not quality.
"""

from __future__ import annotations

from pathlib import Path

DEMO_SOURCE = "demo"
DEMO_COLLECTION = "demo_products"


def default_demo_dir(cache_dir: str | Path) -> Path:
    return Path(cache_dir) / "demo-catalogue"


def write_demo(out_dir: str | Path) -> tuple[Path, Path]:
    """Write the demo catalogue under `out_dir` (idempotent); returns its products.jsonl and its query photo."""
    from mmsearch.testing.catalog import write_demo_catalog

    catalog = write_demo_catalog(out_dir)
    return catalog.jsonl, catalog.query_image


__all__ = ["DEMO_COLLECTION", "DEMO_SOURCE", "default_demo_dir", "write_demo"]
