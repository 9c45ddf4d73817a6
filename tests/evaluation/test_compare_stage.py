"""compare:<specialist> and report:family through doit on a tiny family: a trained specialist,
and its base served as it is by a served-only specialist."""

from __future__ import annotations

import json

import pytest

from afs_build.cli import main as afs
from test_end_to_end import FACTS, doit, free_port

SUITE = [
    {"id": "dma", "category": "snes", "specialists": ["alpha"], "question": "Which register starts DMA on the SNES?",
     "keywords": ["420B", "MDMAEN"], "max_tokens": 12},
    {"id": "vram", "category": "snes", "specialists": ["alpha"], "question": "How big is SNES VRAM?",
     "keywords": ["64"], "max_tokens": 12},
    {"id": "france", "category": "general", "question": "What is the capital of France?",
     "answer": "Paris", "grading": "contains", "max_tokens": 12},
    {"id": "plain-only", "category": "general", "specialists": ["plain"], "question": "What is 12 plus 30?",
     "answer": "42", "grading": "exact", "max_tokens": 8},
]


@pytest.mark.slow
def test_each_specialist_is_compared_with_its_base(project, minimal):
    from tinymodel import build_tiny_model

    build_tiny_model(project.root / "tiny")
    minimal["models"] = {"tiny": {"path": "tiny", "params_b": 0.001}}
    common = {"base": "tiny", "context_length": 512, "system_prompt": "You answer briefly."}
    minimal["specialists"] = {
        "alpha": {"role": "Tester", "mix": "general", "hardware": "cpu", "port": free_port(),
                  "epochs": 2, "learning_rate": 0.003, "batch_size": 4, "max_seq_len": 128,
                  "quantize": ["Q8_0", "Q4_K_M"], "serve_quant": "Q8_0", **common},
        "plain": {"role": "Base", "train": False, "quantize": ["Q8_0"], "port": free_port(), **common},
        "gamma": {"role": "Judge", "train": False, "quantize": ["Q8_0"], "port": free_port(), **common},
    }
    minimal["mixes"]["general"]["samples"] = 16
    minimal["eval"] = {"suite": "suite.jsonl", "quant_questions": 2, "judges": "all", "judge_questions": 2}
    files = {"chat.jsonl": "".join(json.dumps({"instruction": q, "output": a}) + "\n" for q, a in FACTS),
             "suite.jsonl": "".join(json.dumps(q) + "\n" for q in SUITE)}
    path = project.write(minimal, files)
    build = project.root / "build" / "specialists" / "alpha"
    try:
        ran = doit(project.root, "report:family")
        assert {"eval:alpha", "deploy:plain", "compare:alpha", "report:family"} <= ran
        assert "eval:plain" not in ran  # the base is asked the specialist's questions, not its own

        report = json.loads((build / "compare/compare.json").read_text())
        mine = [json.loads(line) for line in (build / "eval/results.jsonl").read_text().splitlines()]
        base = [json.loads(line) for line in (build / "compare/base.jsonl").read_text().splitlines()]
        assert [r["question_id"] for r in base] == [r["question_id"] for r in mine] == ["dma", "vram", "france"]
        assert {r["specialist"] for r in base} == {"plain"}
        assert report["base_server"] == "plain" and report["own_categories"] == ["snes"]
        assert report["own"]["questions"] == 2 and report["general"]["questions"] == 1
        assert report["overall"]["questions"] == 3 and report["seen_in_training"] == 0
        own = report["own"]
        assert own["mean_a"] == pytest.approx(sum(r["score"] for r in mine[:2]) / 2, abs=1e-4)
        assert own["mean_b"] == pytest.approx(sum(r["score"] for r in base[:2]) / 2, abs=1e-4)
        assert own["wins"] + own["ties"] + own["losses"] == 2 and own["low"] <= own["difference"] <= own["high"]
        assert report["verdict"] in ("better than its base", "not better than its base", "worse than its base")
        quants = report["quantization"]
        assert set(quants) == {"F16", "Q8_0", "Q4_K_M"} and quants["F16"]["agreement_with_f16"] == 1.0
        assert all(q["questions"] == 2 and q["bytes"] > 0 for q in quants.values())
        rows = [json.loads(line) for line in (build / "compare/quants.jsonl").read_text().splitlines()]
        assert len(rows) == 6
        history = (build / "compare/history.jsonl").read_text().splitlines()
        assert len(history) == 1 and json.loads(history[0])["version"] == report["version"]
        family = json.loads((project.root / "build/reports/family.json").read_text())
        assert family["specialists"]["alpha"]["verdict"] == report["verdict"]

        assert doit(project.root, "report:family") == set()  # nothing changed: nothing asked again
        assert afs(["compare", "-m", str(path)]) == 0

        # judged pairwise against its base, in both orders, by the judge that answered neither
        assert "judge:family" in doit(project.root, "judge:family")
        pairs = [json.loads(line) for line in (project.root / "build/reports/judge/pairwise.jsonl").read_text().splitlines()]
        assert pairs and {p["judge"] for p in pairs} == {"gamma"} and {p["specialist"] for p in pairs} == {"alpha"}
        assert [p["question_id"] for p in pairs] and all(p["category"] == "snes" for p in pairs)
        for p in pairs:
            assert p["base"] == "plain" and len(p["replies"]) == 2 and p["error"] is None
            assert p["first"] in ("A", "B", "tie") and p["second"] in ("A", "B", "tie")  # the grammar
            assert p["outcome"] == {("A", "B"): "win", ("B", "A"): "loss", ("tie", "tie"): "tie"}.get(
                (p["first"], p["second"]), "inconsistent")
        judged = json.loads((project.root / "build/reports/judge/judge.json").read_text())["pairwise"]["alpha"]
        assert judged["questions"] == 2 and judged["base"] == "plain"
        assert judged["judged"] + judged["unjudged"] == 2
        assert judged["judges"]["gamma"]["pairs"] == 2

        # a specialist that must beat its base fails the build when it does not
        minimal["eval"]["require_beats_base"] = True
        path = project.write(minimal, files)
        if report["verdict"] == "better than its base":
            assert doit(project.root, "compare:alpha") == {"compare:alpha"}
        else:
            out = doit(project.root, "compare:alpha", ok=False)
            assert "not better than its base" in out or "worse than its base" in out
            assert "eval.require_beats_base is true" in out
    finally:
        afs(["stop", "-m", str(path)])
