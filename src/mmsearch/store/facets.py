"""Category facets: the distinct `main_category` values with their image counts, and suggestions for a name that
matches none of them.

Entry points: `ProductStore.categories()` and `.check_category(name)`, which `FacetsMixin` provides;
`closest_categories(name, names)`. Matching in filters stays exact; only the suggestions forgive case and typos.
"""

from __future__ import annotations

import difflib
import time

from mmsearch.errors import UnknownCategoryError
from mmsearch.store.filters import quote_string

# How long a categories() answer is reused (writes through this store clear it), and the most categories listed.
CATEGORIES_TTL_S = 30.0
MAX_CATEGORIES = 1000
MAX_SUGGESTIONS = 3


def closest_categories(name: str, names: list[str], limit: int = MAX_SUGGESTIONS) -> list[str]:
    """Existing names closest to `name`: same name in another case first, then near spellings."""
    folded = name.casefold().strip()
    same_case = [n for n in names if n.casefold() == folded]
    by_fold: dict[str, str] = {n.casefold(): n for n in names}
    near = difflib.get_close_matches(folded, list(by_fold), n=limit, cutoff=0.6)
    contains = [n for n in names if folded and (folded in n.casefold() or n.casefold() in folded)]
    out = list(dict.fromkeys([*same_case, *(by_fold[n] for n in near), *contains]))
    return out[:limit]


class FacetsMixin:
    """`categories` and `check_category` for `ProductStore` (uses its connection and call wrapper)."""

    _categories_cache: tuple[float, dict[str, int]] | None = None

    def categories(self, *, consistency: str | None = None) -> dict[str, int]:
        """Distinct non-empty `main_category` values with the number of stored images in each, most first.

        Milvus has no GROUP BY for queries, and pymilvus' query iterator pastes primary keys into its filter
        unescaped (ids holding a quote break it), so each category is found with a `not in [known...]` query of
        limit 1 and counted with `count(*)`: 2 queries per category, values escaped by `quote_string`. The answer
        is reused for CATEGORIES_TTL_S seconds; an upsert through this store clears it.
        """
        self._ready()
        cached = self._categories_cache
        if cached is not None and consistency is None and time.monotonic() - cached[0] < CATEGORIES_TTL_S:
            return dict(cached[1])
        known: list[str] = [""]
        counts: dict[str, int] = {}
        while len(counts) < MAX_CATEGORIES:
            found = self._query(
                f"main_category not in [{', '.join(map(quote_string, known))}]",
                ["main_category"],
                consistency,
                1,
            )
            if not found:
                break
            name = str(found[0]["main_category"])
            known.append(name)
            rows = self._query(f"main_category == {quote_string(name)}", ["count(*)"], consistency)
            counts[name] = int(rows[0]["count(*)"]) if rows else 0
        result = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
        self._categories_cache = (time.monotonic(), result)
        return dict(result)

    def check_category(self, name: str) -> None:
        """Raise `UnknownCategoryError` naming the closest existing categories when `name` is not one of them."""
        names = list(self.categories())
        if name in names:
            return
        suggestions = closest_categories(name, names)
        hint = (
            f"did you mean {', '.join(repr(s) for s in suggestions)}?"
            if suggestions
            else f"known categories: {', '.join(repr(n) for n in names[:10]) or 'none (the collection is empty)'}."
        )
        raise UnknownCategoryError(
            f"unknown category {name!r} (categories match exactly); {hint} "
            "List them with `mmsearch categories` or GET /categories.",
            suggestions,
        )


__all__ = ["CATEGORIES_TTL_S", "FacetsMixin", "closest_categories"]
