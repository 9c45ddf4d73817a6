"""`afs validate` checks each source's file types, languages and the quality weights, with positions."""

from __future__ import annotations

import pytest

from afs_build.errors import ManifestError
from afs_build.manifest import load
from afs_build.stages import score
from conftest import at
from stage_helpers import quiet_log  # noqa: F401 (a fixture)

pytestmark = pytest.mark.usefixtures("quiet_log")

MANIFEST = """\
project: {name: demo}
models: {tiny: {embedded: smollm2-135m-instruct}}
hardware: {cpu: {vram_gb: 8}}
sources:
  notes: {kind: custom, path: notes.txt, format: alpaca}
  bare: {kind: custom, path: data, format: alpaca}
  upper: {kind: custom, path: ROWS.JSONL, format: alpaca}
  tools: {kind: toolbench, path: tools.jsonl}
  facts: {kind: synthetic, facts: facts.txt, templates: templates.yaml}
  csn: {kind: codesearchnet, paths: [csn.jsonl.gz, csn.txt], languages: [python, pyton]}
quality: {weights: {length: 0, ratio: 0, repetition: 0, boilerplate: 0, echo: 0, code: 0, garbage: 0, truncated: 0}}
mixes:
  m: {samples: 4, groups: {all: {share: 1.0, sources: [notes, bare, upper, tools, facts, csn]}}}
specialists:
  a: {role: A, base: tiny, mix: m, hardware: cpu, port: 6001}
"""
FILES = {name: "x" for name in ("notes.txt", "data", "ROWS.JSONL", "tools.jsonl", "facts.txt",
                                "templates.yaml", "csn.jsonl.gz", "csn.txt")}


def test_file_types_no_reader_handles_are_reported_at_their_place(project):
    path = project.write(MANIFEST, FILES)
    with pytest.raises(ManifestError) as info:
        load(path)
    custom = "'.csv', '.json', '.jsonl', '.jsonl.gz', '.ndjson', '.parquet'"
    fix = "(rename the file to its format's extension, or convert it)"
    assert [str(p) for p in info.value.problems] == [
        f"{at(path, 'notes.txt')}: sources.notes.path: notes.txt: no custom reader handles .txt "
        f"files; expected one of: {custom} {fix}",
        f"{at(path, 'data,')}: sources.bare.path: data: no custom reader handles a file with no "
        f"extension; expected one of: {custom} {fix}",
        f"{at(path, 'tools.jsonl')}: sources.tools.path: tools.jsonl: no toolbench reader handles "
        f".jsonl files; expected one of: '.json' {fix}",
        f"{at(path, 'facts.txt')}: sources.facts.facts: facts.txt: no synthetic reader handles .txt "
        f"files; expected one of: '.csv', '.json', '.yaml', '.yml' {fix}",
        f"{at(path, 'csn.txt')}: sources.csn.paths[1]: csn.txt: no codesearchnet reader handles "
        f".txt files; expected one of: '.jsonl', '.jsonl.gz', '.ndjson', '.ndjson.gz' {fix}",
        f"{at(path, 'pyton')}: sources.csn.languages[1]: unknown CodeSearchNet language 'pyton'; "
        "expected one of: 'go', 'java', 'javascript', 'php', 'python', 'ruby' (did you mean 'python'?)",
        f"{at(path, '{length: 0')}: quality.weights: every quality weight is 0; expected at least one "
        "signal with a weight > 0",
    ]


def test_quality_workers_is_checked_and_changes_no_score(project, minimal):
    from afs_build.stages import ingest

    minimal["quality"] = {"workers": 0}
    with pytest.raises(ManifestError, match=r"quality\.workers: expected a number >= 1, got 0"):
        load(project.write(minimal))
    outputs = []
    for workers in (1, 2):
        minimal["quality"] = {"workers": workers}
        manifest = load(project.write(minimal))
        assert ingest.run(manifest, "chat") is None and score.run(manifest, "chat") is None
        files = project.root / "build/data/score/chat"
        outputs.append(((files / "samples.jsonl").read_bytes(), (files / "rejects.jsonl").read_bytes()))
        assert f'"workers": {workers}' in (files / "meta.json").read_text()
    assert outputs[0] == outputs[1]
    assert load(project.write({**minimal, "quality": {}})).quality.workers == "auto"
