"""mmsearch.retriever."""
