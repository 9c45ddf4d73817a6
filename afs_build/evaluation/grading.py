"""Scoring a reply: by rule (exact, contains, keywords) or by judge models.

Rule grading compares normalized text: lower case, runs of white space as one space, and
punctuation at either end dropped, so "Paris." equals "paris". A judge is another served
model, asked to score the reply against the reference answer from 0 to 10; its score is read
from its reply (``Score: 7``) and scaled to 0-1. A judge whose reply carries no score is left
out of the mean and recorded with its reply as the reason.
"""

from __future__ import annotations

import re
import string
from typing import Optional

_SPACE = re.compile(r"\s+")
_SCORE = re.compile(r"score\s*[:=]?\s*(\d+(?:\.\d+)?)\s*(?:/\s*10)?", re.I)
_BARE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*10)?\s*$")

JUDGE_SYSTEM = ("You grade answers to questions. Compare the answer with the reference answer "
                "and reply with one line 'Score: N' where N is 0 (wrong) to 10 (fully correct), "
                "then one sentence saying why.")


def normalize(text: str) -> str:
    return _SPACE.sub(" ", text.lower()).strip().strip(string.punctuation + " ")


def rule_score(question: dict, reply: str) -> float:
    """Score of `reply` under the question's rule grading (exact, contains or keywords)."""
    grading = question["grading"]
    if grading == "exact":
        return float(normalize(reply) == normalize(question["answer"]))
    if grading == "contains":
        return float(normalize(question["answer"]) in normalize(reply))
    if grading == "keywords":
        text = reply.lower()
        found = sum(1 for word in question["keywords"] if word.lower() in text)
        return found / len(question["keywords"])
    raise ValueError(f"not a rule grading: {grading!r}")


def passed(question: dict, score: float) -> Optional[bool]:
    """Whether a reply is right: by rule, every keyword there or the answer matched (score 1);
    by judges, a mean score of at least half."""
    return score >= 1.0 if question["grading"] != "judge" else score >= 0.5


def judge_prompt(question: dict, reply: str) -> str:
    reference = question["answer"] or "(none given: judge from the question alone)"
    return (f"Question: {question['question']}\n\nReference answer: {reference}\n\n"
            f"Answer to grade: {reply}\n\nReply with 'Score: N' (0-10), then why.")


def judge_score(text: str) -> Optional[float]:
    """The 0-1 score in a judge's reply ("Score: 7", "score=7/10" or a bare "7"), or None."""
    found = _SCORE.search(text) or _BARE.match(text)
    if not found:
        return None
    value = float(found.group(1))
    return value / 10 if 0 <= value <= 10 else None
