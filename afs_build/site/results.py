"""The evaluation side of a page: scores per category, every question with its reply, screenshots.

Fields the evaluation adds later (judges' reliabilities, latency percentiles, time to first
token) appear without a change here: a summary's or a result's keys that this module does not
know are listed as they are, under "more measurements".
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Iterable, Optional, Sequence

from . import charts

# What the benchmark writes today (evaluation/benchmark.py); anything else is shown generically.
KNOWN_SUMMARY = {"specialist", "questions", "mean_score", "passed", "by_category", "completion_tokens",
                 "seconds", "tokens_per_second", "thresholds", "meets_thresholds", "failures"}
KNOWN_RESULT = {"run", "specialist", "model_file", "quant", "question_id", "category", "reply", "score",
                "passed", "grader", "judgements", "latency_s", "completion_tokens", "tokens_per_second",
                "time", "error", "detail"}
KINDS = ("baseline", "expected", "actual", "diff", "difference")
SCREENSHOT = re.compile(r"^(?P<id>.+?)[._-](?P<kind>baseline|expected|actual|diff|difference)\.png$")


def mean_interval(scores: Sequence[float], seed: int) -> Optional[tuple[float, float, float]]:
    """The mean of `scores` with its seeded 95% bootstrap interval; None for no scores."""
    from ..evaluation.stats import bootstrap_interval

    if not scores:
        return None
    low, high = bootstrap_interval(list(scores), seed=seed)
    return (round(sum(scores) / len(scores), 4), round(low, 4), round(high, 4))


def by_category(results: Iterable[dict]) -> dict[str, list[float]]:
    """Scores per category; a reply not graded (a failed request, judges still to come) has
    no score and is left out of the means."""
    out: dict[str, list[float]] = {}
    for r in results:
        if r.get("score") is not None:
            out.setdefault(r["category"], []).append(r["score"])
    return out


def flatten(value: dict, known: set, prefix: str = "") -> list[tuple[str, object]]:
    """``(dotted key, value)`` for the keys of `value` not in `known`, one level of nesting
    spelled out (``latency.p50``)."""
    out = []
    for key in sorted(value):
        if not prefix and key in known:
            continue
        item = value[key]
        if isinstance(item, dict) and not prefix:
            out += flatten(item, set(), f"{key}.")
        else:
            out.append((prefix + key, item))
    return out


def benchmark(name: str, summary: Optional[dict], compare: Optional[dict], results: Sequence[dict],
              base_results: Sequence[dict], seed: int, base_label: str,
              order: Optional[Sequence[str]] = None) -> Optional[dict]:
    """The scores per category against the base, the verdict and whatever else was measured."""
    if summary is None and not results:
        return None
    rows = []
    compared = (compare or {}).get("by_category", {})
    mine, base = by_category(results), by_category(base_results)
    asked = {r["category"] for r in results}
    for category in sorted(set(mine) | set(compared) | asked):
        block = compared.get(category)
        scores = mine.get(category, [])
        rows.append({"category": category, "questions": sum(1 for r in results if r["category"] == category),
                     "graded": len(scores),
                     "mean": (sum(scores) / len(scores)) if scores else None,
                     "passed": sum(1 for r in results if r["category"] == category and r.get("passed")),
                     "compared": block})
    groups = []
    if compare:
        own = ", ".join(compare.get("own_categories") or []) or "none"
        general = compare.get("general_category")
        groups = [(f"own ({own})", compare.get("own")), (f"general ({general})", compare.get("general")),
                  ("overall", compare.get("overall"))]
    categories = [r["category"] for r in rows]
    series = [(name, [mean_interval(mine.get(c, []), seed) for c in categories], False)]
    if base_results:
        series.append((base_label, [mean_interval(base.get(c, []), seed) for c in categories], True))
    chart = charts.error_bars(charts.chart_id(name, "categories"), "Score per category (95% interval)",
                              categories, series, "mean score", y_range=(0, 1), order=order,
                              caption="Bars are mean scores; whiskers their seeded 95% bootstrap "
                                      "interval over the questions.") if categories else None
    return {"summary": summary, "compare": compare, "rows": rows, "groups": groups, "chart": chart,
            "more": flatten(summary, KNOWN_SUMMARY) if summary else [],
            "regression": (compare or {}).get("regression")}


def questions(suite: dict[str, dict], results: Sequence[dict], base_results: Sequence[dict]) -> list[dict]:
    """Every question asked, in the order asked, with the reply, its grade, the judges' verdicts
    and the base's reply to the same question."""
    base = {r["question_id"]: r for r in base_results}
    rows = []
    for r in results:
        q = suite.get(r["question_id"], {})
        b = base.get(r["question_id"])
        rows.append({"id": r["question_id"], "category": r["category"], "question": q.get("question"),
                     "reference": q.get("answer"), "keywords": q.get("keywords") or [],
                     "grading": q.get("grading"), "reply": r.get("reply") or "", "score": r.get("score"),
                     "error": r.get("error"), "detail": r.get("detail"),
                     "passed": r.get("passed"), "failed": r.get("passed") is False,
                     "grader": r.get("grader"), "judgements": r.get("judgements") or [],
                     "latency_s": r.get("latency_s"), "tokens_per_second": r.get("tokens_per_second"),
                     "base_reply": b.get("reply") if b else None, "base_score": b.get("score") if b else None,
                     "more": [(k, r[k]) for k in sorted(r) if k not in KNOWN_RESULT]})
    return rows


def screenshots(folder: Path, target: Path, url_prefix: str) -> list[dict]:
    """Rendered answers (baseline, actual, difference) copied beside the page; one row per
    question id. The evaluation's folder holds either ``<id>.<kind>.png`` files or one folder
    per kind (``baseline/<id>.png``, ``actual/``, ``diff/``); `target` is emptied first."""
    if target.exists():
        shutil.rmtree(target)
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.glob("*.png")):
        match = SCREENSHOT.match(path.name)
        found.append(((match["id"], match["kind"]) if match else (path.stem, "image"), path))
    for kind in sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name in KINDS):
        for path in sorted((folder / kind).glob("*.png")):
            found.append(((path.stem, kind), path))
    rows: dict[str, dict] = {}
    for (key, kind), path in found:
        kind = {"expected": "baseline", "difference": "diff"}.get(kind, kind)
        name = path.name if path.parent == folder else f"{key}.{kind}.png"
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target / name)
        rows.setdefault(key, {"id": key, "images": {}})["images"][kind] = f"{url_prefix}/{name}"
    return [rows[k] for k in sorted(rows)]
