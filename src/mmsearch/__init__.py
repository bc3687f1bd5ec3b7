"""mmsearch: retrieve-and-rerank multimodal product search (Visualized BGE + Milvus + Phi-3 Vision)."""

__version__ = "0.1.0"
