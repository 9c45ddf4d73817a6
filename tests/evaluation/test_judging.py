"""Judging arithmetic: verdicts read, reliability and weights, Krippendorff's alpha, pairwise, feedback.

The scripted judges here stand in only for the arithmetic (known reliabilities in, known
weights out); the judges of tests/evaluation/test_family.py are real served models.
"""

from __future__ import annotations

import math
import random

import pytest

from afs_build.evaluation import judging


@pytest.mark.parametrize("text, verdict", [
    ("VERDICT: CORRECT", "correct"),
    ("verdict: wrong\nThe address is off.", "wrong"),
    ("**Verdict:** Incorrect", "wrong"),
    ("VERDICT: CORRECT ... no wait, VERDICT: WRONG", None),  # two verdicts: not guessed
    ("The answer looks right.", None),
    ("", None),
])
def test_verdicts_are_read_never_guessed(text, verdict):
    assert judging.parse_verdict(text) == verdict


@pytest.mark.parametrize("text, winner", [
    ("WINNER: A", "A"), ("winner: b because", "B"), ("WINNER: TIE", "tie"), ("WINNER: A or WINNER: B", None),
    ("A is better", None),
])
def test_winners_are_read(text, winner):
    assert judging.parse_winner(text) == winner


def test_prompts_carry_question_reference_and_answers():
    q = {"question": "What is $2100?", "answer": "INIDISP."}
    user = judging.verdict_messages(q, "The display register.")[1]["content"]
    assert "What is $2100?" in user and "INIDISP." in user and "The display register." in user
    user = judging.pairwise_messages(q, "first", "second")[1]["content"]
    assert user.index("Answer A: first") < user.index("Answer B: second")
    assert "(none given" in judging.verdict_messages({**q, "answer": None}, "x")[1]["content"]


def scripted(judge: str, accuracy_right: float, accuracy_wrong: float, truths: list[bool], seed: int) -> list[dict]:
    """A judge that is right with a known probability on right and on wrong answers."""
    rng = random.Random(seed)
    rows = []
    for i, truth in enumerate(truths):
        right = rng.random() < (accuracy_right if truth else accuracy_wrong)
        said = truth if right else not truth
        rows.append({"judge": judge, "item": i, "truth": truth, "error": None,
                     "verdict": judging.CORRECT if said else judging.WRONG})
    return rows


def test_known_reliabilities_give_known_weights():
    truths = [i % 3 == 0 for i in range(3000)]  # a third right, as a family that learns a little
    rows = (scripted("good", 0.9, 0.9, truths, 1) + scripted("fair", 0.7, 0.7, truths, 2)
            + scripted("coin", 0.5, 0.5, truths, 3) + scripted("contrary", 0.2, 0.2, truths, 4)
            + [{"judge": "yes-man", "truth": t, "error": None, "verdict": judging.CORRECT} for t in truths])
    r = judging.reliability(rows)
    assert r["good"]["weight"] == pytest.approx(math.log(0.9 / 0.1), abs=0.1)
    assert r["fair"]["weight"] == pytest.approx(math.log(0.7 / 0.3), abs=0.1)
    assert r["good"]["status"] == r["fair"]["status"] == "reliable"
    for judge in ("coin", "contrary", "yes-man"):  # no better than chance: no weight, said so
        assert r[judge]["weight"] == 0.0 and r[judge]["status"] == "no better than chance: weight 0", judge
    # plain accuracy would trust a judge that always says CORRECT on mostly right answers;
    # balanced accuracy does not
    assert r["yes-man"]["balanced_accuracy"] == pytest.approx(0.5, abs=0.01)
    assert r["good"]["kappa"] > r["fair"]["kappa"] > 0.3 and abs(r["coin"]["kappa"]) < 0.05


def test_exact_weights_of_small_counts_and_unmeasurable_judges():
    rows = [{"judge": "j", "truth": t, "error": None, "verdict": v} for t, v in
            [(True, "correct"), (True, "correct"), (False, "wrong"), (False, "correct")]]
    rows += [{"judge": "j", "truth": None, "error": None, "verdict": None},  # unparsed
             {"judge": "j", "truth": True, "error": "HTTP 503", "verdict": None}]  # failed request
    r = judging.reliability(rows)["j"]
    # sensitivity (2+1)/(2+2), specificity (1+1)/(2+2): balanced 0.625, weight log(0.625/0.375)
    assert (r["sensitivity"], r["specificity"], r["balanced_accuracy"]) == (0.75, 0.5, 0.625)
    assert r["weight"] == pytest.approx(math.log(0.625 / 0.375), abs=1e-4)
    assert (r["verdicts"], r["failed_requests"], r["parsed"], r["parse_rate"]) == (6, 1, 4, 0.8)
    assert r["agreement"] == 0.75
    only_wrong = judging.reliability([{"judge": "k", "truth": False, "error": None, "verdict": "wrong"}] * 5)["k"]
    assert only_wrong["weight"] == 0.0 and only_wrong["status"].startswith("unmeasured: every rule-graded answer")
    never = judging.reliability([{"judge": "n", "truth": True, "error": None, "verdict": None}] * 3)["n"]
    assert never["parse_rate"] == 0.0 and never["weight"] == 0.0 and never["status"].startswith("unmeasured")


