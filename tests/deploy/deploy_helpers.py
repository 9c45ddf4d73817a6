"""Helpers for the deploy tests: manifests from dicts, free ports, a tiny real GGUF.

The GGUF comes from llama.cpp's reference ``convert_hf_to_gguf.py`` (from the llama-cpp-python
sdist), run in a subprocess: test scaffolding only, not afs's converter. This is not a
``conftest.py`` because the top-level tests import names from theirs as ``conftest``; test
modules import the ``tiny_gguf`` fixture from here.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from afs_build.manifest import Manifest, load
from tinymodel import build_tiny_model

LLAMA_CPP_VERSION = "0.3.36"
SDIST_CACHE = Path(os.environ.get("AFS_LLAMA_CPP_SRC_CACHE", "/tmp/lcpp-src"))
# The reference converter recognises a BPE pre-tokenizer by hashing how it splits a probe
# text; the tiny model's tokenizer uses Qwen2's split rules, so name that pre-type.
CONVERT = """
import runpy, sys
root = sys.argv[1]
sys.path[:0] = [root, root + "/gguf-py"]
import conversion.base
conversion.base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "qwen2"
sys.argv = ["convert_hf_to_gguf.py", *sys.argv[2:]]
runpy.run_path(root + "/convert_hf_to_gguf.py", run_name="__main__")
"""

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


def reference_converter() -> Path:
    """The llama.cpp tree of the llama-cpp-python sdist (downloaded once), or skip."""
    root = SDIST_CACHE / f"llama_cpp_python-{LLAMA_CPP_VERSION}" / "vendor" / "llama.cpp"
    if not (root / "convert_hf_to_gguf.py").is_file():
        archive = SDIST_CACHE / f"llama_cpp_python-{LLAMA_CPP_VERSION}.tar.gz"
        if not archive.is_file():
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-binary", ":all:",
                            "--no-deps", f"llama-cpp-python=={LLAMA_CPP_VERSION}", "-d",
                            str(SDIST_CACHE)], capture_output=True, check=False)
        if not archive.is_file():
            pytest.skip("llama-cpp-python sdist (llama.cpp's reference converter) unavailable")
        with tarfile.open(archive) as tar:
            tar.extractall(SDIST_CACHE, filter="data")
    return root


_CONVERTED: dict[str, Path] = {}


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory) -> Path:
    """An F16 GGUF of the tiny ChatML model (eos ``<|im_end|>``), converted once a session."""
    if "f16" not in _CONVERTED:  # each importing module registers the fixture anew
        root = tmp_path_factory.mktemp("tiny-gguf")
        folder = build_tiny_model(root / "hf")
        out = root / "tiny-F16.gguf"
        run = subprocess.run([sys.executable, "-c", CONVERT, str(reference_converter()),
                              str(folder), "--outfile", str(out), "--outtype", "f16"],
                             capture_output=True, text=True)
        assert run.returncode == 0 and out.is_file(), run.stderr[-3000:]
        _CONVERTED["f16"] = out
    return _CONVERTED["f16"]
