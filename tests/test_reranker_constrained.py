"""Constrained decoding (issue 6): with the tiny Phi-3 tokenizer and arbitrary logits, every decode spells a valid
permutation of the candidate ids and closes within the token budget."""

from __future__ import annotations

import pytest
import torch
from outlines_core import Vocabulary

from mmsearch.errors import RerankError
from mmsearch.models.phi3_vision_processor import Phi3VisionProcessor
from mmsearch.reranker.constrained import (
    RankingConstraint,
    TokenTable,
    reasons_bound_for,
    token_budget,
    token_table,
)
from mmsearch.reranker.schema import check_output
from mmsearch.testing import build_tiny_phi3_vision


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    path = build_tiny_phi3_vision(tmp_path_factory.mktemp("tiny_phi3"))
    return Phi3VisionProcessor.from_pretrained(path).tokenizer


@pytest.fixture(scope="module")
def end_id(tokenizer) -> int:
    return tokenizer.convert_tokens_to_ids("<|end|>")


def _decode(constraint: RankingConstraint, logits_fn, budget: int, eos: int) -> tuple[str, int]:
    """Greedy loop over a fake model: what `generate` does, minus the network."""
    ids = torch.tensor([[1, 394]])
    for step in range(budget):
        scores = constraint(ids, logits_fn(step))
        token = int(torch.argmax(scores))
        if token == eos:
            return constraint.spell(ids[0, 2:].tolist()), step + 1
        ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    return constraint.spell(ids[0, 2:].tolist()), budget


def test_token_table_spells_bytes_and_word_starts_and_hides_special_tokens(tokenizer, end_id):
    table = token_table(tokenizer, end_id)
    vocab = tokenizer.get_vocab()
    assert table.token_bytes[vocab["<0x0A>"]] == b"\n"
    assert table.token_bytes[vocab["<0x7B>"]] == b"{"
    word = next(t for t in vocab if t.startswith("\u2581") and len(t) > 1)
    assert table.token_bytes[vocab[word]] == b" " + word[1:].encode()
    for special in ("<s>", "</s>", "<|end|>", "<|assistant|>", "<|image|>"):
        assert table.token_bytes[vocab[special]] is None, f"{special} must never be allowed"


def test_token_table_is_cached_per_tokenizer(tokenizer, end_id):
    assert token_table(tokenizer, end_id) is token_table(tokenizer, end_id)


@pytest.mark.parametrize("k", [2, 9, 10, 20])
def test_random_logits_always_decode_to_a_valid_permutation(tokenizer, end_id, k):
    vocab_size = 448  # the tiny model's lm_head is wider than the tokenizer, as the real one is
    bound = reasons_bound_for(k, 160, 60)
    budget = token_budget(k, bound)
    for seed in range(5):
        gen = torch.Generator().manual_seed(seed)
        constraint = RankingConstraint.build(tokenizer, k, eos_token_id=end_id, max_reasons_chars=bound)
        text, steps = _decode(
            constraint, lambda _, g=gen: torch.randn(1, vocab_size, generator=g), budget, end_id
        )
        check = check_output(text, k, max_reasons_chars=bound)
        assert check.verdict == "ok", f"seed {seed}: {text!r} -> {check.note}"
        assert steps <= budget


def test_logits_that_never_want_to_stop_still_close_within_the_budget(tokenizer, end_id):
    k, bound = 9, reasons_bound_for(9, 80, 200)
    budget = token_budget(k, bound)
    assert budget <= 80
    letter = tokenizer.get_vocab()["A"]

    def talkative(_step):
        scores = torch.zeros(1, 448)
        scores[0, letter] = 10.0  # always prefers one more reasons character
        scores[0, end_id] = -10.0
        return scores

    constraint = RankingConstraint.build(tokenizer, k, eos_token_id=end_id, max_reasons_chars=bound)
    text, steps = _decode(constraint, talkative, budget, end_id)
    assert check_output(text, k, max_reasons_chars=bound).verdict == "ok", text
    assert text.endswith("A" * bound + '"}')
    assert steps <= budget


def test_multi_character_tokens_never_overrun_the_reasons_bound(tokenizer, end_id):
    word = tokenizer.get_vocab()["ock"]  # a 3-character piece: 10 is not a multiple of 3

    def wordy(_step):
        scores = torch.zeros(1, 448)
        scores[0, word] = 10.0
        scores[0, end_id] = -10.0
        return scores

    constraint = RankingConstraint.build(tokenizer, 3, eos_token_id=end_id, max_reasons_chars=10)
    text, _ = _decode(constraint, wordy, token_budget(3, 10), end_id)
    check = check_output(text, 3, max_reasons_chars=10)
    assert check.verdict == "ok", text
    assert check.reasons.startswith("ockockock") and len(check.reasons) <= 10


def test_reasons_count_starts_where_a_token_opens_the_string():
    # Tokens such as '",' open the reasons and write into them at once (the 32k Phi-3 vocabulary has many).
    pieces = [b'"', b'",', b'":"', b'ab"}', b"abc", None]
    table = TokenTable(pieces, Vocabulary(5, {p: [i] for i, p in enumerate(pieces) if p}), 5)
    assert table.reasons_added(',"reasons":').tolist()[:5] == [0, 1, 1, 0, 0]
    assert table.reasons_added(',"reasons').tolist()[:5] == [0, 0, 0, 0, 0]
    assert table.reasons_added(',"reasons":"').tolist()[:5] == [0, 0, 0, 2, 3]
    assert table.reasons_added(',"reasons":"')[5] > 10_000, "special tokens never fit"


def test_a_repeated_id_is_masked_inside_the_ranking(tokenizer, end_id):
    vocab = tokenizer.get_vocab()
    one = vocab["1"]

    def likes_one(_step):
        scores = torch.zeros(1, 448)
        scores[0, one] = 10.0  # "1" everywhere, i.e. [1,1,1,...] without the uniqueness mask
        return scores

    constraint = RankingConstraint.build(tokenizer, 3, eos_token_id=end_id, max_reasons_chars=0)
    text, _ = _decode(constraint, likes_one, token_budget(3, 0), end_id)
    assert check_output(text, 3, max_reasons_chars=0).order == [0, 1, 2], text


def test_the_index_is_cached_per_k_whatever_the_reasons_bound(tokenizer, end_id):
    RankingConstraint.build(tokenizer, 7, eos_token_id=end_id, max_reasons_chars=33)
    again = RankingConstraint.build(tokenizer, 7, eos_token_id=end_id, max_reasons_chars=5)
    assert again.index_build_ms == 0.0


def test_a_budget_too_small_for_k_is_a_clear_error():
    with pytest.raises(
        RerankError, match="max_new_tokens=40 cannot fit a ranking of 20 candidates; need at least"
    ):
        reasons_bound_for(20, 40, 100)


def test_batches_are_refused_with_the_batch_size(tokenizer, end_id):
    constraint = RankingConstraint.build(tokenizer, 2, eos_token_id=end_id, max_reasons_chars=5)
    with pytest.raises(RerankError, match="RankingConstraint handles batch size 1, got 2"):
        constraint(torch.ones(2, 3, dtype=torch.long), torch.zeros(2, 448))
