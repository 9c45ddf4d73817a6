"""The evaluation of a family through doit: real tiny models served, asked, judging each other,
drawn in real Chromium and reported; then rebuilt only where something changed."""

from __future__ import annotations

import json

import pytest

from afs_build.cli import main as afs
from test_end_to_end import doit, free_port

SUITE = [
    {"id": "sum", "category": "general", "question": "What is 12 plus 30?", "answer": "42", "grading": "numeric",
     "value": 42, "max_tokens": 8},
    {"id": "france", "category": "general", "question": "What is the capital of France?", "answer": "Paris",
     "grading": "contains", "max_tokens": 8},
    {"id": "dma", "category": "snes", "question": "Which register starts DMA?", "answer": "MDMAEN at $420B",
     "keywords": ["MDMAEN"], "max_tokens": 8},
    {"id": "mode7", "category": "snes", "question": "What mode rotates a background?", "answer": "Mode 7.",
     "grading": "judge", "max_tokens": 8},
    {"id": "table", "category": "snes", "question": "Give a Markdown table of INIDISP's address.",
     "answer": "| INIDISP | $2100 |", "grading": "regex", "pattern": "2100", "render": "markdown", "max_tokens": 8},
]


def is_png(path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_a_family_is_evaluated_judged_drawn_and_reported(project, minimal):
    from tinymodel import build_tiny_model

    build_tiny_model(project.root / "tiny")
    build_tiny_model(project.root / "tiny2", seed=1)
    minimal["models"] = {"tiny": {"path": "tiny", "params_b": 0.001}, "tiny2": {"path": "tiny2", "params_b": 0.001}}
    served = {"role": "Served", "train": False, "quantize": ["Q8_0"], "context_length": 512,
              "system_prompt": "You answer briefly."}
    minimal["specialists"] = {"plain": {**served, "base": "tiny", "port": free_port()},
                              "other": {**served, "base": "tiny2", "port": free_port()},
                              "third": {**served, "base": "tiny", "port": free_port()}}
    minimal["eval"] = {"suite": "suite.jsonl", "judges": "all", "judge_questions": 3}
    files = {"suite.jsonl": "".join(json.dumps(q) + "\n" for q in SUITE)}
    path = project.write(minimal, files)
    build, names = project.root / "build", ("plain", "other", "third")
    try:
        ran = doit(project.root, "scorecard:family")
        assert {"judge:family", "screenshots:family", "scorecard:family"} <= ran
        assert {f"eval:{n}" for n in names} <= ran

        results = {n: [json.loads(x) for x in (build / f"specialists/{n}/eval/results.jsonl").read_text().splitlines()]
                   for n in names}
        judged = next(r for r in results["plain"] if r["question_id"] == "mode7")
        assert judged["score"] is None and judged["grader"] == "judge"  # left to the judges
        verdicts = [json.loads(x) for x in (build / "reports/judge/verdicts.jsonl").read_text().splitlines()]
        assert verdicts and all(v["judge"] != v["specialist"] for v in verdicts)  # never its own
        # every model's judge-graded answer and 3 rule-graded ones, by each of the 2 other judges
        assert len(verdicts) == 3 * (1 + 3) * 2
        report = json.loads((build / "reports/judge/judge.json").read_text())
        assert set(report["judges"]) == set(names)
        for judge, r in report["judges"].items():
            assert r["parse_rate"] == 1.0  # the grammar makes even a random model write a verdict
            assert r["verdicts"] == 8 and r["with_truth"] == 6
            assert (r["weight"] > 0) == (r["status"] == "reliable")
            assert r["status"] == "reliable" or r["weight"] == 0.0
        assert report["krippendorff_alpha"] is None or -1 <= report["krippendorff_alpha"] <= 1
        for name in names:
            score = report["models"][name]["judge_graded"]["mode7"]
            assert score is None or 0 <= score <= 1  # no reliable judge: no score, never 0 by default

        # reports at their stable paths, with the digest and the suite's version
        for name in names:
            folder = build / "reports/eval" / name
            model = json.loads((folder / "report.json").read_text())
            assert model["model_digest"] and model["suite_version"] and model["overall"]["questions"] == 5
            assert {q["question_id"] for q in model["questions"]} == {q["id"] for q in SUITE}
            assert "| category |" in (folder / "report.md").read_text()
            page = (folder / "report.html").read_text()
            assert "<svg" in page and "src=\"http" not in page and "href=\"http" not in page
            assert is_png(folder / "categories.png")
        family = json.loads((build / "reports/eval/_family/report.json").read_text())
        assert set(family["models"]) == set(names) and set(family["judges"]["reliability"]) == set(names)
        assert is_png(build / "reports/eval/_family/speed.png") and is_png(build / "reports/eval/_family/categories.png")

        # screenshots: the first run records the baselines
        shots = json.loads((build / "specialists/plain/screenshots/screenshots.json").read_text())
        assert shots["questions"]["table"]["status"] == "recorded" and shots["recorded"] == 1
        baseline = project.root / "eval/baselines/plain/table.png"
        assert is_png(baseline) and is_png(build / "specialists/plain/screenshots/diff/table.png")
        assert "baseline/table.png" in (build / "specialists/plain/screenshots/index.html").read_text()

        assert doit(project.root, "scorecard:family") == set()  # nothing changed: nothing done

        # a baseline that no longer matches is reported, and accepting the new images clears it
        baseline.write_bytes(_other_image(baseline))
        assert "screenshots:family" in doit(project.root, "scorecard:family")
        shots = json.loads((build / "specialists/plain/screenshots/screenshots.json").read_text())
        assert shots["questions"]["table"]["status"] == "differs" and shots["questions"]["table"]["diff_ratio"] > 0
        assert afs(["screenshots", "-m", str(path), "--accept", "plain"]) == 0
        doit(project.root, "screenshots:family")
        shots = json.loads((build / "specialists/plain/screenshots/screenshots.json").read_text())
        assert shots["questions"]["table"]["status"] == "matches"

        # a new pass mark asks the suite again: every reply from the cache, nothing asked
        minimal["eval"]["thresholds"] = {"min_tokens_per_second": 0.001}
        project.write(minimal, files)
        assert "eval:plain" in doit(project.root, "eval:plain")
        again = [json.loads(x) for x in (build / "specialists/plain/eval/results.jsonl").read_text().splitlines()]
        assert all(r["cached"] and r["attempts"] == 0 for r in again)
        assert [r["reply"] for r in again] == [r["reply"] for r in results["plain"]]

        # without the grammar the tiny models write no verdict: counted as unparsed, never a score
        # (the pass mark goes again: a random tiny model may answer with no token at all)
        del minimal["eval"]["thresholds"]
        minimal["eval"]["judge_grammar"] = False
        project.write(minimal, files)
        doit(project.root, "judge:family")
        report = json.loads((build / "reports/judge/judge.json").read_text())
        for r in report["judges"].values():
            assert r["parse_rate"] < 1.0 and r["weight"] == 0.0
        assert all(s["weighted_score"] is None for s in report["scores"] if s["parsed"] == 0)
    finally:
        afs(["stop", "-m", str(path)])


def _other_image(path) -> bytes:
    """A different picture of the same size: the baseline inverted."""
    import io

    from PIL import Image, ImageOps

    with Image.open(path) as image:
        buffer = io.BytesIO()
        ImageOps.invert(image.convert("RGB")).save(buffer, format="PNG")
    return buffer.getvalue()
