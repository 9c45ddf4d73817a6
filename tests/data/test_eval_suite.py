"""The default evaluation suite (data/eval/suite.jsonl): well-formed, and consistent with the repo."""

from __future__ import annotations

import ast
import collections
import json
import re
from pathlib import Path

import jsonschema
import pytest

from afs_build.manifest import load

REPO = Path(__file__).resolve().parents[2]
SUITE = REPO / "data" / "eval" / "suite.jsonl"
SCHEMA = REPO / "specs" / "question.schema.json"
PACKAGE = REPO / "afs_build"
CATEGORIES = ("snes-hardware", "dma-hdma", "mode7-ppu", "asm-65816", "optimization", "debugging",
              "codebase", "retrieval", "general")
MIN_PER_CATEGORY = 10


def _lines() -> list[tuple[int, str]]:
    return list(enumerate(SUITE.read_text(encoding="utf-8").splitlines(), start=1))


@pytest.fixture(scope="module")
def questions() -> list[dict]:
    out = []
    for number, line in _lines():
        assert line.strip(), f"{SUITE.name}:{number}: blank line"
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as err:
            pytest.fail(f"{SUITE.name}:{number}: invalid JSON: {err}")
    return out


def test_every_line_parses_as_an_object(questions):
    assert questions, "the suite is empty"
    assert all(isinstance(q, dict) for q in questions)


def test_every_question_matches_the_schema(questions):
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text(encoding="utf-8")))
    problems = [f"{q.get('id', index)}: {err.message}"
                for index, q in enumerate(questions) for err in validator.iter_errors(q)]
    assert not problems, "\n".join(problems)


def test_ids_are_unique(questions):
    counts = collections.Counter(q["id"] for q in questions)
    assert not [i for i, n in counts.items() if n > 1]


def test_each_category_has_enough_questions(questions):
    counts = collections.Counter(q["category"] for q in questions)
    assert set(counts) == set(CATEGORIES), f"unexpected categories: {sorted(set(counts) ^ set(CATEGORIES))}"
    short = {c: counts[c] for c in CATEGORIES if counts[c] < MIN_PER_CATEGORY}
    assert not short, f"categories with fewer than {MIN_PER_CATEGORY} questions: {short}"


def test_ids_carry_their_category(questions):
    assert all(q["id"].startswith(q["category"] + "-") for q in questions)


def test_every_question_has_a_reference_answer(questions):
    assert all(isinstance(q.get("answer"), str) and q["answer"].strip() for q in questions)


def test_keyword_questions_have_keywords(questions):
    missing = [q["id"] for q in questions if q.get("grading", "keywords") == "keywords" and not q.get("keywords")]
    assert not missing, f"keyword-graded questions without keywords: {missing}"


def test_keywords_appear_in_their_own_answer(questions):
    # A keyword the reference answer itself lacks would fail a correct reply.
    bad = [f"{q['id']}: {keyword!r}" for q in questions for keyword in q.get("keywords", ())
           if keyword.casefold() not in q["answer"].casefold()]
    assert not bad, "keywords missing from the reference answer:\n" + "\n".join(bad)


def test_specialists_exist_in_the_manifest(questions):
    known = set(load(REPO / "afs.yaml", "afs.yaml").specialists)
    unknown = sorted({f"{q['id']}: {name}" for q in questions for name in q.get("specialists", ())
                      if name not in known})
    assert not unknown, f"specialists not in afs.yaml: {unknown}"
    assert all(q.get("specialists") for q in questions), "every question names its specialists"


def _defined_names(path: Path) -> set[str]:
    """Top-level functions and classes of a module, and the methods of its classes (qualified)."""
    names: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        if isinstance(node, ast.ClassDef):
            names.update(f"{node.name}.{child.name}" for child in node.body
                         if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))
    return names


def test_retrieval_answers_are_files_that_define_the_symbol(questions):
    retrieval = [q for q in questions if q["category"] == "retrieval"]
    assert retrieval
    for q in retrieval:
        path = q["answer"]
        assert not path.startswith(("/", "afs_build/")), f"{q['id']}: path must be relative to afs_build/"
        assert (PACKAGE / path).is_file(), f"{q['id']}: afs_build/{path} does not exist"
        symbols = re.findall(r"`([A-Za-z_][\w.]*)`", q["question"])
        assert symbols, f"{q['id']}: name the symbol in backticks"
        defined = _defined_names(PACKAGE / path)
        assert all(s in defined for s in symbols), f"{q['id']}: {symbols} not defined in afs_build/{path}"


def test_exact_and_contains_answers_are_short(questions):
    # These graders compare the whole reference answer with the reply, so it must be one token-ish.
    long = [q["id"] for q in questions if q.get("grading") in ("exact", "contains") and len(q["answer"].split()) > 3]
    assert not long, f"exact/contains answers should be a short token: {long}"
