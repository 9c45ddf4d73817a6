"""Shared fixtures: small project trees built from dicts, in a temporary folder."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent

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
