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
import sys
from collections.abc import Callable, Sequence

from pydantic import ValidationError

from mmsearch.config import ENCODER_CHOICES, TITLE_ENCODER_CHOICES, EncoderSpec, Settings, TitleEncoderSpec
from mmsearch.errors import ConfigError, MMSearchError
from mmsearch.retriever.retriever import SEARCH_MODES
from mmsearch.sanitize import redact

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3
INDEX_EXIT_CODES = f"""exit status:
  {EXIT_OK}  every record was indexed (or was already in the collection)
  {EXIT_PARTIAL}  the run completed, but some records failed: each one is in the failure log (--failure-log)
     with its id or file:line, stage and reason
  {EXIT_USAGE}  the run could not start or had to stop: bad option or source, store unreachable or locked,
     encoder mismatch, a source that cannot be read further
  {EXIT_INTERNAL}  an internal error (a bug; -v prints the traceback)
  130  interrupted"""


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {}
    for name in (
        "milvus_uri",
        "collection",
        "device",
        "dtype",
        "encoder_weights",
        "encoder_text_model",
        "title_encoder_model",
        "reranker_model",
    ):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    if getattr(args, "encoder_variant", None):
        overrides["encoder_variant"] = args.encoder_variant
    # `eval` takes several --encoder/--title-encoder values (compared side by side); the first is the default.
    for name in ("encoder", "title_encoder"):
        value = getattr(args, name, None)
        if isinstance(value, list):
            value = value[0] if value else None
        if value is not None:
            overrides[name] = value
    if getattr(args, "smoke", False):
        overrides["smoke"] = True
    return Settings(**overrides)


def _weights(text: str) -> tuple[float, float]:
    try:
        a, b = (float(x) for x in text.split(","))
    except ValueError as e:
        raise argparse.ArgumentTypeError(
            f"expected two numbers 'IMAGE,TEXT' like 0.7,0.3; got {text!r}"
        ) from e
    return a, b


def _encoder_choice(text: str) -> str:
    try:
        EncoderSpec.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _title_encoder_choice(text: str) -> str:
    try:
        TitleEncoderSpec.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from e
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _common(p: argparse.ArgumentParser, *, several_encoders: bool = False) -> None:
    g = p.add_argument_group("deployment (defaults from MMSEARCH_* env vars)")
    g.add_argument("--milvus-uri", help="Milvus Lite file (default ./mmsearch.db) or http://host:19530")
    g.add_argument("--collection", help="collection name (default amazon_products)")
    many = {"action": "append"} if several_encoders else {}
    g.add_argument(
        "--encoder",
        type=_encoder_choice,
        help=f"image-text encoder: {ENCODER_CHOICES} (default visualized-bge-base)"
        + ("; repeat to compare encoders" if several_encoders else ""),
        **many,
    )
    g.add_argument(
        "--title-encoder",
        type=_title_encoder_choice,
        help=f"model for the title vectors: {TITLE_ENCODER_CHOICES} (default same: the encoder's text tower)"
        + ("; repeat to compare" if several_encoders else ""),
        **many,
    )
    g.add_argument(
        "--title-encoder-model", help="hub id or local dir of EmbeddingGemma (sentence-transformers layout)"
    )
    g.add_argument("--encoder-variant", choices=["base", "m3"], help="Visualized BGE variant")
    g.add_argument("--encoder-weights", help="hub repo id, local .pth, or dir holding it")
    g.add_argument(
        "--encoder-text-model", help="hub id or local dir of the BGE text model (config + tokenizer)"
    )
    g.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"])
    g.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"])
    g.add_argument(
        "--smoke",
        action="store_true",
        help="tiny random-weight models (plumbing checks only, NOT search quality)",
    )


# ---------------------------------------------------------------- index


def _add_index(sub) -> None:
    p = sub.add_parser(
        "index",
        help="index product images into Milvus",
        description="Index product images into Milvus. A bad record never stops the run: it goes to the "
        "failure log and the run goes on. An id met twice in one run: the later record wins.",
        epilog=INDEX_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(p)
    p.add_argument(
        "--source",
        default="bootcamp",
        help="bootcamp (the ~900-image subset), hub:<Category> (Amazon Reviews 2023 raw metadata), "
        "or a local .jsonl/.parquet/.tar.gz/folder",
    )
    p.add_argument("--limit", type=_positive_int, help="index at most N images")
    p.add_argument("--batch-size", type=_positive_int, help="encoder batch size")
    p.add_argument("--failure-log", help="jsonl file for images that could not be indexed")
    p.add_argument("--workers", type=_positive_int, default=8, help="concurrent image downloads (default 8)")
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
            progress=True,
            engine=args.engine,
            ray_options=ray_options,
        )
    print(report.summary())
    return EXIT_PARTIAL if report.failed else EXIT_OK


