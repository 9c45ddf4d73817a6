"""The afs command: validate, plan and build, as a user runs them."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import yaml

from afs_build.cli import main
from conftest import REPO, at


def afs(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "afs_build", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_validate_a_valid_manifest(project, minimal, capsys):
    path = project.write(minimal)
    assert main(["validate", str(path)]) == 0
    assert capsys.readouterr().out == f"{path}: valid (2 specialists, 1 sources, 1 mixes)\n"


def test_validate_reports_every_problem_and_exits_1_without_traceback(project, minimal):
    minimal["specialists"]["alpha"]["port"] = 80
    minimal["specialists"]["beta"]["mix"] = "genral"
    path = project.write(minimal)
    result = afs("validate", "afs.yaml", cwd=project.root)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    # The schema problem and the cross-reference problem come out together.
    assert result.stderr.splitlines() == [
        f"{at(path, '80' + chr(10), name='afs.yaml')}: specialists.alpha.port: expected a "
        "number >= 1024, got 80",
        f"{at(path, 'genral', name='afs.yaml')}: specialists.beta.mix: unknown mix 'genral'; "
        "expected one of: 'general' (did you mean 'general'?)"]


def test_validate_checks_schema_files(tmp_path, capsys):
    good = REPO / "specs" / "sample.schema.json"
    bad = tmp_path / "bad.schema.json"
    bad.write_text('{"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "thing"}')
    broken = tmp_path / "broken.json"
    broken.write_text('{"type": ')
    assert main(["validate", str(good), str(bad), str(broken)]) == 1
    out, err = capsys.readouterr()
    assert out == f"{good}: valid (JSON Schema, draft 2020-12)\n"
    assert err.splitlines()[0].startswith(f"{bad}:1:1: type: not a valid JSON Schema (draft 2020-12): ")
    assert err.splitlines()[1] == f"{broken}:1:10: JSON syntax error: Expecting value"


def test_plan_says_what_runs_and_why_and_what_it_costs(project, minimal, capsys):
    minimal["hardware"]["rtx4090"] = {"backend": "skypilot", "gpu": "RTX4090", "vram_gb": 24,
                                      "price_per_hour": 0.268, "overhead_minutes": 10}
    minimal["specialists"]["beta"]["hardware"] = "rtx4090"
    path = project.write(minimal)
    assert main(["plan", "-m", str(path)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^afs.yaml: (\d+) of \1 tasks would run$", out, re.M)  # nothing built yet
    assert "  run  ingest:chat                  new: never built successfully\n" in out
    assert "an input task runs: score:chat" in out
    # 4 samples x (min(avg_tokens 160, max_seq_len 512) + 15 template tokens) = 700 tokens
    assert "  Beta v1: $0.268/hr × 10min = $0.04" in out
    assert "(RTX4090 ×1 on rtx4090, 700 tokens × 3 epochs from estimate, ~71,111 tokens/s)" in out


def test_plan_json_totals_match_the_lines(project, minimal, capsys):
    minimal["hardware"]["gpu"] = {"backend": "skypilot", "gpu": "A100", "vram_gb": 40,
                                  "price_per_hour": 1.5, "overhead_minutes": 6}
    path = project.write(minimal)
    assert main(["plan", "-m", str(path), "--json", "--hardware", "gpu"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [t["specialist"] for t in plan["training"]] == ["alpha", "beta"]
    assert all(t["hardware"] == "gpu" for t in plan["training"])
    assert plan["total"]["cost"] == pytest.approx(sum(t["cost"] for t in plan["training"]), abs=1e-3)
    assert plan["training"][0]["cost"] == pytest.approx(0.1 * 1.5, rel=0.01)  # mostly the 6 overhead minutes


def test_plan_rejects_unknown_hardware_override(project, minimal, capsys):
    path = project.write(minimal)
    assert main(["plan", "-m", str(path), "--hardware", "alpha=cpuu"]) == 1
    assert capsys.readouterr().err == ("afs plan --hardware alpha=cpuu: unknown hardware 'cpuu'; "
                                       "expected one of: 'cpu' (did you mean 'cpu'?)\n")


def test_python_m_afs_build_is_the_afs_command():
    result = afs("--version")
    assert result.returncode == 0 and result.stdout.startswith("afs ")


@pytest.mark.parametrize("example", sorted((REPO / "examples").glob("*.yaml")) + [REPO / "afs.yaml"],
                         ids=lambda p: p.name)
def test_every_shipped_manifest_validates_and_plans(example, capsys):
    assert main(["validate", str(example)]) == 0
    assert main(["plan", "-m", str(example), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert plan["tasks"] and plan["training"]


def test_validate_reports_a_number_of_thousands_of_digits_without_traceback(project, minimal):
    path = project.write(yaml.safe_dump(minimal, sort_keys=False).replace("port: 6001", "port: " + "9" * 5000))
    result = afs("validate", "afs.yaml", cwd=project.root)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"{at(path, '9' * 10, name='afs.yaml')}: specialists.alpha.port: number too large (5,000 "
        "digits); expected an integer of at most 9,223,372,036,854,775,807"]
