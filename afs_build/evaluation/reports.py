"""Evaluation reports, per model and for the family: JSON, Markdown and a self-contained HTML page.

A model's report holds every question (its final score: the rule's, or the judges' weighted
score for a judge-graded one), per category and overall means, the speed percentiles, the
model file's digest and the suite's version, and where they exist its comparison with its
base, its judges' pairwise verdict and its screenshots. The family's report puts the models
side by side with the judges' reliability. Field by field in the notes (eval.md).
"""

from __future__ import annotations

from html import escape
from typing import Optional, Sequence

from .benchmark import block

FORMAT = 1  # bump when a field changes meaning


def final_results(results: Sequence[dict], judged: Optional[dict]) -> list[dict]:
    """The results with judge-graded scores filled in from judge.json's weighted scores."""
    graded = (judged or {}).get("judge_graded", {})
    out = []
    for r in results:
        r = dict(r)
        if r["grader"] == "judge" and not r.get("error"):
            r["score"] = graded.get(r["question_id"])
            r["passed"] = None if r["score"] is None else r["score"] >= 0.5
            r["grader"] = "judge (weighted)" if r["score"] is not None else "judge (no reliable verdict)"
        out.append(r)
    return out


def model_report(name: str, results: Sequence[dict], summary: dict, *, suite_version: Optional[str],
                 judge: Optional[dict] = None, compare: Optional[dict] = None,
                 screenshots: Optional[dict] = None, kind: str = "specialist") -> dict:
    judged = (judge or {}).get("models", {}).get(name)
    final = final_results(results, judged)
    categories = sorted({r["category"] for r in final})
    first = final[0] if final else {}
    pairwise = (judge or {}).get("pairwise", {}).get(name)
    return {
        "format": FORMAT, "model": name, "kind": kind, "suite_version": suite_version,
        "model_file": first.get("model_file"), "model_digest": summary.get("model_digest") or first.get("model_digest"),
        "quant": first.get("quant"), "run": first.get("run"),
        "overall": block(final), "by_category": {c: block([r for r in final if r["category"] == c]) for c in categories},
        "speed": {k: summary.get(k) for k in ("latency_s", "ttft_s", "tokens_per_second", "decode_tokens_per_second",
                                             "completion_tokens", "seconds")},
        "failed_requests": summary.get("failed_requests", 0), "cached": summary.get("cached", 0),
        "questions": [{k: r.get(k) for k in ("question_id", "category", "grader", "score", "passed", "detail", "error",
                                             "latency_s", "ttft_s", "completion_tokens", "cached")} for r in final],
        "judged": None if judged is None else {k: judged[k] for k in ("judged", "rule_mean", "weighted_mean_on_rule",
                                                                     "judge_graded_mean")},
        "pairwise": None if pairwise is None else {k: pairwise[k] for k in ("base", "questions", "judged", "wins",
                                                                          "ties", "losses", "unjudged", "sign_p")},
        "compare": None if compare is None else {k: compare.get(k) for k in ("verdict", "own", "general", "overall",
                                                                             "base", "version")},
        "screenshots": None if screenshots is None else {k: screenshots.get(k, 0) for k in ("matches", "differs", "recorded")},
    }


def family_report(reports: dict[str, dict], *, suite_version: Optional[str], judge: Optional[dict]) -> dict:
    return {
        "format": FORMAT, "suite_version": suite_version,
        "models": {n: {k: r[k] for k in ("kind", "model_digest", "quant", "overall", "by_category", "speed",
                                          "failed_requests", "compare", "pairwise", "screenshots")}
                   for n, r in reports.items()},
        "categories": sorted({c for r in reports.values() for c in r["by_category"]}),
        "judges": None if judge is None else {
            "method": judge["method"], "krippendorff_alpha": judge["krippendorff_alpha"],
            "alpha_units": judge["alpha_units"], "no_weight": judge["no_weight"], "feedback": judge["feedback"],
            "reliability": {j: {k: r.get(k) for k in ("verdicts", "parse_rate", "agreement", "kappa",
                                                       "balanced_accuracy", "weight", "status")}
                            for j, r in judge["judges"].items()}},
    }


def category_scores(reports: dict[str, dict]) -> dict[str, dict[str, Optional[float]]]:
    return {n: {c: b["mean_score"] for c, b in r["by_category"].items()} for n, r in reports.items()}


def speed_points(reports: dict[str, dict]) -> dict[str, tuple]:
    return {n: (r["speed"].get("tokens_per_second"), r["overall"]["mean_score"]) for n, r in reports.items()}


