"""Milvus storage for product images: the collection schema, validated filters and `ProductStore`.

Entry point: `ProductStore(uri, collection=...)`; filters are `ProductFilter(...)`.
"""

from mmsearch.store.filters import ProductFilter
from mmsearch.store.milvus import ProductStore, is_server_uri
from mmsearch.store.schema import DEFAULT_INDEX_TYPE, INDEX_DEFAULTS, EncoderStamp, IndexConfig

__all__ = [
    "DEFAULT_INDEX_TYPE",
    "INDEX_DEFAULTS",
    "EncoderStamp",
    "IndexConfig",
    "ProductFilter",
    "ProductStore",
    "is_server_uri",
]
