"""SkyPilot: the rendered task YAML (golden, quoting, secrets, SkyPilot's own schema) and
`launch` against a stand-in `sky` and `rsync` written onto PATH."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from afs_build.errors import StageError
from afs_build.manifest import load
from afs_build.paths import TrainFiles
from afs_build.training import skypilot
from afs_build.training.skypilot import cluster_name, launch, task_yaml

REPO = Path(__file__).resolve().parents[2]
SEED = REPO / "examples" / "seed-vastai.yaml"
NASTY = "it's \"quoted\" $(touch pwned) `touch pwned2` ; rm -rf ~"

GOLDEN_MAJORA = '''\
# SkyPilot task: LoRA fine-tune of specialist majora of project afs-seed.
# Rendered by afs from afs.yaml: edit the manifest, not this file.
#
# afs runs it as `sky launch -y -c afs-seed-majora --idle-minutes-to-autostop N --down
# [--secret HF_TOKEN] sky.yaml`, downloads ~/afs/out with rsync, then `sky down`.
# No credential is written here: cloud keys come from SkyPilot's own setup (`sky check`),
# HF_TOKEN from your environment, passed by name with `--secret HF_TOKEN`.
name: "afs-seed-majora"

resources:
  accelerators: "RTX4090:1"
  infra: "vast"
  disk_size: 64

num_nodes: 1

# The script and the two data files only: the training folder itself (old checkpoints and
# adapters) is not uploaded.
file_mounts:
  ~/afs/train.py: "/srv/afs/build/specialists/majora/train/train.py"
  ~/afs/data/train.jsonl: "/srv/afs/build/data/mix/majora/train.jsonl"
  ~/afs/data/eval.jsonl: "/srv/afs/build/data/mix/majora/eval.jsonl"

envs:
  AFS_PROJECT: "afs-seed"
  AFS_SPECIALIST: "majora"
  HF_HUB_DISABLE_TELEMETRY: "1"
  TOKENIZERS_PARALLELISM: "false"

# A venv of its own with pinned packages and Python 3.11, whatever the image ships.
# `--torch-backend auto` picks the PyTorch build that matches this host's NVIDIA driver.
setup: |
  set -euo pipefail
  export PATH="$HOME/.local/bin:$PATH"
  command -v uv > /dev/null || curl -LsSf https://astral.sh/uv/0.13.9/install.sh | sh
  [ -x ~/afs/venv/bin/python ] || uv venv --python 3.11 ~/afs/venv
  uv pip install --python ~/afs/venv/bin/python --torch-backend auto \\
    torch==2.13.0 \\
    transformers==5.24.0 \\
    peft==0.21.2 \\
    datasets==5.2.0 \\
    accelerate==1.15.0

run: |
  set -euo pipefail
  cd ~/afs
  mkdir -p out
  ~/afs/venv/bin/python train.py \\
    --base Qwen/Qwen2.5-Coder-7B-Instruct \\
    --train data/train.jsonl \\
    --eval data/eval.jsonl \\
    --out out
'''


@pytest.fixture(scope="module")
def seed():
    return load(SEED)


def render(manifest, name: str, root: Path, base: str | None = None) -> str:
    """The task YAML with the build folder's usual paths under `root`."""
    spec = manifest.specialists[name]
    mix = root / "data" / "mix" / name
    train = root / "specialists" / name / "train"
    return task_yaml(manifest, name, script=train / "train.py", train=mix / "train.jsonl",
                     eval=mix / "eval.jsonl", base=base or manifest.models[spec.base].hub)


