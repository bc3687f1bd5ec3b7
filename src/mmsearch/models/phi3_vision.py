"""Native Phi-3 Vision (microsoft/Phi-3-vision-128k-instruct): transformers' Phi-3 decoder plus a CLIP HD image embedding.

Entry point: `Phi3VisionForCausalLM(Phi3VisionConfig())`; load real weights with
`mmsearch.models.phi3_vision_loader.load_phi3_vision`. Attribute names are the official checkpoint keys
(`model.vision_embed_tokens.img_processor.vision_model.*`, `model.vision_embed_tokens.sub_GN`, ...), so the official
safetensors load strictly without a rename table. Image placeholder positions carry negative ids (see the processor).
"""

from __future__ import annotations

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel, GenerationMixin, Phi3Config, Phi3Model
from transformers.configuration_utils import PreTrainedConfig
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.models.phi3.modeling_phi3 import Phi3PreTrainedModel

from mmsearch.models.hf_cache import DECODER_ARG, GENERATE_ARG, OUTPUT_FIELD, output_cache, pop_cache

# LongRoPE factors of the official config.json (48 = head_dim / 2 values each).
OFFICIAL_LONG_FACTOR = [
    1.0299999713897705, 1.0499999523162842, 1.0499999523162842, 1.0799999237060547, 1.2299998998641968,
    1.2299998998641968, 1.2999999523162842, 1.4499999284744263, 1.5999999046325684, 1.6499998569488525,
    1.8999998569488525, 2.859999895095825, 3.68999981880188, 5.419999599456787, 5.489999771118164,
    5.489999771118164, 9.09000015258789, 11.579999923706055, 15.65999984741211, 15.769999504089355,
    15.789999961853027, 18.360000610351562, 21.989999771118164, 23.079999923706055, 30.009998321533203,
    32.35000228881836, 32.590003967285156, 35.56000518798828, 39.95000457763672, 53.840003967285156,
    56.20000457763672, 57.95000457763672, 59.29000473022461, 59.77000427246094, 59.920005798339844,
    61.190006256103516, 61.96000671386719, 62.50000762939453, 63.3700065612793, 63.48000717163086,
    63.48000717163086, 63.66000747680664, 63.850006103515625, 64.08000946044922, 64.760009765625,
    64.80001068115234, 64.81001281738281, 64.81001281738281,
]  # fmt: skip
OFFICIAL_SHORT_FACTOR = (
    [1.05] * 3 + [1.1] * 3 + [1.2500000000000002] * 2 + [1.4000000000000004, 1.4500000000000004, 1.5500000000000005]
    + [1.8500000000000008, 1.9000000000000008] + [2.000000000000001] * 19 + [2.1000000000000005] * 2 + [2.2]
    + [2.3499999999999996] * 4 + [2.3999999999999995] * 2 + [2.6499999999999986, 2.6999999999999984]
    + [2.8999999999999977, 2.9499999999999975] + [3.049999999999997] * 3
)  # fmt: skip

OFFICIAL_EMBD_LAYER = {
    "embedding_cls": "image",
    "hd_transform_order": "sub_glb",
    "projection_cls": "mlp",
    "use_hd_transform": True,
    "with_learnable_separator": True,
}
OFFICIAL_IMG_PROCESSOR = {
    "image_dim_out": 1024,
    "model_name": "openai/clip-vit-large-patch14-336",
    "name": "clip_vision_model",
    "num_img_tokens": 144,
}
# The hub code hard-codes this CLIP ViT-L/14-336 tower; official config.json files carry no vision_config.
OFFICIAL_VISION_CONFIG = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "image_size": 336,
    "patch_size": 14,
    "num_channels": 3,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "projection_dim": 768,
}


