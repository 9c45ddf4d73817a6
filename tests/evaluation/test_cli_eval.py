"""``afs eval`` against a model afs did not build: a real served tiny model behind an API key."""

from __future__ import annotations

import json

import pytest

from afs_build.cli import main as afs
from deploy.deploy_helpers import shared_tiny_gguf
from served import serving

KEY = "an-api-key-of-twenty-chars"
SUITE = [
    {"id": "sum", "category": "general", "question": "What is 12 plus 30?", "answer": "42", "grading": "numeric",
     "value": 42, "max_tokens": 6},
    {"id": "dma", "category": "snes", "question": "Which register starts DMA?", "answer": "MDMAEN",
     "keywords": ["MDMAEN"], "max_tokens": 6},
    {"id": "why", "category": "snes", "question": "Why is HDMA useful?", "answer": "Per-scanline effects.",
     "grading": "judge", "max_tokens": 6},
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with serving(shared_tiny_gguf(tmp_path_factory), tmp_path_factory.mktemp("served"), name="outside",
                 key=KEY) as port:
        yield port


def test_a_model_on_any_endpoint_is_evaluated_with_its_key_from_the_environment(server, tmp_path, monkeypatch, capsys):
    suite = tmp_path / "suite.jsonl"
    suite.write_text("".join(json.dumps(q) + "\n" for q in SUITE))
    args = ["eval", "-m", str(tmp_path / "none.yaml"), "--endpoint", f"http://127.0.0.1:{server}/v1",
            "--model", "outside", "--suite", str(suite), "--out", str(tmp_path / "out"), "--api-key-env", "OUTSIDE_KEY"]
    assert afs(args) == 1
    assert "--api-key-env names OUTSIDE_KEY, which is not set" in capsys.readouterr().err
    monkeypatch.setenv("OUTSIDE_KEY", KEY)
    assert afs(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("outside: mean score") and "TTFT p50/p95" in out
    folder = tmp_path / "out" / "outside"
    results = [json.loads(x) for x in (folder / "results.jsonl").read_text().splitlines()]
    assert [r["question_id"] for r in results] == ["sum", "dma", "why"] and all(r["error"] is None for r in results)
    assert results[2]["score"] is None  # judge-graded: no judges here, no score
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["scored"] == 2 and summary["model_digest"] is None and summary["suite_version"]
    report = json.loads((folder / "report.json").read_text())
    assert report["kind"] == "endpoint" and report["overall"]["questions"] == 3
    assert (folder / "report.html").exists() and (folder / "report.md").exists()


def test_an_endpoint_named_in_the_manifest(server, project, minimal, monkeypatch, capsys):
    minimal["eval"] = {"suite": "suite.jsonl", "endpoints": {"outside": {
        "base_url": f"http://127.0.0.1:{server}/v1", "model": "outside", "api_key_env": "OUTSIDE_KEY",
        "cache_key": "outside-2026-12", "concurrency": 2}}}
    path = project.write(minimal, {"suite.jsonl": "".join(json.dumps(q) + "\n" for q in SUITE)})
    monkeypatch.setenv("OUTSIDE_KEY", KEY)
    assert afs(["eval", "-m", str(path), "outside", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["questions"] == 3
    results = project.root / "build/external/outside/eval/results.jsonl"
    rows = [json.loads(x) for x in results.read_text().splitlines()]
    assert not any(r["cached"] for r in rows)
    assert afs(["eval", "-m", str(path), "outside"]) == 0  # cached under its cache_key: nothing asked
    assert all(r["cached"] for r in (json.loads(x) for x in results.read_text().splitlines()))
    assert (project.root / "build/reports/eval/outside/report.json").exists()
    assert afs(["eval", "-m", str(path), "nobody"]) == 1
    assert "not an eval.endpoints entry" in capsys.readouterr().err
    assert afs(["eval", "-m", str(path)]) == 0  # the build's own summaries: none evaluated yet
    assert "alpha: not evaluated yet (doit eval:alpha)" in capsys.readouterr().out
