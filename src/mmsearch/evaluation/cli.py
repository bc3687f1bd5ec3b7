"""`mmsearch eval`: load or generate a labelled query set, index its gallery, evaluate, print a table, write JSON.

Entry point: `run_eval_command(args, settings) -> int` (called by `mmsearch.cli`). Benchmark galleries go into
a collection of their own (`eval_synthetic`, `eval_cirr`, `eval_fashioniq_<category>`, with `_smoke` appended in
smoke mode) unless `--collection` names one; a jsonl query set is scored against the configured collection.
Several `--encoder` / `--title-encoder` values compare every pair side by side (`evaluation.compare`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mmsearch.config import Settings
from mmsearch.errors import ConfigError
from mmsearch.evaluation.compare import EncoderComparison, EncoderRun, collection_suffix
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


ONE_PER_PRODUCT = {"on": (True,), "off": (False,), "both": (True, False)}


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


def _index_gallery(eval_set: EvalSet, settings: Settings, engine) -> None:
    source = eval_set.source
    allow: list[str] = []
    if source is None and eval_set.gallery is not None:
        name = "".join(c if c.isalnum() else "_" for c in eval_set.name)
        source = str(write_gallery_jsonl(eval_set.gallery, _work_dir(settings, name) / "gallery.jsonl"))
        # The written gallery points at the data set's own image folders, outside the work dir.
        allow = sorted({str(Path(item.image).resolve().parent) for item in eval_set.gallery})
    if source is None:
        return
    report = engine.index(source, allow_paths=allow, progress=sys.stderr.isatty())
    print(f"gallery -> {settings.collection}: {report.summary()}", file=sys.stderr)


def _evaluate_one(
    args: argparse.Namespace, settings: Settings, eval_set: EvalSet, modes: list[str]
) -> tuple[EvalReport, EncoderRun]:
    """Index the gallery (if any) and score `eval_set` with the encoders named by `settings`."""
    from mmsearch.engine import Engine

    with Engine(settings=settings) as engine:
        return _evaluate_with(engine, args, settings, eval_set, modes)


def _evaluate_with(
    engine, args: argparse.Namespace, settings: Settings, eval_set: EvalSet, modes: list[str]
) -> tuple[EvalReport, EncoderRun]:
    encoder = engine.encoder
    titles = engine.title_encoder
    usable = [m for m in modes if m in encoder.capabilities]
    skipped = [m for m in modes if m not in encoder.capabilities]
    if not usable:
        raise ConfigError(
            f"--modes {','.join(modes)}: none is available with encoder {settings.encoder_spec}; it supports "
            f"{','.join(sorted(encoder.capabilities))}"
        )
    _index_gallery(eval_set, settings, engine)
    pipeline = engine.pipeline(rerank=args.rerank)
    if "hybrid-bm25" in usable and (problem := pipeline.retriever.store.lexical_problem()) is not None:
        print(f"skipped mode hybrid-bm25: {problem}", file=sys.stderr)
        usable.remove("hybrid-bm25")
        if not usable:
            raise ConfigError(f"--modes {','.join(modes)}: nothing left to evaluate ({problem})")
    report: EvalReport = evaluate(
        pipeline,
        eval_set,
        modes=usable,
        one_per_product=ONE_PER_PRODUCT[getattr(args, "one_per_product", None) or "on"],
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
        encoder=encoder.model_id,
        title_encoder=titles.model_id,
    )
    run = EncoderRun(
        encoder=str(settings.encoder_spec),
        title_encoder=str(settings.title_encoder_spec),
        encoder_id=encoder.model_id,
        title_encoder_id=titles.model_id,
        dim=encoder.dim,
        title_dim=titles.dim,
        collection=settings.collection,
        report=report,
        skipped_modes=skipped,
    )
    return report, run


def _choices(args: argparse.Namespace, name: str, default: str) -> list[str]:
    values = getattr(args, name, None)
    if values is None:
        return [default]
    return list(dict.fromkeys([values] if isinstance(values, str) else values))


def run_eval_command(args: argparse.Namespace, settings: Settings) -> int:
    """Evaluate the query set named by `args` with the models and Milvus named by `settings`.

    Several `--encoder` / `--title-encoder` values evaluate every pair on the same queries, each pair in its own
    collection (`<collection>_<pair>`), and print them side by side.
    """
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
    pairs = [
        (e, t)
        for e in _choices(args, "encoder", str(settings.encoder_spec))
        for t in _choices(args, "title_encoder", settings.title_encoder)
    ]
    if len(pairs) == 1:
        report, run = _evaluate_one(args, settings, eval_set, modes)
        if run.skipped_modes:
            print(
                f"skipped modes (not available with {run.encoder}): {','.join(run.skipped_modes)}",
                file=sys.stderr,
            )
        _write(args, report.format_table(), report.to_dict())
        return 0
    if eval_set.source is None and eval_set.gallery is None:
        raise ConfigError(
            "comparing encoders indexes the gallery once per encoder: give the products with --gallery "
            "(or use --queries synthetic / a CIRR or FashionIQ set)"
        )
    runs = []
    for encoder, title_encoder in pairs:
        pair_settings = settings.model_copy(
            update={
                "encoder": encoder,
                "title_encoder": title_encoder,
                "collection": f"{settings.collection}_{collection_suffix(encoder, title_encoder)}",
            }
        )
        print(f"== {encoder} + titles {title_encoder}", file=sys.stderr)
        runs.append(_evaluate_one(args, pair_settings, eval_set, modes)[1])
    comparison = EncoderComparison(runs)
    _write(args, comparison.format_table(), comparison.to_dict())
    return 0


def _write(args: argparse.Namespace, table: str, data: dict) -> None:
    print(table)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {out}", file=sys.stderr)


__all__ = ["SYNTHETIC", "load_eval_set", "parse_modes", "run_eval_command"]
