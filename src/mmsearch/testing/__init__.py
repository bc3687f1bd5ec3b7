"""mmsearch.testing."""
