"""`mmsearch search`: one query (`--image`/`--text`) or a file of them (`--queries`), checked before anything loads.

Entry point: `_add_search(subparsers)`; `mmsearch.cli` puts it in its command table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mmsearch.cli_options import (
    EXIT_OK,
    EXIT_PARTIAL,
    _common,
    _positive_int,
    _settings,
    _weights,
)
from mmsearch.config import Settings
from mmsearch.errors import InvalidQueryError, MMSearchError
from mmsearch.limits import DEFAULT_K, MAX_K
from mmsearch.retriever.retriever import SEARCH_MODES

# ---------------------------------------------------------------- search


def _add_search(sub) -> None:
    p = sub.add_parser(
        "search",
        help="search by image and/or instruction",
        epilog="examples:\n"
        '  mmsearch search --image leopard.jpg --text "phone case with this image theme" -k 9 --rerank\n'
        '  mmsearch search --text "red kettle" --category Appliances --max-price 50 --json\n'
        "  mmsearch search --queries queries.jsonl --out results.jsonl",
    )
    _common(p)
    p.add_argument(
        "--root",
        dest="catalogue_root",
        metavar="DIR",
        help="the catalogue's folder now, if it moved since indexing: relative image refs resolve under it "
        "(default: $MMSEARCH_CATALOGUE_ROOT or the folder kept at index time)",
    )
    p.add_argument("--image", help="query image: local path or http(s) URL")
    p.add_argument("--text", default="", help='instruction, e.g. "phone case with this image theme"')
    p.add_argument(
        "-k", type=_positive_int, default=DEFAULT_K, help="number of results, at most $MMSEARCH_MAX_K (50)"
    )
    p.add_argument("--category", help="only this main_category (exact match; see `mmsearch categories`)")
    p.add_argument("--min-price", type=float, help="only products at or above this price")
    p.add_argument(
        "--max-price", type=float, help="only products at or below this price (unknown prices excluded)"
    )
    p.add_argument("--min-rating", type=float, help="only products rated at least this (0 to 5)")
    p.add_argument(
        "--mode",
        choices=SEARCH_MODES,
        help="retrieval mode (default: the encoder's: joint for Visualized BGE, fused for CLIP/SigLIP)",
    )
    p.add_argument(
        "--weights",
        type=_weights,
        default=(0.7, 0.3),
        help="IMAGE,TEXT weights for weighted/fused (DENSE,LEXICAL for hybrid-bm25)",
    )
    p.add_argument(
        "--ranker",
        choices=["weighted", "rrf"],
        default="weighted",
        help="hybrid fusion for --mode weighted / hybrid-bm25",
    )
    p.add_argument(
        "--all-images",
        dest="one_per_product",
        action="store_false",
        help="list every matching image (default: one result per product, its best image)",
    )
    p.add_argument("--rerank", action="store_true", help="rerank the top-k with Phi-3 Vision")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    g = p.add_argument_group("many queries (instead of --image/--text)")
    g.add_argument(
        "--queries",
        help="jsonl file, one query per line: {image (path relative to the file, or URL), image_id, instruction, "
        "k, filters, mode, weights, ranker, rerank}",
    )
    g.add_argument("--out", help="results jsonl, one line per query with its input line number ('-': stdout)")
    g.add_argument(
        "--batch-size", type=_positive_int, default=32, help="queries encoded and searched together"
    )
    p.set_defaults(func=_run_search)


def _run_query_file(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mmsearch.engine import Engine, build_fetcher
    from mmsearch.pipelines.batch import QueryFileRunner

    if args.image or args.text:
        raise MMSearchError("--queries replaces --image/--text: give one or the other")
    if not args.out:
        raise MMSearchError("--queries needs --out FILE (or --out - for stdout)")
    path = Path(args.queries)
    if not path.is_file():
        raise MMSearchError(f"--queries {path}: no such file")
    with path.open("rb") as fh:
        total = sum(1 for line in fh if line.strip())
    settings = _settings(args)
    engine = Engine(settings=settings)
    pipeline = engine.pipeline(rerank=args.rerank)
    out = sys.stdout if args.out == "-" else open(args.out, "w", encoding="utf-8")  # noqa: SIM115 - closed below
    try:
        with build_fetcher(settings) as fetcher, path.open("rb") as queries:
            runner = QueryFileRunner(
                pipeline,
                fetcher,
                base_dir=path.parent,
                batch_size=args.batch_size,
                rerank=args.rerank,
                resolve=engine.resolve_ref,
            )
            report = runner.run(queries, out, total=total, progress=True)
    finally:
        if out is not sys.stdout:
            out.close()
        engine.close()
    print(report.summary(), file=sys.stderr)
    return EXIT_PARTIAL if report.failed else EXIT_OK


def _check_query(args: argparse.Namespace, settings: Settings) -> None:
    """What the command line alone can tell is wrong, before anything loads."""
    if args.catalogue_root is not None and not Path(args.catalogue_root).is_dir():
        raise InvalidQueryError(f"--root {args.catalogue_root}: not a folder")
    if args.image is None and not args.text.strip():
        raise InvalidQueryError('a query needs --image PATH_OR_URL, --text "...", or both; got neither')
    if args.k > settings.max_k:
        raise InvalidQueryError(
            f"-k {args.k} is above the limit of {settings.max_k} (raise it with MMSEARCH_MAX_K, at most {MAX_K})"
        )


def _run_search(args: argparse.Namespace) -> int:
    if args.queries:
        return _run_query_file(args)
    from mmsearch.engine import Engine
    from mmsearch.pipelines.render import format_result_table
    from mmsearch.store import ProductFilter

    settings = _settings(args)
    _check_query(args, settings)
    filters = ProductFilter(
        category=args.category, min_price=args.min_price, max_price=args.max_price, min_rating=args.min_rating
    )
    with Engine(settings=settings) as engine:
        result = engine.search(
            image=args.image,
            text=args.text,
            k=args.k,
            filters=filters,
            mode=args.mode,
            weights=args.weights,
            ranker=args.ranker,
            one_per_product=args.one_per_product,
            rerank=args.rerank,
        )
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        print(format_result_table(result))
    return 0


__all__ = ["_add_search"]
