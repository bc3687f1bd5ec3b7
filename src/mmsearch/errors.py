"""One exception family for mmsearch: every error a user can cause or meet derives from `MMSearchError`.

The CLI prints `str(error)` as one line and exits non-zero; the HTTP API maps each class to a status code
(see `mmsearch.api.errors`). Messages name the bad value and what was expected.
"""

from __future__ import annotations


class MMSearchError(Exception):
    """Root of mmsearch's errors. `code` is a short stable string usable by scripts and the API."""

    code = "mmsearch_error"
    http_status = 500

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(MMSearchError):
    """A setting or command-line option is invalid."""

    code = "config_error"
    http_status = 422


class InvalidQueryError(MMSearchError):
    """A search request is malformed (no image and no text, k out of range, unknown mode...)."""

    code = "invalid_query"
    http_status = 422


class UnsupportedModeError(InvalidQueryError):
    """The retrieval mode needs something the encoder lacks (a dual encoder has no joint image+text embedding)."""

    code = "unsupported_mode"
    http_status = 422


class InvalidImageError(MMSearchError):
    """An image could not be read, decoded or validated (corrupt, not an image, too many pixels, too big)."""

    code = "invalid_image"
    http_status = 422


class ImageTooLargeError(InvalidImageError):
    """The encoded image is larger than the byte limit."""

    code = "image_too_large"
    http_status = 413


class PathNotAllowedError(InvalidImageError):
    """A local image path resolves (after following symlinks) outside the folders the run may read."""

    code = "path_not_allowed"
    http_status = 403


class InvalidTextError(MMSearchError):
    """A text input is empty or otherwise unusable."""

    code = "invalid_text"
    http_status = 422


class ModelLoadError(MMSearchError):
    """A model checkpoint, config or tokenizer could not be found or does not match the architecture."""

    code = "model_load_error"
    http_status = 503


class DataSourceError(MMSearchError):
    """A data source (tarball, jsonl, folder, hub file) is missing or malformed; the message says where."""

    code = "data_source_error"
    http_status = 422


class IndexAbortedError(MMSearchError):
    """An indexing run stopped on a run-level problem (not one bad record, which is only logged)."""

    code = "index_aborted"
    http_status = 500


class StoreError(MMSearchError):
    """Any failure talking to Milvus."""

    code = "store_error"
    http_status = 503


class StoreUnavailableError(StoreError):
    """The Milvus server cannot be reached at the configured URI."""

    code = "store_unavailable"
    http_status = 503


class StoreLockedError(StoreError):
    """The Milvus Lite data file is held by another process."""

    code = "store_locked"
    http_status = 503


class CollectionNotFoundError(StoreError):
    """The collection does not exist yet (nothing indexed)."""

    code = "collection_not_found"
    http_status = 404


class EncoderMismatchError(StoreError):
    """The collection was built with another encoder (id or dimension) than the one in use."""

    code = "encoder_mismatch"
    http_status = 409


class InvalidFilterError(StoreError):
    """A search filter names an unknown field, has a wrongly typed value or an impossible range."""

    code = "invalid_filter"
    http_status = 422


class FeatureUnavailableError(StoreError):
    """The Milvus deployment or the collection lacks what a request needs (BM25 on a server < 2.5, a collection
    indexed before the BM25 title field existed); the message says how to get it."""

    code = "feature_unavailable"
    http_status = 422


class UnknownCategoryError(InvalidFilterError):
    """A category filter names no stored category; `suggestions` holds the closest existing names."""

    code = "unknown_category"
    http_status = 422

    def __init__(self, message: str, suggestions: list[str] | None = None):
        super().__init__(message)
        self.suggestions = list(suggestions or [])


class ClusterUnavailableError(MMSearchError):
    """The Ray cluster named by `--ray-address` cannot be reached."""

    code = "cluster_unavailable"
    http_status = 503


class RerankError(MMSearchError):
    """The reranker could not run at all (as opposed to producing invalid output, which falls back)."""

    code = "rerank_error"
    http_status = 500


__all__ = [
    "ClusterUnavailableError",
    "CollectionNotFoundError",
    "ConfigError",
    "DataSourceError",
    "EncoderMismatchError",
    "FeatureUnavailableError",
    "ImageTooLargeError",
    "IndexAbortedError",
    "InvalidFilterError",
    "InvalidImageError",
    "InvalidQueryError",
    "InvalidTextError",
    "MMSearchError",
    "ModelLoadError",
    "PathNotAllowedError",
    "RerankError",
    "StoreError",
    "StoreLockedError",
    "StoreUnavailableError",
    "UnknownCategoryError",
    "UnsupportedModeError",
]
