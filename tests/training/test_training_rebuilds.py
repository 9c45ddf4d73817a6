"""Editing the code a training script is made of re-renders and retrains exactly who it concerns.

The afs package is copied into the test's folder (with its templates and schemas) and a small
project is built with it through train:alpha (local, tiny model) and render:beta (a SkyPilot
specialist); then one file of the copy at a time is edited and `afs plan`'s view (plan.task_plans,
doit's own up-to-date checks) is compared with the view before the edit.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from conftest import CHAT, REPO

PLAN = ("import json, sys; from afs_build import plan; from afs_build.manifest import load; "
        "print(json.dumps({t.name: list(t.reasons) for t in plan.task_plans(load('afs.yaml')) if t.runs}))")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from tinymodel import build_tiny_model

    root = tmp_path_factory.mktemp("rebuilds")
    code = root / "code"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "afs_build", code / "afs_build", symlinks=True, ignore=ignore)
    for folder in ("templates", "specs"):
        shutil.copytree(REPO / folder, code / folder, ignore=ignore)
    shutil.copy(REPO / "dodo.py", code / "dodo.py")
    project = root / "project"
    project.mkdir()
    build_tiny_model(project / "tiny")
    spec = {"base": "tiny", "mix": "general", "epochs": 1, "batch_size": 4, "max_seq_len": 128}
    manifest = {
        "project": {"name": "demo"},
        "models": {"tiny": {"path": "tiny", "params_b": 0.001}},
        "hardware": {"cpu": {"vram_gb": 8},
                     "gpu": {"backend": "skypilot", "gpu": "RTX4090", "vram_gb": 24,
                             "price_per_hour": 0.3, "infra": "vast"}},
        "sources": {"chat": {"kind": "custom", "path": "chat.jsonl", "format": "alpaca"}},
        "mixes": {"general": {"samples": 4, "groups": {"all": {"share": 1.0, "sources": ["chat"]}}}},
        "specialists": {"alpha": {"role": "Local", "hardware": "cpu", "port": 6001, **spec},
                        "beta": {"role": "Rented", "hardware": "gpu", "port": 6002, **spec}},
    }
    (project / "afs.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    (project / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in CHAT))
    env = {**os.environ, "PYTHONPATH": str(code), "AFS_MANIFEST": "afs.yaml", "HF_HUB_OFFLINE": "1",
           "OMP_WAIT_POLICY": "PASSIVE"}
    done = subprocess.run([sys.executable, "-m", "doit", "-f", str(code / "dodo.py"), "train:alpha",
                           "render:beta"], cwd=project, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return code, project, env


def plan(built) -> dict[str, list[str]]:
    code, project, env = built
    done = subprocess.run([sys.executable, "-c", PLAN], cwd=project, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def replans(built, rel: str, edit) -> dict[str, list[str]]:
    """The tasks that run after `edit` of the copy's file `rel` and did not before (with reasons)."""
    path = built[0] / rel
    original = path.read_text()
    before = plan(built)
    path.write_text(edit(original))
    try:
        after = plan(built)
    finally:
        path.write_text(original)
    return {name: reasons for name, reasons in after.items() if name not in before}


@pytest.mark.slow
def test_built_state_is_up_to_date_where_it_was_built(built):
    runs = plan(built)
    assert not {"base:tiny", "mix:alpha", "render:alpha", "render:beta", "train:alpha"} & set(runs)
    assert "train:beta" in runs  # never trained (it rents a GPU)


@pytest.mark.slow
def test_editing_the_script_template_rerenders_and_retrains_everyone(built):
    changed = replans(built, "templates/train.py.j2", lambda text: text + "# an edit\n")
    template = str(built[0] / "afs_build" / "templates" / "train.py.j2")  # as resources finds it
    assert changed == {"render:alpha": [f"input content changed: {template}"],
                       "render:beta": [f"input content changed: {template}"],
                       "train:alpha": ["an input task runs: render:alpha"]}


@pytest.mark.slow
def test_editing_the_skypilot_template_rerenders_the_rented_one_only(built):
    changed = replans(built, "templates/sky.yaml.j2", lambda text: text + "# an edit\n")
    assert changed == {"render:beta": [f"input content changed: {built[0] / 'afs_build' / 'templates' / 'sky.yaml.j2'}"]}


@pytest.mark.slow
def test_editing_the_training_loop_rerenders_and_retrains_everyone(built):
    changed = replans(built, "afs_build/training/loop.py", lambda text: text + "# an edit\n")
    loop = str(built[0] / "afs_build" / "training" / "loop.py")
    assert changed == {"render:alpha": [f"input content changed: {loop}"],
                       "render:beta": [f"input content changed: {loop}"],
                       "train:alpha": ["an input task runs: render:alpha"]}


@pytest.mark.slow
def test_editing_a_training_default_rerenders_and_retrains_everyone(built):
    def edit(text: str) -> str:
        assert '"weight_decay": 0.0,' in text
        return text.replace('"weight_decay": 0.0,', '"weight_decay": 0.01,')

    changed = replans(built, "afs_build/training/script.py", edit)
    source = str(built[0] / "afs_build" / "training" / "script.py")
    assert changed == {
        "render:alpha": ["manifest slice changed: specialists.alpha (training)", f"input content changed: {source}"],
        "render:beta": ["manifest slice changed: specialists.beta (training)", f"input content changed: {source}"],
        "train:alpha": ["an input task runs: render:alpha"]}


@pytest.mark.slow
def test_editing_unrelated_code_replans_nothing_new(built):
    assert replans(built, "afs_build/post/quantize.py", lambda text: text + "# an edit\n") == {}
