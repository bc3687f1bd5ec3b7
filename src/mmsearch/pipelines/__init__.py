"""Stage assembly: the search pipeline (retrieve → rerank) and the index pipeline."""

from mmsearch.pipelines.search import SearchPipeline, SearchRequest, SearchResult

__all__ = ["SearchPipeline", "SearchRequest", "SearchResult"]
