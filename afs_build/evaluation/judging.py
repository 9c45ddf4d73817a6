"""Models grading models: verdicts, each judge's measured reliability, weights, agreement.

Every judge is asked, for an answer of another model (never its own), whether it is correct
against the question's reference, and must reply with a fixed verdict line (``VERDICT:
CORRECT`` or ``VERDICT: WRONG``). A reply without exactly one verdict is *unparsed*: counted
against the judge's parse rate, never guessed, never a score for the answer.

Reliability is measured where the truth is known: on answers that also have a rule grade
(passed or not). Weights are one-coin log-odds weights, ``log(b / (1 - b))``, of the judge's
*balanced* accuracy b (the mean of its accuracy on right and on wrong answers, each
Laplace-smoothed): under the one-coin model (a judge is right with the same probability
whatever the truth, independently of the others) log-odds weights make the weighted vote the
most likely verdict, and the Dawid-Skene EM is not needed because the truth is known for these
answers. Balanced rather than plain accuracy because small models answer mostly wrong: a
judge that always says WRONG would score a high plain accuracy and carry no information; its
balanced accuracy is 0.5, its weight 0. A judge whose balanced accuracy is not above 0.5 (no
better than chance), or whose rule-graded answers were all right or all wrong (its reliability
cannot be measured), gets weight 0, and the report says which.

Krippendorff's alpha (nominal, missing verdicts allowed) measures how much the judges agree
with each other beyond chance, over every answer two or more judges gave a verdict on.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from typing import Iterable, Optional, Sequence

CORRECT, WRONG = "correct", "wrong"
_VERDICT = re.compile(r"verdict\W{0,3}\s*(correct|incorrect|wrong)\b", re.I)
_WINNER = re.compile(r"winner\W{0,3}\s*(a|b|tie)\b", re.I)

VERDICT_SYSTEM = ("You check answers against a reference answer. Reply with exactly one line: "
                  "VERDICT: CORRECT if the answer agrees with the reference, or VERDICT: WRONG if "
                  "it does not. Write nothing before the verdict.")
PAIRWISE_SYSTEM = ("You compare two answers to the same question against a reference answer. Reply "
                   "with exactly one line: WINNER: A if answer A is better, WINNER: B if answer B is "
                   "better, or WINNER: TIE. Write nothing before it.")
# For afs's own servers (eval.judge_grammar): the verdict line is all a judge may write.
VERDICT_GRAMMAR = 'root ::= "VERDICT: " ("CORRECT" | "WRONG")'
PAIRWISE_GRAMMAR = 'root ::= "WINNER: " ("A" | "B" | "TIE")'
MAX_ANSWER_CHARS = 1500  # what a judge is shown of an answer: small judges have small contexts


def _cut(text: str) -> str:
    return text if len(text) <= MAX_ANSWER_CHARS else text[:MAX_ANSWER_CHARS] + " [...]"


def verdict_messages(question: dict, answer: str) -> list[dict]:
    reference = question.get("answer") or "(none given: judge from the question alone)"
    user = (f"Question: {question['question']}\n\nReference answer: {reference}\n\n"
            f"Answer to check: {_cut(answer)}\n\nReply VERDICT: CORRECT or VERDICT: WRONG.")
    return [{"role": "system", "content": VERDICT_SYSTEM}, {"role": "user", "content": user}]


def pairwise_messages(question: dict, first: str, second: str) -> list[dict]:
    reference = question.get("answer") or "(none given)"
    user = (f"Question: {question['question']}\n\nReference answer: {reference}\n\n"
            f"Answer A: {_cut(first)}\n\nAnswer B: {_cut(second)}\n\n"
            f"Which answer is better? Reply WINNER: A, WINNER: B or WINNER: TIE.")
    return [{"role": "system", "content": PAIRWISE_SYSTEM}, {"role": "user", "content": user}]


def parse_verdict(text: str) -> Optional[str]:
    """``correct`` or ``wrong`` when the reply holds verdicts of one kind only; else None."""
    found = {CORRECT if m.lower() == "correct" else WRONG for m in _VERDICT.findall(text or "")}
    return found.pop() if len(found) == 1 else None


def parse_winner(text: str) -> Optional[str]:
    """``A``, ``B`` or ``tie`` when the reply names one winner only; else None."""
    found = {m.upper() if m.lower() != "tie" else "tie" for m in _WINNER.findall(text or "")}
    return found.pop() if len(found) == 1 else None


# --- reliability and weights ----------------------------------------------------------------


def weight_of(balanced: Optional[float]) -> float:
    """The log-odds weight of a balanced accuracy; 0 at or below chance (0.5), or unmeasured."""
    if balanced is None or balanced <= 0.5:
        return 0.0
    balanced = min(balanced, 1 - 1e-6)
    return round(math.log(balanced / (1 - balanced)), 4)


def reliability(rows: Sequence[dict]) -> dict[str, dict]:
    """Per judge: how often it parsed, its agreement with the rule truth, its weight and why.

    Each row is a verdict: ``judge``, ``verdict`` (correct, wrong or None), ``error`` (a
    failed request) and ``truth`` (True/False from the rule grade; None when there is none).
    """
    out = {}
    by_judge: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_judge[row["judge"]].append(row)
    for judge, mine in sorted(by_judge.items()):
        asked = [r for r in mine if not r.get("error")]
        parsed = [r for r in asked if r["verdict"] is not None]
        truth = [r for r in parsed if r.get("truth") is not None]
        right = [r for r in truth if r["truth"]]
        wrong = [r for r in truth if not r["truth"]]
        agree = sum(1 for r in truth if (r["verdict"] == CORRECT) == r["truth"])
        tp = sum(1 for r in right if r["verdict"] == CORRECT)
        tn = sum(1 for r in wrong if r["verdict"] == WRONG)
        sensitivity = (tp + 1) / (len(right) + 2)
        specificity = (tn + 1) / (len(wrong) + 2)
        balanced = (sensitivity + specificity) / 2 if right and wrong else None
        weight = weight_of(balanced)
        if not truth:
            status = "unmeasured: no parsed verdict on a rule-graded answer"
        elif balanced is None:
            status = (f"unmeasured: every rule-graded answer it judged was "
                      f"{'right' if right else 'wrong'}, so its reliability cannot be told from chance")
        elif weight == 0:
            status = "no better than chance: weight 0"
        else:
            status = "reliable"
        out[judge] = {
            "verdicts": len(mine), "failed_requests": len(mine) - len(asked), "parsed": len(parsed),
            "parse_rate": round(len(parsed) / len(asked), 4) if asked else None,
            "with_truth": len(truth), "agreement": round(agree / len(truth), 4) if truth else None,
            "kappa": kappa(truth), "sensitivity": round(sensitivity, 4), "specificity": round(specificity, 4),
            "balanced_accuracy": None if balanced is None else round(balanced, 4),
            "weight": weight, "status": status,
        }
    return out


def kappa(rows: Sequence[dict]) -> Optional[float]:
    """Cohen's kappa of verdicts against the rule truth (None when chance agreement is total)."""
    n = len(rows)
    if not n:
        return None
    said = sum(1 for r in rows if r["verdict"] == CORRECT) / n
    true = sum(1 for r in rows if r["truth"]) / n
    observed = sum(1 for r in rows if (r["verdict"] == CORRECT) == r["truth"]) / n
    chance = said * true + (1 - said) * (1 - true)
    return None if chance >= 1 else round((observed - chance) / (1 - chance), 4)


