"""The paired comparison of a specialist with its base: statistics, tables, versions."""

from __future__ import annotations

import math

import pytest

from afs_build.evaluation import compare
from afs_build.evaluation.stats import bootstrap_interval, paired, sign_test


def test_sign_test_matches_the_binomial_distribution():
    assert sign_test(0, 0) == 1.0
    assert sign_test(5, 0) == pytest.approx(2 / 2**5)
    # 9 wins, 5 losses: two-sided P(X <= 5) for Binomial(14, 1/2), doubled
    expected = 2 * sum(math.comb(14, i) for i in range(6)) / 2**14
    assert sign_test(9, 5) == pytest.approx(expected) == sign_test(5, 9)
    assert sign_test(7, 7) == 1.0


def test_bootstrap_interval_is_seeded_and_brackets_the_mean():
    values = [0.0, 0.5, 1.0, 0.0, 0.25, 1.0, 0.0, 0.0]
    low, high = bootstrap_interval(values, seed=3)
    assert (low, high) == bootstrap_interval(values, seed=3)
    assert low < sum(values) / len(values) < high
    assert bootstrap_interval([0.5] * 10) == (0.5, 0.5)
    assert bootstrap_interval([]) == (0.0, 0.0)


def test_paired_counts_wins_ties_losses_and_says_better_only_above_zero():
    better = paired([1, 1, 1, 0.5, 0, 0, 0, 0, 0, 0, 0, 0], [0] * 12)
    assert (better.wins, better.ties, better.losses) == (4, 8, 0)
    assert better.low > 0 and better.better and not better.worse
    assert better.sign_p == pytest.approx(2 / 16)
    tie = paired([1, 0, 0.5, 0], [0, 1, 0.5, 0])
    assert (tie.wins, tie.ties, tie.losses) == (1, 2, 1) and not tie.better
    assert tie.difference == 0 and tie.low < 0 < tie.high
    worse = paired([0] * 10, [1] * 10)
    assert worse.worse and worse.high < 0
    with pytest.raises(ValueError):
        paired([1], [1, 0])
    assert paired([], []).questions == 0


QUESTIONS = [
    {"id": "a1", "category": "asm", "specialists": ["nayru"]},
    {"id": "a2", "category": "asm", "specialists": ["nayru", "din"]},
    {"id": "o1", "category": "opt", "specialists": ["din", "nayru"]},
    {"id": "o2", "category": "opt", "specialists": ["din"]},
    {"id": "g1", "category": "general", "specialists": ["agahnim", "nayru", "din"]},
]


def test_own_categories_are_where_the_suite_names_the_specialist_first():
    assert compare.own_categories(QUESTIONS, "nayru") == ["asm"]
    assert compare.own_categories(QUESTIONS, "din") == ["opt"]
    assert compare.own_categories(QUESTIONS, "nobody") == []
    assert compare.own_categories(QUESTIONS, "nayru", ["opt", "asm"]) == ["asm", "opt"]


def result(qid, category, score):
    return {"question_id": qid, "category": category, "score": score}


def test_table_pairs_by_question_and_gives_a_verdict():
    spec = [result("a1", "asm", 1.0), result("a2", "asm", 1.0), result("o1", "opt", 0.0),
            result("g1", "general", 0.0), result("x", "asm", 1.0)]
    base = [result("g1", "general", 1.0), result("a2", "asm", 0.0), result("a1", "asm", 0.0),
            result("o1", "opt", 0.0)]
    out = compare.table(spec, base, own=["asm"], general="general")
    assert out["unpaired"] == 1  # "x" has no base answer
    assert out["own"]["questions"] == 2 and out["own"]["mean_a"] == 1.0 and out["own"]["mean_b"] == 0.0
    assert out["general"]["losses"] == 1 and out["general"]["difference"] == -1.0
    assert out["overall"]["questions"] == 4
    assert set(out["by_category"]) == {"asm", "opt", "general"}
    assert out["verdict"] == compare.VERDICT_BETTER
    assert "Nayru v6: own 1.00 vs base 0.00, difference +1.00" in compare.line("Nayru v6", out)
    out = compare.table(spec, base, own=["opt"], general=None)
    assert out["verdict"] == compare.VERDICT_NOT and out["general"]["questions"] == 0


def test_agreement_and_regression():
    assert compare.agreement({"a": "Yes  it is", "b": "no"}, {"a": "Yes it is", "b": "maybe"}) == 0.5
    assert compare.agreement({}, {"a": "x"}) is None
    worse = compare.regression({q: 0.0 for q in "abcdefgh"}, {q: 1.0 for q in "abcdefgh"})
    assert worse["regressed"] and worse["questions"] == 8
    same = compare.regression({"a": 1.0, "b": 0.0}, {"a": 1.0, "b": 0.0, "c": 1.0})
    assert not same["regressed"] and same["questions"] == 2
