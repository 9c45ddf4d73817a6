"""Scoring a reply by rule: exact, contains, keywords, regex, numeric, json, or code.

Text rules compare normalized text: lower case, runs of white space as one space, and
punctuation at either end dropped, so "Paris." equals "paris". ``regex`` searches the reply
for the question's ``pattern`` (case-insensitive, multi-line). ``numeric`` reads the first
number of the reply that the question does not itself contain (decimal, ``0x``/``$`` hex,
thousands separators) and compares it with the question's ``value`` within ``tolerance``
(absolute) or ``relative_tolerance``. ``json`` parses the reply's first JSON value (a fenced
```json block first) and compares it with the parsed ``answer``: objects by keys, in any
order; numbers by value. ``code`` runs the reply's code block against the question's tests in
a sandbox (:mod:`.sandbox`). Judge grading is :mod:`.judging`'s.

Each rule gives a score from 0 to 1 and, where it helps a reader, a reason (``detail``).
"""

from __future__ import annotations

import json
import math
import re
import string
from typing import Any, Optional

_SPACE = re.compile(r"\s+")
_NUMBER = re.compile(r"(?<![\w.])(?:(0x[0-9a-f]+)|\$([0-9a-f]+)\b|([-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?"
                     r"|[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?))", re.I)
_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)

RULES = ("exact", "contains", "keywords", "regex", "numeric", "json", "code")


def normalize(text: str) -> str:
    return _SPACE.sub(" ", text.lower()).strip().strip(string.punctuation + " ")


def grade(question: dict, reply: str) -> tuple[float, str]:
    """(score, reason) of `reply` under the question's rule grading."""
    kind = question["grading"]
    if kind == "exact":
        return float(normalize(reply) == normalize(question["answer"])), ""
    if kind == "contains":
        return float(normalize(question["answer"]) in normalize(reply)), ""
    if kind == "keywords":
        text = reply.lower()
        missing = [word for word in question["keywords"] if word.lower() not in text]
        found = len(question["keywords"]) - len(missing)
        return found / len(question["keywords"]), f"missing: {', '.join(missing)}" if missing else ""
    if kind == "regex":
        found = re.search(question["pattern"], reply, re.I | re.M)
        return float(found is not None), "" if found else f"no match for /{question['pattern']}/"
    if kind == "numeric":
        return numeric(question, reply)
    if kind == "json":
        return json_score(question, reply)
    if kind == "code":
        from .sandbox import run_tests

        return run_tests(question, reply)
    raise ValueError(f"not a rule grading: {kind!r}")


def rule_score(question: dict, reply: str) -> float:
    """Score of `reply` under the question's rule grading."""
    return grade(question, reply)[0]


def passed(question: dict, score: Optional[float]) -> Optional[bool]:
    """Whether a reply is right: by rule, a score of 1 (every keyword, every test); by judges,
    a weighted score of at least half; None when it has no score."""
    if score is None:
        return None
    return score >= 1.0 if question["grading"] != "judge" else score >= 0.5


# --- numbers --------------------------------------------------------------------------------


def numbers(text: str) -> list[float]:
    """The numbers written in `text`, in order."""
    out = []
    for match in _NUMBER.finditer(text):
        hex_a, hex_b, dec = match.groups()
        try:
            out.append(float(int(hex_a or hex_b, 16)) if (hex_a or hex_b) else float(dec.replace(",", "")))
        except ValueError:
            continue
    return out


def expected_value(question: dict) -> Optional[float]:
    """The value a numeric question expects: its ``value``, else the first number of its answer."""
    if question.get("value") is not None:
        return float(question["value"])
    found = numbers(question.get("answer") or "")
    return found[0] if found else None


def numeric(question: dict, reply: str) -> tuple[float, str]:
    want = expected_value(question)
    asked = set(numbers(question["question"]))
    given = [n for n in numbers(reply) if n not in asked]
    if not given:
        return 0.0, "no number in the reply beyond those in the question"
    got = given[0]
    room = max(float(question.get("tolerance") or 0.0),
               abs(want) * float(question.get("relative_tolerance") or 0.0))
    ok = want is not None and math.isfinite(got) and abs(got - want) <= room + 1e-12
    return float(ok), "" if ok else f"read {got:g}, expected {want:g} ± {room:g}"


# --- JSON -----------------------------------------------------------------------------------


def first_json(reply: str) -> tuple[bool, Any]:
    """(found, value): a fenced ```json block's value, else the first JSON object or array."""
    decoder = json.JSONDecoder()
    for lang, block in _FENCE.findall(reply):
        if lang.lower() in ("json", ""):
            try:
                return True, json.loads(block)
            except ValueError:
                pass
    for i, char in enumerate(reply):
        if char in "{[":
            try:
                return True, decoder.raw_decode(reply, i)[0]
            except ValueError:
                continue
    return False, None


def same_json(a: Any, b: Any) -> bool:
    """Equal as JSON values: objects by their keys in any order, numbers by value, lists in order."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def json_score(question: dict, reply: str) -> tuple[float, str]:
    found, value = first_json(reply)
    if not found:
        return 0.0, "no JSON value in the reply"
    ok = same_json(value, json.loads(question["answer"]))
    return float(ok), "" if ok else "the JSON differs from the reference"


def code_block(reply: str, languages: tuple[str, ...] = ("python", "py", "python3", "")) -> Optional[str]:
    """The first fenced code block in one of `languages` (an unlabelled one counts)."""
    for lang, block in _FENCE.findall(reply):
        if lang.lower() in languages:
            return block
    return None
