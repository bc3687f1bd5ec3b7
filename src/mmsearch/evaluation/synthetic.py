"""An offline, procedurally drawn test set: patterned products (phone cases, mugs, shirts) and swatch queries.

Entry point: `generate_synthetic_set(out_dir, n_products=60, n_queries=20, seed=0) -> SyntheticSet`. It writes
`images/*.png`, a `products.jsonl` in the Amazon Reviews 2023 schema (what `mmsearch index` reads), the query
swatches under `queries/`, and `queries.jsonl` in our labelled format. Everything is deterministic by seed, and
product i is the same image whatever `n_products` is, so ids stay stable across sizes.

Every product has a brand (and phone cases a phone model) in its title only, never in its picture: "OtterBox
Gold leopard print phone case for iPhone 15". Every other query names the brand (and model) of one product with
the wanted look ("... from OtterBox for iPhone 15"), so only lexical matching on titles can find it.

Relevance of a product to a query "a <type> with this pattern" + swatch (pattern P in colourway C):
2 = same type, pattern and colourway (and, when the query names them, same brand and model); 1 = same pattern and
colourway otherwise (the look is right, the product is not); otherwise unlabelled (0).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from mmsearch.evaluation.datasets import EvalQuery, EvalSet, write_queries_jsonl

PRODUCT_TYPES = ("phone case", "mug", "shirt")
PATTERNS = ("leopard", "stripes", "dots", "checks", "plain")
# colourway -> (base colour, pattern colour)
COLOURWAYS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "gold": ((222, 170, 80), (60, 35, 20)),
    "pink": ((240, 150, 190), (110, 25, 70)),
    "teal": ((50, 150, 155), (240, 240, 225)),
    "red": ((195, 40, 45), (250, 235, 210)),
}
PATTERN_WORDS = {
    "leopard": "leopard print",
    "stripes": "striped",
    "dots": "polka dot",
    "checks": "checkered",
    "plain": "solid",
}
CATEGORIES = {"phone case": "Cell Phones & Accessories", "mug": "Amazon Home", "shirt": "AMAZON FASHION"}
INSTRUCTIONS = ("a {type} with this pattern", "{type} in this print", "I want a {type} that looks like this")
BRANDS = {
    "phone case": ("OtterBox", "Spigen", "Casetify"),
    "mug": ("Yeti", "Contigo", "Ember"),
    "shirt": ("Uniqlo", "Hanes", "Gildan"),
}
PHONE_MODELS = ("iPhone 15", "Galaxy S24", "Pixel 8")
_BACKGROUND = (246, 246, 244)
_OUTLINE = (70, 70, 70)
_MARKER = "synthetic.json"
_FORMAT = 2


@dataclass(frozen=True)
class SyntheticProduct:
    parent_asin: str
    product_type: str
    pattern: str
    colour: str
    image: str
    title: str
    brand: str = ""
    model: str = ""  # phone cases only


@dataclass
class SyntheticSet:
    """Where the generated files are, what was drawn, and the labelled queries as an `EvalSet`."""

    root: Path
    products_jsonl: Path
    queries_jsonl: Path
    products: list[SyntheticProduct]
    eval_set: EvalSet


# -- drawing --------------------------------------------------------------------------------------------------


def _texture(pattern: str, colour: str, size: int, rng: np.random.Generator) -> Image.Image:
    """A size x size RGB swatch of `pattern` in `colour`; scale and phase come from `rng`."""
    base, ink = COLOURWAYS[colour]
    yy, xx = np.mgrid[0:size, 0:size]  # (size, size) pixel coordinates
    period = size * rng.uniform(0.12, 0.18)
    px, py = rng.uniform(0, period, size=2)
    if pattern == "stripes":
        on = ((xx + yy + px) // (period / 2)) % 2 == 0
    elif pattern == "checks":
        on = (((xx + px) // (period / 2)) + ((yy + py) // (period / 2))) % 2 == 0
    elif pattern == "dots":
        dx = (xx + px) % period - period / 2
        dy = (yy + py) % period - period / 2
        on = dx**2 + dy**2 < (period * 0.28) ** 2
    else:
        on = np.zeros((size, size), dtype=bool)
    pixels = np.where(on[..., None], np.array(ink, np.uint8), np.array(base, np.uint8)).astype(np.uint8)
    img = Image.fromarray(pixels, "RGB")  # (size, size, 3)
    if pattern == "leopard":
        _draw_rosettes(img, base, ink, rng)
    return img


def _draw_rosettes(img: Image.Image, base, ink, rng: np.random.Generator) -> None:
    """Leopard-like spots: broken dark rings of small blobs around a slightly darker centre."""
    draw = ImageDraw.Draw(img)
    size = img.width
    centre_tone = tuple(int(b * 0.8 + i * 0.2) for b, i in zip(base, ink, strict=True))
    n = int(rng.integers(22, 30))
    for _ in range(n):
        cx, cy = rng.uniform(0, size, size=2)
        r = size * rng.uniform(0.05, 0.08)
        draw.ellipse([cx - r * 0.7, cy - r * 0.6, cx + r * 0.7, cy + r * 0.6], fill=centre_tone)
        for j in range(int(rng.integers(4, 7))):
            angle = 2 * math.pi * j / 6 + rng.uniform(-0.3, 0.3)
            bx, by = cx + r * math.cos(angle), cy + r * math.sin(angle)
            br = r * rng.uniform(0.25, 0.4)
            draw.ellipse([bx - br, by - br * 0.7, bx + br, by + br * 0.7], fill=ink)


def _silhouette(product_type: str, size: int, rng: np.random.Generator) -> Image.Image:
    """An 'L' mask (255 inside the product) for the product type, slightly scaled and shifted."""
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    s = size * rng.uniform(0.88, 1.0)
    ox = size / 2 + size * rng.uniform(-0.04, 0.04)
    oy = size / 2 + size * rng.uniform(-0.04, 0.04)
    if product_type == "phone case":
        w, h = s * 0.46, s * 0.82
        draw.rounded_rectangle([ox - w / 2, oy - h / 2, ox + w / 2, oy + h / 2], radius=s * 0.07, fill=255)
    elif product_type == "mug":
        w, h = s * 0.5, s * 0.56
        left = ox - w / 2 - s * 0.08
        draw.rounded_rectangle([left, oy - h / 2, left + w, oy + h / 2], radius=s * 0.04, fill=255)
        hr = s * 0.16
        hx = left + w
        draw.ellipse([hx - hr, oy - hr, hx + hr, oy + hr], outline=255, width=max(2, int(s * 0.06)))
    else:  # shirt: a T from body, shoulders and sleeves
        body = [
            (ox - s * 0.22, oy - s * 0.30),
            (ox - s * 0.08, oy - s * 0.36),
            (ox + s * 0.08, oy - s * 0.36),
            (ox + s * 0.22, oy - s * 0.30),
            (ox + s * 0.42, oy - s * 0.12),
            (ox + s * 0.32, oy - s * 0.02),
            (ox + s * 0.22, oy - s * 0.10),
            (ox + s * 0.22, oy + s * 0.40),
            (ox - s * 0.22, oy + s * 0.40),
            (ox - s * 0.22, oy - s * 0.10),
            (ox - s * 0.32, oy - s * 0.02),
            (ox - s * 0.42, oy - s * 0.12),
        ]
        draw.polygon(body, fill=255)
        draw.ellipse([ox - s * 0.08, oy - s * 0.40, ox + s * 0.08, oy - s * 0.30], fill=0)  # neckline
    return mask


def draw_product(
    product_type: str, pattern: str, colour: str, size: int, rng: np.random.Generator
) -> Image.Image:
    """A product photo stand-in: the patterned silhouette with an outline on a light background."""
    texture = _texture(pattern, colour, size, rng)
    mask = _silhouette(product_type, size, rng)
    canvas = Image.composite(texture, Image.new("RGB", (size, size), _BACKGROUND), mask)
    border = ImageChops.subtract(mask, mask.filter(ImageFilter.MinFilter(3)))  # the mask's 1-px rim
    canvas.paste(_OUTLINE, mask=border)
    if product_type == "phone case":  # camera module
        d = ImageDraw.Draw(canvas)
        bbox = mask.getbbox() or (0, 0, size, size)
        cs = size * 0.12
        x0, y0 = bbox[0] + size * 0.04, bbox[1] + size * 0.04
        d.rounded_rectangle([x0, y0, x0 + cs, y0 + cs], radius=cs * 0.25, fill=(40, 40, 45))
    return canvas


def draw_swatch(pattern: str, colour: str, size: int, rng: np.random.Generator) -> Image.Image:
    """The query image: a square fabric swatch of the pattern, with its own scale and phase."""
    return _texture(pattern, colour, size, rng)


# -- the set ----------------------------------------------------------------------------------------------------


def _combos(seed: int) -> list[tuple[str, str, str]]:
    combos = [(t, p, c) for t in PRODUCT_TYPES for p in PATTERNS for c in COLOURWAYS]
    order = np.random.default_rng([seed, 1]).permutation(len(combos))
    return [combos[i] for i in order]


def _product_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, 2, index])


def grade(
    product: SyntheticProduct, product_type: str, pattern: str, colour: str, brand: str = "", model: str = ""
) -> float:
    """Relevance of `product` to a query for (product_type, pattern, colour[, brand, model]): 2, 1 or 0."""
    if (product.pattern, product.colour) != (pattern, colour):
        return 0.0
    exact = product.product_type == product_type and (brand, model) in (
        ("", ""),
        (product.brand, product.model),
    )
    return 2.0 if exact else 1.0


def generate_synthetic_set(
    out_dir: str | Path,
    *,
    n_products: int = 60,
    n_queries: int = 20,
    seed: int = 0,
    image_size: int = 160,
) -> SyntheticSet:
    """Draw the products and queries into `out_dir` (reused when already generated with the same arguments)."""
    for name, value, lo in (
        ("n_products", n_products, 1),
        ("n_queries", n_queries, 1),
        ("image_size", image_size, 32),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
    root = Path(out_dir)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "queries").mkdir(parents=True, exist_ok=True)
    wanted = {
        "format": _FORMAT,
        "n_products": n_products,
        "n_queries": n_queries,
        "seed": seed,
        "size": image_size,
    }
    fresh = not ((root / _MARKER).is_file() and json.loads((root / _MARKER).read_text()) == wanted)

    combos = _combos(seed)
    products: list[SyntheticProduct] = []
    records = []
    for i in range(n_products):
        ptype, pattern, colour = combos[i % len(combos)]
        rng = _product_rng(seed, i)
        asin = f"SYN{seed}X{i:05d}"
        path = root / "images" / f"{asin}.png"
        if fresh or not path.is_file():
            draw_product(ptype, pattern, colour, image_size, rng).save(path)
        word_rng = np.random.default_rng([seed, 6, i])
        brand = BRANDS[ptype][int(word_rng.integers(len(BRANDS[ptype])))]
        model = PHONE_MODELS[int(word_rng.integers(len(PHONE_MODELS)))] if ptype == "phone case" else ""
        title = f"{brand} {colour.capitalize()} {PATTERN_WORDS[pattern]} {ptype}" + (
            f" for {model}" if model else ""
        )
        products.append(
            SyntheticProduct(asin, ptype, pattern, colour, str(path.resolve()), title, brand, model)
        )
        meta_rng = np.random.default_rng([seed, 3, i])
        records.append(
            {
                "parent_asin": asin,
                "title": title,
                "main_category": CATEGORIES[ptype],
                "price": round(float(meta_rng.uniform(5, 40)), 2),
                "average_rating": round(float(meta_rng.uniform(3, 5)), 1),
                "rating_number": int(meta_rng.integers(1, 2000)),
                "images": [{"thumb": None, "large": f"images/{asin}.png", "hi_res": None, "variant": "MAIN"}],
                "store": "mmsearch synthetic",
                "details": {"Product type": ptype, "Pattern": pattern, "Colour": colour},
            }
        )
    products_jsonl = root / "products.jsonl"
    products_jsonl.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")

    # Queries target looks that exist in the gallery, spread over as many distinct ones as possible.
    present = sorted({(p.product_type, p.pattern, p.colour) for p in products})
    qrng = np.random.default_rng([seed, 4])
    picks = [present[j] for j in qrng.permutation(len(present))]
    queries: list[EvalQuery] = []
    for q in range(n_queries):
        ptype, pattern, colour = picks[q % len(picks)]
        rng = np.random.default_rng([seed, 5, q])
        path = root / "queries" / f"q{q:04d}.png"
        if fresh or not path.is_file():
            draw_swatch(pattern, colour, image_size, rng).save(path)
        template = INSTRUCTIONS[int(rng.integers(len(INSTRUCTIONS)))]
        instruction = template.format(type=ptype)
        brand = model = ""
        if q % 2:  # every other query names the brand (and phone model) of one product with the wanted look
            targets = [
                p for p in products if (p.product_type, p.pattern, p.colour) == (ptype, pattern, colour)
            ]
            target = targets[int(rng.integers(len(targets)))]
            brand, model = target.brand, target.model
            instruction += f" from {brand}" + (f" for {model}" if model else "")
        relevance = {}
        for p in products:
            g = grade(p, ptype, pattern, colour, brand, model)
            if g > 0:
                relevance[p.parent_asin] = g
        queries.append(
            EvalQuery(
                id=f"q{q:04d}",
                image=str(path.resolve()),
                instruction=instruction,
                relevance=relevance,
            )
        )
    queries_jsonl = write_queries_jsonl(queries, root / "queries.jsonl")
    (root / _MARKER).write_text(json.dumps(wanted))
    eval_set = EvalSet(
        name="synthetic",
        queries=queries,
        source=str(products_jsonl),
        info={
            "seed": seed,
            "n_products": n_products,
            "n_queries": n_queries,
            "root": str(root),
            "note": "procedurally drawn products and swatches: a sanity check, not a benchmark of real photos",
        },
    )
    return SyntheticSet(root, products_jsonl, queries_jsonl, products, eval_set)


__all__ = [
    "COLOURWAYS",
    "PATTERNS",
    "PRODUCT_TYPES",
    "SyntheticProduct",
    "SyntheticSet",
    "draw_product",
    "draw_swatch",
    "generate_synthetic_set",
    "grade",
]
