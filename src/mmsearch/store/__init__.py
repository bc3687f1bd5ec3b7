"""mmsearch.store."""
