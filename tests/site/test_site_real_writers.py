"""The site reads what the real writers write, not only the fake build: a real index built and
measured (a tiny BERT embedder), and a real paired comparison table."""

from __future__ import annotations

import json
import sys

from afs_build import log
from afs_build.paths import Layout
from afs_build.site import render, versus
from conftest import REPO

sys.path.insert(0, str(REPO / "tests" / "retrieval"))
from retrieval_helpers import write_project  # noqa: E402

QUESTIONS = [{"id": "q1", "category": "code", "question": "Which file defines `minhash_signatures`?",
              "expected": [{"source": "code", "file": "dedup.py", "symbol": "minhash_signatures"}]}]


def block(macro: str, **context) -> str:
    return render.environment().from_string('{% import "macros.md.j2" as m %}' + macro).render(**context)


def test_the_index_section_shows_a_real_index_and_its_measured_quality(tmp_path):
    from afs_build.retrieval.build import build
    from afs_build.retrieval.quality import measure

    (tmp_path / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    manifest = write_project(tmp_path, index={"questions": "questions.jsonl"})
    log.setup(Layout.of(manifest).log_file)
    assert "not built yet" in block("{{ m.index_block(i) }}", i=versus.index(manifest, "code"))
    report = build(manifest, "code", "index:code")
    measure(manifest, "code")
    shown = versus.index(manifest, "code")
    assert {r["mode"] for r in shown["rows"]} == {"lexical", "dense", "hybrid"}
    assert all(r["recall@1"] is not None and r["mrr"] is not None for r in shown["rows"])
    assert shown["chart"].points == 12
    text = block("{{ m.index_block(i) }}", i=shown)
    assert f"{report['chunks']} chunks from {report['files']} files" in text
    assert f"{report['model']['dims']} dimensions" in text and report["model"]["name"] in text
    assert "<td>lexical</td><td>1.00</td>" in text  # the one question's file is found first
    assert "–" not in text.split("Built")[0]  # every field of the real sidecar found


def test_the_verdict_box_reads_a_real_paired_table():
    from afs_build.evaluation.compare import table

    def rows(scores):
        return [{"question_id": f"q{i}", "category": c, "score": s} for i, (c, s) in enumerate(scores)]

    mine = rows([("snes", 1.0)] * 8 + [("general", 0.0)] * 8)
    base = rows([("snes", 0.0)] * 8 + [("general", 1.0)] * 8)
    report = table(mine, base, own=["snes"], general="general", seed=0)
    assert versus.forgetting(report["general"]) == versus.FORGETS
    report["quantization"] = {"F16": {"mean_score": 0.5, "agreement_with_f16": 1.0, "questions": 4},
                              "Q8_0": {"mean_score": 0.25, "agreement_with_f16": 0.5, "questions": 4}}

    class Spec:
        title = "Veran"

    headline = {"name": "veran", "spec": Spec, "compared": True, "verdict": report["verdict"],
                "own": report["own"], "own_categories": report["own_categories"], "general": report["general"],
                "general_category": "general", "forgetting": versus.forgetting(report["general"]),
                "quant": versus.quant_cost(report, "Q8_0"), "retrieval": None, "retrieves": False}
    text = block("{{ m.versus(h) }}", h=headline)
    assert "better than its base" in text and "1.00 vs 0.00" in text and "(+1.00 [+1.00, +1.00])" in text
    assert "0.00 vs 1.00" in text and "forgets general questions" in text
    assert "Served Q8_0: score 0.25 against the F16's 0.50 (-0.25), 50% of 4 replies identical" in text
