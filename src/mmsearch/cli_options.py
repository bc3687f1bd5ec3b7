"""Shared pieces of the `mmsearch` command line: the parser (one-line usage errors), the help formatter (shown
defaults, epilogs kept as written), option types, the deployment options and their mapping onto `Settings`.

Entry points: `Parser`, `HelpFormatter`, `_common(parser)`, `_settings(args)`; `mmsearch.cli` builds on them.
"""

from __future__ import annotations

import argparse

from mmsearch.config import ENCODER_CHOICES, TITLE_ENCODER_CHOICES, EncoderSpec, Settings, TitleEncoderSpec
from mmsearch.limits import DEVICES, DTYPES

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


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (`mmsearch search: error: ...`), with no usage block above."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Appends each option's default (unless None/False or the help already names one); keeps epilogs as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        shown = action.default not in (None, False, [], argparse.SUPPRESS)
        if action.option_strings and shown and "default" not in text:
            text += " (default: %(default)s)"
        return text


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
        "catalogue_root",
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
    g = p.add_argument_group("deployment (each also set by its MMSEARCH_* variable; an option wins)")
    g.add_argument(
        "--milvus-uri",
        metavar="URI",
        help="Milvus Lite file or http://host:19530 server (default: $MMSEARCH_MILVUS_URI or ./mmsearch.db)",
    )
    g.add_argument("--collection", help="collection name (default: $MMSEARCH_COLLECTION or amazon_products)")
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
        "--title-encoder-model",
        help="hub id or local dir of EmbeddingGemma, sentence-transformers layout "
        "(default: $MMSEARCH_TITLE_ENCODER_MODEL or google/embeddinggemma-300m)",
    )
    g.add_argument(
        "--encoder-variant",
        choices=["base", "m3"],
        help="Visualized BGE variant (default: $MMSEARCH_ENCODER_VARIANT or base)",
    )
    g.add_argument(
        "--encoder-weights",
        help="hub repo id, local .pth, or dir holding it (default: $MMSEARCH_ENCODER_WEIGHTS or BAAI/bge-visualized)",
    )
    g.add_argument(
        "--encoder-text-model",
        help="hub id or local dir of the BGE text model config + tokenizer "
        "(default: $MMSEARCH_ENCODER_TEXT_MODEL or the variant's official repo)",
    )
    g.add_argument(
        "--reranker-model",
        help="Phi-3 Vision hub id or local dir "
        "(default: $MMSEARCH_RERANKER_MODEL or microsoft/Phi-3-vision-128k-instruct)",
    )
    g.add_argument("--device", choices=DEVICES, help="where models run (default: $MMSEARCH_DEVICE or auto)")
    g.add_argument("--dtype", choices=DTYPES, help="model precision (default: $MMSEARCH_DTYPE or auto)")
    g.add_argument(
        "--smoke",
        action="store_true",
        help="tiny random-weight models built offline: checks the plumbing, NOT search quality "
        "($MMSEARCH_SMOKE)",
    )


__all__ = [
    "EXIT_INTERNAL",
    "EXIT_OK",
    "EXIT_PARTIAL",
    "EXIT_USAGE",
    "INDEX_EXIT_CODES",
    "HelpFormatter",
    "Parser",
    "_common",
    "_positive_int",
    "_settings",
    "_weights",
]
