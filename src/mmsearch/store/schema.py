"""The product collection's layout in Milvus: field names and sizes, the encoder stamp, and vector index settings.

Entry points: `build_schema(dim, with_text_vector, with_bm25)`, `EncoderStamp`, `IndexConfig.for_type(name)`.

Lexical search: `title_sparse` is a SPARSE_FLOAT_VECTOR that Milvus fills itself from the analysed `title` with a
BM25 `Function` (Milvus >= 2.5 or Milvus Lite 3.x); we never tokenise titles ourselves. `product_key` is the
product a row's image belongs to (`parent_asin`, or the row id when there is none), the field results are grouped
by so that a product takes one slot.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pymilvus import CollectionSchema, DataType, Function, FunctionType, MilvusClient

ID = "id"
IMAGE_VECTOR = "image_vector"
TEXT_VECTOR = "text_vector"
VECTOR_FIELDS = (IMAGE_VECTOR, TEXT_VECTOR)
TITLE_SPARSE = "title_sparse"
TITLE_BM25_FUNCTION = "title_bm25"
PRODUCT_KEY = "product_key"

# VARCHAR limits, in UTF-8 bytes (Milvus counts bytes). Ids longer than ID_MAX_BYTES are refused; the other
# strings are cut at a character boundary, since a long title must not stop an indexing run.
ID_MAX_BYTES = 512
VARCHAR_MAX_BYTES = {"title": 4096, "main_category": 256, "parent_asin": 128, "image_url": 2048}
PRODUCT_KEY_MAX_BYTES = ID_MAX_BYTES

# Scalar fields returned with every hit, in `Hit` order.
SCALAR_FIELDS = (
    "title",
    "main_category",
    "price",
    "average_rating",
    "rating_number",
    "parent_asin",
    "image_url",
    "meta",
)

# Unknown numbers are stored as MISSING and read back as None. Nullable fields need Milvus >= 2.5, and the
# 2.3.5 test server and Milvus Lite must share one schema. Real prices, ratings and counts are never negative.
MISSING = -1
MAX_DIM = 32768

# The stamp lives in collection properties (Milvus Lite 3.x, servers) and, as JSON, in the description
# (milvus-lite 2.5.x drops properties; 3.x drops the description). Readers try both.
_PROP_ENCODER = "mmsearch.encoder_id"
_PROP_DIM = "mmsearch.dim"
_PROP_TEXT = "mmsearch.text_vector"
_PROP_TITLE_ENCODER = "mmsearch.title_encoder_id"
_PROP_TITLE_DIM = "mmsearch.title_dim"


@dataclass(frozen=True)
class EncoderStamp:
    """Which encoders filled a collection: the image encoder's id and dimension, whether titles have a vector,
    the title encoder's id and dimension (None: the image encoder's own text tower, same dim), and which optional
    fields it has: the BM25 title field and the product key (read off the schema)."""

    encoder_id: str
    dim: int
    text_vector: bool = True
    title_encoder_id: str | None = None
    title_dim: int | None = None
    bm25: bool = False
    product_key: bool = False

    def __post_init__(self):
        # "Same encoder" is stored explicitly, so stamps written by older versions compare equal to new ones.
        if self.title_encoder_id is None:
            object.__setattr__(self, "title_encoder_id", self.encoder_id)
        if self.title_dim is None:
            object.__setattr__(self, "title_dim", self.dim)

    def properties(self) -> dict[str, str]:
        return {
            _PROP_ENCODER: self.encoder_id,
            _PROP_DIM: str(self.dim),
            _PROP_TEXT: "1" if self.text_vector else "0",
            _PROP_TITLE_ENCODER: str(self.title_encoder_id),
            _PROP_TITLE_DIM: str(self.title_dim),
        }

    def description(self) -> str:
        return json.dumps(
            {
                "mmsearch": 1,
                "encoder_id": self.encoder_id,
                "dim": self.dim,
                "title_encoder_id": self.title_encoder_id,
                "title_dim": self.title_dim,
            }
        )

    @classmethod
    def from_collection(cls, described: dict[str, Any]) -> EncoderStamp | None:
        """Read the stamp from `MilvusClient.describe_collection` output; None if the collection has none."""
        fields = {f["name"]: f for f in described.get("fields", [])}
        flags = {
            "text_vector": TEXT_VECTOR in fields,
            "bm25": TITLE_SPARSE in fields,
            "product_key": PRODUCT_KEY in fields,
        }
        props = described.get("properties") or {}
        if _PROP_ENCODER in props and _PROP_DIM in props:
            title_dim = props.get(_PROP_TITLE_DIM)
            return cls(
                str(props[_PROP_ENCODER]),
                int(props[_PROP_DIM]),
                title_encoder_id=props.get(_PROP_TITLE_ENCODER),
                title_dim=None if title_dim is None else int(title_dim),
                **flags,
            )
        try:
            data = json.loads(described.get("description") or "")
        except ValueError:
            return None
        if isinstance(data, dict) and "encoder_id" in data and "dim" in data:
            title_dim = data.get("title_dim")
            return cls(
                str(data["encoder_id"]),
                int(data["dim"]),
                title_encoder_id=data.get("title_encoder_id"),
                title_dim=None if title_dim is None else int(title_dim),
                **flags,
            )
        return None


def vector_dim(described: dict[str, Any], name: str) -> int | None:
    """The dimension of vector field `name` in `describe_collection` output, or None when absent."""
    for f in described.get("fields", []):
        if f["name"] == name:
            return int(f.get("params", {}).get("dim", 0))
    return None


def build_schema(
    dim: int,
    *,
    with_text_vector: bool,
    with_bm25: bool = False,
    description: str = "",
    text_dim: int | None = None,
) -> CollectionSchema:
    """The collection schema: VARCHAR id, COSINE vectors (`text_dim` defaults to `dim`), typed scalar filter
    fields, a JSON `meta` and the product key; with `with_bm25` also the analysed title and its BM25 sparse field
    (Milvus >= 2.5 / Lite 3.x)."""
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False, description=description)
    schema.add_field(ID, DataType.VARCHAR, is_primary=True, max_length=ID_MAX_BYTES)
    schema.add_field(IMAGE_VECTOR, DataType.FLOAT_VECTOR, dim=dim)
    if with_text_vector:
        schema.add_field(TEXT_VECTOR, DataType.FLOAT_VECTOR, dim=text_dim or dim)
    title_options = {"enable_analyzer": True} if with_bm25 else {}
    schema.add_field("title", DataType.VARCHAR, max_length=VARCHAR_MAX_BYTES["title"], **title_options)
    schema.add_field("main_category", DataType.VARCHAR, max_length=VARCHAR_MAX_BYTES["main_category"])
    # DOUBLE, not FLOAT: with float32, 19.99 is stored as 19.9899997..., and `price >= 19.99` would miss it.
    schema.add_field("price", DataType.DOUBLE)
    schema.add_field("average_rating", DataType.DOUBLE)
    schema.add_field("rating_number", DataType.INT64)
    schema.add_field("parent_asin", DataType.VARCHAR, max_length=VARCHAR_MAX_BYTES["parent_asin"])
    schema.add_field("image_url", DataType.VARCHAR, max_length=VARCHAR_MAX_BYTES["image_url"])
    schema.add_field("meta", DataType.JSON)
    schema.add_field(PRODUCT_KEY, DataType.VARCHAR, max_length=PRODUCT_KEY_MAX_BYTES)
    if with_bm25:
        # Milvus computes the sparse vector from the analysed title (standard analyzer: lower-cased words).
        schema.add_field(TITLE_SPARSE, DataType.SPARSE_FLOAT_VECTOR)
        schema.add_function(
            Function(
                name=TITLE_BM25_FUNCTION,
                function_type=FunctionType.BM25,
                input_field_names=["title"],
                output_field_names=[TITLE_SPARSE],
            )
        )
    return schema


@dataclass(frozen=True)
class IndexConfig:
    """A vector index type with its build and search parameters (COSINE throughout).

    Defaults measured with `benchmarks/milvus_store.py` (768-d clustered vectors, top-10, 2 cores):
    - HNSW M=16, efConstruction=200, ef=768 (raised to k when k is larger). Milvus 2.3.5 server, 20k rows
      flushed and indexed: recall@10 0.91 / 0.978 / 0.998 / 1.0 at ef 128 / 256 / 512 / 1024. At 100k rows
      (image vector only, fully indexed): 0.962 / 0.985 / 0.99 at ef 512 / 768 / 1024 (ef 256: 0.904), so 768
      is the least ef that clears 0.98 (benchmarks/RESULTS.md, issue 12). Before a flush a server searches new
      rows through a coarse interim index (0.92 at 10k), so the indexer should call `flush()` at the end.
      Milvus Lite 3.2.2 searches with ef >= 1024 (`milvus.LITE_MIN_EF`): its per-query Python overhead hides
      the cost; recall@10 0.999 at 10k rows, 0.945 at 100k (0.86 at ef 256).
    - IVF_FLAT nlist=1024 (about sqrt(N) for 100k-1M rows), nprobe=32: recall@10 0.998 at 10k on Lite.
    - FLAT: exact. On Lite 3.2.2 it filters fastest (28 ms for an 11% filter at 10k rows, HNSW 309 ms) but
      costs 88 ms unfiltered at 10k (HNSW 11 ms), growing linearly; hence HNSW is the default.
    """

    index_type: str
    build: dict[str, int] = field(default_factory=dict)
    search: dict[str, int] = field(default_factory=dict)

    @classmethod
    def for_type(cls, index_type: str) -> IndexConfig:
        key = index_type.upper()
        if key not in INDEX_DEFAULTS:
            raise ValueError(
                f"index_type {index_type!r} is not supported; expected one of {sorted(INDEX_DEFAULTS)}"
            )
        return INDEX_DEFAULTS[key]

    def search_params(self, k: int) -> dict[str, Any]:
        params = dict(self.search)
        if "ef" in params:
            params["ef"] = max(params["ef"], k)  # HNSW needs ef >= k
        return {"metric_type": "COSINE", "params": params}


INDEX_DEFAULTS: dict[str, IndexConfig] = {
    "FLAT": IndexConfig("FLAT"),
    "HNSW": IndexConfig("HNSW", build={"M": 16, "efConstruction": 200}, search={"ef": 768}),
    "IVF_FLAT": IndexConfig("IVF_FLAT", build={"nlist": 1024}, search={"nprobe": 32}),
}
DEFAULT_INDEX_TYPE = "HNSW"


__all__ = [
    "DEFAULT_INDEX_TYPE",
    "ID",
    "ID_MAX_BYTES",
    "IMAGE_VECTOR",
    "INDEX_DEFAULTS",
    "MAX_DIM",
    "MISSING",
    "PRODUCT_KEY",
    "PRODUCT_KEY_MAX_BYTES",
    "SCALAR_FIELDS",
    "TEXT_VECTOR",
    "TITLE_BM25_FUNCTION",
    "TITLE_SPARSE",
    "VARCHAR_MAX_BYTES",
    "VECTOR_FIELDS",
    "EncoderStamp",
    "IndexConfig",
    "build_schema",
    "vector_dim",
]
