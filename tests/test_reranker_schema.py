"""Output validation (issue 6): strict answers pass, safe repairs keep every candidate, everything else is flagged,
and no model output whatsoever loses a candidate (property test over >= 1000 arbitrary outputs)."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from mmsearch.reranker.base import result_in_order
from mmsearch.reranker.schema import (
    MAX_RAW_CHARS,
    OutputCheck,
    RankingOutput,
    check_output,
    max_output_chars,
    ranking_schema,
    resolve_attempts,
)
from mmsearch.types import Hit


def test_valid_permutation_is_ok():
    check = check_output('{"ranking": [3, 1, 2], "reasons": "3 matches"}', 3)
    assert check == OutputCheck("ok", [2, 0, 1], "3 matches", None)


def test_duplicates_are_dropped_and_missing_ids_appended_in_retrieval_order():
    check = check_output('{"ranking": [4, 4, 2], "reasons": "r"}', 5)
    assert check.verdict == "repaired"
    assert check.order == [3, 1, 0, 2, 4]
    assert check.note == "dropped duplicate ids [4]; appended missing ids [1, 3, 5] in retrieval order"


def test_unknown_ids_are_dropped_and_named():
    check = check_output('{"ranking": [2, 7, "x", 1, true], "reasons": ""}', 2)
    assert (check.verdict, check.order) == ("repaired", [1, 0])
    assert check.note == 'dropped unknown ids [7, "x", true]'


def test_text_around_the_json_is_tolerated_as_a_repair():
    check = check_output('Sure! {"ranking": [2, 1], "reasons": "ok"} Hope this helps', 2)
    assert (check.verdict, check.order, check.note) == ("repaired", [1, 0], "accepted after lenient parsing")


def test_overlong_reasons_are_cut_to_the_bound():
    check = check_output(json.dumps({"ranking": [1, 2], "reasons": "x" * 50}), 2, max_reasons_chars=10)
    assert (check.verdict, check.reasons) == ("repaired", "x" * 10)
    assert check.note == "cut reasons from 50 to 10 characters"


@pytest.mark.parametrize(
    ("raw", "note"),
    [
        ("", "empty output"),
        ("   ", "empty output"),
        (None, "empty output"),
        ("[1, 2]", "expected a JSON object, got list"),
        ('{"reasons": "no ranking"}', '"ranking" must be a list, got NoneType'),
        ('{"ranking": [9, 0, -1], "reasons": ""}', "ranking names none of the candidate ids 1..3"),
        (
            '{"ranking": [1, 2',
            "not JSON (JSONDecodeError: Expecting ',' delimiter: line 1 column 18 (char 17))",
        ),
        ("x" * (MAX_RAW_CHARS + 1), f"output of {MAX_RAW_CHARS + 1} characters exceeds {MAX_RAW_CHARS}"),
    ],
)
def test_unusable_outputs_are_invalid_with_a_reason(raw, note):
    check = check_output(raw, 3)
    assert (check.verdict, check.order, check.note) == ("invalid", None, note)


def test_deeply_nested_junk_is_invalid_not_a_crash():
    check = check_output("[" * 50_000 + "]" * 50_000, 3)
    assert check.verdict == "invalid"
    assert check.note.startswith("not JSON (RecursionError")


def test_pydantic_model_rejects_duplicates_with_the_request_context():
    with pytest.raises(ValidationError, match=r"ranking must be a permutation of 1..3, got \[1, 1, 2\]"):
        RankingOutput.model_validate_json('{"ranking": [1, 1, 2], "reasons": ""}', context={"k": 3})


def test_schema_constrains_ids_to_exactly_the_candidates():
    schema = ranking_schema(4, 50)
    ranking = schema["properties"]["ranking"]
    assert ranking["items"]["enum"] == [1, 2, 3, 4]
    assert (ranking["minItems"], ranking["maxItems"], ranking["uniqueItems"]) == (4, 4, True)
    assert schema["properties"]["reasons"]["pattern"].endswith("{0,50}$")
    assert schema["additionalProperties"] is False


def test_max_output_chars_matches_the_longest_answer():
    longest = json.dumps({"ranking": list(range(1, 21)), "reasons": "x" * 30}, separators=(",", ":"))
    assert max_output_chars(20, 30) == len(longest)


def test_retry_that_succeeds_reports_both_answers():
    first = check_output("garbage", 2)
    second = check_output('{"ranking": [2, 1], "reasons": ""}', 2)
    status, order, note = resolve_attempts([first, second], 2)
    assert (status, order) == ("ok", [1, 0])
    assert (
        note
        == "first answer unusable (not JSON (JSONDecodeError: Expecting value: line 1 column 1 (char 0))); retried once with short reasons"
    )


def test_two_unusable_answers_fall_back_to_retrieval_order():
    checks = [check_output("", 3), check_output("[]", 3)]
    status, order, note = resolve_attempts(checks, 3)
    assert (status, order) == ("fallback", [0, 1, 2])
    assert note == (
        "first answer unusable (empty output); retried once with short reasons; "
        "retry unusable (expected a JSON object, got list); kept retrieval order"
    )


# ---------------------------------------------------------------------------------------------------------------
# Property: whatever the model says, the candidates all come back, or the fallback is flagged.

_json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-5, max_value=30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["1", "2", " 3 ", "10", "0x1", "٣"]),
)
_json_value = st.recursive(
    _json_leaf,
    lambda children: st.one_of(
        st.lists(children, max_size=25), st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=60,
)
_answer = st.fixed_dictionaries(
    {"ranking": st.one_of(st.lists(st.integers(min_value=-2, max_value=25), max_size=30), _json_value)},
    optional={"reasons": st.one_of(st.text(max_size=50), st.text(min_size=500, max_size=3000), _json_value)},
)


@st.composite
def model_outputs(draw) -> str:
    kind = draw(st.sampled_from(["answer", "answer", "value", "text", "truncated", "wrapped", "huge"]))
    if kind == "answer":
        return json.dumps(draw(_answer))
    if kind == "value":
        return json.dumps(draw(_json_value))
    if kind == "text":
        return draw(st.text(max_size=200))
    if kind == "truncated":
        full = json.dumps(draw(_answer))
        return full[: draw(st.integers(min_value=0, max_value=len(full)))]
    if kind == "wrapped":
        return draw(st.text(max_size=20)) + json.dumps(draw(_answer)) + draw(st.text(max_size=20))
    return (
        '{"ranking": ['
        + ",".join(["1"] * draw(st.integers(1000, 20000)))
        + '], "reasons": "'
        + "y" * 5000
        + '"}'
    )


@settings(max_examples=1200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=model_outputs(), second=model_outputs(), k=st.integers(min_value=2, max_value=20))
def test_any_model_output_yields_a_permutation_or_a_flagged_fallback(first, second, k):
    hits = [Hit(id=f"h{i}", score=1.0 - i / 100) for i in range(k)]
    checks = [check_output(first, k, max_reasons_chars=80)]
    if checks[0].verdict == "invalid":
        checks.append(check_output(second, k, max_reasons_chars=24))
    for check in checks:
        if check.verdict == "invalid":
            assert check.order is None and check.note, "an unusable output must say why"
        else:
            assert sorted(check.order) == list(range(k)), f"{check.verdict} must be a permutation of all {k}"
            assert len(check.reasons) <= 80
    status, order, note = resolve_attempts(checks, k)
    result = result_in_order(hits, order, status=status, reason=note)
    assert sorted(h.id for h in result.hits) == sorted(h.id for h in hits), "no candidate may be lost"
    if checks[-1].verdict == "invalid":
        assert (result.status, result.order) == ("fallback", list(range(k)))
        assert result.reason, "a fallback must carry its reason"
    else:
        assert result.status in ("ok", "repaired")