def krippendorff_alpha(units: Iterable[Sequence[Optional[str]]]) -> Optional[float]:
    """Krippendorff's alpha, nominal, of units' values (None: missing); None when undefined
    (fewer than two pairable values, or every value the same)."""
    coincidence: dict[tuple, float] = defaultdict(float)
    for unit in units:
        values = [v for v in unit if v is not None]
        m = len(values)
        if m < 2:
            continue
        for i, a in enumerate(values):
            for j, b in enumerate(values):
                if i != j:
                    coincidence[(a, b)] += 1 / (m - 1)
    totals: dict[str, float] = defaultdict(float)
    for (a, _), count in coincidence.items():
        totals[a] += count
    n = sum(totals.values())
    if n <= 1:
        return None
    observed = sum(c for (a, b), c in coincidence.items() if a != b) / n
    expected = sum(totals[a] * totals[b] for a in totals for b in totals if a != b) / (n * (n - 1))
    return None if expected == 0 else round(1 - observed / expected, 4)


def weighted(rows: Sequence[dict], weights: dict[str, float]) -> Optional[float]:
    """The weighted share of CORRECT verdicts among judges with weight; None when none has."""
    total = sum(weights.get(r["judge"], 0.0) for r in rows if r["verdict"] is not None)
    if total <= 0:
        return None
    yes = sum(weights.get(r["judge"], 0.0) for r in rows if r["verdict"] == CORRECT)
    return round(yes / total, 4)


