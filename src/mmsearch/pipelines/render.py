"""Plain-text rendering of a `SearchResult` for the terminal (the CLI's table; `--json` uses `to_dict`)."""

from __future__ import annotations

from mmsearch.config import SMOKE_BANNER


def _cut(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _price(value) -> str:
    return "-" if value is None else f"${value:,.2f}"


def format_result_table(result, *, title_width: int = 48) -> str:
    """Rank, score, title, category, price and image URL per hit; with reranking, the before→after ranks and reasons."""
    lines = []
    if result.smoke:
        lines.append(f"[{SMOKE_BANNER}]")
    reranked = result.rerank is not None
    header = f"{'rank':>4}  {'was':>3}  " if reranked else f"{'rank':>4}  "
    header += f"{'score':>6}  {'title':<{title_width}}  {'category':<18}  {'price':>9}  image"
    lines.append(header)
    lines.append("-" * len(header))
    before = {h.id: i + 1 for i, h in enumerate(result.retrieved)}
    for i, hit in enumerate(result.hits, start=1):
        row = f"{i:>4}  {before[hit.id]:>3}  " if reranked else f"{i:>4}  "
        row += (
            f"{hit.score:>6.3f}  {_cut(hit.title, title_width):<{title_width}}  "
            f"{_cut(hit.main_category, 18):<18}  {_price(hit.price):>9}  {hit.image_url}"
        )
        lines.append(row)
    if not result.hits:
        lines.append("(no results)")
    if reranked:
        rr = result.rerank
        lines.append("")
        lines.append(f"rerank: {rr.status}" + (f" ({rr.reason})" if rr.reason else ""))
        if rr.reasons:
            lines.append(f"reasons: {_cut(rr.reasons, 400)}")
    t = result.timings
    parts = [f"{k.removesuffix('_ms')} {v:.0f} ms" for k, v in t.items()]
    lines.append("timings: " + ", ".join(parts))
    return "\n".join(lines)


__all__ = ["format_result_table"]
