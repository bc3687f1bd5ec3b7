"""The reranker's output contract `{"ranking": [ids], "reasons": "..."}`: the per-request JSON schema that
constrains decoding, the pydantic model that validates it, and the safe repair. Entry point: `check_output`.

Candidate ids are the panel labels 1..k. `check_output` reads every top-level JSON object in the text and
returns "ok" (exactly one answer, a valid permutation), "repaired" (one answer naming only candidate ids, with
repeats dropped and missing ids appended in retrieval order, or reasons cleaned or cut; the note says which) or
"invalid" with a `code`: two different answers are "ambiguous", ids outside 1..k are "not_candidates" (the
caller retries, then falls back to retrieval order). No path drops a candidate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, model_validator

from mmsearch.limits import MAX_REASONS_CHARS
from mmsearch.reranker.base import valid_text

# Reasons are restricted to printable ASCII without quotes or backslashes: no JSON escapes and one byte per
# character, so a character bound is also a token bound and the JSON always closes within max_new_tokens.
REASONS_CHARSET = r"[A-Za-z0-9 ,.;:!?'()/+&%#*=_-]"
# Refuse to parse anything longer than this: constrained output is a few hundred characters.
MAX_RAW_CHARS = 100_000
# Braces that start no JSON object before the scan for answers gives up (keeps it linear in the text).
MAX_FALSE_STARTS = 64

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
    """Outcome of checking one model output. `order` holds 0-based retrieval positions (None when invalid);
    `code` names an invalid output's problem ("ambiguous", "not_candidates", "not_json", ...)."""

    verdict: Verdict
    order: list[int] | None
    reasons: str
    note: str | None  # what was repaired, or why the output is invalid
    code: str | None = None


def _invalid(code: str, note: str) -> OutputCheck:
    return OutputCheck("invalid", None, "", note, code)


def json_objects(raw: str) -> tuple[list[dict[str, Any]], bool]:
    """Every top-level JSON object in `raw`, left to right, and whether the scan was complete.

    A `{` that starts no JSON object (prose such as "{maybe}") is skipped, so braces before the answer cannot
    hide it. The scan stops, incomplete, after MAX_FALSE_STARTS such braces, which bounds its cost.
    """
    decoder = json.JSONDecoder()
    found: list[dict[str, Any]] = []
    pos, false_starts = 0, 0
    while (start := raw.find("{", pos)) >= 0:
        try:
            value, pos = decoder.raw_decode(raw, start)
        except (ValueError, RecursionError):
            false_starts += 1
            if false_starts > MAX_FALSE_STARTS:
                return found, False
            pos = start + 1
            continue
        found.append(value)
    return found, True


def _is_candidate(item: Any, k: int) -> bool:
    """Only the integers 1..k are candidate ids ("2", 2.0 and true are not: the model misread the format)."""
    return isinstance(item, int) and not isinstance(item, bool) and 1 <= item <= k


def _short(values: list[Any], limit: int = 8) -> str:
    shown = ", ".join(
        str(v) if isinstance(v, int) and not isinstance(v, bool) else json.dumps(v)[:20]
        for v in values[:limit]
    )
    return shown + (f", ... ({len(values)} in all)" if len(values) > limit else "")


def _clean_reasons(reasons: Any, limit: int, notes: list[str]) -> str:
    """Reasons as valid, bounded text; every change is noted."""
    if not isinstance(reasons, str):
        notes.append(f'ignored non-string "reasons" ({type(reasons).__name__})')
        return ""
    text = valid_text(reasons)
    if text != reasons:
        notes.append("replaced invalid characters in reasons")
    if len(text) > limit:
        notes.append(f"cut reasons from {len(text)} to {limit} characters")
        text = text[:limit]
    return text


