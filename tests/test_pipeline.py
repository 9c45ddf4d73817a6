"""The data pipeline end to end through doit: incremental, content-based, and explained."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from afs_build import plan
from afs_build.manifest import load
from conftest import CHAT, REPO

FACTS = [{"instruction": f"What is register ${0x2100 + i:04X}?",
          "output": f"Register ${0x2100 + i:04X} is PPU register number {i}, used for test {i}."}
         for i in range(8)]


def setup(project, minimal):
    minimal["sources"]["facts"] = {"kind": "custom", "path": "facts.jsonl", "format": "alpaca"}
    minimal["mixes"]["other"] = {"samples": 6, "groups": {"all": {"share": 1.0, "sources": ["facts"]}}}
    minimal["specialists"]["beta"]["mix"] = "other"
    return project.write(minimal, {"facts.jsonl": "".join(json.dumps(r) + "\n" for r in FACTS)})


def doit(project, *args):
    """Run doit on the data stages (or on `args`), return the tasks that ran."""
    args = args or ("ingest", "score", "mix")
    result = subprocess.run([sys.executable, "-m", "doit", "-f", str(REPO / "dodo.py"), *args],
                            cwd=project.root, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "AFS_MANIFEST": "afs.yaml"})
    assert result.returncode == 0, result.stdout + result.stderr
    return {line[3:] for line in result.stdout.splitlines() if line.startswith(".  ")}


def runs(path) -> dict[str, tuple[str, ...]]:
    """The data tasks that would run, with their reasons."""
    data = ("ingest:", "score:", "mix:")
    return {t.name: t.reasons for t in plan.task_plans(load(path)) if t.runs and t.name.startswith(data)}


def test_build_then_nothing_to_do_then_only_what_changed(project, minimal):
    path = setup(project, minimal)
    assert doit(project) == {"ingest:chat", "ingest:facts", "score:chat", "score:facts",
                             "mix:alpha", "mix:beta"}
    mix = project.root / "build" / "data" / "mix" / "alpha"
    train = [json.loads(line) for line in (mix / "train.jsonl").read_text().splitlines()]
    stats = json.loads((mix / "stats.json").read_text())
    assert len(train) == 4 and stats["train"]["samples"] == 4
    assert {s["source"] for s in train} == {"chat"}

    assert doit(project) == set()  # a second run is a no-op
    assert runs(path) == {}

    later = time.time() + 5
    os.utime(project.root / "facts.jsonl", (later, later))  # touched, not changed
    assert runs(path) == {}
    assert doit(project) == set()

    with open(project.root / "facts.jsonl", "a") as handle:
        handle.write(json.dumps({"instruction": "What is VRAM?", "output": "Video memory: 64 KiB."}) + "\n")
    assert runs(path) == {
        "ingest:facts": (f"input content changed: {project.root / 'facts.jsonl'}",),
        "score:facts": ("an input task runs: ingest:facts",),
        "mix:beta": ("an input task runs: score:facts",),
    }
    assert doit(project) == {"ingest:facts", "score:facts", "mix:beta"}


def test_plan_names_the_manifest_slice_that_changed(project, minimal):
    path = setup(project, minimal)
    doit(project)
    minimal["mixes"]["other"]["samples"] = 5
    path = project.write(minimal)
    assert runs(path) == {"mix:beta": ("manifest slice changed: mixes.other",)}
    minimal["quality"] = {"threshold": 0.6}
    path = project.write(minimal)
    assert runs(path) == {
        "score:chat": ("manifest slice changed: quality",),
        "score:facts": ("manifest slice changed: quality",),
        "mix:alpha": ("an input task runs: score:chat",),
        "mix:beta": ("manifest slice changed: mixes.other", "an input task runs: score:facts"),
    }


def test_every_dropped_record_has_a_reason(project, minimal):
    dupes = CHAT + CHAT[:2]
    project.write(minimal, {"chat.jsonl": "".join(json.dumps(r) + "\n" for r in dupes) + "{broken\n"})
    doit(project)
    rejects = [json.loads(line) for line in
               (project.root / "build/data/mix/alpha/rejects.jsonl").read_text().splitlines()]
    reasons = sorted(r["reason"].split(" of ")[0] for r in rejects)
    assert reasons == ["duplicate", "duplicate", "malformed JSON: Expecting property name enclosed in double quotes"]
    broken = next(r for r in rejects if r["reason"].startswith("malformed"))
    assert (broken["file"], broken["line"]) == ("chat.jsonl", 9)


def test_a_group_left_empty_stops_the_build_with_a_clear_message(project, minimal):
    minimal["sources"]["junk"] = {"kind": "custom", "path": "junk.jsonl", "format": "alpaca"}
    minimal["mixes"]["general"]["groups"] = {"all": {"share": 0.5, "sources": ["chat"]},
                                             "junk": {"share": 0.5, "sources": ["junk"]}}
    project.write(minimal, {"junk.jsonl": '{"question": "no instruction field"}\n'})
    result = subprocess.run([sys.executable, "-m", "doit", "-f", str(REPO / "dodo.py"), "mix:alpha"],
                            cwd=project.root, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    assert "afs.yaml: mixes.general (for specialist 'alpha'): group 'junk' has " in result.stdout + result.stderr
    assert not (project.root / "build/data/mix/alpha/train.jsonl").exists()  # nothing half-written


def test_mix_outputs_load_with_datasets(project, minimal):
    import datasets

    project.write(minimal)
    doit(project)
    folder = project.root / "build/data/mix/alpha"
    loaded = datasets.load_dataset("json", data_files={"train": str(folder / "train.jsonl")},
                                   cache_dir=str(project.root / "hf-cache"))
    assert loaded["train"].num_rows == 4
    assert loaded["train"][0]["messages"][-1]["role"] == "assistant"
