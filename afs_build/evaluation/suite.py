"""The benchmark suite: questions in a JSONL file, one ``specs/question.schema.json`` object a line.

Every line is checked before any question is asked, and all problems are reported together as
``FILE:LINE:COL: key: message``, like the manifest's: a typo in the last question never costs
the answers to the first hundred.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from ..data.jsonl import JsonlError, read_jsonl_numbered
from ..errors import AfsError, Problem
from ..schema import apply_defaults, load_schema, schema_problems
from ..yamlload import Positions

SCHEMA = "question.schema.json"


def load(path: Path, display: Optional[str] = None, specialists: Sequence[str] = (),
         judges: Sequence[str] = ()) -> list[dict]:
    """The questions of the suite at `path`, defaults filled in, in file order.

    `display` is how the file is named in messages (the manifest's own spelling). Names in a
    question's ``specialists`` must be among `specialists` (when given); a question graded by
    judges needs at least one judge in `judges`.
    """
    display = display or str(path)
    schema = load_schema(SCHEMA)
    problems: list[Problem] = []
    questions: list[dict] = []
    first_line: dict[str, int] = {}
    try:
        lines = list(read_jsonl_numbered(path))
    except JsonlError as err:
        raise AfsError(f"{err}; each line of a benchmark suite is one JSON object") from None
    except OSError as err:
        raise AfsError(f"{display}: cannot read the benchmark suite: {err.strerror or err}") from None
    for number, value in lines:
        positions = Positions(display, {(): (number, 1)})
        found = schema_problems(value, SCHEMA, positions)
        problems.extend(found)
        if found:
            continue
        question = apply_defaults(value, schema, schema)
        qid = question["id"]
        if qid in first_line:
            problems.append(positions.problem(("id",), f"duplicate question id {qid!r} "
                                              f"(first on line {first_line[qid]}); ids must be unique"))
            continue
        first_line[qid] = number
        for name in question["specialists"]:
            if specialists and name not in specialists:
                problems.append(positions.problem(("specialists",), f"unknown specialist {name!r}; "
                                                  f"expected one of the manifest's: {', '.join(specialists)}"))
        if question["grading"] == "judge" and not judges:
            problems.append(positions.problem(("grading",), "grading 'judge' needs judge models; "
                                              "name some in the manifest's eval.judges"))
        if question["grading"] in ("exact", "contains") and not question["answer"]:
            problems.append(positions.problem(("answer",), f"grading {question['grading']!r} compares "
                                              "the reply with the answer; give an answer"))
        if question["grading"] == "keywords" and not question["keywords"]:
            problems.append(positions.problem(("keywords",), "grading 'keywords' needs keywords; "
                                              "list the words a correct answer contains"))
        problems.extend(positions.problem((key,), message) for key, message in scorer_problems(question))
        questions.append(question)
    if problems:
        raise AfsError(problems=problems)
    if not questions:
        raise AfsError(f"{display}: the benchmark suite has no questions")
    return questions


def scorer_problems(question: dict) -> list[tuple[str, str]]:
    """(key, message) for what the regex, numeric, json and code scorers need and lack."""
    import json
    import re

    from .grading import expected_value

    kind, out = question["grading"], []
    if kind == "regex":
        if not question["pattern"]:
            out.append(("pattern", "grading 'regex' needs a pattern to search the reply for"))
        else:
            try:
                re.compile(question["pattern"])
            except re.error as err:
                out.append(("pattern", f"not a regular expression: {err}"))
    if kind == "numeric" and expected_value(question) is None:
        out.append(("value", "grading 'numeric' needs a value (or a number in answer)"))
    if kind == "json":
        try:
            json.loads(question["answer"] or "")
        except ValueError as err:
            out.append(("answer", f"grading 'json' compares with the answer parsed as JSON, but it "
                                  f"is not JSON: {err}"))
    if kind == "code":
        if not question["tests"]:
            out.append(("tests", "grading 'code' needs tests: def test_*(): functions that import "
                                 "from solution"))
        else:
            try:
                compile(question["tests"], "tests", "exec")
            except SyntaxError as err:
                out.append(("tests", f"the tests are not Python: {err.msg} (line {err.lineno})"))
    return out


def version(path: Path) -> str:
    """The suite's version: a digest of its content (the same questions, the same version)."""
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


def for_specialist(questions: Sequence[dict], name: str, limit: Optional[int] = None) -> list[dict]:
    """The questions asked of `name` (those naming it, and those naming nobody), at most `limit`."""
    mine = [q for q in questions if not q["specialists"] or name in q["specialists"]]
    return mine[:limit] if limit else mine
