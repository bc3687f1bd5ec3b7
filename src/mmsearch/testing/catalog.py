"""A small generated product catalog in the Amazon Reviews 2023 metadata schema, for smoke runs, tests and demos.

Entry point: `write_demo_catalog(out_dir)` writes `products.jsonl` plus procedurally drawn product images
(phone cases with leopard, zebra, floral... patterns, other leopard-themed items, electronics and appliances) and
`leopard_query.jpg`, a spotted leopard-skin pattern like the reference notebook's query photo. Nothing is
downloaded. The pictures are drawn, not photographed: with tiny random models they only exercise the plumbing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

SIDE = 256
Painter = Callable[[Image.Image, np.random.Generator], None]


def _leopard(img: Image.Image, rng: np.random.Generator, box=None, density: float = 1.0) -> None:
    """Rosettes: broken dark rings around a brown centre on a tawny ground."""
    left, top, right, bottom = box or (0, 0, img.width, img.height)
    draw = ImageDraw.Draw(img)
    draw.rectangle((left, top, right, bottom), fill=(214, 164, 84))
    n = int(density * (right - left) * (bottom - top) / 900)
    for _ in range(n):
        cx, cy = rng.uniform(left, right), rng.uniform(top, bottom)
        r = rng.uniform(7, 13)
        draw.ellipse((cx - r * 0.6, cy - r * 0.6, cx + r * 0.6, cy + r * 0.6), fill=(170, 110, 45))
        for a in range(int(rng.integers(3, 6))):
            ang = 2 * math.pi * a / 5 + rng.uniform(-0.3, 0.3)
            sx, sy = cx + r * math.cos(ang), cy + r * math.sin(ang)
            s = rng.uniform(2.5, 4.5)
            draw.ellipse((sx - s, sy - s, sx + s, sy + s), fill=(40, 28, 18))


def _zebra(img: Image.Image, rng: np.random.Generator, box) -> None:
    left, top, right, bottom = box
    draw = ImageDraw.Draw(img)
    draw.rectangle(box, fill=(245, 245, 240))
    y = top
    while y < bottom:
        w = rng.uniform(5, 11)
        wobble = rng.uniform(-12, 12)
        draw.polygon(
            [(left, y), (right, y + wobble), (right, y + wobble + w), (left, y + w)], fill=(20, 20, 20)
        )
        y += w + rng.uniform(6, 12)


def _floral(img: Image.Image, rng: np.random.Generator, box, ground=(250, 214, 226)) -> None:
    left, top, right, bottom = box
    draw = ImageDraw.Draw(img)
    draw.rectangle(box, fill=ground)
    for _ in range(18):
        cx, cy = rng.uniform(left, right), rng.uniform(top, bottom)
        colour = tuple(int(c) for c in rng.choice([(220, 60, 110), (250, 250, 250), (120, 180, 90)]))
        for a in range(5):
            ang = 2 * math.pi * a / 5
            px, py = cx + 7 * math.cos(ang), cy + 7 * math.sin(ang)
            draw.ellipse((px - 5, py - 5, px + 5, py + 5), fill=colour)
        draw.ellipse((cx - 3, cy - 3, cx + 3, cy + 3), fill=(250, 200, 40))


def _solid(colour) -> Callable[..., None]:
    def paint(img: Image.Image, rng: np.random.Generator, box) -> None:
        ImageDraw.Draw(img).rectangle(box, fill=colour)

    return paint


def _checker(img: Image.Image, rng: np.random.Generator, box) -> None:
    left, top, right, bottom = box
    draw = ImageDraw.Draw(img)
    step = 16
    for i, x in enumerate(range(int(left), int(right), step)):
        for j, y in enumerate(range(int(top), int(bottom), step)):
            fill = (30, 30, 30) if (i + j) % 2 else (235, 235, 235)
            draw.rectangle((x, y, x + step, y + step), fill=fill)


def _marble(img: Image.Image, rng: np.random.Generator, box) -> None:
    left, top, right, bottom = box
    draw = ImageDraw.Draw(img)
    draw.rectangle(box, fill=(238, 238, 242))
    for _ in range(7):
        x, y = rng.uniform(left, right), top
        points = [(x, y)]
        while y < bottom:
            x += rng.uniform(-14, 14)
            y += rng.uniform(8, 18)
            points.append((x, y))
        draw.line(points, fill=(150, 150, 165), width=2)


def phone_case(pattern: Callable[..., None]) -> Painter:
    """A portrait case with rounded corners and a camera cut-out, filled with `pattern`, on white."""

    def paint(img: Image.Image, rng: np.random.Generator) -> None:
        s = img.width
        box = (int(s * 0.28), int(s * 0.08), int(s * 0.72), int(s * 0.92))
        layer = Image.new("RGB", img.size, (255, 255, 255))
        pattern(layer, rng, box)
        mask = Image.new("L", img.size, 0)
        ImageDraw.Draw(mask).rounded_rectangle(box, radius=int(s * 0.07), fill=255)
        img.paste(layer, mask=mask)
        draw = ImageDraw.Draw(img)
        draw.rounded_rectangle(box, radius=int(s * 0.07), outline=(60, 60, 60), width=3)
        cam = (box[0] + 12, box[1] + 12, box[0] + 52, box[1] + 62)
        draw.rounded_rectangle(cam, radius=10, fill=(25, 25, 25))

    return paint


def _leopard_box(img: Image.Image, rng: np.random.Generator, box) -> None:
    _leopard(img, rng, box)


def leopard_object(shape: str) -> Painter:
    """A non-phone item printed with leopard spots: a square pillow, a round mug face, or a wide blanket."""

    def paint(img: Image.Image, rng: np.random.Generator) -> None:
        s = img.width
        box = {
            "pillow": (40, 40, s - 40, s - 40),
            "mug": (60, 50, s - 80, s - 40),
            "blanket": (10, 70, s - 10, s - 70),
        }[shape]
        layer = Image.new("RGB", img.size, (255, 255, 255))
        _leopard(layer, rng, box)
        mask = Image.new("L", img.size, 0)
        md = ImageDraw.Draw(mask)
        if shape == "mug":
            md.rounded_rectangle(box, radius=18, fill=255)
        else:
            md.rounded_rectangle(box, radius=30 if shape == "pillow" else 8, fill=255)
        img.paste(layer, mask=mask)
        if shape == "mug":
            ImageDraw.Draw(img).arc((s - 100, 90, s - 30, 170), -90, 90, fill=(60, 60, 60), width=10)

    return paint


def gadget(kind: str, colour) -> Painter:
    """Plain electronics and appliances: simple silhouettes in one colour."""

    def paint(img: Image.Image, rng: np.random.Generator) -> None:
        s = img.width
        d = ImageDraw.Draw(img)
        c = tuple(colour)
        if kind == "toaster":
            d.rounded_rectangle((40, 90, s - 40, s - 50), radius=25, fill=c)
            d.rectangle((80, 80, 120, 100), fill=(40, 40, 40))
            d.rectangle((s - 120, 80, s - 80, 100), fill=(40, 40, 40))
        elif kind == "kettle":
            d.ellipse((60, 70, s - 60, s - 30), fill=c)
            d.arc((s - 90, 90, s - 20, 180), -90, 90, fill=(40, 40, 40), width=12)
        elif kind == "earbuds":
            d.rounded_rectangle((60, 100, s - 60, s - 60), radius=40, fill=c)
            d.ellipse((85, 70, 125, 110), fill=(250, 250, 250), outline=(90, 90, 90), width=3)
            d.ellipse((s - 125, 70, s - 85, 110), fill=(250, 250, 250), outline=(90, 90, 90), width=3)
        elif kind == "cable":
            d.line([(30, 60), (100, 120), (150, 90), (220, 200)], fill=c, width=10, joint="curve")
            d.rectangle((210, 190, 236, 230), fill=(170, 170, 170))
        elif kind == "speaker":
            d.rounded_rectangle((70, 40, s - 70, s - 40), radius=30, fill=c)
            d.ellipse((95, 120, s - 95, s - 70), fill=(30, 30, 30))
        else:  # power bank
            d.rounded_rectangle((80, 40, s - 80, s - 40), radius=14, fill=c)
            for i in range(4):
                d.ellipse((110 + i * 12, 60, 118 + i * 12, 68), fill=(90, 220, 120))

    return paint


# (asin, title, category, price, rating, rating count, painter, seed)
_PRODUCTS: list[tuple[str, str, str, float | None, float, int, Painter]] = [
    ("B0LEOPCASE1", "Leopard Print Phone Case for iPhone 15, Slim Shockproof Cover", "Cell Phones & Accessories", 12.99, 4.6, 2310, phone_case(_leopard_box)),
    ("B0LEOPCASE2", "Cheetah Spots Silicone Case for Samsung Galaxy S24", "Cell Phones & Accessories", 9.49, 4.3, 874, phone_case(_leopard_box)),
    ("B0ZEBRACASE", "Zebra Stripe Hard Phone Case, Black and White", "Cell Phones & Accessories", 10.99, 4.1, 402, phone_case(_zebra)),
    ("B0FLORALCS1", "Pink Floral Phone Case with Raised Edges", "Cell Phones & Accessories", 8.99, 4.4, 1290, phone_case(_floral)),
    ("B0MARBLECS1", "White Marble Phone Case, Glossy Finish", "Cell Phones & Accessories", 11.5, 4.2, 655, phone_case(_marble)),
    ("B0CHECKCS01", "Checkerboard Phone Case, Retro Style", "Cell Phones & Accessories", 7.99, 3.9, 210, phone_case(_checker)),
    ("B0RUGGEDBLK", "Rugged Black Armor Phone Case with Kickstand", "Cell Phones & Accessories", 15.99, 4.5, 5021, phone_case(_solid((35, 35, 38)))),
    ("B0MINTCASE1", "Mint Green Liquid Silicone Phone Case", "Cell Phones & Accessories", 6.99, 4.0, 320, phone_case(_solid((150, 215, 190)))),
    ("B0LEOPPILLW", "Leopard Print Throw Pillow Cover 18x18", "Home & Kitchen", 14.99, 4.5, 980, leopard_object("pillow")),
    ("B0LEOPMUG01", "Leopard Spotted Ceramic Coffee Mug", "Home & Kitchen", 13.0, 4.7, 150, leopard_object("mug")),
    ("B0LEOPBLNKT", "Leopard Fleece Throw Blanket, Soft and Warm", "Home & Kitchen", 24.99, 4.8, 3200, leopard_object("blanket")),
    ("B0EARBUDS01", "Wireless Earbuds with Charging Case", "Electronics", 29.99, 4.2, 7710, gadget("earbuds", (240, 240, 244))),
    ("B0USBCCABLE", "USB-C to USB-C Cable, 6 ft, Braided", "Electronics", 8.49, 4.6, 12050, gadget("cable", (70, 90, 200))),
    ("B0SPEAKER01", "Portable Bluetooth Speaker, Waterproof", "Electronics", 39.99, 4.4, 2650, gadget("speaker", (200, 60, 50))),
    ("B0POWERBANK", "10000mAh Power Bank, Slim", "Electronics", 19.99, None, 0, gadget("bank", (60, 60, 70))),
    ("B0TOASTER01", "2-Slice Stainless Steel Toaster", "Appliances", 34.99, 4.3, 1800, gadget("toaster", (190, 190, 198))),
    ("B0KETTLE001", "Electric Kettle 1.7L, Cordless", "Appliances", 27.99, 4.5, 4400, gadget("kettle", (230, 230, 235))),
    ("B0TOASTRED1", "Retro Red Toaster, Wide Slots", "Appliances", 44.0, 4.1, 530, gadget("toaster", (200, 40, 45))),
]  # fmt: skip


@dataclass(frozen=True)
class DemoCatalog:
    """Where the generated catalog lives and what it holds."""

    root: Path
    jsonl: Path
    query_image: Path
    records: list[dict[str, Any]]

    def image_path(self, asin: str) -> Path:
        return self.root / "images" / f"{asin}.jpg"

    def title(self, asin: str) -> str:
        return next(r["title"] for r in self.records if r["parent_asin"] == asin)


def leopard_query_image(side: int = SIDE, seed: int = 7) -> Image.Image:
    """A full-frame leopard-skin pattern: the shopper's 'this image theme' photo."""
    img = Image.new("RGB", (side, side))
    _leopard(img, np.random.default_rng(seed), density=1.3)
    return img


