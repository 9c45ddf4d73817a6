"""LM Studio deployment on real files in a temporary LM Studio folder: placement (link, copy,
atomic replace), the preset, the script (quoting, run against a stub ``lms``), and removing
exactly what afs installed. The golden script is rendered through the stage (test_stage.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from afs_build.deploy import lmstudio
from afs_build.paths import Layout
from deploy_helpers import write_manifest

EVIL = "Quest'; touch PWNED; echo '$(touch PWNED2) `touch PWNED3`\nrm -rf \"$HOME\" # \\"

STUB_LMS = """\
#!/usr/bin/env python3
import json, os, sys
with open(os.environ["LMS_CALLS"], "a") as out:
    out.write(json.dumps(sys.argv[1:]) + "\\n")
"""


def majora(**extra) -> dict:
    return {"role": "Quest Specialist", "version": 2, "port": 5000, "context_length": 4096,
            "system_prompt": "You are Majora.\nAnswer briefly.", "quantize": ["Q8_0"],
            "sampling": {"temperature": 0.7, "top_p": 0.95, "max_tokens": 256,
                         "repeat_penalty": 1.05}, **extra}


@pytest.fixture
def setup(tmp_path):
    """A manifest whose LM Studio folder is under tmp_path, and a small fake GGUF to place."""
    manifest = write_manifest(tmp_path / "project", {"majora": majora()},
                              {"lmstudio_dir": str(tmp_path / "lmstudio" / "models")})
    layout = Layout.of(manifest)
    gguf = layout.post("majora").gguf("Q8_0")
    gguf.parent.mkdir(parents=True)
    gguf.write_bytes(b"GGUF" + bytes(range(256)) * 64)
    return manifest, layout, gguf, tmp_path / "lmstudio"


def deploy(manifest, layout, gguf):
    files = layout.deploy("majora")
    return lmstudio.deploy(manifest, "majora", gguf, preset_file=files.preset,
                           script=files.lmstudio_script, record=files.installed,
                           digest="0123456789abcdef")


def test_model_is_hard_linked_into_lm_studio_layout(setup):
    manifest, layout, gguf, home = setup
    report = deploy(manifest, layout, gguf)
    target = home / "models" / "afs" / "majora" / "majora-Q8_0.gguf"
    assert report["model"] == str(target) and report["placed"] == "linked"
    assert os.path.samefile(target, gguf)
    assert deploy(manifest, layout, gguf)["placed"] == "unchanged"
    assert sorted(p.name for p in target.parent.iterdir()) == ["majora-Q8_0.gguf"]  # no temp files


def test_model_is_copied_across_filesystems(setup, monkeypatch):
    manifest, layout, gguf, home = setup

    def no_link(src, dst):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_link)
    assert deploy(manifest, layout, gguf)["placed"] == "copied"
    target = home / "models" / "afs" / "majora" / "majora-Q8_0.gguf"
    assert target.read_bytes() == gguf.read_bytes() and not os.path.samefile(target, gguf)
    assert deploy(manifest, layout, gguf)["placed"] == "unchanged"
    gguf.write_bytes(b"GGUF new weights")  # a rebuilt model replaces the copy
    assert deploy(manifest, layout, gguf)["placed"] == "copied"
    assert target.read_bytes() == b"GGUF new weights"


def test_a_changed_quantization_replaces_the_old_file(setup):
    manifest, layout, gguf, home = setup
    deploy(manifest, layout, gguf)
    folder = home / "models" / "afs" / "majora"
    (folder / "majora-mine.gguf").write_bytes(b"GGUF the user's own")
    other = layout.post("majora").gguf("Q4_K_M")
    shutil.copy(gguf, other)
    report = deploy(manifest, layout, other)
    assert report["removed"] == ["majora-Q8_0.gguf"]
    assert sorted(p.name for p in folder.iterdir()) == ["majora-Q4_K_M.gguf", "majora-mine.gguf"]


def test_preset_is_lm_studio_config_preset(setup):
    manifest, layout, gguf, home = setup
    report = deploy(manifest, layout, gguf)
    expected = {
        "identifier": "@local:afs-majora",
        "name": "Majora v2 (afs)",
        "changed": True,
        "operation": {"fields": [
            {"key": "llm.prediction.systemPrompt", "value": "You are Majora.\nAnswer briefly."},
            {"key": "llm.prediction.temperature", "value": 0.7},
            {"key": "llm.prediction.topPSampling", "value": {"checked": True, "value": 0.95}},
            {"key": "llm.prediction.repeatPenalty", "value": {"checked": True, "value": 1.05}},
            {"key": "llm.prediction.maxPredictedTokens",
             "value": {"checked": True, "value": 256}},
        ]},
        "load": {"fields": [{"key": "llm.load.contextLength", "value": 4096}]},
    }
    installed = home / "config-presets" / "afs-majora.preset.json"
    assert report["preset"] == str(installed)
    for path in (layout.deploy("majora").preset, installed):
        assert json.loads(path.read_text(encoding="utf-8")) == expected


def test_script_is_executable(setup):
    manifest, layout, gguf, _ = setup
    script = Path(deploy(manifest, layout, gguf)["script"])
    assert os.access(script, os.X_OK)
    assert "(deploy settings 0123456789abcdef)" in script.read_text(encoding="utf-8")


def test_what_afs_installed_is_recorded_before_it_is_placed(setup, monkeypatch):
    manifest, layout, gguf, home = setup

    def interrupted(source, target):
        raise KeyboardInterrupt  # killed while placing the model

    monkeypatch.setattr(lmstudio, "place_model", interrupted)
    with pytest.raises(KeyboardInterrupt):
        deploy(manifest, layout, gguf)
    record = json.loads(layout.deploy("majora").installed.read_text(encoding="utf-8"))
    assert record["files"] == sorted([str(home / "models/afs/majora/majora-Q8_0.gguf"),
                                      str(home / "config-presets/afs-majora.preset.json")])


def test_removing_takes_only_what_afs_installed(setup):
    manifest, layout, gguf, home = setup
    mine = [home / "models" / "afs" / "majora" / "notes.txt",  # beside afs's model
            home / "models" / "someone" / "model" / "theirs.gguf",
            home / "config-presets" / "mine.preset.json"]
    (home / "models" / "someone" / "model").mkdir(parents=True)
    mine[1].write_bytes(b"GGUF theirs")
    deploy(manifest, layout, gguf)
    mine[0].write_text("my notes")
    mine[2].write_text("{}")
    record = layout.deploy("majora").installed
    would = lmstudio.remove_installed(record, dryrun=True)
    assert sorted(would) == sorted([str(home / "models/afs/majora/majora-Q8_0.gguf"),
                                    str(home / "config-presets/afs-majora.preset.json")])
    assert record.exists() and (home / "models/afs/majora/majora-Q8_0.gguf").exists()
    gone = lmstudio.remove_installed(record)
    assert sorted(gone) == sorted(would)
    assert all(path.is_file() for path in mine)
    assert sorted(p.name for p in (home / "models" / "afs" / "majora").iterdir()) == ["notes.txt"]
    mine[0].unlink()
    deploy(manifest, layout, gguf)
    lmstudio.remove_installed(record)
    # The folders afs made go once empty; the user's folders stay.
    assert not (home / "models" / "afs").exists()
    assert sorted(p.name for p in (home / "models").iterdir()) == ["someone"]
    assert sorted(p.name for p in (home / "config-presets").iterdir()) == ["mine.preset.json"]


def test_shell_injection_in_manifest_values_stays_inert(tmp_path):
    manifest = write_manifest(tmp_path / "project",
                              {"majora": majora(role=EVIL, system_prompt=EVIL)},
                              {"lmstudio_dir": str(tmp_path / "lmstudio" / "models")})
    layout = Layout.of(manifest)
    gguf = layout.post("majora").gguf("Q8_0")
    gguf.parent.mkdir(parents=True)
    gguf.write_bytes(b"GGUF")
    script = Path(deploy(manifest, layout, gguf)["script"])
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0

    bin_dir, work = tmp_path / "bin", tmp_path / "work"
    bin_dir.mkdir()
    work.mkdir()
    (bin_dir / "lms").write_text(STUB_LMS)
    (bin_dir / "lms").chmod(0o755)
    calls = tmp_path / "calls.jsonl"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "LMS_CALLS": str(calls), "HOME": str(work)}
    run = subprocess.run(["bash", str(script)], cwd=work, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert [json.loads(line) for line in calls.read_text().splitlines()] == [
        ["unload", "majora"],
        ["load", "--exact", "afs/majora/majora-Q8_0.gguf", "--identifier", "majora",
         "--context-length", "4096"],
        ["server", "start", "--port", "5000"],
    ]
    assert sorted(p.name for p in work.iterdir()) == []  # nothing touched, nothing removed
    preset = json.loads(layout.deploy("majora").preset.read_text(encoding="utf-8"))
    assert preset["operation"]["fields"][0]["value"] == EVIL


def test_every_template_value_is_shell_quoted():
    text = lmstudio.render_script({
        "name": "a b", "title": "t", "role": "r", "manifest_file": "m", "digest": "d",
        "model_path": "p/q r/s.gguf", "context_length": "1; id", "port": "$(id)"})
    assert "lms load --exact 'p/q r/s.gguf' --identifier 'a b' --context-length '1; id'" in text
    assert "lms server start --port '$(id)'" in text
