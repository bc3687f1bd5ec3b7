"""Phi-3 Vision input processing: the HD image transform and the prompt with its image placeholders expanded.

Entry point: `Phi3VisionProcessor.from_pretrained(dir)`, then `processor(prompt, images)` -> `BatchFeature` with
input_ids (1, L) (image N's slots hold the id -N), attention_mask, pixel_values (n, num_crops + 1, 3, 336, 336) and
image_sizes (n, 2). Behaviour follows the hub's `processing_phi3_v.py`; no torchvision.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import BatchFeature, PreTrainedTokenizerFast

from mmsearch.limits import CLIP_MEAN, CLIP_STD
from mmsearch.media.decode import ImageSource, open_image

IMAGE_TAG = re.compile(r"<\|image_(\d+)\|>")


class Phi3VisionImageProcessor:
    """HD transform: resize to at most `num_crops` crops of `crop_size`, white padding, plus a global view."""

    def __init__(
        self,
        num_crops: int = 16,
        crop_size: int = 336,
        image_mean: Sequence[float] = CLIP_MEAN,
        image_std: Sequence[float] = CLIP_STD,
        tokens_per_crop_side: int = 12,
    ):
        if not isinstance(num_crops, int) or num_crops < 1:
            raise ValueError(f"num_crops must be a positive integer, got {num_crops!r}")
        self.num_crops = num_crops
        self.crop_size = crop_size
        self.mean = torch.tensor(image_mean, dtype=torch.float32).reshape(3, 1, 1)
        self.std = torch.tensor(image_std, dtype=torch.float32).reshape(3, 1, 1)
        self.side = tokens_per_crop_side  # crop grid / 2 after the 2x2 merge (24 / 2 = 12)

    def hd_resize(self, image: Image.Image) -> Image.Image:
        """RGB image -> HD image whose sides are multiples of `crop_size` (at most `num_crops` crops)."""
        transposed = image.width < image.height
        if transposed:  # work on the landscape orientation; portraits get their padding left/right
            image = image.transpose(Image.Transpose.TRANSPOSE)
        ratio = image.width / image.height
        scale = 1
        while (scale + 1) * math.ceil((scale + 1) / ratio) <= self.num_crops:
            scale += 1
        new_w = scale * self.crop_size
        new_h = max(1, int(new_w / ratio))
        image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
        target_h = math.ceil(new_h / self.crop_size) * self.crop_size
        canvas = Image.new("RGB", (new_w, target_h), (255, 255, 255))
        canvas.paste(image, (0, (target_h - new_h) // 2))
        return canvas.transpose(Image.Transpose.TRANSPOSE) if transposed else canvas

    def num_image_tokens(self, height: int, width: int) -> int:
        """Image tokens for an HD image of `height` x `width` (multiples of crop_size)."""
        h, w = height // self.crop_size, width // self.crop_size
        return (h * w + 1) * self.side * self.side + 1 + (h + 1) * self.side

    def preprocess_one(self, image: Image.Image) -> tuple[torch.Tensor, tuple[int, int]]:
        """One image -> (num_crops + 1, 3, S, S) normalised crops [global, row-major sub-crops, zero padding], (H, W)."""
        # Alpha is dropped as in the released processor (transformers 4.x `convert("RGB")`), no EXIF rotation.
        hd = self.hd_resize(image.convert("RGB"))
        pixels = torch.from_numpy(np.asarray(hd, dtype=np.uint8).copy()).permute(2, 0, 1)  # (3, H, W)
        pixels = (pixels.float() / 255.0 - self.mean) / self.std
        s = self.crop_size
        _, height, width = pixels.shape
        # The global view is a bicubic resize of the *normalised* HD tensor, no antialias.
        glb = torch.nn.functional.interpolate(pixels[None], size=(s, s), mode="bicubic", align_corners=False)
        crops = pixels.reshape(3, height // s, s, width // s, s).permute(1, 3, 0, 2, 4).reshape(-1, 3, s, s)
        out = torch.zeros(self.num_crops + 1, 3, s, s)
        out[0] = glb[0]
        out[1 : 1 + crops.shape[0]] = crops
        return out, (height, width)

    def __call__(self, images: Sequence[ImageSource]) -> BatchFeature:
        """Images (PIL or anything `open_image` takes) -> pixel_values, image_sizes, num_img_tokens."""
        values, sizes = [], []
        for source in images:
            pv, size = self.preprocess_one(open_image(source))
            values.append(pv)
            sizes.append(size)
        return BatchFeature(
            {
                "pixel_values": torch.stack(values),  # (n, num_crops + 1, 3, S, S)
                "image_sizes": torch.tensor(sizes, dtype=torch.long),  # (n, 2) padded HD [height, width]
                "num_img_tokens": [self.num_image_tokens(h, w) for h, w in sizes],
            }
        )


class Phi3VisionProcessor:
    """Tokenizer + image processor: `<|image_N|>` becomes num_img_tokens copies of the id -N; every text chunk gets BOS."""

    def __init__(self, tokenizer: PreTrainedTokenizerFast, image_processor: Phi3VisionImageProcessor):
        self.tokenizer = tokenizer
        self.image_processor = image_processor

    @classmethod
    def from_pretrained(cls, path: str | Path, *, num_crops: int | None = None) -> Phi3VisionProcessor:
        """Load tokenizer.json/tokenizer_config.json and preprocessor_config.json from a local checkpoint dir."""
        path = Path(path)
        # The tokenizer.json as shipped: transformers 5's LlamaTokenizer would rebuild the normaliser and change ids.
        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(path))
        pre = {}
        if (path / "preprocessor_config.json").is_file():
            pre = json.loads((path / "preprocessor_config.json").read_text(encoding="utf-8"))
        image_processor = Phi3VisionImageProcessor(
            num_crops=num_crops if num_crops is not None else int(pre.get("num_crops", 16)),
            image_mean=pre.get("image_mean", CLIP_MEAN),
            image_std=pre.get("image_std", CLIP_STD),
        )
        return cls(tokenizer, image_processor)

    @property
    def num_crops(self) -> int:
        return self.image_processor.num_crops

    @property
    def stop_token_ids(self) -> list[int]:
        """Ids that end an assistant turn (`<|end|>`, `<|endoftext|>`), for `generate(eos_token_id=...)`."""
        ids = [self.tokenizer.convert_tokens_to_ids(t) for t in ("<|end|>", "<|endoftext|>")]
        return [i for i in ids if i is not None and i != self.tokenizer.unk_token_id]

    def apply_chat_template(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> str:
        """Phi-3 chat format: `<|role|>\\ncontent<|end|>\\n` per message, then `<|assistant|>\\n`."""
        parts = []
        for m in messages:
            if m.get("role") not in ("system", "user", "assistant"):
                raise ValueError(f"message role must be system, user or assistant, got {m.get('role')!r}")
            parts.append(f"<|{m['role']}|>\n{m['content']}<|end|>\n")
        if add_generation_prompt and (not messages or messages[-1]["role"] != "assistant"):
            parts.append("<|assistant|>\n")
        return "".join(parts)

    def __call__(self, text: str, images: Sequence[ImageSource] | None = None) -> BatchFeature:
        """One prompt with `<|image_1|>`..`<|image_n|>` (each once, in order) and its n images -> model inputs."""
        if not isinstance(text, str):
            raise TypeError(f"text must be one prompt string, got {type(text).__name__}")
        images = list(images or [])
        tags = [int(t) for t in IMAGE_TAG.findall(text)]
        if tags != list(range(1, len(images) + 1)):
            raise ValueError(
                f"the prompt's image tags must be <|image_1|>..<|image_{len(images)}|>, each once and in order, "
                f"for {len(images)} image(s); got {[f'<|image_{t}|>' for t in tags]}"
            )
        chunks = [self.tokenizer(chunk).input_ids for chunk in IMAGE_TAG.split(text)[::2]]
        features = self.image_processor(images) if images else None
        ids: list[int] = list(chunks[0])
        for n, chunk in enumerate(chunks[1:], start=1):
            ids += [-n] * features["num_img_tokens"][n - 1] + list(chunk)
        input_ids = torch.tensor([ids], dtype=torch.long)
        data = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
        if features is not None:
            data["pixel_values"] = features["pixel_values"]
            data["image_sizes"] = features["image_sizes"]
        return BatchFeature(data)

    def decode(self, token_ids, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(
            [int(i) for i in token_ids if int(i) >= 0], skip_special_tokens=skip_special_tokens
        )

    def batch_decode(self, sequences, skip_special_tokens: bool = True) -> list[str]:
        return [self.decode(s, skip_special_tokens=skip_special_tokens) for s in sequences]


__all__ = ["Phi3VisionImageProcessor", "Phi3VisionProcessor"]
