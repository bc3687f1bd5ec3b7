"""The Phi-3 Vision parity kit's data as the tests read it: manifest, params and the prompts upstream ran."""

from __future__ import annotations

import json
from pathlib import Path

KIT = Path(__file__).parent / "data" / "parity" / "phi3_vision"
EXPECTED = json.loads((KIT / "expected.json").read_text())
MANIFEST = {m.get("file") or m.get("key"): m for m in EXPECTED["manifest"]}
PARAMS = json.loads((KIT / "params.json").read_text())["params"]
PROMPTS = {
    "p1": (
        "<|user|>\n<|image_1|>\nDescribe the product in one word.<|end|>\n<|assistant|>\n",
        ["landscape_rgb"],
    ),
    "p2": (
        "<|user|>\n<|image_1|>\n<|image_2|>\nWhich image shows a triangle?<|end|>\n<|assistant|>\n",
        ["portrait_rgb", "square_gray"],
    ),
    "pt": ("<|user|>\nred running shoes<|end|>\n<|assistant|>\n", []),
}
