"""mmsearch.evaluation."""
