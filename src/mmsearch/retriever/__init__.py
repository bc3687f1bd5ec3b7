"""Query → joint embedding → Milvus search → typed hits."""

from mmsearch.retriever.query import Query, QueryEncoder
from mmsearch.retriever.retriever import SEARCH_MODES, QueryVectors, RetrievalResult, Retriever, SearchOptions

__all__ = [
    "SEARCH_MODES",
    "Query",
    "QueryEncoder",
    "QueryVectors",
    "RetrievalResult",
    "Retriever",
    "SearchOptions",
]
