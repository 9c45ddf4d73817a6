"""Evaluation reports from results: final scores with the judges' weighted ones, tables, pages, charts."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from afs_build.evaluation import charts, reports
from afs_build.evaluation.benchmark import summarize


def result(qid, category, score, grader="keywords", **extra):
    return {"run": "r", "specialist": "alpha", "model_file": "specialists/alpha/post/alpha-Q8_0.gguf",
            "quant": "Q8_0", "model_digest": "d1", "question_id": qid, "category": category, "reply": "x",
            "score": score, "passed": None if score is None else score >= 1.0, "grader": grader, "detail": "",
            "error": None, "attempts": 1, "cached": False, "latency_s": 0.5, "ttft_s": 0.05,
            "completion_tokens": 10, "tokens_per_second": 20.0, **extra}


RESULTS = [result("a", "snes", 1.0), result("b", "snes", 0.0), result("c", "snes", None, "judge"),
           result("d", "general", None, "numeric", error="HTTP 503 (after 3 tries)", latency_s=None,
                  ttft_s=None, completion_tokens=None)]
JUDGE = {"method": "log-odds", "krippendorff_alpha": 0.41, "alpha_units": 6, "no_weight": ["beta"], "feedback": 1,
         "judges": {"beta": {"verdicts": 4, "parse_rate": 0.5, "agreement": 0.5, "kappa": 0.0,
                             "balanced_accuracy": 0.5, "weight": 0.0, "status": "no better than chance: weight 0"},
                    "gamma": {"verdicts": 4, "parse_rate": 1.0, "agreement": 1.0, "kappa": 1.0,
                              "balanced_accuracy": 0.83, "weight": 1.6, "status": "reliable"}},
         "models": {"alpha": {"judged": 3, "rule_mean": 0.5, "weighted_mean_on_rule": 0.5,
                              "judge_graded": {"c": 0.75}, "judge_graded_mean": 0.75}},
         "pairwise": {"alpha": {"base": "plain", "questions": 2, "judged": 1, "wins": 1, "ties": 0, "losses": 0,
                                "unjudged": 1, "sign_p": 1.0}}}


def test_a_models_report_takes_the_judges_weighted_score_and_leaves_failures_unscored():
    summary = summarize("alpha", RESULTS)
    assert summary["failed_requests"] == 1 and summary["pending_judges"] == 1 and summary["mean_score"] == 0.5
    report = reports.model_report("alpha", RESULTS, summary, suite_version="v1", judge=JUDGE)
    by_id = {q["question_id"]: q for q in report["questions"]}
    assert by_id["c"]["score"] == 0.75 and by_id["c"]["grader"] == "judge (weighted)" and by_id["c"]["passed"]
    assert by_id["d"]["score"] is None and by_id["d"]["error"].startswith("HTTP 503")
    assert report["overall"] == {"questions": 4, "scored": 3, "mean_score": round(1.75 / 3, 4), "passed": 2}
    assert report["by_category"]["snes"]["mean_score"] == round(1.75 / 3, 4)
    assert report["by_category"]["general"]["mean_score"] is None
    assert (report["model_digest"], report["suite_version"], report["quant"]) == ("d1", "v1", "Q8_0")
    assert report["speed"]["latency_s"] == {"p50": 0.5, "p95": 0.5} and report["pairwise"]["wins"] == 1
    no_judges = reports.model_report("alpha", RESULTS, summary, suite_version="v1")
    assert {q["question_id"]: q["grader"] for q in no_judges["questions"]}["c"] == "judge (no reliable verdict)"


def test_markdown_html_and_charts():
    summary = summarize("alpha", RESULTS)
    report = reports.model_report("alpha", RESULTS, summary, suite_version="v1", judge=JUDGE)
    text = reports.model_markdown(report)
    assert "| snes | 3 | 3 | 0.583 | 2 |" in text and "| d | general | numeric | - | HTTP 503 (after 3 tries) |" in text
    family = reports.family_report({"alpha": report}, suite_version="v1", judge=JUDGE)
    text = reports.family_markdown(family)
    assert "Krippendorff's alpha across judges: 0.41 over 6 answers" in text
    assert "| beta | 4 | 0.50 | 0.50 | 0.00 | 0.50 | 0.00 | no better than chance: weight 0 |" in text
    assert "No weight (no better than chance, or unmeasurable): beta." in text
    svg = charts.categories("scores", reports.category_scores({"alpha": report, "beta": report}))
    root = ET.fromstring(svg)  # well-formed SVG
    bars = [e for e in root.iter("{http://www.w3.org/2000/svg}rect") if e.find("{http://www.w3.org/2000/svg}title") is not None]
    assert len(bars) == 2  # snes for both models; general has no score: no bar
    scatter = ET.fromstring(charts.speed("speed", reports.speed_points({"alpha": report})))
    assert len(list(scatter.iter("{http://www.w3.org/2000/svg}circle"))) == 1
    page = reports.html_page("alpha", reports.model_markdown(report), [svg])
    assert page.count("<svg") == 1 and "<table>" in page and "http://" not in page.replace("http://www.w3.org", "")
