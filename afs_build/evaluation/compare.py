"""A specialist against the model it was trained from: the same questions, paired.

The specialist's replies come from its ``eval`` run; its base is asked every one of those
questions with the specialist's system prompt, the same sampling and the same grading. The
tables compare the two question by question (:mod:`afs_build.evaluation.stats`): per category,
over the specialist's own categories (its subject), over the general category (what it forgot)
and overall. A specialist is *better than its base* when the interval of its own-category
difference lies above zero.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable, Optional, Sequence

from .stats import paired

VERDICT_BETTER = "better than its base"
VERDICT_NOT = "not better than its base"
VERDICT_WORSE = "worse than its base"


def own_categories(questions: Sequence[dict], name: str, declared: Optional[Iterable[str]] = None) -> list[str]:
    """The categories that are `name`'s subject: `declared`, else those where the suite names it
    first on most of the category's questions."""
    if declared:
        return sorted(declared)
    first: Counter = Counter()
    total: Counter = Counter()
    for q in questions:
        total[q["category"]] += 1
        if q["specialists"] and q["specialists"][0] == name:
            first[q["category"]] += 1
    return sorted(c for c, n in first.items() if 2 * n > total[c])


def table(spec_results: Sequence[dict], base_results: Sequence[dict], *, own: Sequence[str],
          general: Optional[str], seed: int = 0) -> dict:
    """Paired statistics per category and for the own, general and overall groups.

    Results are matched by question id; a question only one side answered (or scored: a failed
    request, a question judges grade) is left out and counted under ``unpaired``.
    """
    base = {r["question_id"]: r for r in base_results if r.get("score") is not None}
    pairs = [(r, base[r["question_id"]]) for r in spec_results
             if r["question_id"] in base and r.get("score") is not None]
    unpaired = len(spec_results) - len(pairs)

    def block(items) -> dict:
        return paired([a["score"] for a, _ in items], [b["score"] for _, b in items], seed=seed).to_json()

    categories = sorted({a["category"] for a, _ in pairs})
    out = {
        "own_categories": list(own),
        "general_category": general,
        "own": block([p for p in pairs if p[0]["category"] in own]),
        "general": block([p for p in pairs if general and p[0]["category"] == general]),
        "overall": block(pairs),
        "by_category": {c: block([p for p in pairs if p[0]["category"] == c]) for c in categories},
        "unpaired": unpaired,
    }
    out["verdict"] = verdict(out["own"])
    return out


def verdict(own: dict) -> str:
    if own["questions"] and own["low"] > 0:
        return VERDICT_BETTER
    if own["questions"] and own["high"] < 0:
        return VERDICT_WORSE
    return VERDICT_NOT


def agreement(replies: dict[str, str], reference: dict[str, str]) -> Optional[float]:
    """Fraction of questions whose reply equals the reference reply (white space aside)."""
    common = [q for q in replies if q in reference]
    if not common:
        return None
    same = sum(1 for q in common if " ".join(replies[q].split()) == " ".join(reference[q].split()))
    return round(same / len(common), 4)


def regression(current: dict[str, float], previous: dict[str, float], *, seed: int = 0) -> dict:
    """This version's own-category scores against the previous version's, paired by question.

    A regression is an interval of the difference that lies wholly below zero.
    """
    common = sorted(set(current) & set(previous))
    result = paired([current[q] for q in common], [previous[q] for q in common], seed=seed).to_json()
    result["regressed"] = bool(common) and result["high"] < 0
    return result


def line(name: str, report: dict) -> str:
    """One console line: own-category means, the difference with its interval, the verdict."""
    own, general = report["own"], report["general"]
    text = (f"{name}: own {own['mean_a']:.2f} vs base {own['mean_b']:.2f}, "
            f"difference {own['difference']:+.2f} [{own['low']:+.2f}, {own['high']:+.2f}], "
            f"{own['wins']}/{own['ties']}/{own['losses']} W/T/L")
    if general["questions"]:
        text += f"; general {general['mean_a']:.2f} vs {general['mean_b']:.2f}"
    return f"{text}: {report['verdict']}"
