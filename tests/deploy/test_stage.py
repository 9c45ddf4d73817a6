"""The deploy stage as the build runs it (stages/deploy.py run) on a real tiny GGUF: golden
Modelfile and LM Studio script, the digest they carry is the one the task keeps, a rerun
keeps the server, cleaning stops it and removes only what afs put in LM Studio's folder.

The tests share one deployed specialist and run in file order; the last one cleans it.
"""

from __future__ import annotations

import json
import os

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from afs_build import cli  # noqa: E402
from afs_build.deploy import server  # noqa: E402
from afs_build.paths import Layout  # noqa: E402
from afs_build.stages import deploy as stage  # noqa: E402
from afs_build.uptodate import ServerHealthy, SliceChanged  # noqa: E402
from deploy_helpers import free_port, place_served, shared_tiny_gguf, write_manifest  # noqa: E402

SYSTEM = 'You are Majora, keeper of "quests".\n\tAnswer in one line; never say """ inline.'

GOLDEN_MODELFILE = '''\
# Ollama Modelfile for Majora v2: Quest Specialist
# Written by afs from afs.yaml (deploy settings DIGEST); rebuild rather than edit.
# Create the model:  ollama create majora -f Modelfile
FROM ../post/majora-Q8_0.gguf

# Chat template (chatml), in Ollama's Go template syntax.
TEMPLATE """{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
"""

SYSTEM """You are Majora, keeper of "quests".
\tAnswer in one line; never say """ inline."""

PARAMETER stop <|im_end|>
PARAMETER stop <|im_start|>
PARAMETER stop <|endoftext|>
PARAMETER temperature 0.7
PARAMETER top_p 0.95
PARAMETER repeat_penalty 1.05
PARAMETER num_ctx 4096
PARAMETER num_predict 256
'''

GOLDEN_SCRIPT = """\
#!/usr/bin/env bash
# LM Studio: load 'Majora v2' ('Quest Specialist') and serve it.
# Written by afs from afs.yaml (deploy settings DIGEST); rebuild rather than edit.
# Needs LM Studio's `lms` on PATH (~/.lmstudio/bin/lms bootstrap).
set -euo pipefail

# A reload replaces the instance loaded earlier under this identifier (none is fine).
lms unload majora >/dev/null 2>&1 || true
# --exact: load this file or fail, never a model whose path merely looks alike.
lms load --exact afs/majora/majora-Q8_0.gguf --identifier majora --context-length 4096
lms server start --port PORT
"""


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    return shared_tiny_gguf(tmp_path_factory)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, tiny_gguf):
    """majora deployed by the stage: (manifest, layout, the stage's first report)."""
    root = tmp_path_factory.mktemp("stage")
    manifest = write_manifest(root, {"majora": {
        "role": "Quest Specialist", "version": 2, "port": free_port(), "system_prompt": SYSTEM,
        "context_length": 4096, "quantize": ["Q4_K_M", "Q8_0"],
        "sampling": {"temperature": 0.7, "top_p": 0.95, "max_tokens": 256, "repeat_penalty": 1.05},
    }})
    place_served(manifest, "majora", tiny_gguf)
    layout = Layout.of(manifest)
    assert stage.run(manifest, "majora") is None  # a TaskFailed otherwise
    report = json.loads(layout.deploy("majora").report.read_text(encoding="utf-8"))
    yield manifest, layout, report
    server.stop(layout, manifest)


def task_slice(manifest) -> SliceChanged:
    task = next(stage.tasks(manifest))
    return next(u for u in task["uptodate"] if isinstance(u, SliceChanged))


def test_modelfile_matches_golden(deployed):
    manifest, layout, _ = deployed
    text = layout.deploy("majora").modelfile.read_text(encoding="utf-8")
    assert text == GOLDEN_MODELFILE.replace("DIGEST", stage.digest(manifest, "majora"))


def test_lmstudio_script_matches_golden(deployed):
    manifest, layout, _ = deployed
    script = layout.deploy("majora").lmstudio_script
    expected = GOLDEN_SCRIPT.replace("DIGEST", stage.digest(manifest, "majora")).replace(
        "PORT", str(manifest.specialists["majora"].port))
    assert script.read_text(encoding="utf-8") == expected
    assert os.access(script, os.X_OK)