@strict
class Phi3VisionConfig(Phi3Config):
    """Phi-3 Vision config: Phi3Config (text) + `vision_config` (CLIPVisionConfig) + the hub's `embd_layer`/`img_processor`.

    Defaults are the numbers of microsoft/Phi-3-vision-128k-instruct. An official config.json (no `vision_config`,
    rope type "su") loads as is; tiny test checkpoints add a `vision_config` dict to shrink the CLIP tower.
    """

    model_type = "phi3_v"
    sub_configs_defaults = {"vision_config": CLIPVisionConfig}

    vocab_size: int = 32064
    max_position_embeddings: int = 131072
    original_max_position_embeddings: int = 4096
    eos_token_id: int | list[int] | None = 2
    sliding_window: int | None = 131072
    vision_config: dict | PreTrainedConfig | None = None
    embd_layer: dict | None = None
    img_processor: dict | None = None

    def __post_init__(self, **kwargs):
        rope_scaling = kwargs.pop("rope_scaling", None)
        if rope_scaling is None and self.rope_parameters is None:
            rope_scaling = {
                "type": "su",
                "long_factor": OFFICIAL_LONG_FACTOR,
                "short_factor": OFFICIAL_SHORT_FACTOR,
            }
        if rope_scaling is not None:
            kwargs["rope_scaling"] = self._longrope_from_hub(rope_scaling)
        self.embd_layer = {**OFFICIAL_EMBD_LAYER, **(self.embd_layer or {})}
        self.img_processor = {**OFFICIAL_IMG_PROCESSOR, **(self.img_processor or {})}
        if self.vision_config is None:
            self.vision_config = CLIPVisionConfig(**OFFICIAL_VISION_CONFIG)
        elif isinstance(self.vision_config, dict):
            self.vision_config = CLIPVisionConfig(**{**OFFICIAL_VISION_CONFIG, **self.vision_config})
        super().__post_init__(**kwargs)
        self._check_vision()

    def _longrope_from_hub(self, rope_scaling: dict) -> dict:
        # transformers 5 does not accept the hub's legacy "su" name; it is LongRoPE with factor = 131072 / 4096.
        rope = dict(rope_scaling)
        kind = rope.pop("type", None) or rope.get("rope_type")
        if kind in ("su", "longrope"):
            rope["rope_type"] = "longrope"
            rope.setdefault("factor", self.max_position_embeddings / self.original_max_position_embeddings)
        elif kind is not None:
            rope["rope_type"] = kind
        return rope

    def _check_vision(self) -> None:
        e = self.embd_layer
        wanted = {"use_hd_transform": True, "with_learnable_separator": True, "hd_transform_order": "sub_glb"}
        for key, value in wanted.items():
            if e.get(key) != value:
                raise ValueError(
                    f"embd_layer.{key}: only {value!r} is supported (the released model), got {e.get(key)!r}"
                )
        if e.get("projection_cls") != "mlp":
            raise ValueError(
                f"embd_layer.projection_cls: only 'mlp' is supported, got {e.get('projection_cls')!r}"
            )
        v = self.vision_config
        if self.img_processor["image_dim_out"] != v.hidden_size:
            raise ValueError(
                f"img_processor.image_dim_out ({self.img_processor['image_dim_out']}) must equal "
                f"vision_config.hidden_size ({v.hidden_size})"
            )
        grid = v.image_size // v.patch_size
        if grid % 2 or v.image_size % v.patch_size:
            raise ValueError(
                f"vision patch grid must be even for the 2x2 merge, got {v.image_size}/{v.patch_size}"
            )
        if self.img_processor["num_img_tokens"] != (grid // 2) ** 2:
            raise ValueError(
                f"img_processor.num_img_tokens ({self.img_processor['num_img_tokens']}) must be "
                f"(grid/2)^2 = {(grid // 2) ** 2} for a {grid}x{grid} patch grid"
            )

    @property
    def crop_size(self) -> int:
        """Side of one square crop in pixels (336 for the released model)."""
        return self.vision_config.image_size


class ClipPatchFeatures(nn.Module):
    """Native `CLIPVisionModel` under the official key prefix `vision_model.`; returns penultimate-layer patch features."""

    def __init__(self, config: Phi3VisionConfig):
        super().__init__()
        self.vision_model = CLIPVisionModel(config.vision_config)
        # hidden_states index as in the hub (`layer_idx`, default -2): entry 0 is the embedding after pre_layrnorm.
        n_layers = config.vision_config.num_hidden_layers
        layer_idx = config.img_processor.get("layer_idx", -2)
        self.num_layers_run = layer_idx % (n_layers + 1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(n, 3, S, S) -> (n, grid*grid, C): CLS dropped, no post_layernorm, later layers skipped."""
        vm = self.vision_model
        hidden = vm.pre_layrnorm(vm.embeddings(pixel_values))  # (n, 1 + grid*grid, C)
        for layer in vm.encoder.layers[: self.num_layers_run]:
            hidden = layer(hidden, None)
        return hidden[:, 1:]


class Phi3HDImageEmbedding(nn.Module):
    """HD image projector: CLIP features of the global view and of the sub-crops, 2x2 merge, separators, MLP."""

    def __init__(self, config: Phi3VisionConfig):
        super().__init__()
        dim = config.img_processor["image_dim_out"]
        self.crop_size = config.crop_size
        self.grid = config.vision_config.image_size // config.vision_config.patch_size
        self.img_processor = ClipPatchFeatures(config)
        # Learnable separators, in the merged (4 * C) space: sub_GN ends each grid row, glb_GN splits sub | global.
        self.glb_GN = nn.Parameter(torch.zeros(1, 1, 4 * dim))
        self.sub_GN = nn.Parameter(torch.zeros(1, 1, 1, 4 * dim))
        # Keys img_projection.0 / .2 as in the checkpoint; GELU is the exact (erf) one.
        self.img_projection = nn.Sequential(
            nn.Linear(4 * dim, config.hidden_size),
            nn.GELU(),
            nn.Linear(config.hidden_size, config.hidden_size),
        )

    def _merge_2x2(self, feats: torch.Tensor, h_crop: int, w_crop: int) -> torch.Tensor:
        """(h_crop*w_crop, grid*grid, C) row-major crops -> (h_crop*g2, w_crop*g2, 4C) stitched, g2 = grid/2."""
        n, _, c = feats.shape
        g2 = self.grid // 2
        x = feats.reshape(n, g2, 2, g2, 2, c)  # (n, row, row offset, col, col offset, C)
        x = x.permute(0, 1, 3, 2, 4, 5).reshape(n, g2, g2, 4 * c)  # channels ordered (row off, col off, C)
        x = x.reshape(h_crop, w_crop, g2, g2, 4 * c).permute(0, 2, 1, 3, 4)  # (h_crop, g2, w_crop, g2, 4C)
        return x.reshape(h_crop * g2, w_crop * g2, 4 * c)

    def _with_newlines(self, grid_feats: torch.Tensor) -> torch.Tensor:
        """(H, W, 4C) -> (H * (W + 1), 4C): sub_GN appended to every row."""
        h = grid_feats.shape[0]
        newline = self.sub_GN.reshape(1, 1, -1).expand(h, 1, -1)  # (H, 1, 4C)
        return torch.cat([grid_feats, newline], dim=1).reshape(-1, grid_feats.shape[-1])

    def forward(self, pixel_values: torch.Tensor, image_sizes: torch.Tensor) -> torch.Tensor:
        """pixel_values (n_images, 1 + max_crops, 3, S, S), image_sizes (n_images, 2) -> (total image tokens, hidden)."""
        if pixel_values.ndim != 5 or image_sizes is None or len(image_sizes) != pixel_values.shape[0]:
            raise ValueError(
                f"expected pixel_values (n_images, crops, 3, {self.crop_size}, {self.crop_size}) and image_sizes "
                f"(n_images, 2), got {tuple(pixel_values.shape)} and "
                f"{None if image_sizes is None else tuple(torch.as_tensor(image_sizes).shape)}"
            )
        sizes = [
            (int(h) // self.crop_size, int(w) // self.crop_size)
            for h, w in torch.as_tensor(image_sizes).tolist()
        ]
        for h_crop, w_crop in sizes:
            if h_crop * w_crop + 1 > pixel_values.shape[1] or h_crop < 1 or w_crop < 1:
                raise ValueError(
                    f"image_sizes {sizes} do not fit pixel_values with {pixel_values.shape[1]} crops"
                )
        # Only the crops in use go through CLIP (the zero padding slots are discarded upstream anyway).
        used = torch.cat(
            [pixel_values[i, : 1 + h * w] for i, (h, w) in enumerate(sizes)]
        )  # (sum crops, 3, S, S)
        dev = self.glb_GN.device
        feats = self.img_processor(used.to(device=dev, dtype=self.glb_GN.dtype))  # (sum crops, grid*grid, C)
        rows, start = [], 0
        for h_crop, w_crop in sizes:
            glb = self._merge_2x2(feats[start : start + 1], 1, 1)  # (g2, g2, 4C)
            sub = self._merge_2x2(feats[start + 1 : start + 1 + h_crop * w_crop], h_crop, w_crop)
            start += 1 + h_crop * w_crop
            # "sub_glb" layout: sub-crop grid with newlines | glb_GN | global grid with newlines
            rows += [self._with_newlines(sub), self.glb_GN.reshape(1, -1), self._with_newlines(glb)]
        return self.img_projection(torch.cat(rows))  # (total image tokens, hidden)


class Phi3VisionModel(Phi3Model):
    """transformers' native Phi-3 decoder whose token embedding writes image features into negative-id positions."""

    config: Phi3VisionConfig

    def __init__(self, config: Phi3VisionConfig):
        super().__init__(config)
        self.vision_embed_tokens = Phi3HDImageEmbedding(config)

    def embed(
        self,
        input_ids: torch.LongTensor,
        pixel_values: torch.Tensor | None = None,
        image_sizes: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token embeddings (batch, seq, hidden) with image rows written, in order, where `input_ids < 0`."""
        image_mask = input_ids < 0  # never modifies input_ids (the hub clamps them in place)
        embeds = self.embed_tokens(input_ids.clamp(min=0))
        if not bool(image_mask.any()):
            return embeds
        if pixel_values is None:
            raise ValueError(
                "input_ids contain image placeholders (negative ids) but no pixel_values were given"
            )
        image_rows = self.vision_embed_tokens(pixel_values, image_sizes).to(embeds.device, embeds.dtype)
        n_slots = int(image_mask.sum())
        if image_rows.shape[0] != n_slots:
            raise ValueError(
                f"expected {image_rows.shape[0]} image tokens for the given images, got {n_slots}"
            )
        return embeds.masked_scatter(image_mask.unsqueeze(-1), image_rows)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        pixel_values: torch.Tensor | None = None,
        image_sizes: torch.Tensor | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        """The decoder's forward; the KV cache comes as `cache` or `past_key_values` (see `hf_cache`)."""
        cache = pop_cache(kwargs)
        if input_ids is not None and inputs_embeds is None:
            inputs_embeds = self.embed(input_ids, pixel_values, image_sizes)
            input_ids = None
        return super().forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **{DECODER_ARG: cache},
            **kwargs,
        )


class Phi3VisionForCausalLM(Phi3PreTrainedModel, GenerationMixin):
    """Phi-3 Vision with its LM head; `generate(input_ids, attention_mask, pixel_values, image_sizes, ...)` uses the KV cache.

    Image features are computed only when the step feeds the whole prompt (prefill, or the rebuilt cache below);
    later decode steps reuse the cache.

    LongRoPE across `original_max_position_embeddings` (4096): the rotary factors depend on the sequence length,
    short up to 4096 positions, long beyond. When a generated sequence first grows past 4096, the cached keys were
    rotated with the short factors, so we drop the cache and recompute the whole sequence (images included) with
    the long factors, once, then decode on. This is what transformers' own Phi-3 does; the hub's remote code kept
    the cache and mixed both factors. We chose the recompute because cached generation then equals full recompute
    (`use_cache=False`) token for token, at the cost of one extra prefill per generation that crosses 4096.
    The same holds whichever keyword (`cache`, `past_key_values`) the installed transformers uses.
    """

    config: Phi3VisionConfig
    _no_split_modules = ["Phi3DecoderLayer", "CLIPEncoderLayer"]

    def __init__(self, config: Phi3VisionConfig):
        super().__init__(config)
        self.model = Phi3VisionModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.embed_tokens

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_sizes: torch.Tensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """Logits (batch, seq or logits_to_keep, vocab). `input_ids < 0` are image slots filled from `pixel_values`.

        The KV cache comes as `cache` or `past_key_values`; read it back with `hf_cache.output_cache(out)`.
        """
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            pixel_values=pixel_values,
            image_sizes=image_sizes,
            **kwargs,
        )
        hidden = out.last_hidden_state
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        return CausalLMOutputWithPast(logits=self.lm_head(hidden), **{OUTPUT_FIELD: output_cache(out)})

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        pixel_values: torch.Tensor | None = None,
        image_sizes: torch.Tensor | None = None,
        **kwargs,
    ):
        cache = pop_cache(kwargs)  # `generate` names it `cache` (5.24) or `past_key_values` (5.23)
        # LongRoPE: see the class docstring. The step that first passes the limit recomputes everything.
        limit = self.config.original_max_position_embeddings
        if cache is not None and input_ids.shape[1] > limit and 0 < cache.get_seq_length() <= limit:
            cache = None
            kwargs["next_sequence_length"] = None
        inputs = super().prepare_inputs_for_generation(input_ids, **{GENERATE_ARG: cache}, **kwargs)
        # Images are needed whenever this step feeds the whole prompt (its placeholders are in it).
        fed = inputs.get("input_ids")
        if pixel_values is not None and fed is not None and fed.shape[1] == input_ids.shape[1]:
            inputs["pixel_values"] = pixel_values
            inputs["image_sizes"] = image_sizes
        return inputs


def load_phi3_vision(*args, **kwargs):
    """Shortcut for `mmsearch.models.phi3_vision_loader.load_phi3_vision` (same signature)."""
    from mmsearch.models.phi3_vision_loader import load_phi3_vision as _load

    return _load(*args, **kwargs)


__all__ = [
    "ClipPatchFeatures",
    "Phi3HDImageEmbedding",
    "Phi3VisionConfig",
    "Phi3VisionForCausalLM",
    "Phi3VisionModel",
    "load_phi3_vision",
]