def product_image(index: int, side: int = SIDE) -> Image.Image:
    img = Image.new("RGB", (side, side), (255, 255, 255))
    _PRODUCTS[index][6](img, np.random.default_rng(1000 + index))
    return img


def write_demo_catalog(
    out_dir: str | Path, *, extra_records: list[dict[str, Any]] | None = None
) -> DemoCatalog:
    """Write `products.jsonl`, `images/<asin>.jpg` and `leopard_query.jpg` under `out_dir` (idempotent).

    `extra_records` are appended as given (their image paths relative to `out_dir`); tests use them for odd ids.
    """
    root = Path(out_dir)
    (root / "images").mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    for i, (asin, title, category, price, rating, count, _paint) in enumerate(_PRODUCTS):
        rel = f"images/{asin}.jpg"
        product_image(i).save(root / rel, quality=92)
        records.append(
            {
                "parent_asin": asin,
                "title": title,
                "main_category": category,
                "price": None if price is None else f"${price:.2f}",
                "average_rating": rating,
                "rating_number": count,
                "images": [{"thumb": None, "large": rel, "hi_res": None, "variant": "MAIN"}],
                "store": "mmsearch demo",
                "details": {"Generated": "procedurally drawn for offline runs"},
            }
        )
    records.extend(extra_records or [])
    jsonl = root / "products.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in records))
    query = root / "leopard_query.jpg"
    leopard_query_image().save(query, quality=92)
    return DemoCatalog(root=root, jsonl=jsonl, query_image=query, records=records)


__all__ = ["DemoCatalog", "leopard_query_image", "product_image", "write_demo_catalog"]