def materialize(manifest, name: str, root: Path, base: str | None = None) -> Path:
    """Render into ``root/specialists/NAME/train/sky.yaml`` with the files it names present."""
    for rel in (f"data/mix/{name}/train.jsonl", f"data/mix/{name}/eval.jsonl",
                f"specialists/{name}/train/train.py"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("{}\n")
    path = root / "specialists" / name / "train" / "sky.yaml"
    path.write_text(render(manifest, name, root, base))
    return path


def gpu_manifest(project, minimal: dict, *, count: int = 4, spot: bool = True, **spec):
    minimal["hardware"] = {"a100": {"backend": "skypilot", "gpu": "A100-80GB", "count": count,
                                    "vram_gb": 80, "price_per_hour": 7.2, "infra": "aws",
                                    "spot": spot}}
    for s in minimal["specialists"].values():
        s["hardware"] = "a100"
        s.update(spec)
    return load(project.write(minimal))


# --- the YAML -------------------------------------------------------------------------------


def test_golden_majora_through_the_render_stage(seed, tmp_path):
    """render:majora's own action, with the seed's build folder moved into the test's folder."""
    import dataclasses

    from afs_build.paths import Layout
    from afs_build.stages import render as render_stage

    build = tmp_path / "build"
    moved = dataclasses.replace(seed, project=dataclasses.replace(seed.project, build_dir=str(build)))
    assert render_stage.run(moved, "majora") is None
    text = Layout.of(moved).train("majora").sky_task.read_text()
    assert text == GOLDEN_MAJORA.replace("/srv/afs/build", str(build))
    assert render(seed, "majora", Path("/srv/afs/build")) == GOLDEN_MAJORA  # the helper agrees


def test_quantized_base_adds_bitsandbytes(seed):
    veran = yaml.safe_load(render(seed, "veran", Path("/srv/afs/build")))
    assert veran["resources"] == {"accelerators": "GTX1080:1", "infra": "vast", "disk_size": 64}
    assert "bitsandbytes==0.50.2" in veran["setup"]
    assert "bitsandbytes" not in GOLDEN_MAJORA


def test_rendering_is_deterministic_and_ignores_the_environment(seed, monkeypatch):
    first = render(seed, "nayru", Path("/srv/afs/build"))
    monkeypatch.setenv("AFS_SPECIALIST", "other")
    monkeypatch.chdir(REPO / "tests")
    assert render(seed, "nayru", Path("/srv/afs/build")) == first


def test_multi_gpu_uses_torchrun_and_spot(project, minimal):
    manifest = gpu_manifest(project, minimal, count=4, spot=True)
    task = yaml.safe_load(render(manifest, "alpha", project.root / "build", base="org/model"))
    assert task["resources"] == {"accelerators": "A100-80GB:4", "infra": "aws", "use_spot": True,
                                 "disk_size": 64}
    assert ("~/afs/venv/bin/python -m torch.distributed.run --standalone --nproc_per_node 4 "
            "train.py \\") in task["run"]
    single = yaml.safe_load(render(gpu_manifest(project, minimal, count=1, spot=False), "alpha",
                                   project.root / "build", base="org/model"))
    assert "torch.distributed" not in single["run"] and "use_spot" not in single["resources"]


def run_script(script: str, home: Path) -> list[str]:
    """Run a `run:` block with bash, the venv's python replaced by one that records its argv."""
    fake = home / "afs" / "venv" / "bin" / "python"
    fake.parent.mkdir(parents=True)
    fake.write_text(f"#!{sys.executable}\nimport json, sys\n"
                    f"json.dump(sys.argv[1:], open({str(home / 'argv.json')!r}, 'w'))\n")
    fake.chmod(0o755)
    subprocess.run(["bash", "-c", script], check=True, cwd=home,
                   env={"HOME": str(home), "PATH": os.environ["PATH"]})
    return json.loads((home / "argv.json").read_text())


def test_base_with_quotes_and_command_substitution_reaches_the_script_intact(seed, tmp_path):
    task = yaml.safe_load(render(seed, "majora", Path("/srv/afs/build"), base=NASTY))
    argv = run_script(task["run"], tmp_path)
    assert argv == ["train.py", "--base", NASTY, "--train", "data/train.jsonl",
                    "--eval", "data/eval.jsonl", "--out", "out"]
    assert not list(tmp_path.rglob("pwned*"))
    subprocess.run(["bash", "-n", "-c", task["setup"]], check=True)


def test_multi_gpu_command_line_runs(project, minimal, tmp_path):
    task = yaml.safe_load(render(gpu_manifest(project, minimal, count=2), "alpha",
                                 project.root / "build", base=NASTY))
    argv = run_script(task["run"], tmp_path / "home")
    assert argv[:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "train.py"]
    assert argv[6:8] == ["--base", NASTY]


def test_local_base_folder_is_uploaded_not_passed(seed, tmp_path):
    task = yaml.safe_load(render(seed, "majora", Path("/srv/afs/build"),
                                 base="/srv/models/qwen"))
    assert task["file_mounts"]["~/afs/base"] == "/srv/models/qwen"
    assert "--base ./base \\" in task["run"]


def test_system_prompt_never_reaches_the_yaml(project, minimal):
    prompt = f'You are "Al"\n{NASTY}\n# not a comment: yes'
    manifest = gpu_manifest(project, minimal, system_prompt=prompt)
    text = render(manifest, "alpha", project.root / "build", base="org/model")
    task = yaml.safe_load(text)
    assert set(task) == {"name", "resources", "num_nodes", "file_mounts", "envs", "setup", "run"}
    assert "pwned" not in text and "Al" not in text


def test_unsafe_paths_are_refused_with_the_reason(seed, tmp_path):
    root = tmp_path / "it's $(touch pwned)"
    with pytest.raises(StageError) as err:
        render(seed, "majora", root)
    script = root / "specialists" / "majora" / "train" / "train.py"
    assert str(err.value) == (
        f"{script}: SkyPilot cannot upload a path containing '$' \"'\" safely (it quotes paths "
        f"for a shell with Python's repr); move the project or build_dir to a path without them")


def test_control_characters_in_base_are_refused(seed):
    with pytest.raises(StageError, match=r"contains a control character \('\\n'\)"):
        render(seed, "majora", Path("/srv/afs/build"), base="org/model\nrm -rf ~")


def test_unknown_specialist_suggests(seed):
    with pytest.raises(StageError, match=r"no specialist 'majorra' \(did you mean 'majora'\?\)"):
        task_yaml(seed, "majorra", script=Path("/s/train.py"), train=Path("/s/t.jsonl"),
                  eval=Path("/s/e.jsonl"), base="org/model")


def test_no_secret_reaches_the_yaml(seed, monkeypatch):
    values = {"HF_TOKEN": "hf_SECRETvalue123", "HUGGING_FACE_HUB_TOKEN": "hf_other456",
              "AWS_SECRET_ACCESS_KEY": "awsSECRET789", "VAST_API_KEY": "vastSECRET000",
              "WANDB_API_KEY": "wandbSECRET111"}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    text = render(seed, "majora", Path("/srv/afs/build"))
    assert text == GOLDEN_MAJORA
    for name, value in values.items():
        assert value not in text
    assert "secrets" not in yaml.safe_load(text)


def test_cluster_names_are_valid_short_and_distinct():
    assert cluster_name("afs-seed", "majora") == "afs-seed-majora"
    assert cluster_name("my_proj", "a_b") == "my-proj-a-b"
    long_a = cluster_name("p" * 48, "alpha-" + "x" * 40)
    long_b = cluster_name("p" * 48, "alpha-" + "x" * 39 + "y")
    assert long_a != long_b
    for name in (long_a, long_b, cluster_name("9lives", "x")):
        assert skypilot.CLUSTER_NAME.fullmatch(name) and len(name) <= 40


# --- SkyPilot's own schema ------------------------------------------------------------------

VALIDATE = textwrap.dedent('''
    import json, sys
    import sky
    out = []
    for path in sys.argv[1:]:
        try:
            task = sky.Task.from_yaml(path)
            task.validate_name(); task.validate_run(); task.expand_and_validate_file_mounts()
            (res,) = task.resources
            out.append({"ok": True, "name": task.name, "cloud": str(res.cloud),
                        "accelerators": res.accelerators, "use_spot": res.use_spot,
                        "disk_size": res.disk_size, "envs": task.envs,
                        "secrets": sorted(task.secrets), "mounts": sorted(task.file_mounts)})
        except Exception as exc:
            out.append({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
    print(json.dumps(out))
''')


def skypilot_python() -> str:
    """A Python that imports SkyPilot: this one, $AFS_SKYPILOT_PYTHON, or the `sky` shebang's.

    skypilot 0.14.1 pins click<8.2 while huggingface_hub (via datasets) needs click>=8.4, so
    it cannot share afs's environment: install it in its own (pipx/uv tool) as its docs do.
    """
    if importlib.util.find_spec("sky") is not None:
        return sys.executable
    if os.environ.get("AFS_SKYPILOT_PYTHON"):
        return os.environ["AFS_SKYPILOT_PYTHON"]
    exe = shutil.which("sky")
    if exe:
        first = Path(exe).read_bytes()[:300].split(b"\n")[0].decode(errors="replace")
        interpreter = first[2:].strip().split(" ")[0] if first.startswith("#!") else ""
        if interpreter and Path(interpreter).name.startswith("python"):
            return interpreter
    why = ("SkyPilot is not importable here (it conflicts with afs's click pin); set "
           "AFS_SKYPILOT_PYTHON to a Python with skypilot==0.14.1 to run this test")
    if os.environ.get("CI"):  # .ci/run and the GitHub workflow give SkyPilot its own venv
        pytest.fail(f"{why} (CI is set: CI must run it)", pytrace=False)
    pytest.skip(why)


def sky_validate(*paths: Path) -> list[dict]:
    done = subprocess.run([skypilot_python(), "-c", VALIDATE, *map(str, paths)], check=True,
                          capture_output=True, text=True, timeout=120)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_skypilot_accepts_every_seed_task(seed, tmp_path, project, minimal, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_SECRETvalue123")
    names = [s.name for s in seed.trained]
    paths = [materialize(seed, name, tmp_path) for name in names]
    paths.append(materialize(gpu_manifest(project, minimal, count=4), "alpha",
                             tmp_path / "multi", base="org/model"))
    broken = tmp_path / "broken.yaml"
    broken.write_text(paths[0].read_text().replace("accelerators:", "acclerators:"))
    *results, broken_result = sky_validate(*paths, broken)
    assert all(r["ok"] for r in results), results
    gpus = {r["name"]: (r["cloud"], r["accelerators"], r["disk_size"]) for r in results}
    assert gpus["afs-seed-majora"] == ("Vast", {"RTX4090": 1}, 64)
    assert gpus["afs-seed-veran"] == ("Vast", {"GTX1080": 1}, 64)
    assert gpus["demo-alpha"] == ("AWS", {"A100-80GB": 4}, 64)
    assert [r["use_spot"] for r in results] == [False] * len(names) + [True]
    assert all(r["secrets"] == [] for r in results)
    assert results[0]["mounts"] == ["~/afs/data/eval.jsonl", "~/afs/data/train.jsonl",
                                    "~/afs/train.py"]
    assert not broken_result["ok"] and "did you mean 'accelerators'" in broken_result["error"]


# --- launch against a stand-in sky ----------------------------------------------------------

FAKE_SKY = '''\
import json, os, sys
from pathlib import Path
state = Path(os.environ["FAKE_STATE"])
with open(state / "calls.jsonl", "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
if sys.argv[1] == "launch":
    cluster = sys.argv[sys.argv.index("-c") + 1]
    print(f"Launching {cluster} ...", flush=True)
    print("token seen by sky: " + os.environ.get("HF_TOKEN", "none"), flush=True)
    rc = int(os.environ.get("FAKE_LAUNCH_RC", "0"))
    if rc:
        print("ERROR: job failed: CUDA out of memory", flush=True)
        sys.exit(rc)
    out = state / "remote" / cluster / "afs" / "out"
    out.mkdir(parents=True)
    (out / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\\n')
    if os.environ.get("FAKE_NO_OUTPUTS") != "1":
        (out / "adapter").mkdir()
        (out / "adapter" / "adapter_config.json").write_text('{"r": 16}')
        (out / "adapter" / "adapter_model.safetensors").write_bytes(b"weights")
        (out / "checkpoints" / "checkpoint-50").mkdir(parents=True)
        (out / "training_summary.json").write_text('{"final_loss": 0.5, "steps": 50}')
    print("Job finished (status: SUCCEEDED).", flush=True)
elif sys.argv[1] == "down":
    print(f"Terminating cluster {sys.argv[-1]}...done.", flush=True)
    sys.exit(int(os.environ.get("FAKE_DOWN_RC", "0")))
'''

FAKE_RSYNC = '''\
import json, os, shutil, sys
from pathlib import Path
state = Path(os.environ["FAKE_STATE"])
with open(state / "calls.jsonl", "a") as f:
    f.write(json.dumps(["rsync"] + sys.argv[1:]) + "\\n")
if os.environ.get("FAKE_RSYNC_RC"):
    print("ssh: connect to host afs-seed-majora port 22: Connection refused", flush=True)
    sys.exit(int(os.environ["FAKE_RSYNC_RC"]))
source, dest = sys.argv[-2:]
host, path = source.split(":", 1)
remote = state / "remote" / host / path
excluded = [sys.argv[i + 1].strip("/") for i, a in enumerate(sys.argv) if a == "--exclude"]
shutil.copytree(remote, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*excluded))
'''


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A `sky` and an `rsync` on PATH; returns the folder where they record calls."""
    state = tmp_path / "state"
    bin_dir = tmp_path / "bin"
    for folder in (state, bin_dir):
        folder.mkdir()
    for name, body in (("sky", FAKE_SKY), ("rsync", FAKE_RSYNC)):
        (bin_dir / name).write_text(f"#!{sys.executable}\n{body}")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_STATE", str(state))
    for name in skypilot.SECRETS:
        monkeypatch.delenv(name, raising=False)
    return state


def calls(state: Path) -> list[list[str]]:
    path = state / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def run_launch(tmp_path, **kw):
    kw.setdefault("cluster", "afs-seed-majora")
    return launch(TrainFiles(tmp_path / "train"), **kw)


def test_launch_downloads_outputs_and_tears_down(fake, tmp_path, monkeypatch):
    ticks = iter([1000.0, 1000.0 + 1800])
    monkeypatch.setattr(skypilot, "_clock", lambda: next(ticks))
    result = run_launch(tmp_path, price_per_hour=0.268)
    assert result == {"final_loss": 0.5, "steps": 50,
                      "skypilot": {"cluster": "afs-seed-majora", "wall_seconds": 1800.0,
                                   "price_per_hour": 0.268, "cost_usd": 0.134}}
    out = tmp_path / "train"
    assert (out / "adapter" / "adapter_model.safetensors").read_bytes() == b"weights"
    assert (out / "metrics.jsonl").exists() and (out / "training_summary.json").exists()
    assert sorted(p.name for p in out.iterdir()) == ["adapter", "metrics.jsonl", "train.log",
                                                     "training_summary.json"]
    launch_argv, rsync_argv, down_argv = calls(fake)
    assert launch_argv == ["launch", "-y", "-c", "afs-seed-majora", "--idle-minutes-to-autostop",
                           "10", "--down", str(out / "sky.yaml")]
    assert rsync_argv == ["rsync", "-az", "--exclude", "checkpoints/", "afs-seed-majora:afs/out/",
                          f"{out / '.download'}/"]
    assert down_argv == ["down", "-y", "afs-seed-majora"]
    log = (out / "train.log").read_text()
    assert "$ sky launch -y -c afs-seed-majora --idle-minutes-to-autostop 10 --down " in log
    assert "Job finished (status: SUCCEEDED)." in log and "$ sky down -y afs-seed-majora" in log


def test_launch_replaces_an_older_adapter(fake, tmp_path):
    old = tmp_path / "train" / "adapter"
    old.mkdir(parents=True)
    (old / "stale.bin").write_text("old")
    run_launch(tmp_path)
    assert sorted(p.name for p in old.iterdir()) == ["adapter_config.json",
                                                     "adapter_model.safetensors"]


def test_secrets_pass_by_name_and_never_reach_the_log(fake, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_SECRETvalue123")
    run_launch(tmp_path)
    launch_argv = calls(fake)[0]
    assert launch_argv[-3:-1] == ["--secret", "HF_TOKEN"]
    assert not any("hf_SECRET" in a for a in launch_argv)
    log = (tmp_path / "train" / "train.log").read_text()
    assert "token seen by sky: [redacted]" in log and "hf_SECRET" not in log


def test_launch_failure_raises_with_the_log_tail_and_still_tears_down(fake, tmp_path,
                                                                      monkeypatch):
    monkeypatch.setenv("FAKE_LAUNCH_RC", "3")
    with pytest.raises(StageError) as err:
        run_launch(tmp_path)
    log = tmp_path / "train" / "train.log"
    assert str(err.value) == (
        f"sky launch failed for cluster afs-seed-majora (exit 3); the last lines of {log}:\n"
        "Launching afs-seed-majora ...\ntoken seen by sky: none\n"
        "ERROR: job failed: CUDA out of memory")
    assert [c[0] for c in calls(fake)] == ["launch", "down"]
    assert not (tmp_path / "train" / "training_summary.json").exists()


def test_download_failure_still_tears_down(fake, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_RSYNC_RC", "255")
    with pytest.raises(StageError, match=r"^downloading afs-seed-majora:afs/out/ into .* failed "
                                         r"\(rsync exit 255\)") as err:
        run_launch(tmp_path)
    assert "Connection refused" in str(err.value)
    assert [c[0] for c in calls(fake)] == ["launch", "rsync", "down"]
    assert not (tmp_path / "train" / "training_summary.json").exists()


def test_missing_outputs_are_an_error(fake, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_NO_OUTPUTS", "1")
    with pytest.raises(StageError) as err:
        run_launch(tmp_path)
    assert str(err.value) == ("the run on afs-seed-majora finished but ~/afs/out lacks adapter, "
                              f"training_summary.json; see {tmp_path / 'train' / 'train.log'}")
    assert calls(fake)[-1] == ["down", "-y", "afs-seed-majora"]


def test_teardown_failure_is_loud(fake, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_DOWN_RC", "1")
    with pytest.raises(StageError, match=r"^`sky down -y afs-seed-majora` failed \(exit 1\): "
                                         r"the cluster may still be running and billing"):
        run_launch(tmp_path)


def test_keep_cluster_skips_down(fake, tmp_path):
    run_launch(tmp_path, down=False, idle_minutes=30)
    launch_argv, *rest = calls(fake)
    assert "--down" not in launch_argv and launch_argv[4:6] == ["--idle-minutes-to-autostop", "30"]
    assert [c[0] for c in rest] == ["rsync"]


def test_sky_missing(tmp_path):
    with pytest.raises(StageError) as err:
        run_launch(tmp_path, sky="sky-is-not-here")
    assert str(err.value) == ("SkyPilot is not installed: pip install skypilot[vast] and run "
                              "`sky check`")


def test_rsync_missing_is_caught_before_renting(fake, tmp_path):
    with pytest.raises(StageError, match=r"^rsync is not installed"):
        run_launch(tmp_path, rsync="rsync-is-not-here")
    assert calls(fake) == []


def test_invalid_cluster_name(fake, tmp_path):
    with pytest.raises(StageError, match=r"invalid SkyPilot cluster name '-bad'"):
        run_launch(tmp_path, cluster="-bad")
