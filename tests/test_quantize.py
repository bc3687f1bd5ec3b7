"""Weight-only int8 (`mmsearch.models.quantize`): both kernel paths agree with the float linear, and the Phi-3
parity kit's logits stay close to the unquantised model's."""

from __future__ import annotations

import pytest
import torch
from phi3_kit import KIT, PROMPTS
from PIL import Image
from test_phi3_vision_parity import write_kit_checkpoint

from mmsearch.errors import ModelLoadError
from mmsearch.models.phi3_vision_loader import load_phi3_vision
from mmsearch.models.quantize import PACKED_ROWS_MAX, Int8Linear


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, PACKED_ROWS_MAX + 1])  # the fused int8 kernel, then the dequantised GEMM
def test_int8_linear_is_within_quantisation_error_of_the_float_linear(dtype, rows):
    torch.manual_seed(0)
    linear = torch.nn.Linear(256, 96).to(dtype)
    x = torch.randn(2, rows, 256, dtype=dtype)
    with torch.inference_mode():
        want, got = linear(x).float(), Int8Linear.from_linear(linear)(x).float()
    assert got.shape == want.shape
    assert float((got - want).norm() / want.norm()) < 0.02


@pytest.fixture(scope="module")
def kit_dir(tmp_path_factory):
    return write_kit_checkpoint(tmp_path_factory.mktemp("phi3v_kit_int8"))


def test_int8_reranker_logits_stay_close_on_the_parity_kit(kit_dir):
    ref, processor = load_phi3_vision(str(kit_dir), device="cpu", dtype="bfloat16", num_crops=4)
    q, _ = load_phi3_vision(str(kit_dir), device="cpu", dtype="bfloat16", num_crops=4, quantize="int8")
    assert any(isinstance(m, Int8Linear) for m in q.modules())
    assert not any(isinstance(m, Int8Linear) for m in q.model.vision_embed_tokens.modules())
    text, names = PROMPTS["p1"]
    batch = processor(text, [Image.open(KIT / "images" / f"{n}.png") for n in names])
    with torch.inference_mode():
        want, got = ref(**batch).logits[0].float(), q(**batch).logits[0].float()
    assert float((got - want).abs().max()) < 0.1 * float(want.std())
    assert float((got.argmax(-1) == want.argmax(-1)).float().mean()) >= 0.95


def test_unknown_quantize_mode_is_refused(kit_dir):
    with pytest.raises(ModelLoadError, match="quantize must be one of none, int8; got 'int4'"):
        load_phi3_vision(str(kit_dir), device="cpu", quantize="int4")
