"""The reranker's output contract `{"ranking": [ids], "reasons": "..."}`: the per-request JSON schema that
constrains decoding, the pydantic model that validates it, and the safe repair. Entry point: `check_output`.

Candidate ids are the panel labels 1..k. `check_output` returns "ok" (a valid permutation), "repaired" (valid
JSON with at least one known id: unknown ids and duplicates dropped, missing ids appended in retrieval order,
reasons cut to the bound; the reason says which) or "invalid" (the caller retries, then falls back). No path
drops a candidate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, model_validator

from mmsearch.limits import MAX_REASONS_CHARS

# Reasons are restricted to printable ASCII without quotes or backslashes: no JSON escapes and one byte per
# character, so a character bound is also a token bound and the JSON always closes within max_new_tokens.
REASONS_CHARSET = r"[A-Za-z0-9 ,.;:!?'()/+&%#*=_-]"
# Refuse to parse anything longer than this: constrained output is a few hundred characters.
MAX_RAW_CHARS = 100_000

Verdict = Literal["ok", "repaired", "invalid"]


def candidate_ids(k: int) -> list[int]:
    """The ids the model may use: the panel labels 1..k."""
    return list(range(1, k + 1))


def ranking_schema(k: int, max_reasons_chars: int | None = MAX_REASONS_CHARS) -> dict[str, Any]:
    """JSON schema of one answer for k candidates: exactly k distinct ids from 1..k, and bounded reasons.

    The reasons bound lives in `pattern` (outlines_core ignores `pattern` when `maxLength` is also given);
    None leaves the length open (constrained decoding enforces the bound itself, see `constrained.py`).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if max_reasons_chars is not None and max_reasons_chars < 0:
        raise ValueError(f"max_reasons_chars must be >= 0, got {max_reasons_chars}")
    repeat = "*" if max_reasons_chars is None else f"{{0,{max_reasons_chars}}}"
    return {
        "type": "object",
        "properties": {
            "ranking": {
                "type": "array",
                "items": {"type": "integer", "enum": candidate_ids(k)},
                "minItems": k,
                "maxItems": k,
                "uniqueItems": True,
            },
            "reasons": {"type": "string", "pattern": f"^{REASONS_CHARSET}{repeat}$"},
        },
        "required": ["ranking", "reasons"],
        "additionalProperties": False,
    }


def max_output_chars(k: int, max_reasons_chars: int) -> int:
    """Longest text the schema admits (no whitespace): an upper bound on tokens, since every token emits >= 1 byte."""
    ids = sum(len(str(i)) for i in candidate_ids(k)) + (k - 1)
    return len('{"ranking":[') + ids + len('],"reasons":"') + max_reasons_chars + len('"}')


class RankingOutput(BaseModel):
    """A well-formed answer. With `context={"k": k, "max_reasons_chars": n}`, also a permutation of 1..k."""

    model_config = ConfigDict(extra="forbid", strict=True)

    ranking: list[int]
    reasons: str

    @model_validator(mode="after")
    def _check_against_request(self, info: ValidationInfo) -> RankingOutput:
        ctx = info.context or {}
        k = ctx.get("k")
        if k is not None and sorted(self.ranking) != candidate_ids(k):
            raise ValueError(f"ranking must be a permutation of 1..{k}, got {self.ranking}")
        limit = ctx.get("max_reasons_chars", MAX_REASONS_CHARS)
        if len(self.reasons) > limit:
            raise ValueError(f"reasons must be at most {limit} characters, got {len(self.reasons)}")
        return self


@dataclass(frozen=True)
class OutputCheck:
    """Outcome of checking one model output. `order` holds 0-based retrieval positions (None when invalid)."""

    verdict: Verdict
    order: list[int] | None
    reasons: str
    note: str | None  # what was repaired, or why the output is invalid


def _parse(raw: str) -> Any:
    """json.loads, else the first JSON value starting at the first '{' (text around it is ignored)."""
    try:
        return json.loads(raw)
    except ValueError:
        start = raw.find("{")
        if start < 0:
            raise
        value, _ = json.JSONDecoder().raw_decode(raw, start)
        return value


def _as_id(item: Any, k: int) -> int | None:
    """An id in 1..k from an int or a string of digits; anything else is unknown."""
    if isinstance(item, bool):
        return None
    if isinstance(item, int):
        value = item
    elif isinstance(item, str) and item.strip().isdigit() and len(item.strip()) <= 4:
        value = int(item.strip())
    else:
        return None
    return value if 1 <= value <= k else None