# --- pairwise -------------------------------------------------------------------------------


def pairwise_outcome(first: Optional[str], second: Optional[str]) -> Optional[str]:
    """One judge's outcome for the specialist from both orders: ``win``, ``loss``, ``tie``
    (said tie both times), ``inconsistent`` (the orders disagree: position bias), or None
    (a verdict unparsed). `first` is its winner with the specialist as A, `second` with the
    specialist as B."""
    if first is None or second is None:
        return None
    as_a = {"A": "win", "B": "loss", "tie": "tie"}[first]
    as_b = {"B": "win", "A": "loss", "tie": "tie"}[second]
    return as_a if as_a == as_b else "inconsistent"


def pairwise_summary(rows: Sequence[dict], weights: dict[str, float]) -> dict:
    """Per question the weighted outcome of the judges' consistent verdicts, and per judge its
    position consistency; wins, ties, losses and a sign test over the questions."""
    from .stats import sign_test

    by_question: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_question[row["question_id"]].append(row)
    per_judge: dict[str, dict] = defaultdict(lambda: defaultdict(int))
    outcomes = {}
    for qid, mine in by_question.items():
        vote = total = 0.0
        for row in mine:
            stats = per_judge[row["judge"]]
            outcome = row["outcome"]
            stats["pairs"] += 1
            stats["failed" if row.get("error") else outcome or "unparsed"] += 1
            stats["said_a"] += sum(1 for w in (row["first"], row["second"]) if w == "A")
            stats["parsed"] += sum(1 for w in (row["first"], row["second"]) if w is not None)
            w = weights.get(row["judge"], 0.0)
            if outcome is None or w <= 0:
                continue
            total += w
            vote += w * {"win": 1, "loss": -1}.get(outcome, 0)
        outcomes[qid] = None if total <= 0 else "win" if vote > 1e-9 else "loss" if vote < -1e-9 else "tie"
    judged = [o for o in outcomes.values() if o is not None]
    wins, losses = judged.count("win"), judged.count("loss")
    judges = {}
    for judge, s in sorted(per_judge.items()):
        both = s["pairs"] - s["unparsed"] - s["failed"]
        judges[judge] = {"pairs": s["pairs"], "failed_requests": s["failed"], "unparsed": s["unparsed"],
                         "win": s["win"], "loss": s["loss"],
                         "tie": s["tie"], "inconsistent": s["inconsistent"],
                         "position_consistency": round((both - s["inconsistent"]) / both, 4) if both else None,
                         "first_position_rate": round(s["said_a"] / s["parsed"], 4) if s["parsed"] else None,
                         "weight": weights.get(judge, 0.0)}
    return {"questions": len(outcomes), "judged": len(judged), "wins": wins, "ties": judged.count("tie"),
            "losses": losses, "unjudged": len(outcomes) - len(judged), "sign_p": round(sign_test(wins, losses), 4),
            "outcomes": outcomes, "judges": judges}


# --- feedback -------------------------------------------------------------------------------


def is_feedback(rows: Sequence[dict], weights: dict[str, float], min_judges: int,
                rule_passed: Optional[bool]) -> bool:
    """Whether reliable judges agree an answer is wrong: at least `min_judges` with weight say
    WRONG, none with weight says CORRECT, and no rule grade says it passed."""
    if rule_passed:
        return False
    said = [r["verdict"] for r in rows if weights.get(r["judge"], 0.0) > 0 and r["verdict"] is not None]
    return said.count(WRONG) >= min_judges and CORRECT not in said
