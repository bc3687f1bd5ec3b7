"""Panel geometry (issue 6): every tile, label and the QUERY mark lie inside the canvas for k = 2..20, labels are
drawn (not just placed), and the PNG written to disk has the promised size."""

from __future__ import annotations

import itertools

import pytest
from PIL import Image

from mmsearch.errors import InvalidQueryError
from mmsearch.reranker.panel import (
    LABEL_FILL,
    LABEL_TEXT,
    QUERY_COLOR,
    grid_shape,
    panel_side_for,
    render_panel,
)


def _product(i: int, size=(300, 200)) -> Image.Image:
    # Mid-grey-ish colours distinct from the label colours, so label pixels can be told apart.
    return Image.new("RGB", size, (60 + 7 * i, 120, 180 - 5 * i))


def _inside(inner, outer) -> bool:
    return inner[0] >= outer[0] and inner[1] >= outer[1] and inner[2] <= outer[2] and inner[3] <= outer[3]


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _colors(image: Image.Image, box) -> set:
    return {c for _, c in image.crop(box).getcolors(maxcolors=1 << 20)}


@pytest.mark.parametrize("k", [2, 9, 10, 20])
def test_panel_png_geometry_keeps_everything_inside_the_canvas(k, tmp_path):
    panel = render_panel([_product(i) for i in range(k)], query=_product(99, (400, 400)), side=672)
    path = tmp_path / f"panel_{k}.png"
    panel.image.save(path)
    with Image.open(path) as saved:
        assert saved.size == (672, 672), "the saved PNG must have the requested side"
        saved = saved.convert("RGB")
    canvas = (0, 0, 672, 672)
    assert len(panel.tiles) == len(panel.labels) == k
    assert panel.columns * panel.rows >= k + 1
    assert _inside(panel.query_tile, canvas), "the query tile must be inside the canvas"
    assert _inside(panel.query_label, panel.query_tile), "the QUERY label must be inside the query tile"
    for tile, label in zip(panel.tiles, panel.labels, strict=True):
        assert _inside(tile, canvas), f"tile {tile} leaves the canvas"
        assert _inside(label, tile), f"label {label} leaves its tile {tile}"
    for a, b in itertools.combinations([panel.query_tile, *panel.tiles], 2):
        assert not _overlap(a, b), f"tiles {a} and {b} overlap"
    for label in panel.labels:
        assert {LABEL_FILL, LABEL_TEXT} <= _colors(saved, label), (
            "each label box shows its number in yellow on black"
        )
    q = panel.query_tile
    assert saved.getpixel((q[2] - 2, (q[1] + q[3]) // 2)) == QUERY_COLOR, "the query tile has a red frame"


@pytest.mark.parametrize("k", [2, 9, 10, 20])
def test_panel_labels_stay_large_enough_to_read(k):
    panel = render_panel([_product(i) for i in range(k)], query=_product(99), side=672)
    heights = [b[3] - b[1] for b in panel.labels]
    tile = panel.tiles[0][2] - panel.tiles[0][0]
    # Digits at least 1/5 of the tile tall; at k=20 on 672 px that is still > 25 px.
    assert min(heights) >= tile / 5, f"label heights {heights} for tiles of {tile} px"


def test_panel_tiles_follow_label_order_row_major():
    panel = render_panel([_product(i) for i in range(9)], query=_product(99), side=672)
    starts = [(t[1], t[0]) for t in [panel.query_tile, *panel.tiles]]
    assert starts == sorted(starts), "query first, then candidates 1..k left to right, top to bottom"


def test_panel_without_query_holds_only_candidates():
    panel = render_panel([_product(i) for i in range(4)], side=336)
    assert panel.query_tile is None and panel.query_label is None
    assert (panel.columns, panel.rows) == (2, 2)


def test_panel_composites_transparent_images_on_white():
    clear = Image.new("RGBA", (100, 100), (255, 0, 255, 0))
    panel = render_panel([clear, _product(1)], side=336)
    tile = panel.tiles[0]
    center = ((tile[0] + tile[2]) // 2, (tile[1] + tile[3]) // 2)
    assert panel.image.getpixel(center) == (255, 255, 255)


@pytest.mark.parametrize("k", [0, 1, 21])
def test_panel_refuses_candidate_counts_out_of_range(k):
    with pytest.raises(InvalidQueryError, match=f"a panel holds 2..20 candidates, got {k}"):
        render_panel([_product(i) for i in range(k)])


def test_panel_refuses_oversized_side():
    with pytest.raises(InvalidQueryError, match="panel side must be within 336..1344 px, got 2000"):
        render_panel([_product(0), _product(1)], side=2000)


@pytest.mark.parametrize(("num_crops", "side"), [(1, 336), (4, 672), (9, 1008), (16, 1344)])
def test_panel_side_is_whole_crops_for_num_crops(num_crops, side):
    assert panel_side_for(num_crops) == side


@pytest.mark.parametrize(("cells", "shape"), [(3, (2, 2)), (10, (4, 3)), (21, (5, 5))])
def test_grid_uses_ceil_sqrt_columns(cells, shape):
    assert grid_shape(cells) == shape
