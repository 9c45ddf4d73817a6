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
        questions.append(question)
    if problems:
        raise AfsError(problems=problems)
    if not questions:
        raise AfsError(f"{display}: the benchmark suite has no questions")
    return questions


def for_specialist(questions: Sequence[dict], name: str, limit: Optional[int] = None) -> list[dict]:
    """The questions asked of `name` (those naming it, and those naming nobody), at most `limit`."""
    mine = [q for q in questions if not q["specialists"] or name in q["specialists"]]
    return mine[:limit] if limit else mine
