"""Phi-3 Vision reranker: one schema-constrained pass over a panel of the query and the candidates, validated into a
permutation of all hits (repaired, retried once, or falling back to retrieval order). Entry point:
`Phi3VisionReranker.from_pretrained(model, ...)` (`mmsearch.engine` calls it from settings); the model loads on
first use.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image, ImageDraw
from transformers import LogitsProcessorList

from mmsearch.errors import MMSearchError, ModelLoadError, RerankError
from mmsearch.limits import MAX_REASONS_CHARS
from mmsearch.media import ImageFetcher
from mmsearch.reranker.base import Reranker, RerankQuery, RerankResult, result_in_order
from mmsearch.reranker.constrained import RankingConstraint, reasons_bound_for, token_budget, token_table
from mmsearch.reranker.panel import MAX_CANDIDATES, panel_side_for, render_panel
from mmsearch.reranker.prompt import build_prompt
from mmsearch.reranker.schema import check_output, resolve_attempts
from mmsearch.types import Hit

# The retry keeps only a short reasons string: the likeliest cause of an unusable answer is running out of tokens.
RETRY_REASONS_CHARS = 24

ImageLoader = Callable[[Hit], Image.Image]


def placeholder_image(text: str = "no image") -> Image.Image:
    """What a candidate whose image cannot be loaded shows on the panel (it is still ranked, never dropped)."""
    img = Image.new("RGB", (256, 256), (200, 200, 200))
    ImageDraw.Draw(img).text((70, 120), text, fill=(60, 60, 60))
    return img


class Phi3VisionReranker(Reranker):
    """Reranks up to 20 hits with Phi-3 Vision; more hits keep their retrieval order after the reranked head.

    Args:
        model, processor: a loaded Phi-3 Vision and its processor (see `mmsearch.models.phi3_vision`), or None
            together with `loader` to load lazily.
        loader: zero-argument callable returning (model, processor), called once on first use.
        image_loader: Hit -> PIL image for the panel (default: its `image_url` through an `ImageFetcher`).
        max_new_tokens: generation budget; the reasons bound shrinks so the JSON always closes within it (a budget
            too small for k ids is raised to the minimum that fits them, with empty reasons).
        max_reasons_chars: upper bound on the reasons string.
    """

    name = "phi3_vision"

    def __init__(
        self,
        model=None,
        processor=None,
        *,
        loader: Callable[[], tuple] | None = None,
        image_loader: ImageLoader | None = None,
        max_new_tokens: int = 160,
        max_reasons_chars: int = MAX_REASONS_CHARS,
        source: str = "<in-memory model>",
    ):
        if (model is None or processor is None) and loader is None:
            raise RerankError("Phi3VisionReranker needs a model and a processor, or a loader")
        self._model, self._processor, self._loader = model, processor, loader
        self._image_loader = image_loader
        self._lock = threading.Lock()
        self.max_new_tokens = max_new_tokens
        self.max_reasons_chars = max_reasons_chars
        self.source = source

    @classmethod
    def from_pretrained(
        cls,
        model: str,
        *,
        device: str = "auto",
        dtype: str = "auto",
        num_crops: int = 4,
        max_new_tokens: int = 160,
        cache_dir: str | Path | None = None,
        device_map: str | dict | None = None,
        image_loader: ImageLoader | None = None,
        quantize: str = "none",
    ) -> Phi3VisionReranker:
        """A reranker for a hub id or local checkpoint dir, loaded on first use."""

        def load():
            from mmsearch.models.phi3_vision import load_phi3_vision

            try:
                return load_phi3_vision(
                    model,
                    device=device,
                    dtype=dtype,
                    num_crops=num_crops,
                    cache_dir=cache_dir,
                    device_map=device_map,
                    quantize=quantize,
                )
            except MMSearchError:
                raise
            except (OSError, ValueError, RuntimeError) as e:
                raise ModelLoadError(f"cannot load the Phi-3 Vision reranker from {model!r}: {e}") from None

        return cls(loader=load, image_loader=image_loader, max_new_tokens=max_new_tokens, source=model)

    # -- lazy parts ------------------------------------------------------------------------------------------------

    def load(self) -> tuple:
        """Load the model now (it is loaded on first use otherwise); returns (model, processor)."""
        with self._lock:
            if self._model is None:
                self._model, self._processor = self._loader()
                # The token table (~1-2 s for a 32k vocabulary) is built once, here rather than in a request.
                tokenizer = self._processor.tokenizer
                token_table(tokenizer, tokenizer.convert_tokens_to_ids("<|end|>")).warm()
        return self._model, self._processor

    def _image(self, hit: Hit) -> tuple[Image.Image, bool]:
        if self._image_loader is None:
            self._image_loader = _fetcher_loader()
        try:
            return self._image_loader(hit), True
        except MMSearchError:
            return placeholder_image(), False

    # -- reranking ---------------------------------------------------------------------------------------------

    def _rerank(self, query: RerankQuery, hits: list[Hit]) -> RerankResult:
        model, processor = self.load()
        t0 = time.perf_counter()
        head, tail = hits[:MAX_CANDIDATES], hits[MAX_CANDIDATES:]
        k = len(head)
        loaded = [self._image(h) for h in head]
        panel = render_panel(
            [img for img, _ in loaded], query=query.image, side=panel_side_for(processor.num_crops)
        )
        end_id = processor.tokenizer.convert_tokens_to_ids("<|end|>")
        timings = {"prepare_ms": (time.perf_counter() - t0) * 1e3, "prefill_ms": 0.0, "decode_ms": 0.0}
        stats = {
            "k": k,
            "passes": 0,
            "prompt_tokens": 0,
            "generated_tokens": 0,
            "missing_images": k - sum(ok for _, ok in loaded),
        }

        # A budget too small for k ids is raised to the minimum (reasons then empty): the ranking comes first.
        budget = max(self.max_new_tokens, token_budget(k, 0))
        bound = reasons_bound_for(k, budget, self.max_reasons_chars)
        stats["max_new_tokens"] = token_budget(k, bound)
        titles = [h.title for h in head]
        tries = []
        for reasons_chars in (bound, min(bound, RETRY_REASONS_CHARS)):
            raw = self._generate(
                model, processor, panel.image, query, titles, end_id, reasons_chars, timings, stats
            )
            tries.append((raw, check_output(raw, k, max_reasons_chars=reasons_chars)))
            if tries[-1][1].verdict != "invalid":
                break
        check = tries[-1][1]
        status, head_order, note = resolve_attempts([c for _, c in tries], k)
        notes = [note] if note else []
        missing = [h.id for h, (_, ok) in zip(head, loaded, strict=True) if not ok]
        if missing and status != "fallback":
            # The ranking is valid but rests on titles alone for these candidates: say so, never report "ok".
            status = "degraded"
            notes.append(f"{len(missing)} of {k} candidate images could not be loaded: {', '.join(missing)}")
        if tail:
            notes.append(
                f"only the first {k} of {len(hits)} hits were reranked; the rest keep retrieval order"
            )
        timings["total_ms"] = (time.perf_counter() - t0) * 1e3
        return result_in_order(
            hits,
            head_order + list(range(k, len(hits))),
            status=status,
            reason="; ".join(notes) or None,
            raw_output="\n---\n".join(raw for raw, _ in tries),
            reasons=check.reasons if status != "fallback" else "",
            timings=timings,
            stats=stats,
            missing_images=missing,
        )

    def _generate(self, model, processor, panel, query, titles, end_id, reasons_chars, timings, stats) -> str:
        """One constrained greedy pass; adds its prefill/decode ms and token counts; returns the generated text."""
        k = len(titles)
        prompt = build_prompt(
            query.instruction,
            titles,
            has_query_image=query.image is not None,
            max_reasons_chars=reasons_chars,
        )
        inputs = processor(prompt, [panel])
        device = model.get_input_embeddings().weight.device
        inputs = {name: value.to(device) for name, value in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
        constraint = RankingConstraint.build(
            processor.tokenizer, k, eos_token_id=end_id, max_reasons_chars=reasons_chars
        )
        prompt_len = inputs["input_ids"].shape[1]
        t0 = time.perf_counter()
        try:
            with torch.inference_mode():
                out = model.generate(
                    **inputs,
                    max_new_tokens=token_budget(k, reasons_chars),
                    do_sample=False,
                    logits_processor=LogitsProcessorList([constraint]),
                    eos_token_id=end_id,
                    pad_token_id=processor.tokenizer.pad_token_id,
                )
        except (RuntimeError, ValueError) as e:
            raise RerankError(f"Phi-3 Vision generation failed on a {prompt_len}-token prompt: {e}") from None
        t1 = time.perf_counter()
        first = constraint.first_call_at or t1
        timings["prefill_ms"] += (first - t0) * 1e3
        timings["decode_ms"] += (t1 - first) * 1e3
        timings["index_build_ms"] = timings.get("index_build_ms", 0.0) + constraint.index_build_ms
        generated = out[0, prompt_len:].tolist()
        stats["passes"] += 1
        stats["prompt_tokens"] += prompt_len
        stats["generated_tokens"] += len(generated)
        return constraint.spell(generated)


def _fetcher_loader() -> ImageLoader:
    """Hit -> image via a default `ImageFetcher` (bounded decoding, no cache), created on first use."""
    fetcher = None

    def load(hit: Hit) -> Image.Image:
        nonlocal fetcher
        if fetcher is None:
            fetcher = ImageFetcher(retries=1, timeout=10.0, max_workers=4)
        if not hit.image_url:
            raise RerankError(f"hit {hit.id!r} has no image_url")
        return fetcher.open(hit.image_url)

    return load


__all__ = ["RETRY_REASONS_CHARS", "ImageLoader", "Phi3VisionReranker", "placeholder_image"]
