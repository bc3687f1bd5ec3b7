"""mmsearch.indexer."""
