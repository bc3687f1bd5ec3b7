"""The reranker's panel: one image holding the query photo (marked QUERY) and a grid of k candidates, each
with a large numbered label drawn inside its tile. Entry point: `render_panel(candidates, query=..., side=...)`.

One image instead of query + panel keeps the prompt short: Phi-3 Vision spends at least 313 tokens on any extra
image (see `mmsearch.reranker.prompt`). The canvas is square with a side that is a multiple of 336, so the HD
transform maps it onto whole crops without resampling twice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from mmsearch.errors import InvalidQueryError

MIN_CANDIDATES = 2
MAX_CANDIDATES = 20
CROP = 336  # Phi-3 Vision's crop side: panels are sized in whole crops
MAX_SIDE = 4 * CROP  # 1344: the largest HD grid the official num_crops=16 can hold without downscaling

BACKGROUND = (255, 255, 255)
GRID_LINE = (160, 160, 160)
LABEL_FILL = (0, 0, 0)
LABEL_TEXT = (
    255,
    255,
    0,
)  # yellow on black: the highest-contrast pair that survives JPEG-like product photos
QUERY_COLOR = (220, 0, 0)
QUERY_TEXT = (255, 255, 255)
EMPTY_FILL = (235, 235, 235)

Box = tuple[int, int, int, int]  # (left, top, right, bottom), right/bottom exclusive

_FONT_FILES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans-Bold.ttf",
    "/Library/Fonts/Arial Bold.ttf",
    "C:/Windows/Fonts/arialbd.ttf",
)


@lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """A bold TrueType font when the system has one, else Pillow's bundled scalable font (Pillow >= 10.1)."""
    for path in _FONT_FILES:
        if Path(path).is_file():
            return ImageFont.truetype(path, size)
    return ImageFont.load_default(size=size)


@dataclass(frozen=True)
class Panel:
    """A rendered panel and where everything is on it (for tests and for debugging overlays)."""

    image: Image.Image
    tiles: list[Box]  # tiles[i] holds candidate i (label i + 1)
    labels: list[Box]  # label box drawn inside tiles[i]
    query_tile: Box | None
    query_label: Box | None
    columns: int
    rows: int

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size


def panel_side_for(num_crops: int) -> int:
    """Canvas side that the HD transform with `num_crops` keeps at native resolution (a square of whole crops)."""
    if num_crops < 1:
        raise InvalidQueryError(f"num_crops must be >= 1, got {num_crops}")
    return min(MAX_SIDE, CROP * max(1, math.isqrt(num_crops)))


def grid_shape(cells: int) -> tuple[int, int]:
    """(columns, rows) for `cells` square tiles on a square canvas: ceil(sqrt) columns."""
    columns = math.ceil(math.sqrt(cells))
    return columns, math.ceil(cells / columns)


def _fit(image: Image.Image, box: Box) -> tuple[Image.Image, tuple[int, int]]:
    """Resize `image` to fit inside `box` keeping its aspect ratio; return it and its top-left corner."""
    left, top, right, bottom = box
    bw, bh = right - left, bottom - top
    scale = min(bw / image.width, bh / image.height)
    w, h = max(1, round(image.width * scale)), max(1, round(image.height * scale))
    fitted = image.resize((w, h), Image.Resampling.BICUBIC, reducing_gap=2.0)
    return fitted, (left + (bw - w) // 2, top + (bh - h) // 2)


def _rgb(image: Image.Image) -> Image.Image:
    """RGB copy; transparency is composited onto white, as the Phi-3 processor does."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, BACKGROUND)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image.convert("RGB")


def _draw_label(draw: ImageDraw.ImageDraw, tile: Box, text: str, size: int, fill, color) -> Box:
    """Draw `text` in a filled box at the tile's top-left corner, fully inside the tile; return the box."""
    font = _font(size)
    left, top, right, bottom = tile
    pad = max(2, size // 6)
    tl, tt, tr, tb = draw.textbbox((0, 0), text, font=font)
    w, h = tr - tl + 2 * pad, tb - tt + 2 * pad
    # Never let the box leave the tile, whatever the font metrics say.
    w, h = min(w, right - left), min(h, bottom - top)
    box = (left, top, left + w, top + h)
    draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=fill)
    draw.text((left + pad - tl, top + pad - tt), text, font=font, fill=color)
    return box


def render_panel(
    candidates: Sequence[Image.Image],
    *,
    query: Image.Image | None = None,
    side: int = 2 * CROP,
) -> Panel:
    """Render the query (first cell, red frame, "QUERY") and candidates 1..k on a `side` x `side` canvas.

    Args:
        candidates: 2..20 candidate images in retrieval order; label i + 1 marks candidates[i].
        query: the shopper's photo, or None (then the grid holds only the candidates).
        side: canvas side in pixels, 336..1344.
    """
    k = len(candidates)
    if not MIN_CANDIDATES <= k <= MAX_CANDIDATES:
        raise InvalidQueryError(f"a panel holds {MIN_CANDIDATES}..{MAX_CANDIDATES} candidates, got {k}")
    if not CROP <= side <= MAX_SIDE:
        raise InvalidQueryError(f"panel side must be within {CROP}..{MAX_SIDE} px, got {side}")
    cells = k + (query is not None)
    columns, rows = grid_shape(cells)
    tile = side // max(columns, rows)
    # Center the grid; tiles are square so every candidate gets the same area.
    x0, y0 = (side - columns * tile) // 2, (side - rows * tile) // 2
    boxes = [
        (x0 + c * tile, y0 + r * tile, x0 + (c + 1) * tile, y0 + (r + 1) * tile)
        for r in range(rows)
        for c in range(columns)
    ][:cells]

    canvas = Image.new("RGB", (side, side), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    gutter = max(2, tile // 40)
    label_size = max(14, round(tile * 0.26))
    query_tile = query_label = None
    if query is not None:
        query_tile, boxes = boxes[0], boxes[1:]
        inner = tuple(v + d for v, d in zip(query_tile, (gutter, gutter, -gutter, -gutter), strict=True))
        img, at = _fit(_rgb(query), inner)
        canvas.paste(img, at)
        # A thick red frame, drawn inside the tile, sets the query apart from the candidates.
        frame = max(3, tile // 28)
        draw.rectangle(
            (query_tile[0], query_tile[1], query_tile[2] - 1, query_tile[3] - 1),
            outline=QUERY_COLOR,
            width=frame,
        )
        query_label = _draw_label(
            draw, query_tile, "QUERY", max(12, round(tile * 0.15)), QUERY_COLOR, QUERY_TEXT
        )

    labels = []
    for i, (image, box) in enumerate(zip(candidates, boxes, strict=True)):
        inner = (box[0] + gutter, box[1] + gutter, box[2] - gutter, box[3] - gutter)
        img, at = _fit(_rgb(image), inner)
        canvas.paste(img, at)
        draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), outline=GRID_LINE, width=1)
        labels.append(_draw_label(draw, box, str(i + 1), label_size, LABEL_FILL, LABEL_TEXT))
    return Panel(
        image=canvas,
        tiles=list(boxes),
        labels=labels,
        query_tile=query_tile,
        query_label=query_label,
        columns=columns,
        rows=rows,
    )


__all__ = [
    "CROP",
    "MAX_CANDIDATES",
    "MAX_SIDE",
    "MIN_CANDIDATES",
    "Panel",
    "grid_shape",
    "panel_side_for",
    "render_panel",
]
