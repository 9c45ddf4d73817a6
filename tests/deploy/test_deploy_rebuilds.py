"""Through doit, on a real served-only tiny model: editing a deploy template re-plans exactly
the deploy task and rewrites exactly its file; the digest the files carry is the one doit
keeps; ``doit clean`` stops the server and removes only what afs put in LM Studio's folder.

The templates are copies under the test's folder (the package's own are never edited): the
build finds them through afs_build.resources, patched to that folder for this module, and
doit runs in this process so that it sees the patch.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from afs_build import graph, plan, resources  # noqa: E402
from afs_build.deploy import server  # noqa: E402
from afs_build.manifest import load  # noqa: E402
from afs_build.paths import Layout  # noqa: E402
from conftest import CHAT, REPO  # noqa: E402
from deploy_helpers import free_port  # noqa: E402


def doit(manifest, *args) -> int:
    from doit.cmd_base import ModuleTaskLoader
    from doit.doit_cmd import DoitMain

    return DoitMain(ModuleTaskLoader(graph.namespace(manifest))).run(list(args))


def running(manifest) -> set[str]:
    return {t.name for t in plan.task_plans(manifest) if t.runs}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A served-only specialist built and served by doit, templates from a copy."""
    from tinymodel import build_tiny_model

    root = tmp_path_factory.mktemp("rebuilds")
    build_tiny_model(root / "tiny")
    templates = root / "templates"
    shutil.copytree(resources.templates_dir(), templates)
    data = {
        "project": {"name": "demo"},
        "models": {"tiny": {"path": "tiny", "params_b": 0.001}},
        "hardware": {"cpu": {"vram_gb": 8}},
        "sources": {"chat": {"kind": "custom", "path": "chat.jsonl", "format": "alpaca"}},
        "mixes": {"general": {"samples": 4, "groups": {"all": {"share": 1.0, "sources": ["chat"]}}}},
        "specialists": {"alpha": {"role": "Tester", "base": "tiny", "train": False,
                                  "port": free_port(), "quantize": ["Q8_0"],
                                  "context_length": 256}},
        "deploy": {"lmstudio_dir": str(root / "lmstudio" / "models")},
    }
    (root / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in CHAT))
    (root / "afs.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    manifest = load(root / "afs.yaml")
    folder = resources._folder
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(resources, "_folder",
                      lambda name: templates if name == "templates" else folder(name))
        assert doit(manifest) == 0
        yield manifest, Layout.of(manifest), templates
        server.stop(Layout.of(manifest), manifest)


def test_after_a_build_nothing_would_run(built):
    manifest, layout, _ = built
    assert running(manifest) == set()
    assert server.healthy("127.0.0.1", manifest.specialists["alpha"].port, "alpha")


def test_the_digest_in_the_files_is_the_one_doit_keeps(built):
    manifest, layout, _ = built
    state = json.loads(layout.state_db.read_text())
    kept = state["deploy:alpha"]["_values_:"]["slice:specialists.alpha (serving)"]
    for path in (layout.deploy("alpha").modelfile, layout.deploy("alpha").lmstudio_script):
        assert f"(deploy settings {kept[:16]})" in path.read_text()


@pytest.mark.parametrize("template, edited, untouched", [
    ("Modelfile.j2", "modelfile", "lmstudio_script"),
    ("lmstudio.sh.j2", "lmstudio_script", "modelfile"),
])
def test_a_template_edit_rewrites_exactly_its_deploy_file(built, template, edited, untouched):
    manifest, layout, templates = built
    files = layout.deploy("alpha")
    pid = server.running(files.pid)
    other = getattr(files, untouched).read_bytes()
    with open(templates / template, "a") as handle:
        handle.write(f"# edited: {template}\n")
    plans = {t.name: t for t in plan.task_plans(manifest)}
    assert {name for name, t in plans.items() if t.runs} == {"deploy:alpha"}
    assert plans["deploy:alpha"].reasons == (f"input content changed: {templates / template}",)

    assert doit(manifest) == 0
    assert getattr(files, edited).read_text().endswith(f"# edited: {template}\n")
    assert getattr(files, untouched).read_bytes() == other
    assert server.running(files.pid) == pid  # the same server kept
    assert running(manifest) == set()


def test_the_renderers_are_inputs_too(built):
    manifest, _, templates = built
    task = next(t for t in graph.all_tasks(manifest) if t["name"] == "deploy:alpha")
    code = Path(graph.__file__).parent
    assert {str(templates / "Modelfile.j2"), str(templates / "lmstudio.sh.j2"),
            str(code / "deploy" / "ollama.py"), str(code / "deploy" / "lmstudio.py")} \
        <= set(task["file_dep"])


def test_doit_clean_stops_the_server_and_removes_only_what_afs_installed(built):
    manifest, layout, _ = built
    studio = manifest.root / "lmstudio"
    mine = [studio / "models" / "afs" / "alpha" / "README.txt",
            studio / "models" / "someone" / "else" / "their.gguf",
            studio / "config-presets" / "their.preset.json"]
    for path in mine:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("not afs's")
    pids = server.running(layout.deploy("alpha").pid)
    assert len(pids) == 1
    result = subprocess.run([sys.executable, "-m", "doit", "-f", str(REPO / "dodo.py"), "clean"],
                            cwd=manifest.root, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "AFS_MANIFEST": "afs.yaml",
                                 "HOME": str(manifest.root / "home")})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "deploy:alpha - stopped its server" in result.stdout
    assert server.running(layout.deploy("alpha").pid) == []
    assert server.port_free("127.0.0.1", manifest.specialists["alpha"].port)
    assert server.status(layout, manifest)[0]["state"] == "stopped"
    assert not (studio / "models" / "afs" / "alpha" / "alpha-Q8_0.gguf").exists()
    assert not (studio / "config-presets" / "afs-alpha.preset.json").exists()
    assert all(path.read_text() == "not afs's" for path in mine)
    assert not layout.deploy("alpha").modelfile.exists()
    assert not layout.post("alpha").gguf("Q8_0").exists()
