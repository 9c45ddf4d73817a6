"""The whole chain through doit on a tiny model: data → train → merge → GGUF → quantize → served.

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


def doit(root, *args) -> set[str]:
    result = subprocess.run([sys.executable, "-m", "doit", "-f", str(REPO / "dodo.py"), *args],
                            cwd=root, capture_output=True, text=True, timeout=900,
                            env={**os.environ, "AFS_MANIFEST": "afs.yaml"})
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return {line[3:] for line in result.stdout.splitlines() if line.startswith(".  ")}


@pytest.mark.slow
def test_tiny_family_builds_serves_and_rebuilds_only_what_changed(project, minimal):
    from openai import NotFoundError, OpenAI
    from tinymodel import build_tiny_model

    build_tiny_model(project.root / "tiny")
    port = free_port()
    minimal["models"] = {"tiny": {"path": "tiny", "params_b": 0.001}}
    minimal["specialists"] = {"alpha": {
        "role": "Tester", "base": "tiny", "mix": "general", "hardware": "cpu", "port": port,
        "epochs": 2, "learning_rate": 0.003, "batch_size": 4, "max_seq_len": 128,
        "quantize": ["Q8_0", "Q4_K_M"], "serve_quant": "Q8_0", "context_length": 256,
        "system_prompt": "You answer briefly."}}
    minimal["mixes"]["general"]["samples"] = 16
    rows = "".join(json.dumps({"instruction": q, "output": a}) + "\n" for q, a in FACTS)
    path = project.write(minimal, {"chat.jsonl": rows})
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
        assert merge and gguf["tokenization"]["ok"] and gguf["generation"]["ok"]
        assert set(quant["report"]["quants"]) == {"F16", "Q8_0", "Q4_K_M"}
        assert (project.root / "build/specialists/alpha/deploy/Modelfile").exists()

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

        minimal["specialists"]["alpha"]["lora"] = {"r": 8}
        path = project.write(minimal, {"chat.jsonl": rows})
        runs = {t.name for t in plan.task_plans(load(path)) if t.runs}
        assert runs == {"render:alpha", "train:alpha", "merge:alpha", "gguf:alpha",
                        "quantize:alpha", "deploy:alpha"}

        assert afs(["stop", "-m", str(path)]) == 0
        minimal["specialists"]["alpha"].pop("lora")
        path = project.write(minimal, {"chat.jsonl": rows})
        assert doit(project.root, "deploy:alpha") == {"deploy:alpha"}  # a stopped server restarts
    finally:
        afs(["stop", "-m", str(path)])
