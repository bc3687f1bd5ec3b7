"""Thumbnails for `GET /images`: a product's stored image reference → a small JPEG, cached in memory.

Entry point: `Thumbnailer(fetcher).render(ref)`. A reference is what the indexer stored in `image_url`: a local
path (bootcamp folder, local files) or an http(s) URL, which goes through `mmsearch.media.ImageFetcher` and so hits
its on-disk cache of images downloaded at index time. Every image is decoded with the byte and pixel bounds.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable

from PIL import Image

from mmsearch.api.errors import ImageUnavailableError
from mmsearch.errors import InvalidImageError
from mmsearch.media.fetch import ImageFetcher
from mmsearch.types import Hit

THUMBNAIL_SIDE = 320
JPEG_QUALITY = 85


def to_thumbnail(image: Image.Image, side: int = THUMBNAIL_SIDE) -> bytes:
    """JPEG bytes of `image` scaled to fit in side x side (never enlarged), transparency flattened on white."""
    img = image
    if getattr(img, "n_frames", 1) > 1:
        img.seek(0)  # animated GIF/WebP: the first frame
    if img.mode in ("RGBA", "LA", "P", "PA"):
        img = img.convert("RGBA")
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img, mask=img.getchannel("A"))
        img = background
    else:
        img = img.convert("RGB")
    img.thumbnail((side, side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return buf.getvalue()


class _LRU:
    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict[str, object] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str):
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: str, value: object) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


class Thumbnailer:
    """Renders and caches thumbnails, and remembers the image reference of every product it has seen in results."""

    def __init__(
        self,
        fetcher: ImageFetcher,
        *,
        side: int = THUMBNAIL_SIDE,
        cache_size: int = 512,
        resolve: Callable[[str], str] | None = None,
    ):
        self.fetcher = fetcher
        self.resolve = resolve  # stored ref -> fetchable ref (relative refs under the catalogue root)
        self.side = side
        self._refs = _LRU(8 * cache_size)  # product id -> image reference
        self._thumbs = _LRU(cache_size)  # image reference -> JPEG bytes

    def remember(self, hits: Iterable[Hit]) -> None:
        for hit in hits:
            if hit.image_url:
                self._refs.put(hit.id, hit.image_url)

    def known_ref(self, product_id: str) -> str | None:
        return self._refs.get(product_id)

    def render(self, ref: str) -> bytes:
        """Thumbnail JPEG for `ref`. Raises `ImageUnavailableError` when it cannot be read or decoded."""
        cached = self._thumbs.get(ref)
        if cached is not None:
            return cached
        try:
            target = self.resolve(ref) if self.resolve is not None else ref
            data = to_thumbnail(self.fetcher.open(target), self.side)
        except InvalidImageError as err:
            raise ImageUnavailableError(f"cannot make a thumbnail: {err.message}") from None
        self._thumbs.put(ref, data)
        return data

    def close(self) -> None:
        self.fetcher.close()


__all__ = ["JPEG_QUALITY", "THUMBNAIL_SIDE", "Thumbnailer", "to_thumbnail"]