def _answers(raw: str) -> tuple[list[dict[str, Any]], bool] | OutputCheck:
    """The answers (JSON objects with a "ranking" key) and whether the text was one bare JSON object."""
    try:
        whole = json.loads(raw)
    except (ValueError, RecursionError) as e:
        objects, complete = json_objects(raw)
        if not complete:
            return _invalid("not_json", f"gave up after {MAX_FALSE_STARTS} braces that start no JSON object")
        if not objects:
            return _invalid("not_json", f"not JSON ({type(e).__name__}: {str(e)[:80]})")
        bare = False
    else:
        if not isinstance(whole, dict):
            return _invalid("not_object", f"expected a JSON object, got {type(whole).__name__}")
        objects, bare = [whole], True
    answers = [o for o in objects if "ranking" in o]
    if not answers:
        return _invalid("no_answer", f'none of the {len(objects)} JSON objects has a "ranking" key')
    return answers, bare


def check_output(raw: str | None, k: int, *, max_reasons_chars: int = MAX_REASONS_CHARS) -> OutputCheck:
    """Validate one raw model output against the k candidates; repair it only when that is safe.

    Every top-level JSON object is read; those with a "ranking" key are answers. Answers with different
    rankings are `ambiguous`; an id that is not a candidate shows the model misread the panel
    (`not_candidates`). Both are invalid, never repaired. The one repair: a ranking of candidate ids only that
    repeats or misses some gets the repeats dropped and the missing ids appended in retrieval order.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if raw is None or not raw.strip():
        return _invalid("empty", "empty output")
    if len(raw) > MAX_RAW_CHARS:
        return _invalid("too_long", f"output of {len(raw)} characters exceeds {MAX_RAW_CHARS}")
    ctx = {"k": k, "max_reasons_chars": max_reasons_chars}
    try:
        ok = RankingOutput.model_validate_json(raw.strip(), context=ctx)
    except (ValidationError, RecursionError):
        pass
    else:
        notes: list[str] = []
        reasons = _clean_reasons(ok.reasons, max_reasons_chars, notes)
        order = [i - 1 for i in ok.ranking]
        return OutputCheck("repaired" if notes else "ok", order, reasons, "; ".join(notes) or None)

    found = _answers(raw)
    if isinstance(found, OutputCheck):
        return found
    answers, bare = found
    rankings = list(dict.fromkeys(json.dumps(a["ranking"])[:40] for a in answers))
    if len(rankings) > 1:
        shown = ", ".join(rankings[:3])
        return _invalid("ambiguous", f"ambiguous: {len(rankings)} different answers (rankings {shown})")
    data = answers[0]
    ranking = data["ranking"]
    if not isinstance(ranking, list):
        return _invalid("bad_ranking", f'"ranking" must be a list, got {type(ranking).__name__}')
    if not ranking:
        return _invalid("bad_ranking", "ranking is empty")
    strangers = [item for item in ranking if not _is_candidate(item, k)]
    if strangers:
        return _invalid(
            "not_candidates", f"ranking holds ids that are not candidates 1..{k}: [{_short(strangers)}]"
        )

    kept = list(dict.fromkeys(ranking))
    notes = []
    if len(answers) > 1:
        notes.append(f"used one of {len(answers)} identical answers")
    if len(kept) < len(ranking):
        notes.append(
            f"dropped duplicate ids [{_short([v for i, v in enumerate(ranking) if v in ranking[:i]])}]"
        )
    missing = [i for i in candidate_ids(k) if i not in kept]
    if missing:
        notes.append(f"appended missing ids [{_short(missing)}] in retrieval order")
    reasons = _clean_reasons(data.get("reasons", ""), max_reasons_chars, notes)
    extra = sorted(set(data) - {"ranking", "reasons"})
    if extra:
        notes.append(f"ignored extra keys [{_short(extra)}]")
    if not notes:
        # Valid content that failed strict parsing only because of text around it (or whitespace inside).
        notes.append("accepted after lenient parsing")
    return OutputCheck("repaired", [i - 1 for i in kept + missing], reasons, "; ".join(notes))


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
    "MAX_FALSE_STARTS",
    "MAX_RAW_CHARS",
    "REASONS_CHARSET",
    "OutputCheck",
    "RankingOutput",
    "Verdict",
    "candidate_ids",
    "check_output",
    "json_objects",
    "max_output_chars",
    "ranking_schema",
    "resolve_attempts",
]