# ---------------------------------------------------------------- search


def _add_search(sub) -> None:
    p = sub.add_parser("search", help="search by image and/or instruction")
    _common(p)
    p.add_argument("--image", help="query image: local path or http(s) URL")
    p.add_argument("--text", default="", help='instruction, e.g. "phone case with this image theme"')
    p.add_argument("-k", type=_positive_int, default=9, help="number of results (default 9)")
    p.add_argument("--category", help="only this main_category (exact match; see `mmsearch categories`)")
    p.add_argument("--min-price", type=float)
    p.add_argument("--max-price", type=float)
    p.add_argument("--min-rating", type=float)
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
                pipeline, fetcher, base_dir=path.parent, batch_size=args.batch_size, rerank=args.rerank
            )
            report = runner.run(queries, out, total=total, progress=True)
    finally:
        if out is not sys.stdout:
            out.close()
        engine.close()
    print(report.summary(), file=sys.stderr)
    return EXIT_PARTIAL if report.failed else EXIT_OK


def _run_search(args: argparse.Namespace) -> int:
    if args.queries:
        return _run_query_file(args)
    from mmsearch.engine import Engine
    from mmsearch.pipelines.render import format_result_table
    from mmsearch.store import ProductFilter

    settings = _settings(args)
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


# ---------------------------------------------------------------- serve


def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="run the HTTP API and web page")
    _common(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_positive_int, default=8000)
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
    p = sub.add_parser("eval", help="measure retrieval and rerank quality on a labelled query set")
    _common(p, several_encoders=True)
    p.add_argument("--queries", help="labelled queries (jsonl), or 'synthetic' for the generated offline set")
    p.add_argument("--format", choices=["mmsearch", "cirr", "fashioniq"], default="mmsearch")
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
    p.add_argument("-k", type=_positive_int, default=10)
    p.add_argument("--out", help="write the JSON report here")
    p.add_argument("--images", help="cirr: the folder holding dev/ (img_raw); fashioniq: the images folder")
    p.add_argument("--splits", help="image split file (default: ../image_splits/split.<...>.json)")
    p.add_argument("--gallery", help="mmsearch format: index this source (e.g. products.jsonl) first")
    p.add_argument("--limit", type=_positive_int, help="evaluate only the first N queries")
    p.add_argument("--weights", type=_weights, default=(0.7, 0.3), help="IMAGE,TEXT for weighted/fused")
    p.add_argument("--ranker", choices=["weighted", "rrf"], default="weighted", help="fusion for weighted")
    p.add_argument("--seed", type=int, default=0, help="synthetic set and bootstrap seed")
    p.add_argument("--resamples", type=_positive_int, default=1000, help="bootstrap resamples")
    p.add_argument("--synthetic-products", type=_positive_int, default=60)
    p.add_argument("--synthetic-queries", type=_positive_int, default=20)
    p.set_defaults(func=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    from mmsearch.evaluation.cli import run_eval_command

    return run_eval_command(args, _settings(args))


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="run a benchmark script (JSON output)")
    p.add_argument("name", choices=["encode", "rerank", "store", "index", "query"])
    p.add_argument("rest", nargs=argparse.REMAINDER, help="options passed to the benchmark")
    p.set_defaults(func=_run_bench)


def _run_bench(args: argparse.Namespace) -> int:
    import runpy
    from pathlib import Path

    scripts = {
        "encode": "encode_throughput.py",
        "rerank": "rerank_latency.py",
        "store": "milvus_store.py",
        "index": "index_throughput.py",
        "query": "query_latency.py",
    }
    path = Path.cwd() / "benchmarks" / scripts[args.name]
    if not path.exists():
        raise MMSearchError(f"{path} not found: run `mmsearch bench` from the repository root")
    sys.argv = [str(path), *args.rest]
    runpy.run_path(str(path), run_name="__main__")
    return 0


def _add_categories(sub) -> None:
    p = sub.add_parser("categories", help="list the stored categories with their image counts")
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
    parser = argparse.ArgumentParser(prog="mmsearch", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
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
