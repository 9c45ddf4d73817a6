"""Helpers for the deploy tests: manifests from dicts, free ports, a tiny real GGUF.

The GGUF comes from llama.cpp's reference ``convert_hf_to_gguf.py`` (from the llama-cpp-python
sdist), run in a subprocess: test scaffolding only, not afs's converter. This is not a
``conftest.py`` because the top-level tests import names from theirs as ``conftest``; test
modules import the ``tiny_gguf`` fixture from here.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import yaml

from afs_build.manifest import Manifest, load
from tinymodel import tiny_gguf as make_tiny_gguf

BASE = {
    "project": {"name": "demo"},
    "models": {"tiny": {"embedded": "smollm2-135m-instruct"}},
    "hardware": {"cpu": {"vram_gb": 8}},
    "sources": {"chat": {"kind": "custom", "path": "chat.jsonl", "format": "alpaca"}},
    "mixes": {"general": {"samples": 4, "groups": {"all": {"share": 1.0, "sources": ["chat"]}}}},
}
CHAT_LINE = json.dumps({"instruction": "What is 12 plus 30?", "output": "12 plus 30 is 42."})


def write_manifest(root: Path, specialists: dict, deploy: dict | None = None) -> Manifest:
    """Write ``afs.yaml`` (and the data file it names) under `root` and load it."""
    root.mkdir(parents=True, exist_ok=True)
    data = json.loads(json.dumps(BASE))
    data["specialists"] = {name: {"role": "Specialist", "base": "tiny", "mix": "general",
                                  "hardware": "cpu", **body}
                           for name, body in specialists.items()}
    if deploy is not None:
        data["deploy"] = deploy
    (root / "chat.jsonl").write_text(CHAT_LINE + "\n", encoding="utf-8")
    path = root / "afs.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return load(path)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_CONVERTED: dict[str, Path] = {}


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory) -> Path:
    """An F16 GGUF of the tiny ChatML model (eos ``<|im_end|>``), converted once a session."""
    if "f16" not in _CONVERTED:  # each importing module registers the fixture anew
        _CONVERTED["f16"] = make_tiny_gguf(tmp_path_factory.mktemp("tiny-gguf"))
    return _CONVERTED["f16"]
