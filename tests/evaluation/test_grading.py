"""Rule grading: text rules, regex, numeric, JSON, and code run in the sandbox."""

from __future__ import annotations

import json
import os

import pytest

from afs_build.evaluation import grading, sandbox, suite
from conftest import REPO


def question(grading_kind, answer=None, keywords=(), **extra):
    return {"grading": grading_kind, "answer": answer, "keywords": list(keywords), "question": "Q?", **extra}


@pytest.mark.parametrize("kind, answer, keywords, reply, score", [
    ("exact", "Paris", (), "paris.", 1.0),
    ("exact", "Paris", (), "It is Paris.", 0.0),
    ("contains", "mode 7", (), "That is  Mode\n7, which rotates.", 1.0),
    ("contains", "mode 7", (), "Mode 1.", 0.0),
    ("keywords", None, ("INIDISP", "brightness"), "INIDISP sets the Brightness.", 1.0),
    ("keywords", None, ("INIDISP", "brightness"), "inidisp, forced blank", 0.5),
    ("keywords", None, ("INIDISP", "brightness"), "", 0.0),
])
def test_text_rules(kind, answer, keywords, reply, score):
    q = question(kind, answer, keywords)
    assert grading.rule_score(q, reply) == score
    assert grading.passed(q, score) is (score == 1.0)
    assert grading.passed(q, None) is None


def test_keywords_say_what_is_missing():
    assert grading.grade(question("keywords", keywords=["NMI", "joypad"]), "the NMI") == (0.5, "missing: joypad")


@pytest.mark.parametrize("pattern, reply, score", [
    (r"\|\s*MDMAEN\s*\|\s*\$?420B\s*\|", "| Register | Address |\n|---|---|\n| MDMAEN | $420B |", 1.0),
    (r"\|\s*MDMAEN\s*\|\s*\$?420B\s*\|", "MDMAEN is at $420B", 0.0),
    (r"^sta \$2100$", "LDA #$80\nSTA $2100\nRTS", 1.0),  # case-insensitive, multi-line
])
def test_regex(pattern, reply, score):
    assert grading.rule_score(question("regex", pattern=pattern), reply) == score


def test_numbers_are_read_in_every_usual_spelling():
    assert grading.numbers("1,024 bytes, 0x20, $420B, -3.5 and 1e3") == [1024, 32, 0x420B, -3.5, 1000]


@pytest.mark.parametrize("reply, score, detail", [
    ("It sends 1056 bytes.", 1.0, ""),
    ("512 + 544 = 1,056", 1.0, ""),  # the question's own numbers are skipped
    ("About 1050.", 0.0, "read 1050, expected 1056 ± 0"),
    ("512 bytes of palette", 0.0, "no number in the reply beyond those in the question"),
])
def test_numeric(reply, score, detail):
    q = question("numeric", answer="1056 bytes.", value=1056,
                 **{"question": "512 bytes of CGRAM and 544 of OAM: how many?"})
    assert grading.grade(q, reply) == (score, detail)


def test_numeric_tolerances_and_the_value_from_the_answer():
    q = question("numeric", answer="about 2.68 MB/s", tolerance=0.05)
    assert grading.rule_score(q, "2.7 MB/s") == 1.0 and grading.rule_score(q, "2.8") == 0.0
    q = question("numeric", value=1000, relative_tolerance=0.01)
    assert grading.rule_score(q, "1009") == 1.0 and grading.rule_score(q, "1011") == 0.0


@pytest.mark.parametrize("reply, score", [
    ('{"Japan": "Tokyo", "France": "Paris"}', 1.0),  # key order free
    ('Here:\n```json\n{"France": "Paris", "Japan": "Tokyo"}\n```', 1.0),
    ('The answer is {"France": "Paris", "Japan": "Kyoto"} I think', 0.0),
    ('{"France": "Paris"}', 0.0),
    ("France: Paris, Japan: Tokyo", 0.0),
])
def test_json(reply, score):
    assert grading.rule_score(question("json", answer='{"France": "Paris", "Japan": "Tokyo"}'), reply) == score


