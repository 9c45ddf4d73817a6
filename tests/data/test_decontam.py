"""Decontamination: training samples that contain an evaluation question are dropped."""

from __future__ import annotations

import pytest

from afs_build.data.decontam import Decontaminator, decontaminate, words
from afs_build.data.records import Reject, make_sample

EVAL = [
    "What is the capital of France?",
    "Write a Python function that returns the n-th Fibonacci number using memoization "
    "and explain its time complexity.",
    "Hi there friend",
]


def sample(user: str, answer: str = "An answer.", *, source: str = "s") -> dict:
    return make_sample(source, [{"role": "user", "content": user},
                                {"role": "assistant", "content": answer}],
                       provenance={"file": "train.jsonl", "line": 4})


def test_words_are_normalized():
    assert words("Ｗhat's  the CAPITAL, of France?") == ["what", "s", "the", "capital", "of",
                                                       "france"]


def test_exact_match_ignores_case_spacing_and_punctuation():
    kept, rejects, stats = decontaminate([sample("what is the capital of  FRANCE")], EVAL)
    assert kept == []
    (reject,) = rejects
    assert reject.reason == "contaminated: matches eval question 'What is the capital of France?'"
    assert reject.detail["match"] == "exact" and reject.detail["question"] == 0
    assert (reject.file, reject.line, reject.excerpt) == (
        "train.jsonl", 4, "what is the capital of  FRANCE")
    assert stats["exact"] == 1 and stats["contaminated"] == 1


def test_ngram_containment_inside_a_longer_sample():
    prompt = ("Here is a task from my homework. Write a Python function that returns the "
              "n-th Fibonacci number using memoization and explain its time complexity. "
              "Thanks a lot!")
    kept, rejects, stats = decontaminate([sample(prompt)], EVAL)
    (reject,) = rejects
    assert reject.reason == ("contaminated: matches eval question 'Write a Python function "
                             "that returns the n-th Fibonacci n...'")
    assert reject.detail["match"] == "ngram" and reject.detail["overlap"] == 1.0
    assert stats == {"questions": 3, "checked": 1, "contaminated": 1, "exact": 0, "ngram": 1,
                     "questions_matched": 1, "ngram_size": 8, "min_overlap": 0.5}


def test_a_question_in_the_answer_counts_too():
    answer = ("Sure. Write a Python function that returns the n-th Fibonacci number using "
              "memoization and explain its time complexity: that is a classic exercise.")
    _, rejects, _ = decontaminate([sample("Give me a classic exercise.", answer)], EVAL)
    assert len(rejects) == 1


def test_a_shared_stock_phrase_is_not_enough():
    prompt = "Write a Python function that returns the sum of a list of integers."
    kept, rejects, _ = decontaminate([sample(prompt)], EVAL)
    assert rejects == [] and len(kept) == 1


def test_the_overlap_share_is_configurable():
    half = ("Write a Python function that returns the n-th Fibonacci number quickly, please "
            "do it in a loop.")
    assert decontaminate([sample(half)], EVAL)[1] == []
    assert len(decontaminate([sample(half)], EVAL, min_overlap=0.1)[1]) == 1


def test_short_questions_only_match_exactly():
    kept, rejects, _ = decontaminate([sample("Hi there friend, how are you doing today?")], EVAL)
    assert rejects == [] and len(kept) == 1
    assert len(decontaminate([sample("hi there, friend!")], EVAL)[1]) == 1


def test_questions_shorter_than_the_ngram_match_as_a_whole():
    checker = Decontaminator(["Name the largest planet please"])
    assert checker.match(sample("Quick quiz: name the largest planet please!")) == (
        0, "ngram", 1.0)
    assert checker.match(sample("Name the largest moon please")) is None


def test_rejects_pass_through_and_parameters_are_checked():
    earlier = Reject("s", "malformed JSON", line=1)
    checker = Decontaminator(EVAL)
    assert list(checker.apply([earlier])) == [earlier]
    assert checker.stats["checked"] == 0
    with pytest.raises(ValueError, match="ngram must be between 1 and 64"):
        Decontaminator(EVAL, ngram=0)
    with pytest.raises(ValueError, match=r"min_overlap must be in \(0, 1\]"):
        Decontaminator(EVAL, min_overlap=0)
