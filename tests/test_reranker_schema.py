"""Output validation (issues 6 and 13): strict answers pass, the one safe repair (missing or repeated candidate ids)
keeps every candidate, two different answers or ids outside the candidates fall back, reasons are valid bounded
text, and no model output whatsoever loses a candidate (property test over >= 1000 arbitrary outputs)."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from mmsearch.reranker.base import result_in_order, valid_text
from mmsearch.reranker.schema import (
    MAX_FALSE_STARTS,
    MAX_RAW_CHARS,
    OutputCheck,
    RankingOutput,
    check_output,
    json_objects,
    max_output_chars,
    ranking_schema,
    resolve_attempts,
)
from mmsearch.types import Hit


def test_valid_permutation_is_ok():
    check = check_output('{"ranking": [3, 1, 2], "reasons": "3 matches"}', 3)
    assert check == OutputCheck("ok", [2, 0, 1], "3 matches", None, None)


def test_duplicates_are_dropped_and_missing_ids_appended_in_retrieval_order():
    check = check_output('{"ranking": [4, 4, 2], "reasons": "r"}', 5)
    assert check.verdict == "repaired"
    assert check.order == [3, 1, 0, 2, 4]
    assert check.note == "dropped duplicate ids [4]; appended missing ids [1, 3, 5] in retrieval order"


@pytest.mark.parametrize("ranking", ["[2, 1, 0]", "[2, 1, 3]", '[2, "1"]', "[2, 1, true]", "[2, 1.0]"])
def test_ids_that_are_not_candidates_are_invalid_not_repaired(ranking):
    """Issue 13: an id outside 1..k shows the model misread the panel labels."""
    check = check_output(f'{{"ranking": {ranking}, "reasons": ""}}', 2)
    assert (check.verdict, check.order, check.code) == ("invalid", None, "not_candidates")
    assert check.note.startswith("ranking holds ids that are not candidates 1..2: [")


def test_text_around_the_json_is_tolerated_as_a_repair():
    check = check_output('Sure! {"ranking": [2, 1], "reasons": "ok"} Hope this helps', 2)
    assert (check.verdict, check.order, check.note) == ("repaired", [1, 0], "accepted after lenient parsing")


def test_prose_with_braces_before_the_answer_does_not_hide_it():
    """Issue 13: parsing used to start at the first '{' and fall back."""
    raw = 'Labels look like {1} and {"n": 2}; set {a, b}. {"ranking": [3, 1, 2], "reasons": "3 is leopard"}'
    check = check_output(raw, 3)
    assert (check.verdict, check.order, check.reasons) == ("repaired", [2, 0, 1], "3 is leopard")


def test_two_different_answers_are_ambiguous():
    """Issue 13: the first of two answers used to be taken silently."""
    raw = '{"ranking": [1, 2], "reasons": "a"}\nOr rather: {"ranking": [2, 1], "reasons": "b"}'
    check = check_output(raw, 2)
    assert (check.verdict, check.order, check.code) == ("invalid", None, "ambiguous")
    assert check.note == "ambiguous: 2 different answers (rankings [1, 2], [2, 1])"


def test_an_invalid_second_answer_still_makes_it_ambiguous():
    check = check_output('{"ranking": [1, 2, 3], "reasons": ""} {"ranking": [9], "reasons": ""}', 3)
    assert check.code == "ambiguous"


def test_the_same_answer_twice_is_used_once():
    raw = '{"ranking": [2, 1], "reasons": "a"} {"ranking": [2, 1], "reasons": "a"}'
    check = check_output(raw, 2)
    assert (check.verdict, check.order, check.note) == ("repaired", [1, 0], "used one of 2 identical answers")


def test_objects_without_a_ranking_are_not_answers():
    check = check_output('{"note": "thinking"} then {"ranking": [1, 2], "reasons": ""}', 2)
    assert (check.verdict, check.order) == ("repaired", [0, 1])


def test_lone_surrogates_and_controls_in_reasons_become_replacement_characters():
    check = check_output('{"ranking": [1, 2], "reasons": "a\\ud800b\\u0007c"}', 2)
    assert (check.verdict, check.reasons) == ("repaired", "a\ufffdb\ufffdc")
    assert check.note == "replaced invalid characters in reasons"
    check.reasons.encode("utf-8")


def test_json_objects_skips_braces_that_start_no_object():
    assert json_objects('x {oops} {"a": {"b": 1}} [{"c": 2}] {') == ([{"a": {"b": 1}}, {"c": 2}], True)


def test_json_objects_gives_up_after_too_many_false_starts():
    objects, complete = json_objects("{" * (MAX_FALSE_STARTS + 1) + '{"ranking": [1]}')
    assert (objects, complete) == ([], False)


@pytest.mark.parametrize(
    ("raw", "note"),
    [
        ("", "empty output"),
        ("   ", "empty output"),
        (None, "empty output"),
        ("[1, 2]", "expected a JSON object, got list"),
        ('{"reasons": "no ranking"}', 'none of the 1 JSON objects has a "ranking" key'),
        ('{"ranking": 3, "reasons": ""}', '"ranking" must be a list, got int'),
        ('{"ranking": [], "reasons": ""}', "ranking is empty"),
        (
            '{"ranking": [9, 0, -1], "reasons": ""}',
            "ranking holds ids that are not candidates 1..3: [9, 0, -1]",
        ),
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
            assert valid_text(check.reasons) == check.reasons, "reasons must be valid text"
    status, order, note = resolve_attempts(checks, k)
    result = result_in_order(hits, order, status=status, reason=note)
    assert sorted(h.id for h in result.hits) == sorted(h.id for h in hits), "no candidate may be lost"
    if checks[-1].verdict == "invalid":
        assert (result.status, result.order) == ("fallback", list(range(k)))
        assert result.reason, "a fallback must carry its reason"
    else:
        assert result.status in ("ok", "repaired")


# Property: the issue-13 rules on outputs whose intended reading is known.
_prose = st.lists(
    st.sampled_from(["Sure.", " {maybe} ", "set {a, b}", " {1} ", "}", "{", ' {"n": 2} ', 'say {"x"', "\n"]),
    max_size=4,
).map("".join)
_reasons = st.lists(
    st.sampled_from(["fits", " ", "\ud800", "\udfff", "\x07", "é", "x" * 40]), max_size=8
).map("".join)


@st.composite
def labelled_outputs(draw, k: int) -> tuple[str, list[list[int]]]:
    """(raw text, the rankings of the answers it holds): prose with braces around one to three answers."""
    rankings = draw(st.lists(st.lists(st.integers(-1, k + 2), max_size=k + 2), min_size=1, max_size=3))
    if draw(st.booleans()):
        rankings = rankings[:1] * len(rankings)  # the same answer repeated is not ambiguous
    parts = [draw(_prose)]
    for ranking in rankings:
        parts += [json.dumps({"ranking": ranking, "reasons": draw(_reasons)}), draw(_prose)]
    return "".join(parts), rankings


@settings(max_examples=600, deadline=None)
@given(data=st.data(), k=st.integers(min_value=2, max_value=12))
def test_answers_are_read_past_prose_and_checked_by_the_rules(data, k):
    raw, rankings = data.draw(labelled_outputs(k))
    check = check_output(raw, k, max_reasons_chars=80)
    distinct = {json.dumps(r) for r in rankings}
    if len(distinct) > 1:
        assert (check.verdict, check.code) == ("invalid", "ambiguous"), "different answers must be ambiguous"
        return
    ranking = rankings[0]
    if any(not 1 <= i <= k for i in ranking):
        assert (check.verdict, check.code) == ("invalid", "not_candidates"), (
            "a non-candidate id must not be repaired"
        )
        return
    if not ranking:
        assert check.verdict == "invalid"
        return
    assert check.verdict in ("ok", "repaired"), check.note
    kept = list(dict.fromkeys(i - 1 for i in ranking))
    assert check.order == kept + [i for i in range(k) if i not in kept], (
        "repair appends missing ids in retrieval order"
    )
    assert len(check.reasons) <= 80
    check.reasons.encode("utf-8")  # valid text: no lone surrogates
    assert valid_text(check.reasons) == check.reasons
