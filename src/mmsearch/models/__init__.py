"""mmsearch.models."""
