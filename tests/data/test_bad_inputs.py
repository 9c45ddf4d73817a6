"""Bad input fed to every converter through the ingest stage's action: rejects or a clean error.

A record a converter cannot use becomes a reject with its reason; an input it cannot read at
all fails the task with the manifest place, the file and the fix. Never an internal error,
never a traceback: no ValueError, KeyError or OSError gets through.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os

import pytest
from doit.exceptions import TaskFailed

from afs_build.manifest import FrozenMap, load
from afs_build.errors import ManifestError
from afs_build.stages import ingest, mix, score
from stage_helpers import assert_clean_failure, quiet_log  # noqa: F401 (a fixture)

pytestmark = pytest.mark.usefixtures("quiet_log")

DEEP_JSON = "[" * 20000 + "]" * 20000
GOOD_CSN = {"repo": "a/b", "path": "x.py", "func_name": "add", "language": "python",
            "partition": "train", "code": "def add(a, b):\n    return a + b",
            "docstring": "Add two numbers and return the sum."}


def lines(*values) -> str:
    return "".join((v if isinstance(v, str) else json.dumps(v)) + "\n" for v in values)


def conversation(system: str) -> list:
    return [{"id": 1, "conversations": [{"from": "system", "value": system},
                                        {"from": "user", "value": "Look it up, please."},
                                        {"from": "assistant", "value": "Here it is."}]}]


API = "You help.\nSpecifically, you have access to the following APIs: "

# name, source, files: the converter reads them and rejects what it cannot use
REJECTED = [
    ("custom-binary", {"kind": "custom", "path": "x.jsonl", "format": "alpaca"},
     {"x.jsonl": bytes(range(256)) * 8}),
    ("custom-deep-json", {"kind": "custom", "path": "x.jsonl", "format": "alpaca"},
     {"x.jsonl": DEEP_JSON + "\n"}),
    ("custom-json-object", {"kind": "custom", "path": "x.json", "format": "alpaca"},
     {"x.json": '{"instruction": "q"}'}),
    ("custom-json-list-deep", {"kind": "custom", "path": "x.json", "format": "alpaca"},
     {"x.json": "[" + DEEP_JSON + "]"}),
    ("custom-not-utf8", {"kind": "custom", "path": "x.jsonl", "format": "alpaca"},
     {"x.jsonl": b'{"instruction": "\xff\xfe", "output": "x"}\n'}),
    ("custom-csv-huge-field", {"kind": "custom", "path": "x.csv", "format": "alpaca"},
     {"x.csv": 'instruction,output\n"' + "a" * 200_000 + '",b\n'}),
    ("custom-csv-nul", {"kind": "custom", "path": "x.csv", "format": "alpaca"},
     {"x.csv": b"instruction,output\nq\x00,\n"}),
    ("custom-parquet-garbage", {"kind": "custom", "path": "x.parquet", "format": "alpaca"},
     {"x.parquet": b"PAR1 not really parquet"}),
    ("custom-messages-odd-types", {"kind": "custom", "path": "x.jsonl", "format": "messages"},
     {"x.jsonl": lines({"messages": 5}, {"messages": [[1]]},
                       {"messages": [{"role": ["user"], "content": "q"}]},
                       {"messages": [{"role": "user", "content": "q"},
                                     {"role": "assistant", "content": "a", "tool_calls": 5}]},
                       {"messages": [{"role": "assistant", "content": None,
                                      "tool_calls": [{"function": {"name": "f", "arguments": DEEP_JSON}}]}]},
                       [1, 2], "null", '"text"')}),
    ("custom-sharegpt-odd-types", {"kind": "custom", "path": "x.jsonl", "format": "sharegpt"},
     {"x.jsonl": lines({"conversations": [{"from": ["human"], "value": "q"}]},
                       {"conversations": [{"from": {"a": 1}, "value": "q"}]},
                       {"conversations": [{"from": "function_call", "value": "[[["}]},
                       {"conversations": "[not json"}, {"conversations": [5]},
                       {"conversations": [{"from": "gpt", "value": "a"}], "tools": [{"name": 3}]})}),
    ("csn-corrupt-gzip", {"kind": "codesearchnet", "paths": ["x.jsonl.gz"]},
     {"x.jsonl.gz": gzip.compress(lines(GOOD_CSN, GOOD_CSN).encode())[:-12]}),
    ("csn-odd-records", {"kind": "codesearchnet", "paths": ["x.jsonl"]},
     {"x.jsonl": lines([], 5, {**GOOD_CSN, "func_name": 1}, {**GOOD_CSN, "language": ["python"]},
                       {**GOOD_CSN, "docstring": None}, DEEP_JSON, "{broken")}),
    ("csn-not-gzip", {"kind": "codesearchnet", "paths": ["x.jsonl.gz"]},
     {"x.jsonl.gz": lines(GOOD_CSN)}),
    ("toolbench-not-a-list", {"kind": "toolbench", "path": "x.json"}, {"x.json": '{"id": 1}'}),
    ("toolbench-odd-apis", {"kind": "toolbench", "path": "x.json"},
     {"x.json": json.dumps(conversation(API + "[{[1]: 2}]") + conversation(API + "[5]")
                           + conversation(API + "[{'name': 'a', 'parameters': {'properties': [1]}}]")
                           + conversation(API + "[{'name': 'a', 'parameters': {'properties': {}, 'required': 3}}]")
                           + conversation(API + "[" * 5000) + [{"conversations": {"a": 1}}, None, DEEP_JSON])}),
    ("synthetic-no-template-applies", {"kind": "synthetic", "facts": "f.csv", "templates": "t.yaml"},
     {"f.csv": "name,other\nq\x00,\n,x\n",
      "t.yaml": "- {name: t, when: name, questions: ['What is {{ name }}?'], answer: '{{ name }} is {{ name }}.'}\n"}),
    ("codebase-odd-files", {"kind": "codebase", "path": "repo"},
     {"repo/a.py": bytes(range(256)), "repo/b.py": "x = " + "[" * 3000 + "]" * 3000 + "\n",
      "repo/c.py": b"# caf\xe9\n", "repo/d.py": "def f(:\n", "repo/e.py": "", "repo/f.bin": "data"}),
]

# name, source, files, what the error names: the input cannot be read at all
FAILED = [
    ("synthetic-python-tag", {"kind": "synthetic", "facts": "f.yaml", "templates": "t.yaml"},
     {"f.yaml": "- !!python/object/apply:os.system ['echo hi']\n", "t.yaml": "- {name: t, questions: [q], answer: a}\n"},
     ("sources.bad", "f.yaml:1", "cannot read this entry")),
    ("synthetic-deep-yaml", {"kind": "synthetic", "facts": "f.yaml", "templates": "t.yaml"},
     {"f.yaml": "- " + "[" * 5000 + "]" * 5000 + "\n", "t.yaml": "- {name: t, questions: [q], answer: a}\n"},
     ("sources.bad", "f.yaml", "nested too deeply")),
    ("synthetic-templates-not-utf8", {"kind": "synthetic", "facts": "f.yaml", "templates": "t.yaml"},
     {"f.yaml": "- {name: x}\n", "t.yaml": b"- {name: t\xff}\n"}, ("sources.bad", "t.yaml", "not UTF-8")),
    ("synthetic-undefined-field", {"kind": "synthetic", "facts": "f.yaml", "templates": "t.yaml"},
     {"f.yaml": "- {name: x}\n", "t.yaml": "- {name: t, questions: ['{{ missing }}?'], answer: a}\n"},
     ("sources.bad", "t.yaml:1", "'missing' is undefined")),
    ("synthetic-facts-not-a-list", {"kind": "synthetic", "facts": "f.yaml", "templates": "t.yaml"},
     {"f.yaml": "name: x\n", "t.yaml": "- {name: t, questions: [q], answer: a}\n"},
     ("sources.bad", "expected a list of facts")),
    ("codebase-gitignore-dangling-link", {"kind": "codebase", "path": "repo"},
     {"repo/a.py": '"""A module."""\n'}, ("sources.bad", "not found", "repo/.gitignore")),
]


def write(project, minimal, source: dict, files: dict):
    minimal["sources"]["bad"] = source
    minimal["mixes"]["general"]["groups"]["all"]["sources"] = ["chat", "bad"]
    return project.write(minimal, files)


def meta(project) -> dict:
    return json.loads((project.root / "build/data/ingest/bad/meta.json").read_text())


def no_internal_errors(project) -> None:
    log = project.root / "build/logs/afs.jsonl"
    assert "internal error" not in (log.read_text() if log.exists() else "")


@pytest.mark.parametrize("name, source, files", REJECTED, ids=[c[0] for c in REJECTED])
def test_unusable_records_are_rejected_with_reasons(project, minimal, name, source, files):
    path = write(project, minimal, source, files)
    result = ingest.run(load(path), "bad")
    assert not isinstance(result, TaskFailed), result.message
    counts = meta(project)
    assert counts["rejects"] >= 1 or counts["records"]["filtered"] >= 1
    records = counts["records"]
    assert records["read"] == records["kept"] + records["rejected"] + records["filtered"]
    rejects = [json.loads(line) for line in (project.root / "build/data/ingest/bad/rejects.jsonl").open()]
    assert all(r["reason"] and (r.get("file") or r["source"]) for r in rejects)
    assert not [r for r in rejects if r["reason"].startswith("cannot convert record")], rejects
    no_internal_errors(project)


@pytest.mark.parametrize("name, source, files, needles", FAILED, ids=[c[0] for c in FAILED])
def test_unreadable_inputs_fail_cleanly(project, minimal, name, source, files, needles):
    path = write(project, minimal, source, files)
    if name == "codebase-gitignore-dangling-link":
        os.symlink(project.root / "nowhere", project.root / "repo/.gitignore")
    assert_clean_failure(ingest.run(load(path), "bad"), "afs.yaml", *needles)
    no_internal_errors(project)


def replaced(manifest, **settings):
    """The manifest with source 'bad' changed after validation (a file renamed since, say)."""
    source = manifest.sources["bad"]
    source = dataclasses.replace(source, settings=FrozenMap({**source.settings, **settings}))
    return dataclasses.replace(manifest, sources=FrozenMap({**manifest.sources, "bad": source}))


def test_inputs_that_changed_after_validation_fail_cleanly(project, minimal):
    path = write(project, minimal, {"kind": "custom", "path": "x.jsonl", "format": "alpaca"},
                 {"x.jsonl": lines({"instruction": "q?", "output": "a."}), "notes.txt": "hello\n",
                  "repo/a.py": "x = 1\n", "csn.jsonl": lines(GOOD_CSN)})
    manifest = load(path)
    assert_clean_failure(ingest.run(replaced(manifest, path="notes.txt"), "bad"),
                         "afs.yaml: sources.bad (custom)", "notes.txt: file type", "'.txt'",
                         "rename the file")
    assert_clean_failure(ingest.run(replaced(manifest, format="alpacca"), "bad"),
                         "sources.bad", "did you mean 'alpaca'")
    (project.root / "x.jsonl").unlink()
    (project.root / "x.jsonl").mkdir()
    assert_clean_failure(ingest.run(manifest, "bad"), "sources.bad", "x.jsonl")
    (project.root / "x.jsonl").rmdir()
    assert_clean_failure(ingest.run(manifest, "bad"), "sources.bad", "not found", "x.jsonl")

    minimal["sources"]["bad"] = {"kind": "codesearchnet", "paths": ["csn.jsonl"]}
    manifest = load(project.write(minimal))
    assert_clean_failure(ingest.run(replaced(manifest, languages=("pyton",)), "bad"),
                         "sources.bad", "did you mean 'python'")

    minimal["sources"]["bad"] = {"kind": "codebase", "path": "repo"}
    manifest = load(project.write(minimal))
    (project.root / "repo/a.py").unlink()
    (project.root / "repo").rmdir()
    (project.root / "repo").write_text("now a file")
    assert_clean_failure(ingest.run(manifest, "bad"), "sources.bad", "not a folder")
    no_internal_errors(project)


def test_a_fifo_in_a_codebase_is_rejected_not_read(project, minimal):
    path = write(project, minimal, {"kind": "codebase", "path": "repo"}, {"repo/a.py": '"""A module."""\n'})
    os.mkfifo(project.root / "repo/pipe.py")  # reading it would block for ever
    assert ingest.run(load(path), "bad") is None
    rejects = (project.root / "build/data/ingest/bad/rejects.jsonl").read_text()
    assert "not a regular file" in rejects


def test_codebase_questions_setting_reaches_the_converter(project, minimal):
    code = '"""A module."""\n\n\ndef f(x):\n    """Double x."""\n    return twice(x)\n'
    path = write(project, minimal, {"kind": "codebase", "path": "repo", "questions": ["behaviour"]},
                 {"repo/a.py": code})
    assert ingest.run(load(path), "bad") is None
    samples = [json.loads(line) for line in (project.root / "build/data/ingest/bad/samples.jsonl").open()]
    assert [s["messages"][0]["content"] for s in samples] == ["How does `f` in `a.py` work?"]
    minimal["sources"]["bad"]["questions"] = ["behavior"]
    with pytest.raises(ManifestError, match=r"sources\.bad\.questions"):
        load(project.write(minimal))


def test_damaged_ingest_output_fails_scoring_cleanly(project, minimal):
    path = project.write(minimal)
    manifest = load(path)
    assert ingest.run(manifest, "chat") is None
    samples = project.root / "build/data/ingest/chat/samples.jsonl"
    samples.write_text(samples.read_text() + "{half a line\n")
    assert_clean_failure(score.run(manifest, "chat"), "samples.jsonl:7: invalid JSON",
                         "doit forget ingest:chat")


def test_a_broken_eval_suite_fails_the_mix_cleanly(project, minimal):
    minimal["eval"] = {"suite": "suite.jsonl"}
    path = project.write(minimal, {"suite.jsonl": '{"id": "q1", "question": "What?"\n'})
    manifest = load(path)
    assert ingest.run(manifest, "chat") is None and score.run(manifest, "chat") is None
    assert_clean_failure(mix.run(manifest, "alpha"), "suite.jsonl:1", "invalid JSON")
    (project.root / "suite.jsonl").write_text('{"id": "q1", "question": 5}\n')
    assert_clean_failure(mix.run(manifest, "alpha"), "suite.jsonl:1")
