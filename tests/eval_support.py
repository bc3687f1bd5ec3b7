"""Builders of small CIRR and FashionIQ trees in their published layouts, for the evaluation tests."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image


def png(path: Path, colour=(200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)
    return path


CIRR_NAMES = ["dev-1-0-img0", "dev-1-0-img1", "dev-2-3-img0", "dev-7-1-img1"]


def make_cirr(root: Path, entries=None, *, with_images=True) -> Path:
    """A miniature `cirr/` tree: captions/cap.rc2.val.json, image_splits/split.rc2.val.json, img_raw/dev/*.png."""
    (root / "captions").mkdir(parents=True)
    (root / "image_splits").mkdir()
    split = {name: f"./dev/{name}.png" for name in CIRR_NAMES}
    (root / "image_splits" / "split.rc2.val.json").write_text(json.dumps(split, indent=1))
    if with_images:
        for i, name in enumerate(CIRR_NAMES):
            png(root / "img_raw" / "dev" / f"{name}.png", (40 * i, 90, 200 - 40 * i))
    if entries is None:
        entries = [
            {
                "pairid": 11,
                "reference": "dev-1-0-img0",
                "target_hard": "dev-2-3-img0",
                "target_soft": {"dev-2-3-img0": 1.0},
                "caption": "make the dog sit on a red sofa",
                "img_set": {"id": 3, "members": CIRR_NAMES, "reference_rank": 0, "target_rank": 2},
            },
            {
                "pairid": 12,
                "reference": "dev-7-1-img1",
                "target_hard": "dev-1-0-img1",
                "target_soft": {"dev-1-0-img1": 1.0},
                "caption": "show two of them at night",
                "img_set": {"id": 4, "members": CIRR_NAMES, "reference_rank": 3, "target_rank": 1},
            },
        ]
    captions = root / "captions" / "cap.rc2.val.json"
    captions.write_text(json.dumps(entries, indent=4))
    return captions


FIQ_NAMES = ["B00A1", "B00B2", "B00C3"]


def make_fashioniq(root: Path, entries=None) -> Path:
    """A miniature FashionIQ tree: captions/cap.dress.val.json, image_splits/split.dress.val.json, images/."""
    (root / "captions").mkdir(parents=True)
    (root / "image_splits").mkdir()
    (root / "image_splits" / "split.dress.val.json").write_text(json.dumps(FIQ_NAMES))
    png(root / "images" / "B00A1.png")
    png(root / "images" / "B00B2.jpg", (10, 10, 10))
    png(root / "images" / "B00C3.png", (10, 200, 10))
    if entries is None:
        entries = [
            {
                "target": "B00B2",
                "candidate": "B00A1",
                "captions": ["is black and shorter.", " has no sleeves"],
            },
            {"target": "B00C3", "candidate": "B00B2", "captions": ["is green", ""]},
        ]
    captions = root / "captions" / "cap.dress.val.json"
    captions.write_text(json.dumps(entries, indent=4))
    return captions
