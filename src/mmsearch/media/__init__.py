"""Image loading for every stage: bounded decoding (`decode`) and fetching from URLs, paths or bytes (`fetch`).

Entry points: `open_image(source, max_bytes=..., max_pixels=...)` and `ImageFetcher(cache_dir=...)`. This is a base
layer: the indexer, the retriever, the reranker and the API all load images through it, and it imports nothing
above `errors` and `limits`.
"""

from mmsearch.media.decode import ALLOWED_FORMATS, ImageSource, open_image, read_bounded
from mmsearch.media.fetch import ImageFetcher, is_url

__all__ = ["ALLOWED_FORMATS", "ImageFetcher", "ImageSource", "is_url", "open_image", "read_bounded"]
