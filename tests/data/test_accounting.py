"""Every record a converter reads is kept, rejected or filtered: read = kept + rejected + filtered.

Each converter gets an input with a known number of records, some left out by a filter, some
broken; the ingest sidecar and the mix statistics must account for all of them.
"""

from __future__ import annotations

import json
import logging

import pytest

from afs_build.data.records import DERIVED, RECORD, Filtered, Reject, Tally
from afs_build.manifest import load
from afs_build.stages import ingest, mix, score
from stage_helpers import quiet_log  # noqa: F401 (a fixture)

pytestmark = pytest.mark.usefixtures("quiet_log")

CSN = {"repo": "a/b", "path": "x.py", "func_name": "add", "language": "python", "partition": "train",
       "code": "def add(a, b):\n    return a + b", "docstring": "Add two numbers and return the sum."}


def rows(*values) -> str:
    return "".join((v if isinstance(v, str) else json.dumps(v)) + "\n" for v in values)


def tool_instance(number: int, answer: str = "It is sunny in Paris today.") -> dict:
    return {"id": number, "conversations": [
        {"from": "system", "value": "You are a weather helper."},
        {"from": "user", "value": f"What is the weather in Paris, day {number}?"},
        {"from": "assistant", "value": answer}]}


GIVE_UP = ('Thought: no\nAction: Finish\nAction Input: {"return_type": "give_up_and_restart"}')

# source, files, (read, kept, rejected, filtered), filtered reasons
CONVERTERS = {
    "codesearchnet": (
        {"kind": "codesearchnet", "paths": ["csn.jsonl"], "languages": ["python", "go"]},
        {"csn.jsonl": rows(CSN, {**CSN, "func_name": "sub"}, {**CSN, "language": "java"},
                           {**CSN, "language": "ruby"}, {**CSN, "partition": "test"},
                           {**CSN, "language": "go", "func_name": "Mul", "docstring": ""},
                           "{broken", {**CSN, "func_name": "neg", "code": "def neg(a):\n    return -a",
                                       "docstring": "Negate."}, "")},
        (8, 3, 2, 3),
        {"language 'java' not in languages": 1, "language 'ruby' not in languages": 1,
         "partition 'test' not in partitions": 1}),
    "custom": (
        {"kind": "custom", "path": "rows.jsonl", "format": "alpaca"},
        {"rows.jsonl": rows({"instruction": "What is 2 plus 2?", "output": "2 plus 2 is 4."},
                            {"instruction": "Name a colour.", "output": "Blue is a colour."},
                            {"instruction": "no output"}, "[1]", "{broken")},
        (5, 2, 3, 0), {}),
    "toolbench": (
        {"kind": "toolbench", "path": "tools.json"},
        {"tools.json": json.dumps([tool_instance(1), tool_instance(2), tool_instance(3, GIVE_UP),
                                   {"no": "conversations"}])},
        (4, 2, 2, 0), {}),
    "synthetic": (
        {"kind": "synthetic", "facts": "facts.yaml", "templates": "templates.yaml"},
        {"facts.yaml": "- {register: INIDISP, address: $2100}\n- {register: VMAIN}\n- just text\n"
                       "- {other: 1}\n",
         "templates.yaml": "- name: address\n  when: [register, address]\n"
                           "  questions: ['Where is {{ register }}?', 'Address of {{ register }}?']\n"
                           "  answer: '{{ register }} is at {{ address }}.'\n"
                           "- name: what\n  when: register\n  questions: ['What is {{ register }}?']\n"
                           "  answer: '{{ register }} is a PPU register.'\n"},
        (4, 2, 1, 1), {"no template applies (each needs a field this fact lacks)": 1}),
    "codebase": (
        # files in folders the walk does not enter (.git, ignored or excluded folders) are not
        # records: only the files of the folders it walks are counted
        {"kind": "codebase", "path": "repo", "include": ["**/*.py"], "exclude": ["skip_*.py", "old/"]},
        {"repo/a.py": '"""Module a."""\n\n\ndef f(x):\n    """Double x."""\n    return 2 * x\n',
         "repo/b.py": "def broken(:\n", "repo/notes.txt": "notes", "repo/skip_c.py": "x = 1\n",
         "repo/.gitignore": "gen.py\n", "repo/gen.py": "y = 2\n", "repo/d.py": "",
         "repo/old/e.py": "z = 3\n"},
        (7, 1, 2, 4), {"not matched by include": 2, "matched by exclude": 1, "ignored by .gitignore": 1}),
}


