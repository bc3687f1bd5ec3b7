"""mmsearch.pipelines."""
