"""mmsearch.api."""
