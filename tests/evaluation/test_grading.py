"""Rule grading and reading a judge's score."""

from __future__ import annotations

import pytest

from afs_build.evaluation import grading


def question(grading_kind, answer=None, keywords=()):
    return {"grading": grading_kind, "answer": answer, "keywords": list(keywords), "question": "Q?"}


@pytest.mark.parametrize("kind, answer, keywords, reply, score", [
    ("exact", "Paris", (), "paris.", 1.0),
    ("exact", "Paris", (), "It is Paris.", 0.0),
    ("contains", "mode 7", (), "That is  Mode\n7, which rotates.", 1.0),
    ("contains", "mode 7", (), "Mode 1.", 0.0),
    ("keywords", None, ("INIDISP", "brightness"), "INIDISP sets the Brightness.", 1.0),
    ("keywords", None, ("INIDISP", "brightness"), "inidisp, forced blank", 0.5),
    ("keywords", None, ("INIDISP", "brightness"), "", 0.0),
])
def test_rule_scores(kind, answer, keywords, reply, score):
    q = question(kind, answer, keywords)
    assert grading.rule_score(q, reply) == score
    assert grading.passed(q, score) is (score == 1.0)


def test_judge_questions_are_not_rule_graded():
    with pytest.raises(ValueError):
        grading.rule_score(question("judge"), "x")


@pytest.mark.parametrize("text, score", [
    ("Score: 7\nIt names the register.", 0.7),
    ("score=10/10", 1.0),
    ("SCORE 0 - wrong address", 0.0),
    ("8/10", 0.8),
    ("  6  ", 0.6),
    ("Score: 11", None),
    ("The answer is good.", None),
    ("It scores well on 7 counts", None),
])
def test_judge_score_is_read_from_the_reply(text, score):
    assert grading.judge_score(text) == (None if score is None else pytest.approx(score))


def test_judge_prompt_carries_the_question_reference_and_reply():
    q = {"question": "What is $2100?", "answer": "INIDISP.", "grading": "judge"}
    prompt = grading.judge_prompt(q, "The display register.")
    assert "What is $2100?" in prompt and "INIDISP." in prompt and "The display register." in prompt
    assert "(none given" in grading.judge_prompt({**q, "answer": None}, "x")
