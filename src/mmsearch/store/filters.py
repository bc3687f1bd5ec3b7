"""Search filters as a validated structure, turned into a Milvus boolean expression with escaped literals.

Entry point: `ProductFilter(category=..., min_price=..., ...).to_expr()`. Milvus Lite and the 2.3 server reject
expression templates (`filter_params`), so values are written into the expression, never pasted raw: strings
go through `quote_string`, numbers are formatted from validated finite floats.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mmsearch.errors import InvalidFilterError
from mmsearch.sanitize import text_problem

MAX_PRICE = 1e9
MAX_FILTER_IDS = 1000
MAX_STRING_CHARS = 256

# Escapes both Milvus' Go expression parser and Milvus Lite 3.x's parser understand inside "...".
# Raw CR/LF would end the literal in both, so they must be escaped too.
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def quote_string(value: str) -> str:
    """`value` as a double-quoted Milvus string literal; every character comes back unchanged when parsed."""
    if not isinstance(value, str):
        raise TypeError(f"expected a str to quote, got {type(value).__name__}")
    return '"' + "".join(_ESCAPES.get(ch, ch) for ch in value) + '"'


def format_number(value: float) -> str:
    """A finite number as a plain decimal literal (no exponent, which not every parser accepts)."""
    if not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {value!r}")
    return format(Decimal(repr(float(value))), "f")


def ids_expr(ids: Iterable[str]) -> str:
    """`id in [...]` for primary keys, each escaped; used by the store for lookups as well as by filters."""
    return "id in [" + ", ".join(quote_string(i) for i in ids) + "]"


def _check_text(name: str, value: str) -> str:
    if not value:
        raise ValueError(f"{name} must not be empty")
    if len(value) > MAX_STRING_CHARS:
        raise ValueError(f"{name} is {len(value)} characters long; at most {MAX_STRING_CHARS} are allowed")
    bad = next((ch for ch in value if ord(ch) < 32 and ch not in "\t\n\r"), None)
    if bad is not None:
        raise ValueError(f"{name} contains the control character {bad!r}")
    problem = text_problem(value)  # a lone surrogate would fail inside pymilvus' encoder, as a store error
    if problem is not None:
        raise ValueError(f"{name} {problem}; expected valid text")
    return value


class ProductFilter(BaseModel):
    """Optional conditions ANDed together. Prices and ratings must be finite, non-negative, and min <= max.

    Rows whose price or rating is unknown never match a price or rating condition. Unknown field names are
    refused. Construction errors raise `InvalidFilterError` naming the field and the bad value.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    category: str | None = Field(default=None, description="exact main_category")
    min_price: float | None = Field(default=None, ge=0, le=MAX_PRICE)
    max_price: float | None = Field(default=None, ge=0, le=MAX_PRICE)
    min_rating: float | None = Field(default=None, ge=0, le=5)
    parent_asin: str | None = None
    ids: tuple[str, ...] | None = Field(default=None, min_length=1, max_length=MAX_FILTER_IDS)

    def __init__(self, **data: Any):
        try:
            super().__init__(**data)
        except ValidationError as err:
            raise InvalidFilterError(_describe(err)) from None

    @field_validator("min_price", "max_price", "min_rating", mode="before")
    @classmethod
    def _no_bool(cls, value: Any) -> Any:
        # pydantic would read True as 1.0; a boolean price is a caller bug, not a number.
        if isinstance(value, bool):
            raise ValueError("expected a number, got a boolean")
        return value

    @field_validator("category", "parent_asin")
    @classmethod
    def _text(cls, value: str | None, info) -> str | None:
        return None if value is None else _check_text(info.field_name, value)

    @field_validator("ids")
    @classmethod
    def _ids(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and any(not i for i in value):
            raise ValueError("ids must not contain an empty string")
        for i in value or ():
            problem = text_problem(i)
            if problem is not None:
                raise ValueError(f"id {i!r} {problem}; expected valid text")
        return value

    @model_validator(mode="after")
    def _ranges(self) -> ProductFilter:
        if self.min_price is not None and self.max_price is not None and self.min_price > self.max_price:
            raise ValueError(f"min_price {self.min_price} is greater than max_price {self.max_price}")
        return self

    @property
    def is_empty(self) -> bool:
        return all(getattr(self, name) is None for name in type(self).model_fields)

    def to_expr(self) -> str:
        """The Milvus boolean expression for these conditions ('' when there are none)."""
        clauses: list[str] = []
        if self.category is not None:
            clauses.append(f"main_category == {quote_string(self.category)}")
        if self.parent_asin is not None:
            clauses.append(f"parent_asin == {quote_string(self.parent_asin)}")
        if self.min_price is not None:
            clauses.append(f"price >= {format_number(self.min_price)}")
        if self.max_price is not None:
            # Unknown prices are stored as -1; a price ceiling must not let them in.
            clauses.append(f"price >= 0 and price <= {format_number(self.max_price)}")
        if self.min_rating is not None:
            clauses.append(f"average_rating >= {format_number(self.min_rating)}")
        if self.ids is not None:
            clauses.append(ids_expr(self.ids))
        return " and ".join(f"({c})" for c in clauses)


def _describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        msg = e["msg"].removeprefix("Value error, ")
        where = ".".join(str(p) for p in e["loc"]) or "filter"
        if e["type"] == "extra_forbidden":
            allowed = ", ".join(ProductFilter.model_fields)
            parts.append(f"unknown filter field {where!r}; allowed: {allowed}")
        elif "input" in e and e["loc"]:
            parts.append(f"invalid filter {where}={e['input']!r}: {msg}")
        else:
            parts.append(f"invalid filter: {msg}")
    return "; ".join(parts)


__all__ = ["MAX_FILTER_IDS", "ProductFilter", "format_number", "ids_expr", "quote_string"]