@pytest.mark.parametrize("kind", sorted(CONVERTERS))
def test_every_record_is_kept_rejected_or_filtered(project, minimal, kind):
    source, files, (read, kept, rejected, filtered), reasons = CONVERTERS[kind]
    minimal["sources"]["src"] = source
    minimal["mixes"]["general"]["groups"]["all"]["sources"] = ["chat", "src"]
    manifest = load(project.write(minimal, files))
    assert ingest.run(manifest, "src") is None
    meta = json.loads((project.root / "build/data/ingest/src/meta.json").read_text())
    assert meta["records"] == {"read": read, "kept": kept, "rejected": rejected, "filtered": filtered}
    assert read == kept + rejected + filtered
    assert meta["filtered"] == reasons
    assert meta["rejects"] >= rejected and meta["samples"] >= kept

    for name in ("chat", "src"):
        assert ingest.run(manifest, name) is None and score.run(manifest, name) is None
    assert mix.run(manifest, "alpha") is None
    stats = json.loads((project.root / "build/data/mix/alpha/stats.json").read_text())
    assert stats["records"]["src"] == meta["records"]
    assert stats["filtered"]["src"] == reasons
    assert stats["records"]["chat"] == {"read": 6, "kept": 6, "rejected": 0, "filtered": 0}


def test_tally_rules():
    sample = {"id": "x"}
    reject = Reject("s", "bad")
    tally = Tally()
    out = list(tally.count([RECORD, sample, reject, RECORD, reject, reject, RECORD,
                            Filtered("language 'go'"), Filtered("language 'go'"), RECORD,
                            DERIVED, sample, sample, reject]))
    assert out == [sample, reject, reject, reject, sample, sample, reject]
    # kept (a sample and a reject), rejected (two rejects), two filtered, one that gave nothing
    assert tally.summary() == {"read": 5, "kept": 1, "rejected": 1, "filtered": 3}
    assert tally.reasons == {"language 'go'": 2, "no output": 1}
    loose = Tally()
    list(loose.count([sample, reject, sample]))  # no markers: each output is a record
    assert loose.summary() == {"read": 3, "kept": 2, "rejected": 1, "filtered": 0}


def test_a_group_too_small_for_its_eval_split_says_so(project, minimal, caplog):
    minimal["sources"]["tiny"] = {"kind": "custom", "path": "tiny.jsonl", "format": "alpaca"}
    minimal["mixes"]["general"] = {"samples": 20, "eval_fraction": 0.1, "groups": {
        "all": {"share": 0.8, "sources": ["chat"]}, "few": {"share": 0.2, "sources": ["tiny"]}}}
    manifest = load(project.write(minimal, {"tiny.jsonl": rows(
        {"instruction": "What is the tallest mountain?", "output": "Mount Everest is the tallest."})}))
    for name in ("chat", "tiny"):
        assert ingest.run(manifest, name) is None and score.run(manifest, name) is None
    assert mix.run(manifest, "alpha") is None
    stats = json.loads((project.root / "build/data/mix/alpha/stats.json").read_text())
    [warning] = stats["warnings"]
    assert "group 'few' is too small to give the eval split anything (1 unique samples" in warning
    assert "group 'all'" not in warning and stats["groups"]["few"]["eval"] == 0
    log = [json.loads(line) for line in (project.root / "build/logs/afs.jsonl").read_text().splitlines()]
    assert [e["event"] for e in log if e["level"] == "warning"] == [warning]
    assert logging.getLogger("afs").handlers  # the stage logged through the build's log
