"""The whole chain through doit on a tiny model: data → train → merge → GGUF → quantize → served
→ evaluated.

One test on purpose: every step is real (torch, peft, llama.cpp, a server on a loopback port,
the openai client), and the build it makes is reused for the incremental checks.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
from jsonschema import Draft202012Validator

from afs_build import plan
from afs_build.cli import main as afs
from afs_build.manifest import load
from conftest import REPO

FACTS = [
    ("What is the capital of France?", "Paris."),
    ("What is 12 plus 30?", "42."),
    ("Which register starts DMA on the SNES?", "$420B, MDMAEN."),
    ("What does XCE do on the 65816?", "It exchanges the carry and emulation flags."),
    ("How big is SNES VRAM?", "64 KiB."),
    ("Which register is INIDISP?", "$2100."),
    ("What is HDMA for?", "Changing registers on each scanline."),
    ("What mode rotates a background?", "Mode 7."),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def doit(root, *args, ok: bool = True) -> set[str]:
    # HOME inside the test's folder too: nothing may land in the user's real ~/.lmstudio.
    result = subprocess.run([sys.executable, "-m", "doit", "-f", str(REPO / "dodo.py"), *args],
                            cwd=root, capture_output=True, text=True, timeout=900,
                            env={**os.environ, "AFS_MANIFEST": "afs.yaml",
                                 "HOME": str(root / "home")})
    assert (result.returncode == 0) is ok, result.stdout[-4000:] + result.stderr[-4000:]
    if not ok:
        return result.stdout + result.stderr
    return {line[3:] for line in result.stdout.splitlines() if line.startswith(".  ")}


SUITE = [
    {"id": "france", "category": "general", "question": "What is the capital of France?",
     "answer": "Paris", "grading": "contains", "max_tokens": 16},
    {"id": "dma", "category": "snes", "question": "Which register starts DMA on the SNES?",
     "keywords": ["420B", "MDMAEN"], "max_tokens": 16},
    {"id": "judged", "category": "snes", "question": "What mode rotates a background?",
     "answer": "Mode 7.", "grading": "judge", "max_tokens": 16},
    {"id": "elsewhere", "category": "general", "specialists": ["alpha"], "question": "What is 12 plus 30?",
     "answer": "42", "grading": "exact", "max_tokens": 8},
]


@pytest.mark.slow
def test_tiny_family_builds_serves_and_rebuilds_only_what_changed(project, minimal):
    from openai import NotFoundError, OpenAI
    from tinymodel import build_tiny_model

    build_tiny_model(project.root / "tiny")
    port = free_port()
    minimal["models"] = {"tiny": {"path": "tiny", "params_b": 0.001}}
    # 4 epochs: with 2, this seed's batches leave the tiny model ending every reply at once,
    # and the speed and streaming checks below need tokens
    minimal["specialists"] = {"alpha": {
        "role": "Tester", "base": "tiny", "mix": "general", "hardware": "cpu", "port": port,
        "epochs": 4, "learning_rate": 0.003, "batch_size": 4, "max_seq_len": 128,
        "quantize": ["Q8_0", "Q4_K_M"], "serve_quant": "Q8_0", "context_length": 256,
        "system_prompt": "You answer briefly."}}
    minimal["mixes"]["general"]["samples"] = 16
    minimal["eval"] = {"suite": "suite.jsonl", "judges": ["alpha"]}
    lmstudio = project.root / "lmstudio" / "models"
    minimal["deploy"] = {"lmstudio_dir": str(lmstudio)}
    rows = "".join(json.dumps({"instruction": q, "output": a}) + "\n" for q, a in FACTS)
    suite = "".join(json.dumps(q) + "\n" for q in SUITE)
    path = project.write(minimal, {"chat.jsonl": rows, "suite.jsonl": suite})
    # what an older afs left: a merged copy of the model, which the merge task now removes
    legacy = project.root / "build" / "specialists" / "alpha" / "post" / "merged"
    legacy.mkdir(parents=True)
    (legacy / "model.safetensors").write_bytes(bytes(1024))
    try:
        ran = doit(project.root, "deploy:alpha")
        assert ran == {"ingest:chat", "score:chat", "mix:alpha", "base:tiny", "render:alpha",
                       "train:alpha", "merge:alpha", "gguf:alpha", "quantize:alpha", "deploy:alpha"}
        build = project.root / "build" / "specialists" / "alpha"
        summary = json.loads((build / "train/training_summary.json").read_text())
        assert summary["steps"] > 0 and summary["afs"]["hardware"]["name"] == "cpu"
        merge = json.loads((build / "post/merge.json").read_text())
        gguf = json.loads((build / "post/gguf.json").read_text())
        quant = json.loads((build / "post/quantize.json").read_text())
        assert merge["max_abs_logit_diff"] < merge["tolerance"] and merge["tensors_changed"] > 0
        assert gguf["tokenization"]["ok"] and gguf["generation"]["ok"]
        assert gguf["generation"]["adapter"] == str(build / "train" / "adapter")  # against peft
        assert set(quant["report"]["quants"]) == {"F16", "Q8_0", "Q4_K_M"}
        assert set(quant["files"]) == {"alpha-F16.gguf", "alpha-Q8_0.gguf", "alpha-Q4_K_M.gguf"}
        # merged while converting: no merged copy of the model, no temporaries
        assert sorted(p.name for p in (build / "post").iterdir()) == [
            "alpha-F16.gguf", "alpha-Q4_K_M.gguf", "alpha-Q8_0.gguf", "gguf.json", "merge.json",
            "quantize.json"]
        assert (project.root / "build/specialists/alpha/deploy/Modelfile").exists()
        assert (lmstudio / "afs" / "alpha" / "alpha-Q8_0.gguf").is_file()
        assert (lmstudio.parent / "config-presets" / "afs-alpha.preset.json").is_file()

        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused")
        reply = client.chat.completions.create(
            model="alpha", max_tokens=24, temperature=0,
            messages=[{"role": "user", "content": "What is the capital of France?"}])
        text = reply.choices[0].message.content
        assert "<|im_end|>" not in text and "<|im_start|>" not in text
        with pytest.raises(NotFoundError):
            client.chat.completions.create(model="someone-else", max_tokens=4,
                                           messages=[{"role": "user", "content": "hi"}])

        assert doit(project.root, "deploy:alpha") == set()  # everything up to date, server up

        # evaluated on its server: every question answered, graded and recorded
        assert doit(project.root, "eval:alpha") == {"eval:alpha"}
        results = [json.loads(line) for line in (build / "eval/results.jsonl").read_text().splitlines()]
        validator = Draft202012Validator(json.loads((REPO / "specs/result.schema.json").read_text()))
        for result in results:
            validator.validate(result)
        assert [r["question_id"] for r in results] == ["france", "dma", "judged", "elsewhere"]
        # the judge-graded one waits for judge:family (alpha is the only judge, and never its own)
        assert [r["grader"] for r in results] == ["contains", "keywords", "judge", "exact"]
        assert results[2]["score"] is None and results[2]["judgements"] == []
        assert all(r["specialist"] == "alpha" and r["quant"] == "Q8_0" for r in results)
        assert results[0]["model_file"] == "specialists/alpha/post/alpha-Q8_0.gguf"
        assert all(0 < r["ttft_s"] <= r["latency_s"] and r["completion_tokens"] for r in results)
        assert len({r["model_digest"] for r in results}) == 1 and results[0]["model_digest"]
        summary = json.loads((build / "eval/summary.json").read_text())
        assert summary["questions"] == 4 and summary["scored"] == 3 and summary["pending_judges"] == 1
        assert set(summary["by_category"]) == {"general", "snes"}
        scored = [r["score"] for r in results if r["score"] is not None]
        assert summary["mean_score"] == pytest.approx(sum(scored) / 3, abs=1e-4)
        assert summary["latency_s"]["p50"] > 0 and summary["ttft_s"]["p95"] > 0
        assert summary["meets_thresholds"] and summary["tokens_per_second"] > 0
        assert doit(project.root, "eval:alpha") == set()  # nothing changed: not asked again

        # compared with its base: no served-only specialist serves "tiny", so the base's own
        # GGUF is written and served on a free port while the comparison asks it
        assert doit(project.root, "report:family") == {"baseline:tiny", "compare:alpha", "report:family"}
        compared = json.loads((build / "compare/compare.json").read_text())
        assert compared["base_server"] is None and compared["base_served"] == "Q8_0"
        assert compared["overall"]["questions"] == 3 and compared["seen_in_training"] == 0  # judged one unpaired
        base_replies = (build / "compare/base.jsonl").read_text().splitlines()
        assert [json.loads(line)["specialist"] for line in base_replies] == ["tiny"] * 4
        assert not (project.root / "build/models/tiny/gguf/server.pid").exists()  # stopped again
        assert doit(project.root, "report:family") == set()

        # a pass mark the tiny model cannot reach fails the task, and says why
        minimal["eval"]["thresholds"] = {"min_score": 1.0}
        path = project.write(minimal, {"chat.jsonl": rows, "suite.jsonl": suite})
        out = doit(project.root, "eval:alpha", ok=False)
        assert "Alpha v1 does not meet the pass marks: mean score" in out
        assert "is below eval.thresholds.min_score 1" in out
        minimal["eval"].pop("thresholds")
        path = project.write(minimal, {"chat.jsonl": rows, "suite.jsonl": suite})

        minimal["specialists"]["alpha"]["lora"] = {"r": 8}
        path = project.write(minimal, {"chat.jsonl": rows, "suite.jsonl": suite})
        runs = {t.name for t in plan.task_plans(load(path)) if t.runs}
        assert runs == {"render:alpha", "train:alpha", "merge:alpha", "gguf:alpha",
                        "quantize:alpha", "deploy:alpha", "eval:alpha", "compare:alpha",
                        "report:family", "judge:family", "screenshots:family", "scorecard:family",
                        "site:alpha", "site:family"}  # the site: never built here

        assert afs(["stop", "-m", str(path)]) == 0
        minimal["specialists"]["alpha"].pop("lora")
        path = project.write(minimal, {"chat.jsonl": rows, "suite.jsonl": suite})
        assert doit(project.root, "deploy:alpha") == {"deploy:alpha"}  # a stopped server restarts
    finally:
        afs(["stop", "-m", str(path)])
