"""The task graph: names, docs, slices that cover exactly what a task reads, no I/O in planning."""

from __future__ import annotations

import builtins
import os
import subprocess
import sys

import pytest

from afs_build import graph
from afs_build.uptodate import SliceChanged
from afs_build.manifest import load
from conftest import REPO, at


def slice_digests(manifest) -> dict[str, dict[str, str]]:
    """task name -> {slice label: digest} for every task."""
    out = {}
    for task in graph.all_tasks(manifest):
        out[task["name"]] = {u.label: u.digest for u in task.get("uptodate", [])
                             if isinstance(u, SliceChanged)}
    return out


def changed_tasks(project, minimal, edit, site: bool = False) -> set[str]:
    """The tasks whose slices `edit` changes. The site's pages show the manifest (its digest,
    costs, slices), so they re-render on most edits by design: left out unless `site`."""
    before = slice_digests(load(project.write(minimal)))
    edit(minimal)
    after = slice_digests(load(project.write(minimal)))
    assert before.keys() == after.keys()
    return {name for name in before if before[name] != after[name]
            and (site or not name.startswith("site:"))}


@pytest.fixture
def two_mixes(minimal):
    minimal["mixes"]["other"] = {"samples": 4, "groups": {"all": {"share": 1.0, "sources": ["chat"]}}}
    minimal["specialists"]["beta"]["mix"] = "other"
    return minimal


def test_task_names_follow_stage_and_name(project, minimal):
    names = [t["name"] for t in graph.all_tasks(load(project.write(minimal)))]
    assert names == ["ingest:chat", "score:chat", "mix:alpha", "mix:beta", "base:tiny",
                     "render:alpha", "render:beta", "train:alpha", "train:beta",
                     "merge:alpha", "merge:beta", "gguf:alpha", "gguf:beta",
                     "quantize:alpha", "quantize:beta", "deploy:alpha", "deploy:beta",
                     "site:alpha", "site:beta", "site:family"]


def test_mix_edit_replans_only_that_specialist(project, two_mixes):
    def edit(m):
        m["mixes"]["general"]["samples"] = 5
    assert changed_tasks(project, two_mixes, edit) == {"mix:alpha"}


def test_quality_edit_replans_scoring_only(project, two_mixes):
    def edit(m):
        m["quality"] = {"threshold": 0.7}
    assert changed_tasks(project, two_mixes, edit) == {"score:chat"}


def test_source_edit_replans_its_ingest(project, two_mixes):
    def edit(m):
        m["sources"]["chat"]["max_chars"] = 5000
    assert changed_tasks(project, two_mixes, edit) == {"ingest:chat"}


def test_unrelated_edits_replan_nothing(project, two_mixes):
    def edit(m):
        m.update(site={"title": "New title"})
    # the pages show the title; nothing else replans
    assert changed_tasks(project, two_mixes, edit, site=True) == {"site:alpha", "site:beta", "site:family"}


@pytest.mark.parametrize("edit", [
    lambda m: m["specialists"]["alpha"].update(port=7001),
    lambda m: m["specialists"]["alpha"].update(sampling={"temperature": 0.9}),
], ids=["port", "sampling"])
def test_serving_edits_redeploy_only_that_specialist(project, two_mixes, edit):
    assert changed_tasks(project, two_mixes, edit) == {"deploy:alpha"}


def test_deploy_section_edits_redeploy_everyone_and_nothing_else(project, two_mixes):
    def edit(m):
        m.update(deploy={"publisher": "me"})
    assert changed_tasks(project, two_mixes, edit) == {"deploy:alpha", "deploy:beta"}


def test_planning_does_no_io_beyond_stats(project, minimal, monkeypatch):
    manifest = load(project.write(minimal))

    def refuse(*args, **kwargs):
        raise AssertionError(f"planning opened a file: {args[:1]}")

    monkeypatch.setattr(builtins, "open", refuse)
    monkeypatch.setattr(os, "open", refuse)
    tasks = list(graph.all_tasks(manifest))
    assert all(t["doc"] for t in tasks)


def doit(project, *args, env=None):
    return subprocess.run([sys.executable, "-m", "doit", "-f", str(REPO / "dodo.py"), *args],
                          cwd=project.root, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


def test_doit_list_shows_every_task_with_its_doc(project, minimal):
    project.write(minimal)
    result = doit(project, "list")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == [
        "ingest", "ingest:chat", "score", "score:chat", "index", "mix", "mix:alpha", "mix:beta",
        "base", "base:tiny", "baseline", "render", "render:alpha", "render:beta", "train", "train:alpha",
        "train:beta", "merge", "merge:alpha", "merge:beta", "gguf", "gguf:alpha", "gguf:beta",
        "quantize", "quantize:alpha", "quantize:beta", "deploy", "deploy:alpha", "deploy:beta",
            "eval", "compare", "judge", "screenshots", "report", "scorecard", "site", "site:alpha",
        "site:beta", "site:family"]  # no eval.suite: empty eval, compare and report groups
    assert "ingest:chat Convert custom source 'chat' into canonical samples." in {
        " ".join(line.split()) for line in lines}


def test_doit_on_an_invalid_manifest_prints_the_problems_without_a_traceback(project, minimal):
    minimal["specialists"]["alpha"]["port"] = 80
    path = project.write(minimal)
    result = doit(project, "list")
    assert result.returncode == 3
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[:2] == [
        "ERROR: invalid manifest",
        f"{at(path, '80', name='afs.yaml')}: specialists.alpha.port: expected a number >= 1024, got 80"]


def test_doit_state_lives_under_the_build_folder(project, minimal):
    project.write(minimal)
    assert graph.namespace(load(project.manifest))["DOIT_CONFIG"]["dep_file"] == \
        str(project.root / "build" / ".doit.db")


@pytest.mark.parametrize("edit", [
    lambda m: m["specialists"]["alpha"].setdefault("lora", {}).update(r=8),
    lambda m: m["specialists"]["alpha"].update(learning_rate=0.001),
], ids=["lora-r", "learning-rate"])
def test_training_edits_rerender_only_that_specialist(project, two_mixes, edit):
    # train:alpha and what follows it follow through the rendered script's content.
    assert changed_tasks(project, two_mixes, edit) == {"render:alpha"}


def test_system_prompt_edit_retrains_and_redeploys_that_specialist(project, two_mixes):
    def edit(m):
        m["specialists"]["alpha"].update(system_prompt="Be brief.")
    assert changed_tasks(project, two_mixes, edit) == {"render:alpha", "deploy:alpha"}


def test_hardware_edit_retrains_who_uses_it(project, two_mixes):
    two_mixes["hardware"]["other"] = {"vram_gb": 8}
    two_mixes["specialists"]["beta"]["hardware"] = "other"

    def edit(m):
        m["hardware"]["other"]["vram_gb"] = 16  # memory and price change no training
        m["hardware"]["other"]["price_per_hour"] = 0.5
    assert changed_tasks(project, two_mixes, edit) == set()

    def edit(m):
        m["hardware"]["other"]["gpu"] = "RTX4090"
    assert changed_tasks(project, two_mixes, edit) == {"render:beta", "train:beta"}
