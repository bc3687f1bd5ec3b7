"""Builders of tiny random-weight checkpoints in the official formats, for tests, smoke runs and speed runs."""

from mmsearch.testing.dual_encoder import build_tiny_dual_encoder, tiny_dual_encoder
from mmsearch.testing.embeddinggemma import build_tiny_embeddinggemma, tiny_embeddinggemma
from mmsearch.testing.phi3_vision import build_tiny_phi3_vision
from mmsearch.testing.visual_bge import TinyVisualBGE, build_tiny_visual_bge, tiny_visual_bge_encoder

__all__ = [
    "TinyVisualBGE",
    "build_tiny_dual_encoder",
    "build_tiny_embeddinggemma",
    "build_tiny_phi3_vision",
    "build_tiny_visual_bge",
    "tiny_dual_encoder",
    "tiny_embeddinggemma",
    "tiny_visual_bge_encoder",
]
