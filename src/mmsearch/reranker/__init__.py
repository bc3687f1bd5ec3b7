"""mmsearch.reranker."""
