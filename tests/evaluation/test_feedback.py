"""The feedback loop: judged mistakes merged into a project file, ingested as samples by doit."""

from __future__ import annotations

import json

from afs_build.cli import main as afs
from afs_build.data.records import split_records
from afs_build.evaluation.feedback import convert_feedback, merge
from test_end_to_end import doit

MISTAKES = [
    {"specialist": "alpha", "question_id": "dma", "question": "Which register starts DMA?",
     "bad_answer": "INIDISP.", "reference": "MDMAEN ($420B).", "judges": ["beta", "gamma"]},
    {"specialist": "beta", "question_id": "vram", "question": "How big is VRAM?", "bad_answer": "2 KiB.",
     "reference": "64 KiB.", "judges": ["alpha", "gamma"]},
]


def lines(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def test_each_mistake_becomes_the_question_answered_with_its_reference(tmp_path):
    path = tmp_path / "feedback.jsonl"
    path.write_text(lines(MISTAKES + [{"specialist": "alpha", "question": "no reference"}]))
    samples, rejects = split_records(convert_feedback(path, source="fb", specialists=("alpha",),
                                                      system_prompt="You are Alpha."))
    assert len(samples) == 1 and samples[0]["messages"] == [
        {"role": "system", "content": "You are Alpha."}, {"role": "user", "content": "Which register starts DMA?"},
        {"role": "assistant", "content": "MDMAEN ($420B)."}]
    assert samples[0]["metadata"]["feedback"]["bad_answer"] == "INIDISP."
    assert len(rejects) == 1 and rejects[0].reason.startswith("missing field") and rejects[0].line == 3


def test_merging_keeps_one_line_per_mistake(tmp_path):
    latest, target = tmp_path / "latest.jsonl", tmp_path / "data" / "feedback.jsonl"
    latest.write_text(lines(MISTAKES[:1]))
    assert merge(latest, target) == (1, 1)
    latest.write_text(lines([{**MISTAKES[0], "bad_answer": "still wrong"}, MISTAKES[1]]))
    assert merge(latest, target) == (1, 2)
    kept = [json.loads(x) for x in target.read_text().splitlines()]
    assert [k["question_id"] for k in kept] == ["dma", "vram"] and kept[0]["bad_answer"] == "still wrong"


def test_afs_feedback_feeds_the_next_round_through_ingest(project, minimal, capsys):
    minimal["sources"]["mistakes"] = {"kind": "feedback", "path": "feedback/mistakes.jsonl",
                                      "specialists": ["alpha"], "system_prompt_of": "alpha"}
    minimal["mixes"]["general"]["groups"]["all"]["sources"] = ["chat", "mistakes"]
    path = project.write(minimal, {"feedback/mistakes.jsonl": ""})
    assert afs(["feedback", "-m", str(path)]) == 1  # no round judged yet
    assert "judge a round first" in capsys.readouterr().err
    judged = project.root / "build/reports/judge/feedback.jsonl"  # what judge:family wrote
    judged.parent.mkdir(parents=True)
    judged.write_text(lines(MISTAKES))
    assert afs(["feedback", "-m", str(path)]) == 0
    assert "mistakes: 2 new mistakes, 2 in feedback/mistakes.jsonl" in capsys.readouterr().out
    assert doit(project.root, "ingest:mistakes") == {"ingest:mistakes"}
    samples = [json.loads(x) for x in (project.root / "build/data/ingest/mistakes/samples.jsonl").read_text().splitlines()]
    assert [s["messages"][-1]["content"] for s in samples] == ["MDMAEN ($420B)."]  # alpha's only
    meta = json.loads((project.root / "build/data/ingest/mistakes/meta.json").read_text())
    assert meta["records"] == {"read": 2, "kept": 1, "rejected": 0, "filtered": 1}
    assert doit(project.root, "ingest:mistakes") == set()
    assert afs(["feedback", "-m", str(path)]) == 0  # the same round again: nothing new
    assert doit(project.root, "ingest:mistakes") == set()  # the same content: not ingested again


def test_a_feedback_source_must_name_specialists_of_the_manifest(project, minimal, capsys):
    minimal["sources"]["mistakes"] = {"kind": "feedback", "path": "nowhere.jsonl", "specialists": ["alpah"]}
    path = project.write(minimal)
    assert afs(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert "sources.mistakes.path: file not found: nowhere.jsonl" in err
    assert "sources.mistakes.specialists[0]: unknown specialist 'alpah'" in err and "did you mean 'alpha'" in err