def _short(values: list[Any], limit: int = 8) -> str:
    shown = ", ".join(
        str(v) if isinstance(v, int) and not isinstance(v, bool) else json.dumps(v)[:20]
        for v in values[:limit]
    )
    return shown + (f", ... ({len(values)} in all)" if len(values) > limit else "")


def check_output(raw: str | None, k: int, *, max_reasons_chars: int = MAX_REASONS_CHARS) -> OutputCheck:
    """Validate one raw model output against the k candidates; repair it when that is safe.

    Safe means: the text holds a JSON object whose "ranking" is a list naming at least one candidate id.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if raw is None or not raw.strip():
        return OutputCheck("invalid", None, "", "empty output")
    if len(raw) > MAX_RAW_CHARS:
        return OutputCheck("invalid", None, "", f"output of {len(raw)} characters exceeds {MAX_RAW_CHARS}")
    ctx = {"k": k, "max_reasons_chars": max_reasons_chars}
    try:
        ok = RankingOutput.model_validate_json(raw.strip(), context=ctx)
        return OutputCheck("ok", [i - 1 for i in ok.ranking], ok.reasons, None)
    except (ValidationError, RecursionError):
        pass

    try:
        data = _parse(raw)
    except (ValueError, RecursionError) as e:
        return OutputCheck("invalid", None, "", f"not JSON ({type(e).__name__}: {str(e)[:80]})")
    if not isinstance(data, dict):
        return OutputCheck("invalid", None, "", f"expected a JSON object, got {type(data).__name__}")
    ranking = data.get("ranking")
    if not isinstance(ranking, list):
        return OutputCheck("invalid", None, "", f'"ranking" must be a list, got {type(ranking).__name__}')

    kept: list[int] = []
    unknown: list[Any] = []
    duplicates: list[int] = []
    for item in ranking:
        value = _as_id(item, k)
        if value is None:
            unknown.append(item)
        elif value in kept:
            duplicates.append(value)
        else:
            kept.append(value)
    if not kept:
        return OutputCheck("invalid", None, "", f"ranking names none of the candidate ids 1..{k}")

    notes = []
    if unknown:
        notes.append(f"dropped unknown ids [{_short(unknown)}]")
    if duplicates:
        notes.append(f"dropped duplicate ids [{_short(duplicates)}]")
    missing = [i for i in candidate_ids(k) if i not in kept]
    if missing:
        notes.append(f"appended missing ids [{_short(missing)}] in retrieval order")
    reasons = data.get("reasons", "")
    if not isinstance(reasons, str):
        notes.append(f'ignored non-string "reasons" ({type(reasons).__name__})')
        reasons = ""
    elif len(reasons) > max_reasons_chars:
        notes.append(f"cut reasons from {len(reasons)} to {max_reasons_chars} characters")
        reasons = reasons[:max_reasons_chars]
    extra = sorted(set(data) - {"ranking", "reasons"})
    if extra:
        notes.append(f"ignored extra keys [{_short(extra)}]")
    if not notes:
        # Valid content that failed strict parsing only because of surrounding text or "1"-style ids.
        notes.append("accepted after lenient parsing")
    order = [i - 1 for i in kept + missing]
    return OutputCheck("repaired", order, reasons, "; ".join(notes))


def resolve_attempts(
    checks: list[OutputCheck], k: int
) -> tuple[Literal["ok", "repaired", "fallback"], list[int], str | None]:
    """Final decision over one answer and at most one retry: (status, 0-based order of all k, note).

    The last check decides; an unusable last answer means retrieval order with status "fallback".
    """
    if not checks:
        raise ValueError("resolve_attempts needs at least one checked answer")
    last, notes = checks[-1], []
    if len(checks) > 1:
        notes.append(f"first answer unusable ({checks[0].note}); retried once with short reasons")
    if last.verdict == "invalid":
        notes.append(
            f"{'retry' if len(checks) > 1 else 'answer'} unusable ({last.note}); kept retrieval order"
        )
        return "fallback", list(range(k)), "; ".join(notes)
    if last.note:
        notes.append(last.note)
    status = "repaired" if last.verdict == "repaired" else "ok"
    return status, list(last.order or []), "; ".join(notes) or None


__all__ = [
    "MAX_RAW_CHARS",
    "REASONS_CHARSET",
    "OutputCheck",
    "RankingOutput",
    "Verdict",
    "candidate_ids",
    "check_output",
    "max_output_chars",
    "ranking_schema",
    "resolve_attempts",
]
