"""`mmsearch eval`: load or generate a labelled query set, index its gallery, evaluate, print a table, write JSON.

Entry point: `run_eval_command(args, settings) -> int` (called by `mmsearch.cli`). Benchmark galleries go into
a collection of their own (`eval_synthetic`, `eval_cirr`, `eval_fashioniq_<category>`, with `_smoke` appended in
smoke mode) unless `--collection` names one; a jsonl query set is scored against the configured collection.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mmsearch.config import Settings
from mmsearch.errors import ConfigError
from mmsearch.evaluation.datasets import (
    EvalSet,
    load_cirr,
    load_fashioniq,
    load_queries_jsonl,
    write_gallery_jsonl,
)
from mmsearch.evaluation.harness import EvalReport, evaluate
from mmsearch.evaluation.synthetic import generate_synthetic_set
from mmsearch.retriever.retriever import SEARCH_MODES

SYNTHETIC = "synthetic"


def parse_modes(text: str) -> list[str]:
    """`"joint,weighted"` -> ["joint", "weighted"]; an unknown or missing mode is a `ConfigError`."""
    modes = [m.strip() for m in (text or "").split(",") if m.strip()]
    if not modes:
        raise ConfigError(f"--modes needs at least one of {','.join(SEARCH_MODES)}; got {text!r}")
    for mode in modes:
        if mode not in SEARCH_MODES:
            raise ConfigError(
                f"--modes: unknown mode {mode!r}; expected a comma-separated subset of {','.join(SEARCH_MODES)}"
            )
    return list(dict.fromkeys(modes))


def _work_dir(settings: Settings, name: str) -> Path:
    return Path(settings.cache_dir) / "eval" / name


def load_eval_set(args: argparse.Namespace, settings: Settings) -> tuple[EvalSet, str | None]:
    """The query set named by the options, and the default collection for its gallery (None: the configured one)."""
    suffix = "_smoke" if settings.smoke else ""
    limit = getattr(args, "limit", None)
    if args.queries == SYNTHETIC:
        n_products = getattr(args, "synthetic_products", None) or 60
        n_queries = limit or getattr(args, "synthetic_queries", None) or 20
        seed = getattr(args, "seed", 0) or 0
        work = _work_dir(settings, f"synthetic-s{seed}-p{n_products}-q{n_queries}")
        synthetic = generate_synthetic_set(work, n_products=n_products, n_queries=n_queries, seed=seed)
        return synthetic.eval_set, f"eval_synthetic{suffix}"
    fmt = getattr(args, "format", "mmsearch")
    images = getattr(args, "images", None)
    splits = getattr(args, "splits", None)
    if fmt == "cirr":
        return load_cirr(args.queries, images_root=images, splits=splits, limit=limit), f"eval_cirr{suffix}"
    if fmt == "fashioniq":
        eval_set = load_fashioniq(args.queries, images_dir=images, splits=splits, limit=limit)
        category = Path(args.queries).name.split(".")[1] if Path(args.queries).name.count(".") >= 2 else "all"
        return eval_set, f"eval_fashioniq_{''.join(c if c.isalnum() else '_' for c in category)}{suffix}"
    eval_set = load_queries_jsonl(args.queries, limit=limit)
    gallery = getattr(args, "gallery", None)
    if gallery:
        eval_set.source = gallery
    return eval_set, None


def _index_gallery(eval_set: EvalSet, settings: Settings, encoder) -> None:
    from mmsearch.pipelines.index import run_index

    source = eval_set.source
    if source is None and eval_set.gallery is not None:
        name = "".join(c if c.isalnum() else "_" for c in eval_set.name)
        source = str(write_gallery_jsonl(eval_set.gallery, _work_dir(settings, name) / "gallery.jsonl"))
    if source is None:
        return
    report = run_index(settings, source=source, encoder=encoder, progress=sys.stderr.isatty())
    print(f"gallery -> {settings.collection}: {report.summary()}", file=sys.stderr)


def run_eval_command(args: argparse.Namespace, settings: Settings) -> int:
    """Evaluate the query set named by `args` with the models and Milvus named by `settings`."""
    from mmsearch.pipelines import SearchPipeline
    from mmsearch.pipelines.factory import build_encoder, build_reranker, build_store
    from mmsearch.retriever import QueryEncoder, Retriever

    if not args.queries:
        raise ConfigError(
            "--queries is required: a labelled .jsonl file, a CIRR/FashionIQ captions file (with --format), "
            "or 'synthetic'"
        )
    modes = parse_modes(args.modes)
    if args.k > settings.max_k:
        raise ConfigError(f"-k {args.k} is above the limit of {settings.max_k} (MMSEARCH_MAX_K)")
    eval_set, collection = load_eval_set(args, settings)
    if getattr(args, "collection", None) is None and collection is not None:
        settings = settings.model_copy(update={"collection": collection})

    encoder = build_encoder(settings)
    _index_gallery(eval_set, settings, encoder)
    query_encoder = QueryEncoder(
        encoder, max_image_bytes=settings.max_image_bytes, max_image_pixels=settings.max_image_pixels
    )
    with build_store(settings) as store:
        retriever = Retriever(encoder, store, query_encoder=query_encoder)
        reranker = build_reranker(settings) if args.rerank else None
        pipeline = SearchPipeline(retriever, reranker, max_k=settings.max_k, smoke=settings.smoke)
        report: EvalReport = evaluate(
            pipeline,
            eval_set,
            modes=modes,
            k=args.k,
            rerank=args.rerank,
            weights=getattr(args, "weights", None) or (0.7, 0.3),
            ranker=getattr(args, "ranker", None) or "weighted",
            n_resamples=getattr(args, "resamples", None) or 1000,
            seed=getattr(args, "seed", 0) or 0,
            progress=sys.stderr.isatty(),
        )
    report.settings.update(
        collection=settings.collection,
        milvus_uri=settings.milvus_uri,
        encoder=getattr(encoder, "model_id", ""),
    )
    print(report.format_table())
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
        print(f"wrote {out}", file=sys.stderr)
    return 0


__all__ = ["SYNTHETIC", "load_eval_set", "parse_modes", "run_eval_command"]