def _num(value, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _speed_cells(s: dict) -> list[str]:
    lat, ttft = s.get("latency_s") or {}, s.get("ttft_s") or {}
    return [_num(lat.get("p50")), _num(lat.get("p95")), _num(ttft.get("p50"), 3), _num(ttft.get("p95"), 3),
            _num(s.get("tokens_per_second"), 1)]


def model_markdown(report: dict) -> str:
    o = report["overall"]
    out = [f"# {report['model']}: evaluation", "",
           f"Mean score {_num(o['mean_score'], 3)} over {o['scored']} scored of {o['questions']} questions "
           f"({o['passed']} passed); model file `{report['model_file'] or '-'}` (digest `{report['model_digest'] or '-'}`), "
           f"suite version `{report['suite_version'] or '-'}`.", "", "## Per category", "",
           _table(["category", "questions", "scored", "mean", "passed"],
                  [[c, b["questions"], b["scored"], _num(b["mean_score"], 3), b["passed"]]
                   for c, b in report["by_category"].items()]),
           "", "## Speed", "",
           _table(["latency p50 s", "latency p95 s", "TTFT p50 s", "TTFT p95 s", "tokens/s"], [_speed_cells(report["speed"])])]
    if report.get("compare"):
        c = report["compare"]
        out += ["", f"Against its base: **{c['verdict']}** (own categories {_num(c['own']['mean_a'])} vs "
                    f"{_num(c['own']['mean_b'])}, difference {_num(c['own']['difference'])} "
                    f"[{_num(c['own']['low'])}, {_num(c['own']['high'])}])."]
    if report.get("pairwise"):
        p = report["pairwise"]
        out += ["", f"Judged pairwise against {p['base']} (both orders): {p['wins']}/{p['ties']}/{p['losses']} W/T/L, "
                    f"{p['unjudged']} of {p['questions']} without a reliable consistent verdict."]
    out += ["", "## Questions", "",
            _table(["question", "category", "grader", "score", "note"],
                   [[q["question_id"], q["category"], q["grader"], _num(q["score"]),
                     (q["error"] or q["detail"] or "")[:120]] for q in report["questions"]])]
    return "\n".join(out) + "\n"


def family_markdown(report: dict) -> str:
    cats = report["categories"]
    out = ["# The family: evaluation", "", f"Suite version `{report['suite_version'] or '-'}`.", "", "## Scores", "",
           _table(["model", "mean", "scored"] + cats,
                  [[n, _num(m["overall"]["mean_score"], 3), m["overall"]["scored"]]
                   + [_num((m["by_category"].get(c) or {}).get("mean_score")) for c in cats]
                   for n, m in report["models"].items()]),
           "", "## Speed", "",
           _table(["model", "latency p50 s", "latency p95 s", "TTFT p50 s", "TTFT p95 s", "tokens/s"],
                  [[n] + _speed_cells(m["speed"]) for n, m in report["models"].items()])]
    judges = report.get("judges")
    if judges:
        out += ["", "## Judges", "", f"Weights: {judges['method']}. Krippendorff's alpha across judges: "
                f"{_num(judges['krippendorff_alpha'])} over {judges['alpha_units']} answers.", "",
                _table(["judge", "verdicts", "parsed", "agreement", "kappa", "balanced acc.", "weight", "status"],
                       [[j, r["verdicts"], _num(r["parse_rate"]), _num(r["agreement"]), _num(r["kappa"]),
                         _num(r["balanced_accuracy"]), _num(r["weight"]), r["status"]]
                        for j, r in judges["reliability"].items()])]
        if judges["no_weight"]:
            out += ["", f"No weight (no better than chance, or unmeasurable): {', '.join(judges['no_weight'])}."]
    return "\n".join(out) + "\n"


STYLE = ("body{font-family:'DejaVu Sans',sans-serif;margin:24px;color:#111;max-width:1100px}"
         "table{border-collapse:collapse;margin:8px 0}th,td{border:1px solid #bbb;padding:3px 8px;text-align:left}"
         "th{background:#eee}code{font-family:'DejaVu Sans Mono',monospace}")


def html_page(title: str, markdown_text: str, svgs: Sequence[str]) -> str:
    """A self-contained page: the Markdown report as HTML, the SVG charts inline, styles inline."""
    from .render import markdown

    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(svgs)}{markdown(markdown_text)}</body></html>\n")


def charts_categories(title: str, reports: dict[str, dict]) -> str:
    from . import charts

    return charts.categories(title, category_scores(reports))


def charts_speed(title: str, reports: dict[str, dict]) -> str:
    from . import charts

    return charts.speed(title, speed_points(reports))
