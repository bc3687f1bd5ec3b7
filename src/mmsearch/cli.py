"""The `mmsearch` command: a thin table of subcommands, each calling one entry function of a stage module.

    mmsearch index  --source bootcamp|hub:<Category>|PATH [--limit N]
    mmsearch search --image PATH_OR_URL --text "..." [-k 9] [--rerank] [--json]
    mmsearch serve  [--host 127.0.0.1 --port 8000]
    mmsearch eval   --queries FILE.jsonl
    mmsearch bench  encode|rerank|store|index

A user mistake prints one line on stderr and exits 2; nothing else prints a traceback either (-v shows one for an
internal error, which exits 1).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence

from pydantic import ValidationError

from mmsearch import __version__
from mmsearch.cli_index import _add_demo, _add_index
from mmsearch.cli_options import (
    EXIT_INTERNAL,
    EXIT_USAGE,
    HelpFormatter,
    Parser,
    _common,
    _positive_int,
    _settings,
    _weights,
)
from mmsearch.cli_search import _add_search
from mmsearch.errors import MMSearchError
from mmsearch.retriever.retriever import SEARCH_MODES
from mmsearch.sanitize import redact

# ---------------------------------------------------------------- serve


def _add_serve(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="run the HTTP API and web page",
        epilog="examples:\n  mmsearch serve\n  mmsearch serve --smoke --collection demo_products --port 8080",
    )
    _common(p)
    p.add_argument(
        "--root",
        dest="catalogue_root",
        metavar="DIR",
        help="the catalogue's folder now, if it moved since indexing: relative image refs resolve under it "
        "(default: $MMSEARCH_CATALOGUE_ROOT or the folder kept at index time)",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    p.add_argument("--port", type=_positive_int, default=8000, help="TCP port")
    p.add_argument("--no-rerank", action="store_true", help="do not load the reranker")
    p.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        help="API worker processes (default 1); more than one needs a Milvus server URI, not Milvus Lite",
    )
    p.set_defaults(func=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    from mmsearch.api.server import serve

    serve(
        _settings(args),
        host=args.host,
        port=args.port,
        workers=args.workers,
        with_reranker=not args.no_rerank,
    )
    return 0


# ---------------------------------------------------------------- eval / bench


def _add_eval(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="measure retrieval and rerank quality on a labelled query set",
        epilog="examples:\n"
        "  mmsearch eval --queries synthetic --smoke\n"
        "  mmsearch eval --queries labelled.jsonl --gallery products.jsonl --rerank --out report.json\n"
        "Without --milvus-uri (or $MMSEARCH_MILVUS_URI) eval uses its own database, <cache dir>/eval/eval.db.",
    )
    _common(p, several_encoders=True)
    p.add_argument("--queries", help="labelled queries (jsonl), or 'synthetic' for the generated offline set")
    p.add_argument(
        "--format", choices=["mmsearch", "cirr", "fashioniq"], default="mmsearch", help="query file format"
    )
    p.add_argument(
        "--modes", default=",".join(SEARCH_MODES), help="comma-separated retrieval modes (default: all)"
    )
    p.add_argument(
        "--one-per-product",
        choices=["on", "off", "both"],
        default="both",
        help="score each mode with one slot per product (on), every image (off, shown as MODE/images) or both",
    )
    p.add_argument("--rerank", action="store_true", help="also evaluate with reranking")
    p.add_argument("-k", type=_positive_int, default=10, help="cut-off for the metrics")
    p.add_argument("--out", help="write the JSON report here")
    p.add_argument("--images", help="cirr: the folder holding dev/ (img_raw); fashioniq: the images folder")
    p.add_argument("--splits", help="image split file (default: ../image_splits/split.<...>.json)")
    p.add_argument("--gallery", help="mmsearch format: index this source (e.g. products.jsonl) first")
    p.add_argument("--limit", type=_positive_int, help="evaluate only the first N queries")
    p.add_argument("--weights", type=_weights, default=(0.7, 0.3), help="IMAGE,TEXT for weighted/fused")
    p.add_argument("--ranker", choices=["weighted", "rrf"], default="weighted", help="fusion for weighted")
    p.add_argument("--seed", type=int, default=0, help="synthetic set and bootstrap seed")
    p.add_argument("--resamples", type=_positive_int, default=1000, help="bootstrap resamples")
    p.add_argument(
        "--synthetic-products", type=_positive_int, default=60, help="products in the synthetic set"
    )
    p.add_argument("--synthetic-queries", type=_positive_int, default=20, help="queries in the synthetic set")
    p.set_defaults(func=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    from mmsearch.evaluation.cli import run_eval_command

    settings = _settings(args)
    if args.milvus_uri is None and "MMSEARCH_MILVUS_URI" not in os.environ:
        # Evaluation galleries never land in the user's own database.
        settings = settings.model_copy(update={"milvus_uri": str(settings.cache_dir / "eval" / "eval.db")})
    return run_eval_command(args, settings)


def _add_bench(sub) -> None:
    from mmsearch.bench import BENCHMARKS, describe

    listing = "\n".join(f"  {name:<7} {describe(name)}" for name in BENCHMARKS)
    p = sub.add_parser(
        "bench",
        help="run a benchmark script (JSON output); works from any directory",
        epilog=f"benchmarks:\n{listing}\n\nexamples:\n  mmsearch bench encode --help\n"
        "  mmsearch bench store --rows 10000 --out store.json",
    )
    p.add_argument("name", choices=list(BENCHMARKS), help="which benchmark (listed below)")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="options passed to the benchmark (see NAME --help)")
    p.set_defaults(func=_run_bench)


def _run_bench(args: argparse.Namespace) -> int:
    from mmsearch.bench import script_path

    path = script_path(args.name)
    code = compile(path.read_text(encoding="utf-8"), str(path), "exec")
    # Run as __main__ with argv[0] naming the command (runpy would reset it to the file name), so the script's
    # usage line reads `mmsearch bench NAME`; its folder goes on sys.path, as for `python script.py`.
    sys.argv = [f"mmsearch bench {args.name}", *args.rest]
    sys.path.insert(0, str(path.parent))
    try:
        exec(code, {"__name__": "__main__", "__file__": str(path)})  # noqa: S102 - our own benchmark scripts
    finally:
        sys.path.remove(str(path.parent))
    return 0


def _add_categories(sub) -> None:
    p = sub.add_parser(
        "categories",
        help="list the stored categories with their image counts",
        epilog="example:\n  mmsearch categories --json",
    )
    _common(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_run_categories)


def _run_categories(args: argparse.Namespace) -> int:
    from mmsearch.engine import build_store

    with build_store(_settings(args), create=False) as store:
        counts = store.categories()
    if args.json:
        print(json.dumps([{"name": n, "count": c} for n, c in counts.items()], indent=2))
    else:
        width = max((len(n) for n in counts), default=0)
        print("\n".join(f"{n:<{width}}  {c}" for n, c in counts.items()) or "(no categories stored)")
    return 0


COMMANDS: dict[str, Callable] = {
    "demo": _add_demo,
    "index": _add_index,
    "search": _add_search,
    "categories": _add_categories,
    "serve": _add_serve,
    "eval": _add_eval,
    "bench": _add_bench,
}


class _RedactingFilter(logging.Filter):
    """Rewrites each log record's message with URLs redacted (no user:password@, no query string)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), None
        return True


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="mmsearch",
        description=__doc__.split("\n")[0],
        formatter_class=HelpFormatter,
        epilog="first run, offline:\n  mmsearch demo\n\n`mmsearch COMMAND --help` shows each command's options.",
    )
    parser.add_argument("--version", action="version", version=f"mmsearch {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_parser = sub.add_parser

    def with_formatter(name, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        return add_parser(name, **kwargs)

    sub.add_parser = with_formatter
    for add in COMMANDS.values():
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(
            _RedactingFilter()
        )  # httpx logs every request URL at INFO (-v), credentials and all
    try:
        return args.func(args)
    except MMSearchError as e:
        print(f"mmsearch {args.command}: error: {redact(str(e))}", file=sys.stderr)
        return EXIT_USAGE
    except ValidationError as e:
        # Bad MMSEARCH_* env values or option combinations caught by a pydantic model.
        problems = "; ".join(
            f"{'.'.join(map(str, err['loc'])) or 'value'}: {err['msg']}" for err in e.errors()
        )
        print(f"mmsearch {args.command}: error: {problems}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"mmsearch {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: still one line (redacted), the traceback only with -v
        if args.verbose:
            logging.getLogger("mmsearch").exception("internal error")
        print(
            f"mmsearch {args.command}: internal error: {type(e).__name__}: {redact(str(e))}", file=sys.stderr
        )
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["build_parser", "main"]