def test_weighted_score_ignores_judges_without_weight_and_unparsed_verdicts():
    rows = [{"judge": "a", "verdict": "correct"}, {"judge": "b", "verdict": "wrong"},
            {"judge": "c", "verdict": "wrong"}, {"judge": "d", "verdict": None}]
    assert judging.weighted(rows, {"a": 2.0, "b": 1.0, "c": 0.0, "d": 5.0}) == pytest.approx(2 / 3, abs=1e-4)
    assert judging.weighted(rows, {"c": 0.0}) is None  # no reliable verdict: no score, not 0


def test_krippendorff_alpha_matches_krippendorffs_own_example():
    # Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", nominal data: 0.743
    units = [[1, 1, None, 1], [2, 2, 3, 2], [3, 3, 3, 3], [3, 3, 3, 3], [2, 2, 2, 2], [1, 2, 3, 4],
             [4, 4, 4, 4], [1, 1, 2, 1], [2, 2, 2, 2], [None, 5, 5, 5], [None, None, 1, 1], [None, None, 3, None]]
    assert judging.krippendorff_alpha(units) == pytest.approx(0.743, abs=5e-4)
    assert judging.krippendorff_alpha([["x", "x"], ["y", "y"]]) == 1.0
    assert judging.krippendorff_alpha([["x", "x"], ["x", "x"]]) is None  # no variation: undefined
    assert judging.krippendorff_alpha([["x", None], [None, "y"]]) is None  # nothing pairable


@pytest.mark.parametrize("first, second, outcome", [
    ("A", "B", "win"), ("B", "A", "loss"), ("tie", "tie", "tie"),
    ("A", "A", "inconsistent"), ("B", "B", "inconsistent"), ("A", "tie", "inconsistent"), ("A", None, None),
])
def test_a_pairwise_win_counts_only_when_both_orders_agree(first, second, outcome):
    assert judging.pairwise_outcome(first, second) == outcome


def test_pairwise_summary_weights_consistent_verdicts_and_measures_position_bias():
    def row(judge, qid, first, second):
        return {"judge": judge, "question_id": qid, "first": first, "second": second,
                "outcome": judging.pairwise_outcome(first, second)}

    rows = [row("good", "q1", "A", "B"), row("biased", "q1", "A", "A"),  # win; biased always says A
            row("good", "q2", "B", "A"), row("biased", "q2", "A", "A"),  # loss
            row("good", "q3", "A", "B"), row("biased", "q3", "A", "A"),  # win
            row("good", "q4", None, "B"), row("biased", "q4", "A", "A")]  # nothing consistent
    out = judging.pairwise_summary(rows, {"good": 1.5, "biased": 0.8})
    assert out["outcomes"] == {"q1": "win", "q2": "loss", "q3": "win", "q4": "tie"}
    assert (out["wins"], out["ties"], out["losses"], out["unjudged"]) == (2, 1, 1, 0)
    assert out["judges"]["biased"]["position_consistency"] == 0.0
    assert out["judges"]["biased"]["first_position_rate"] == 1.0
    assert out["judges"]["good"]["position_consistency"] == 1.0 and out["judges"]["good"]["unparsed"] == 1
    nobody = judging.pairwise_summary(rows, {})
    assert nobody["unjudged"] == 4 and nobody["judged"] == 0


def test_feedback_needs_reliable_judges_agreeing_and_no_rule_saying_right():
    rows = [{"judge": "a", "verdict": "wrong"}, {"judge": "b", "verdict": "wrong"}, {"judge": "c", "verdict": "correct"}]
    weights = {"a": 1.0, "b": 0.5, "c": 0.0}  # c says right, but c is no better than chance
    assert judging.is_feedback(rows, weights, 2, rule_passed=None)
    assert judging.is_feedback(rows, weights, 2, rule_passed=False)
    assert not judging.is_feedback(rows, weights, 2, rule_passed=True)
    assert not judging.is_feedback(rows, weights, 3, rule_passed=None)
    assert not judging.is_feedback(rows, {**weights, "c": 0.1}, 2, rule_passed=None)  # a reliable dissent
