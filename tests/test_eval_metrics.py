"""Ranking metrics against values computed by hand (the arithmetic is in each test), and the paired bootstrap."""

from __future__ import annotations

import math

import pytest

from mmsearch.evaluation.metrics import (
    METRIC_NAMES,
    mean_metrics,
    ndcg_at_k,
    paired_bootstrap,
    query_metrics,
    recall_at_k,
    reciprocal_rank,
    targets_of,
)

RANKING = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"]


def test_recall_is_one_when_a_target_is_inside_the_cutoff():
    # target "c" sits at rank 3: inside the top 5 and the top 10, outside the top 1.
    assert recall_at_k(RANKING, {"c"}, 1) == 0.0
    assert recall_at_k(RANKING, {"c"}, 5) == 1.0
    assert recall_at_k(RANKING, {"c"}, 10) == 1.0


def test_recall_counts_any_of_several_targets():
    # targets "k" (rank 11) and "e" (rank 5): the top 5 holds "e" -> 1; the top 1 holds neither -> 0.
    assert recall_at_k(RANKING, {"k", "e"}, 5) == 1.0
    assert recall_at_k(RANKING, {"k", "e"}, 1) == 0.0


def test_reciprocal_rank_of_first_target():
    # targets at ranks 4 and 7: the first is rank 4 -> 1/4 = 0.25.
    assert reciprocal_rank(RANKING, {"g", "d"}, 10) == 0.25


def test_reciprocal_rank_is_zero_past_the_cutoff():
    # the only target is rank 11 > 10 -> 0.
    assert reciprocal_rank(RANKING, {"k"}, 10) == 0.0


def test_ndcg_of_an_ideal_ordering_is_one():
    # grades 2, 1 at ranks 1, 2 are already sorted: DCG == IDCG.
    assert ndcg_at_k(["x", "y", "z"], {"x": 2, "y": 1}, 10) == pytest.approx(1.0)


def test_ndcg_with_graded_relevance_by_hand():
    # ranking a b c d; grades: b=2, d=1, z=1 (z never retrieved); gain 2^g - 1, discount log2(rank + 1).
    # DCG  = (2^2-1)/log2(3) + (2^1-1)/log2(5) = 3/1.5849625 + 1/2.3219281 = 1.8927893 + 0.4306766 = 2.3234658
    # IDCG = grades sorted 2, 1, 1: 3/log2(2) + 1/log2(3) + 1/log2(4) = 3 + 0.6309298 + 0.5 = 4.1309298
    # nDCG = 2.3234658 / 4.1309298 = 0.5624559
    value = ndcg_at_k(["a", "b", "c", "d"], {"b": 2, "d": 1, "z": 1}, 10)
    assert value == pytest.approx(0.5624559, abs=1e-6)


def test_ndcg_cutoff_ignores_ranks_beyond_k():
    # k=2 over ranking a b c, grades c=1 only: nothing relevant in the top 2 -> DCG 0 -> nDCG 0.
    assert ndcg_at_k(["a", "b", "c"], {"c": 1}, 2) == 0.0


def test_ndcg_ideal_is_cut_at_k_too():
    # k=1, ranking y x, grades x=2, y=1: DCG@1 = (2^1-1)/log2(2) = 1; IDCG@1 = (2^2-1)/1 = 3 -> 1/3.
    assert ndcg_at_k(["y", "x"], {"x": 2, "y": 1}, 1) == pytest.approx(1 / 3)


def test_targets_default_to_the_highest_grade():
    assert targets_of({"a": 2, "b": 1, "c": 2}) == {"a", "c"}
    assert targets_of({"a": 2, "b": 1, "c": 2}, threshold=1) == {"a", "b", "c"}


def test_query_metrics_by_hand():
    # grades: e=2 (rank 5), b=1 (rank 2). Targets (top grade) = {e}.
    # recall@1 = 0 (rank 1 is "a"); recall@5 = 1; recall@10 = 1; mrr@10 = 1/5 = 0.2.
    # DCG  = (2^1-1)/log2(3) + (2^2-1)/log2(6) = 0.6309298 + 3/2.5849625 = 0.6309298 + 1.1605584 = 1.7914882
    # IDCG = 3/log2(2) + 1/log2(3) = 3 + 0.6309298 = 3.6309298; nDCG = 1.7914882 / 3.6309298 = 0.4933965
    out = query_metrics(RANKING, {"e": 2, "b": 1})
    assert set(out) == set(METRIC_NAMES)
    assert out["recall@1"] == 0.0
    assert out["recall@5"] == 1.0
    assert out["recall@10"] == 1.0
    assert out["mrr@10"] == pytest.approx(0.2)
    assert out["ndcg@10"] == pytest.approx(0.4933965, abs=1e-6)