def test_json_compares_values_not_spelling():
    assert grading.same_json({"a": [1, 2.0], "b": {"c": None}}, {"b": {"c": None}, "a": [1.0, 2]})
    assert not grading.same_json([1, 2], [2, 1]) and not grading.same_json(True, 1)


TESTS = "from solution import add\n\ndef test_small():\n    assert add(2, 3) == 5\n\ndef test_negative():\n    assert add(-1, 1) == 0\n"


def code(body: str) -> str:
    return f"Here is the fix:\n```python\n{body}\n```\n"


def test_code_passing_partial_and_missing():
    q = question("code", tests=TESTS, timeout_s=5)
    assert grading.grade(q, code("def add(a, b):\n    return a + b")) == (1.0, "")
    score, detail = grading.grade(q, code("def add(a, b):\n    return abs(a) + b"))
    assert score == 0.5 and detail.startswith("test_negative: AssertionError")
    assert grading.grade(q, "just add them") == (0.0, "no Python code block in the reply")
    score, detail = grading.grade(q, code("def add(a, b) return a"))
    assert score == 0.0 and "SyntaxError" in detail


@pytest.mark.parametrize("body, reason", [
    ("import socket\ntry:\n    socket.create_connection(('192.0.2.1', 80), timeout=1)\nexcept OSError:\n    pass",
     "blocked by the sandbox: socket"),
    ("import os\ntry:\n    os.system('touch escaped')\nexcept OSError:\n    pass", "blocked by the sandbox: os.system"),
    ("import subprocess\nsubprocess.run(['true'])", "blocked by the sandbox: import _posixsubprocess"),
    ("open('/etc/hostname').read()", "blocked by the sandbox: open '/etc/hostname'"),
    ("import ctypes", "blocked by the sandbox: import ctypes"),
    ("import os\nos.kill(os.getppid(), 9)", "blocked by the sandbox: os.kill"),
    ("while True:\n    pass", "timed out after 2 s"),
    ("data = bytearray(1 << 34)", "MemoryError"),
    ("import os\nos._exit(0)", "the code ended the test run itself (exit 0)"),
    ("print('x' * (64 << 20))", "the code ended the test run itself (exit 120)"),  # past RLIMIT_FSIZE
])
def test_a_reply_that_tries_to_escape_fails_and_the_benchmark_goes_on(body, reason, tmp_path):
    q = question("code", tests=TESTS, timeout_s=2)
    score, detail = grading.grade(q, code(body + "\n\ndef add(a, b):\n    return a + b"))
    assert score == 0.0 and reason in detail
    assert not os.path.exists("escaped")


def test_a_forged_result_line_does_not_count():
    forged = json.dumps({"nonce": "0" * 32, "passed": 2, "total": 2, "failures": [], "blocked": []})
    q = question("code", tests=TESTS, timeout_s=5)
    assert grading.rule_score(q, code(f"print({forged!r})\nimport sys\nsys.stdout.flush()\nimport os\nos._exit(0)")) == 0.0


def test_the_network_namespace_is_used_where_the_machine_allows_it():
    # as root on Linux (CI) unshare -n works; elsewhere the audit hook alone refuses sockets
    if os.getuid() == 0 and os.path.exists("/usr/bin/unshare"):
        assert sandbox.network_namespace()


def test_every_new_scorer_question_of_the_default_suite_passes_its_reference_and_fails_a_wrong_reply():
    questions = suite.load(REPO / "data/eval/suite.jsonl", judges=["agahnim"])
    new = [q for q in questions if q["grading"] in ("regex", "numeric", "json", "code")]
    assert {q["grading"] for q in new} == {"regex", "numeric", "json", "code"}
    for q in new:
        assert grading.rule_score(q, q["answer"]) == 1.0, q["id"]
        assert grading.rule_score(q, "I do not know.") == 0.0, q["id"]
    buggy = next(q for q in new if q["id"] == "debugging-14")
    assert grading.rule_score(buggy, code("def last_n(items, n):\n    return items[len(items) - n - 1:]")) < 1.0