def test_the_digest_written_is_the_one_the_task_keeps(deployed):
    manifest, layout, report = deployed
    kept = task_slice(manifest).digest  # what doit stores and compares for this task
    assert report["digest"] == kept[:16] == stage.digest(manifest, "majora")
    for path in (layout.deploy("majora").modelfile, layout.deploy("majora").lmstudio_script):
        assert f"(deploy settings {kept[:16]})" in path.read_text(encoding="utf-8")


def test_the_task_reads_the_templates_and_the_code_that_renders_them(deployed):
    manifest, layout, _ = deployed
    task = next(stage.tasks(manifest))
    names = {os.path.basename(p) for p in task["file_dep"]}
    assert {"Modelfile.j2", "lmstudio.sh.j2", "ollama.py", "lmstudio.py", "quantize.json"} <= names
    assert all(os.path.isfile(p) for p in task["file_dep"])


def test_report_and_preset(deployed):
    manifest, layout, report = deployed
    port = manifest.specialists["majora"].port
    assert report["server"]["action"] == "started" and report["auth"] is False
    assert report["url"] == f"http://127.0.0.1:{port}/v1"
    installed = manifest.root / "lmstudio" / "config-presets" / "afs-majora.preset.json"
    assert report["lmstudio"]["preset"] == str(installed)
    assert json.loads(installed.read_text()) == json.loads(layout.deploy("majora").preset.read_text())
    assert server.healthy("127.0.0.1", port, "majora")


def test_a_second_run_keeps_the_server(deployed):
    manifest, layout, report = deployed
    assert stage.run(manifest, "majora") is None
    again = json.loads(layout.deploy("majora").report.read_text(encoding="utf-8"))
    assert again["server"]["action"] == "kept"
    assert again["server"]["pid"] == report["server"]["pid"]
    check = next(u for u in next(stage.tasks(manifest))["uptodate"] if isinstance(u, ServerHealthy))
    assert check(None, {}) is True


def test_afs_clean_stops_the_server_and_removes_only_afs_files(deployed, capsys):
    manifest, layout, report = deployed
    studio = manifest.root / "lmstudio"
    mine = [studio / "models" / "afs" / "majora" / "my-notes.txt",
            studio / "models" / "mine" / "x" / "mine.gguf",
            studio / "config-presets" / "my.preset.json"]
    for path in mine:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("the user's own")
    pid = report["server"]["pid"]
    port = manifest.specialists["majora"].port
    assert cli.main(["clean", "-m", str(manifest.file), "majro"]) == 1
    assert capsys.readouterr().err == (f"{manifest.file}: unknown specialist 'majro'; expected "
                                       f"one of: 'majora' (did you mean 'majora'?)\n")

    assert cli.main(["clean", "-m", str(manifest.file), "--dry-run", "majora"]) == 0
    out = capsys.readouterr().out
    assert f"deploy:majora - would stop its server (pid {pid})" in out
    assert f"deploy:majora - would remove '{studio / 'models/afs/majora/majora-Q8_0.gguf'}'" in out
    assert server.healthy("127.0.0.1", port, "majora")
    assert layout.deploy("majora").modelfile.exists()

    assert cli.main(["clean", "-m", str(manifest.file), "majora"]) == 0
    out = capsys.readouterr().out
    assert "deploy:majora - stopped its server" in out
    assert server.running(layout.deploy("majora").pid) == []
    assert server.port_free("127.0.0.1", port)
    assert not (studio / "models" / "afs" / "majora" / "majora-Q8_0.gguf").exists()
    assert not (studio / "config-presets" / "afs-majora.preset.json").exists()
    assert all(path.read_text() == "the user's own" for path in mine)
    # The specialist's build outputs go too (as doit clean would), its inputs stay.
    assert not layout.deploy("majora").modelfile.exists()
    assert not server.served_gguf(layout, manifest.specialists["majora"]).exists()
    assert (manifest.root / "chat.jsonl").exists()
