"""Retrieval quality: the question format, recall@k and MRR, and eval:index:<name>."""

from __future__ import annotations

import json

import pytest

from afs_build import log
from afs_build.errors import AfsError
from afs_build.paths import Layout
from afs_build.retrieval.build import build
from afs_build.retrieval.chunking import Chunk
from afs_build.retrieval.quality import load_questions, measure, relevant, score
from conftest import REPO
from retrieval_helpers import write_project

QUESTIONS = [
    {"id": "q1", "category": "code", "question": "Which file defines `minhash_signatures`?",
     "expected": [{"source": "code", "file": "dedup.py", "symbol": "minhash_signatures"}]},
    {"id": "q2", "category": "code", "question": "DedupIndex add",
     "expected": [{"file": "dedup.py", "symbol": "DedupIndex"}]},
    {"id": "q3", "category": "docs", "question": "install setup script",
     "expected": [{"file": "docs/guide.md", "lines": [5, 7]}]},
]


def chunk(file, start, end, symbol):
    return Chunk("code", file, start, end, symbol, "function", "python", "")


def test_relevance_by_file_symbol_members_and_lines():
    where = {"file": "a.py", "symbol": "Box"}
    assert relevant(chunk("a.py", 1, 5, "Box"), where) and relevant(chunk("a.py", 1, 5, "Box.open"), where)
    assert not relevant(chunk("a.py", 1, 5, "Boxes"), where) and not relevant(chunk("b.py", 1, 5, "Box"), where)
    assert not relevant(chunk("a.py", 1, 5, "Box"), {**where, "source": "other"})
    assert relevant(chunk("a.py", 4, 9, ""), {"file": "a.py", "lines": [9, 12]})
    assert not relevant(chunk("a.py", 4, 8, ""), {"file": "a.py", "lines": [9, 12]})
    ranked = [chunk("b.py", 1, 2, "x"), chunk("a.py", 1, 2, "Box")]
    result = score(ranked, [where])
    assert (result["recall@1"], result["recall@5"], result["rr"], result["rank"]) == (0.0, 1.0, 0.5, 2)


def test_malformed_questions_are_reported_together_with_their_lines(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"id": "a", "question": "x", "expected": [{"file": "f"}]}\nnot json\n'
                    '{"id": "a", "question": "y", "expected": [{"file": "f"}]}\n'
                    '{"id": "b", "question": "z", "expected": [{"path": "f"}]}\n'
                    '{"id": "c", "question": "z", "expected": [], "extra": 1}\n')
    with pytest.raises(AfsError) as err:
        load_questions(path, "q.jsonl")
    lines = err.value.render().splitlines()
    assert lines[0].startswith("q.jsonl:2:1: ") and "not JSON" in lines[0]
    assert lines[1:] == ["q.jsonl:3:1: id: duplicate question id 'a'",
                         "q.jsonl:4:1: expected.0: expected {file, source?, symbol?, lines?: [first, last]}",
                         "q.jsonl:5:1: extra: unknown key 'extra'; expected id, category, question, expected"]


def test_measure_writes_recall_and_mrr_per_mode_and_category(tmp_path):
    (tmp_path / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    manifest = write_project(tmp_path, index={"questions": "questions.jsonl"})
    log.setup(Layout.of(manifest).log_file)
    build(manifest, "code", "index:code")
    report = measure(manifest, "code")
    written = json.loads(Layout.of(manifest).index("code").quality.read_text())
    assert written["modes"] == report["modes"] and written["count"] == 3
    lexical = report["modes"]["lexical"]
    assert lexical["overall"] == {"recall@1": 1.0, "recall@5": 1.0, "recall@10": 1.0, "mrr": 1.0, "questions": 3}
    assert set(lexical["by_category"]) == {"code", "docs"}
    assert set(report["modes"]) == {"lexical", "dense", "hybrid"}
    assert report["questions"][0]["lexical"] == {"rank": 1, "top": "dedup.py:6-8"}


def test_the_shipped_question_set_points_at_chunks_that_exist():
    """Every expected location of data/eval/retrieval.jsonl is a chunk of the default sources
    (chunking only: no embedding), so the set stays true as the code moves."""
    from afs_build.manifest import load
    from afs_build.retrieval.build import collect

    manifest = load(REPO / "afs.yaml")
    index = manifest.retrieval.indexes["afs"]
    chunks, _, _ = collect(manifest, index)
    missing = [(q["id"], w) for q in load_questions(REPO / index.questions)
               for w in q["expected"] if not any(relevant(c, w) for c in chunks)]
    assert missing == []
