"""Shared fixtures: small project trees built from dicts, in a temporary folder.

Every test runs with its home, its XDG folders and the Hugging Face cache in a temporary folder
(:func:`private_home`), so nothing a test or a library it drives writes can reach the real
home (``~/.lmstudio``, ``~/.cache``); the hub libraries are told they are offline, and the test
process refuses connections beyond loopback (:func:`no_network`). ``--reverse-order`` runs the
tests backwards, to find tests that depend on others having run first.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
import tempfile
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import settings
from hypothesis.configuration import set_hypothesis_home_dir

REPO = Path(__file__).resolve().parent.parent

# Hypothesis keeps found examples and a constants cache in .hypothesis/ in the working folder
# (the repository) unless told otherwise: tests write only into their temporary folders.
settings.register_profile("afs", database=None)
settings.load_profile("afs")

HOME_VARIABLES = {"HOME": ".", "XDG_CONFIG_HOME": ".config", "XDG_CACHE_HOME": ".cache",
                  "XDG_DATA_HOME": ".local/share", "XDG_STATE_HOME": ".local/state",
                  "HF_HOME": ".cache/huggingface"}
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_HUB_DISABLE_TELEMETRY": "1"}


def _loopback(host) -> bool:
    try:
        address = ipaddress.ip_address(str(host).split("%")[0])
    except ValueError:
        return host == "localhost"
    return address.is_loopback or address.is_unspecified


class NetworkGuard:
    """Refuses connections beyond loopback made in the test process: tests are offline."""

    def __init__(self):
        self.original = socket.socket.connect, socket.socket.connect_ex

    def check(self, sock, address) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address[0]):
            raise OSError(f"a test tried to reach the network ({address[0]}:{address[1]}); "
                          "tests are offline: use a loopback server or local files")

    def install(self) -> None:
        connect, connect_ex = self.original
        guard = self

        def guarded_connect(sock, address):
            guard.check(sock, address)
            return connect(sock, address)

        def guarded_connect_ex(sock, address):
            guard.check(sock, address)
            return connect_ex(sock, address)

        socket.socket.connect, socket.socket.connect_ex = guarded_connect, guarded_connect_ex

    def remove(self) -> None:
        socket.socket.connect, socket.socket.connect_ex = self.original


@pytest.fixture(autouse=True, scope="session")
def no_network():
    """No test reaches the network from this process (subprocesses get the offline variables)."""
    guard = NetworkGuard()
    guard.install()
    yield guard
    guard.remove()


@pytest.fixture(autouse=True, scope="session")
def private_home(tmp_path_factory):
    """Point HOME, the XDG folders and HF_HOME at a temporary folder for the whole session.

    Set in ``os.environ`` (not monkeypatch, which is per test) so the servers, doit runs and
    scripts the tests start inherit it too; restored at the end.
    """
    home = tmp_path_factory.mktemp("home")
    saved = {name: os.environ.get(name) for name in (*HOME_VARIABLES, *OFFLINE)}
    for name, rel in HOME_VARIABLES.items():
        (home / rel).mkdir(parents=True, exist_ok=True)
        os.environ[name] = str((home / rel).resolve())
    os.environ.update(OFFLINE)
    yield home
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


MINIMAL = {
    "project": {"name": "demo"},
    "models": {"tiny": {"embedded": "smollm2-135m-instruct"}},
    "hardware": {"cpu": {"vram_gb": 8}},
    "sources": {"chat": {"kind": "custom", "path": "chat.jsonl", "format": "alpaca"}},
    "mixes": {"general": {"samples": 4, "groups": {"all": {"share": 1.0, "sources": ["chat"]}}}},
    "specialists": {
        "alpha": {"role": "First", "base": "tiny", "mix": "general", "hardware": "cpu", "port": 6001},
        "beta": {"role": "Second", "base": "tiny", "mix": "general", "hardware": "cpu", "port": 6002},
    },
}

CHAT = [
    {"instruction": "What is the capital of France?", "output": "Paris is the capital of France."},
    {"instruction": "How many legs does a spider have?", "output": "A spider has eight legs."},
    {"instruction": "What is 12 plus 30?", "output": "12 plus 30 is 42."},
    {"instruction": "Name the largest planet.", "output": "Jupiter is the largest planet in the Solar System."},
    {"instruction": "What gas do plants take in?", "output": "Plants take in carbon dioxide for photosynthesis."},
    {"instruction": "Who wrote Hamlet?", "output": "William Shakespeare wrote Hamlet around 1600."},
]


def at(path, needle: str, nth: int = 0, name: str | None = None) -> str:
    """``FILE:LINE:COL`` of the nth occurrence of `needle` in the written manifest."""
    text = path.read_text()
    index = -1
    for _ in range(nth + 1):
        index = text.index(needle, index + 1)
    line = text.count("\n", 0, index) + 1
    col = index - (text.rfind("\n", 0, index) + 1) + 1
    return f"{name or path}:{line}:{col}"


class Project:
    """A project folder: a manifest plus the files it names."""

    def __init__(self, root: Path):
        self.root = root
        self.manifest = root / "afs.yaml"

    def write(self, manifest: dict | str, files: dict[str, str | bytes] | None = None) -> Path:
        text = manifest if isinstance(manifest, str) else yaml.safe_dump(manifest, sort_keys=False)
        self.manifest.write_text(textwrap.dedent(text) if isinstance(manifest, str) else text,
                                 encoding="utf-8")
        defaults = {"chat.jsonl": "".join(json.dumps(r) + "\n" for r in CHAT)}
        for rel, content in {**defaults, **(files or {})}.items():
            path = self.root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content, encoding="utf-8")
        return self.manifest


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path)


@pytest.fixture
def minimal() -> dict:
    return json.loads(json.dumps(MINIMAL))  # a deep copy each test may edit


def pytest_configure(config):
    # Before collection: Hypothesis may touch its folder as soon as it sees a test module.
    config._afs_hypothesis_home = tempfile.mkdtemp(prefix="afs-hypothesis-")
    set_hypothesis_home_dir(config._afs_hypothesis_home)
    # Tests that load a model with llama_cpp directly load it as afs does (no AMX buffers where
    # they crash: afs_build/llamacpp.py).
    from afs_build.llamacpp import load

    load()


def pytest_unconfigure(config):
    if getattr(config, "_afs_hypothesis_home", None):
        shutil.rmtree(config._afs_hypothesis_home, ignore_errors=True)


def pytest_addoption(parser):
    parser.addoption("--reverse-order", action="store_true",
                     help="run the collected tests in reverse order (finds order dependence)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--reverse-order"):
        items.reverse()
