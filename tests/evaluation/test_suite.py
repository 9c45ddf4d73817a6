"""The benchmark suite: every line checked, problems reported together with file:line."""

from __future__ import annotations

import json

import pytest

from afs_build.errors import AfsError
from afs_build.evaluation import suite
from conftest import REPO

NAMES = ["majora", "nayru", "veran", "agahnim", "hylia", "din", "farore"]


def write(tmp_path, lines) -> object:
    path = tmp_path / "suite.jsonl"
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def q(qid, **extra) -> dict:
    return {"id": qid, "category": "general", "question": f"Question {qid}?", "keywords": ["x"], **extra}


def test_the_default_suite_loads_and_every_specialist_has_questions():
    questions = suite.load(REPO / "data/eval/suite.jsonl", specialists=NAMES, judges=["agahnim"])
    assert len(questions) == 121
    assert len({x["id"] for x in questions}) == 121
    for name in NAMES:
        assert suite.for_specialist(questions, name), name


def test_defaults_filled_and_selection(tmp_path):
    path = write(tmp_path, [q("a"), q("b", specialists=["majora"]), q("c", specialists=["nayru"])])
    questions = suite.load(path, specialists=NAMES)
    assert questions[0]["grading"] == "keywords" and questions[0]["max_tokens"] == 256
    assert questions[0]["system"] is None
    assert [x["id"] for x in suite.for_specialist(questions, "majora")] == ["a", "b"]
    assert [x["id"] for x in suite.for_specialist(questions, "nayru", limit=1)] == ["a"]


def test_every_problem_is_reported_with_its_line(tmp_path):
    path = write(tmp_path, [
        q("ok"),
        {"id": "Bad Id", "category": "general", "question": "Q?"},
        q("ok"),
        q("who", specialists=["majroa"]),
        q("judged", grading="judge"),
        q("exact", grading="exact"),
        {"id": "nokw", "category": "general", "question": "Q?"},
        {"id": "extra", "category": "general", "question": "Q?", "keywords": ["x"], "answr": "typo"},
        q("re", grading="regex", pattern="(unclosed"),
        q("num", grading="numeric", answer="none"),
        q("js", grading="json", answer="{not json"),
        q("code", grading="code"),
        q("code2", grading="code", tests="def test_x(:\n    pass"),
    ])
    with pytest.raises(AfsError) as err:
        suite.load(path, "suite.jsonl", specialists=NAMES)
    assert str(err.value).splitlines() == [
        "suite.jsonl:2:1: id: 'Bad Id' does not have the expected form (pattern ^[a-z0-9][a-z0-9_.-]{0,63}$)",
        "suite.jsonl:3:1: id: duplicate question id 'ok' (first on line 1); ids must be unique",
        "suite.jsonl:4:1: specialists: unknown specialist 'majroa'; expected one of the manifest's: "
        "majora, nayru, veran, agahnim, hylia, din, farore",
        "suite.jsonl:5:1: grading: grading 'judge' needs judge models; name some in the manifest's eval.judges",
        "suite.jsonl:6:1: answer: grading 'exact' compares the reply with the answer; give an answer",
        "suite.jsonl:7:1: keywords: grading 'keywords' needs keywords; list the words a correct answer contains",
        "suite.jsonl:8:1: answr: unknown key 'answr'; expected one of: 'answer', 'category', 'difficulty', "
        "'grading', 'id', 'keywords', 'max_diff_ratio', 'max_tokens', 'min_ssim', 'pattern', 'question', "
        "'relative_tolerance', 'render', 'specialists', 'system', 'tags', 'tests', 'timeout_s', 'tolerance', "
        "'value' (did you mean 'answer'?)",
        "suite.jsonl:9:1: pattern: not a regular expression: missing ), unterminated subpattern at position 0",
        "suite.jsonl:10:1: value: grading 'numeric' needs a value (or a number in answer)",
        "suite.jsonl:11:1: answer: grading 'json' compares with the answer parsed as JSON, but it is not JSON: "
        "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
        "suite.jsonl:12:1: tests: grading 'code' needs tests: def test_*(): functions that import from solution",
        "suite.jsonl:13:1: tests: the tests are not Python: invalid syntax (line 1)",
    ]


def test_bad_json_and_empty_and_missing_files(tmp_path):
    with pytest.raises(AfsError, match=r"suite.jsonl:2: invalid JSON: .*; each line of a benchmark "
                                       r"suite is one JSON object"):
        suite.load(write(tmp_path, [q("a"), "{not json"]))
    with pytest.raises(AfsError, match="the benchmark suite has no questions"):
        suite.load(write(tmp_path, ["", "  "]))
    with pytest.raises(AfsError, match="nowhere.jsonl: cannot read the benchmark suite: No such file"):
        suite.load(tmp_path / "nowhere.jsonl", "nowhere.jsonl")
