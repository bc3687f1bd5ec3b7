"""mmsearch: retrieve-and-rerank multimodal product search (Visualized BGE + Milvus + Phi-3 Vision).

Entry point: `mmsearch.Engine(uri=..., smoke=False, device=...)`; see `mmsearch.engine.engine`. `Engine` is
imported on first use, so `import mmsearch` (and `mmsearch --help`) stays light.
"""

from __future__ import annotations

__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "Engine":
        from mmsearch.engine import Engine

        return Engine
    raise AttributeError(f"module 'mmsearch' has no attribute {name!r}")


__all__ = ["Engine", "__version__"]
