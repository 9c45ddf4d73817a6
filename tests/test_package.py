"""afs as a user installs it: a wheel built from the repository, installed into a fresh venv.

The venv sees the system's packages (``--system-site-packages``) and the wheel is installed
with ``--no-deps --no-index``, so nothing is downloaded; the source tree the wheel was built
from is deleted before the installed ``afs`` runs, from a folder outside the repository.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from afs_build.manifest import load
from afs_build.paths import Layout
from conftest import CHAT, REPO

pytestmark = pytest.mark.slow

# What a wheel is built from (pyproject.toml's package discovery and package data).
SOURCES = ("pyproject.toml", "README.md", "afs_build", "specs", "templates")
MARK = "# rendered from the installed package's template"


def run(command, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True,
                            timeout=600, **kwargs)
    assert result.returncode == 0, f"{command}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def outside_env() -> dict:
    """The environment without what would let the repository's code in."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the sources (an in-tree build writes build/ and egg-info)."""
    source = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        if (REPO / name).is_dir():
            # symlinks=True keeps afs_build/specs -> ../specs a link, as in a checkout
            shutil.copytree(REPO / name, source / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(REPO / name, source / name)
    dist = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "-q", "-w", dist, source], env=outside_env())
    shutil.rmtree(source)  # the installed package must not need the tree it was built from
    (built,) = dist.glob("afs_build-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("venv")
    run([sys.executable, "-m", "venv", "--system-site-packages", root])
    # --ignore-installed: the system may have afs-build (editable) already; install beside it.
    run([root / "bin" / "python", "-m", "pip", "install", "--no-deps", "--no-index",
         "--ignore-installed", "--disable-pip-version-check", "-q", wheel], env=outside_env())
    return root


def test_the_wheel_carries_every_schema_and_template(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for folder in ("specs", "templates"):
            files = sorted(p for p in (REPO / folder).iterdir() if p.is_file())
            assert files, folder
            for path in files:
                inside = f"afs_build/{folder}/{path.name}"
                assert inside in names, f"{inside} is not in {wheel.name}"
                assert archive.read(inside) == path.read_bytes(), inside
    assert not [n for n in names if n.startswith(("tests/", "build/", "bench/"))]


def test_no_module_walks_up_from_its_file_to_the_repository():
    """Package files come from afs_build/resources.py (importlib.resources), never ``../``."""
    walking = re.compile(r"__file__\)?(\.resolve\(\))?\.(parents\[|parent\.parent)")
    found = [f"{path.relative_to(REPO)}:{n}" for path in sorted((REPO / "afs_build").rglob("*.py"))
             for n, line in enumerate(path.read_text().splitlines(), 1) if walking.search(line)]
    assert found == []


def test_installed_afs_validates_and_renders_a_training_script_outside_the_repository(venv, tmp_path):
    from tinymodel import build_tiny_model

    python, afs = venv / "bin" / "python", venv / "bin" / "afs"
    where = run([python, "-c", "import afs_build, afs_build.resources as r; "
                 "print(afs_build.__file__); print(r.specs_dir()); print(r.templates_dir())"],
                cwd=tmp_path, env=outside_env()).stdout.split()
    for path in where:
        assert Path(path).resolve().is_relative_to(venv.resolve()), where
    # A line added to the installed template shows in the script only if that file was used.
    template = Path(where[2]) / "train.py.j2"
    template.write_text(template.read_text() + f"\n{MARK}\n")

    project = tmp_path / "project"
    build_tiny_model(project / "tiny")
    (project / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in CHAT))
    manifest = {
        "project": {"name": "installed"},
        "models": {"tiny": {"path": "tiny", "params_b": 0.001}},
        "hardware": {"cpu": {"vram_gb": 8}},
        "sources": {"chat": {"kind": "custom", "path": "chat.jsonl", "format": "alpaca"}},
        "mixes": {"general": {"samples": 4, "groups": {"all": {"share": 1.0, "sources": ["chat"]}}}},
        "specialists": {"alpha": {"role": "Tester", "base": "tiny", "mix": "general",
                                  "hardware": "cpu", "port": 6001, "max_seq_len": 128}},
    }
    (project / "afs.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))

    done = run([afs, "validate", "afs.yaml"], cwd=project, env=outside_env())
    assert done.stdout == "afs.yaml: valid (1 specialists, 1 sources, 1 mixes)\n"
    run([afs, "build", "-m", "afs.yaml", "--", "render:alpha"], cwd=project, env=outside_env())
    script = Layout.of(load(project / "afs.yaml")).train("alpha").script
    assert script.is_file(), f"{script} was not rendered"
    text = script.read_text()
    assert MARK in text
    compile(text, str(script), "exec")  # a Python script, not a template
