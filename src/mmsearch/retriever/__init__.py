"""Query → joint embedding → Milvus search → typed hits."""

from mmsearch.retriever.query import Query, QueryEncoder
from mmsearch.retriever.retriever import SEARCH_MODES, RetrievalResult, Retriever, SearchOptions

__all__ = ["SEARCH_MODES", "Query", "QueryEncoder", "RetrievalResult", "Retriever", "SearchOptions"]