def test_query_metrics_with_threshold_counts_lower_grades_as_targets():
    # threshold 1: targets {e, b}; the first is "b" at rank 2 -> mrr 0.5, recall@1 still 0 ("a" is rank 1).
    out = query_metrics(RANKING, {"e": 2, "b": 1}, threshold=1)
    assert out["mrr@10"] == pytest.approx(0.5)
    assert out["recall@1"] == 0.0


def test_mean_metrics_averages_each_metric():
    # (1 + 0 + 0.5) / 3 = 0.5
    rows = [{"mrr@10": 1.0}, {"mrr@10": 0.0}, {"mrr@10": 0.5}]
    assert mean_metrics(rows) == {"mrr@10": pytest.approx(0.5)}


def test_duplicate_ids_in_a_ranking_are_refused():
    with pytest.raises(ValueError, match="ranking must hold distinct ids; 'a' appears more than once"):
        query_metrics(["a", "b", "a"], {"a": 1})


def test_a_query_without_relevant_ids_is_refused():
    with pytest.raises(ValueError, match="a query needs at least one relevant id"):
        query_metrics(["a"], {})


def test_non_positive_grades_are_refused():
    with pytest.raises(ValueError, match=r"relevance grades must be finite numbers > 0; got \{'a': 0\}"):
        ndcg_at_k(["a"], {"a": 0})


def test_bad_k_is_refused():
    with pytest.raises(ValueError, match="k must be a positive integer, got 0"):
        recall_at_k(["a"], {"a"}, 0)


def test_bootstrap_of_a_constant_difference_is_that_constant():
    # every query gains exactly 0.25, so every resample's mean is 0.25: the interval collapses to it.
    ci = paired_bootstrap([0.0, 0.5, 0.25, 0.75], [0.25, 0.75, 0.5, 1.0], n_resamples=200, seed=3)
    assert ci.mean == pytest.approx(0.25)
    assert ci.low == pytest.approx(0.25)
    assert ci.high == pytest.approx(0.25)
    assert ci.excludes_zero()


def test_bootstrap_interval_contains_the_mean_and_is_reproducible():
    # differences 1, 0, 0, -1, 1, 0 -> mean 1/6; percentile bounds must bracket it and repeat with the seed.
    base = [0, 1, 0, 1, 0, 0]
    treated = [1, 1, 0, 0, 1, 0]
    first = paired_bootstrap(base, treated, n_resamples=1000, seed=7)
    again = paired_bootstrap(base, treated, n_resamples=1000, seed=7)
    assert first == again
    assert first.mean == pytest.approx(1 / 6)
    assert first.low <= first.mean <= first.high
    assert -1.0 <= first.low < 0.0 < first.high <= 1.0
    assert not first.excludes_zero()
    assert (first.n, first.n_resamples, first.confidence) == (6, 1000, 0.95)


def test_bootstrap_refuses_unpaired_lengths():
    with pytest.raises(
        ValueError, match=r"base and treated must be 1-d and the same length, got \(2,\) and \(3,\)"
    ):
        paired_bootstrap([0, 1], [0, 1, 1])


def test_bootstrap_refuses_bad_confidence():
    with pytest.raises(ValueError, match="confidence must be between 0 and 1"):
        paired_bootstrap([0.0], [1.0], confidence=1.0)


def test_bootstrap_mean_matches_plain_difference_of_means():
    # mean(treated) - mean(base) = (0.2+0.4+0.9)/3 - (0.1+0.5+0.3)/3 = 0.5 - 0.3 = 0.2
    ci = paired_bootstrap([0.1, 0.5, 0.3], [0.2, 0.4, 0.9], n_resamples=10, seed=0)
    assert math.isclose(ci.mean, 0.2, abs_tol=1e-12)
