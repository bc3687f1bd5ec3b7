"""`mmsearch demo` and `mmsearch index`: their options and the calls into `mmsearch.Engine.index`.

Entry points: `_add_demo(subparsers)`, `_add_index(subparsers)`; `mmsearch.cli` puts them in its command table.
"""

from __future__ import annotations

import argparse
import sys

from mmsearch.cli_options import (
    EXIT_OK,
    EXIT_PARTIAL,
    INDEX_EXIT_CODES,
    _common,
    _positive_int,
    _settings,
)
from mmsearch.errors import ConfigError

# ---------------------------------------------------------------- demo


def _add_demo(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="offline first run: write the generated demo catalogue and index it with --smoke models",
        description="Writes a small generated catalogue (drawn product images in the Amazon jsonl schema) and "
        "indexes it with tiny random-weight models into its own collection. Needs no network. Its rankings mean "
        "nothing: it shows that the whole path works.",
        epilog="examples:\n  mmsearch demo\n  mmsearch demo --milvus-uri /tmp/demo.db",
    )
    p.add_argument(
        "--milvus-uri",
        metavar="URI",
        help="Milvus Lite file or server (default: $MMSEARCH_MILVUS_URI or ./mmsearch.db)",
    )
    p.add_argument("--collection", default="demo_products", help="collection for the demo")
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from mmsearch.engine import Engine

    overrides = {"smoke": True, "collection": args.collection}
    if args.milvus_uri:
        overrides["milvus_uri"] = args.milvus_uri
    with Engine(**overrides) as engine:
        report = engine.index("demo", progress=sys.stderr.isatty())
        query = engine.demo_query_image()
        uri = engine.settings.milvus_uri
    print(report.summary())
    where = f" --milvus-uri {uri}" if args.milvus_uri else ""
    print("next (tiny random models: the ranking shows the plumbing, not quality):")
    print(
        f"  mmsearch search --smoke --collection {args.collection}{where} --image {query} "
        '--text "phone case with this image theme" -k 5 --rerank'
    )
    print(f"  mmsearch serve --smoke --collection {args.collection}{where}")
    return EXIT_OK if not report.failed else EXIT_PARTIAL


# ---------------------------------------------------------------- index


def _add_index(sub) -> None:
    p = sub.add_parser(
        "index",
        help="index product images into Milvus",
        description="Index product images into Milvus. A bad record never stops the run: it goes to the "
        "failure log and the run goes on. An id met twice in one run: the later record wins.",
        epilog="examples:\n"
        "  mmsearch index --source bootcamp\n"
        "  mmsearch index --source ./products.jsonl --limit 1000\n"
        "  mmsearch index --source demo --smoke         # offline: the generated catalogue, tiny models\n"
        "  mmsearch index --source ./products.jsonl --reindex\n\n" + INDEX_EXIT_CODES,
    )
    _common(p)
    p.add_argument(
        "--source",
        default="bootcamp",
        help="bootcamp (the ~900-image subset), hub:<Category> (Amazon Reviews 2023 raw metadata), demo (the "
        "generated offline catalogue, written under the cache dir), or a local .jsonl/.parquet/.tar.gz/folder",
    )
    p.add_argument("--limit", type=_positive_int, help="index at most N images (default: all)")
    p.add_argument(
        "--batch-size",
        type=_positive_int,
        help="encoder batch size (default: $MMSEARCH_ENCODE_BATCH_SIZE or 32)",
    )
    p.add_argument(
        "--failure-log",
        help="jsonl file for images that could not be indexed (default: <cache dir>/failures/<collection>-<time>.jsonl)",
    )
    p.add_argument("--workers", type=_positive_int, default=8, help="concurrent image downloads")
    p.add_argument(
        "--reindex",
        action="store_true",
        help="re-embed ids already stored (after a model or catalogue change)",
    )
    p.add_argument(
        "--max-images-per-product", type=_positive_int, help="index only the first N images of each product"
    )
    p.add_argument(
        "--allow-path",
        action="append",
        default=[],
        metavar="DIR",
        help="also read local images under DIR (repeatable); by default a catalogue's local image paths must "
        "resolve, symlinks followed, inside the catalogue's own folder",
    )
    r = p.add_argument_group("scale-out (--engine ray; see docs/SCALING.md)")
    r.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="local: one process (default); ray: Ray Data on a local or remote cluster",
    )
    r.add_argument(
        "--ray-address", help="a running Ray cluster (host:6379, ray://host:10001, auto); default: local"
    )
    r.add_argument(
        "--write",
        choices=["upsert", "bulk-import"],
        default="upsert",
        help="bulk-import: first load of an empty server collection via Milvus bulk import",
    )
    r.add_argument("--encode-actors", type=_positive_int, default=1, help="encoder replicas (one GPU each)")
    r.add_argument("--fetch-tasks", type=_positive_int, default=2, help="fetch/decode tasks at once")
    r.add_argument("--writers", type=_positive_int, default=2, help="server upsert or bulk-file actors")
    r.add_argument("--bulk-dir", help="folder for bulk-import files, readable by the Milvus server")
    p.set_defaults(func=_run_index)


def _run_index(args: argparse.Namespace) -> int:
    from mmsearch.engine import Engine

    settings = _settings(args)
    if args.batch_size:
        settings = settings.model_copy(update={"encode_batch_size": args.batch_size})
    ray_options = None
    if args.engine == "ray":
        from mmsearch.pipelines.ray_engine import RayOptions

        ray_options = RayOptions(
            address=args.ray_address,
            encode_actors=args.encode_actors,
            fetch_tasks=args.fetch_tasks,
            fetch_threads=args.workers,
            writers=args.writers,
            write=args.write,
            bulk_dir=args.bulk_dir,
        )
    elif args.ray_address or args.write != "upsert":
        raise ConfigError("--ray-address and --write bulk-import need --engine ray")
    with Engine(settings=settings) as engine:
        report = engine.index(
            args.source,
            limit=args.limit,
            failure_log=args.failure_log,
            workers=args.workers,
            max_images_per_product=args.max_images_per_product,
            allow_paths=args.allow_path,
            reindex=args.reindex,
            progress=True,
            engine=args.engine,
            ray_options=ray_options,
        )
    print(report.summary())
    return EXIT_PARTIAL if report.failed else EXIT_OK


__all__ = ["_add_demo", "_add_index"]
