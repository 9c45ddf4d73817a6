"""Helpers for the deploy tests: manifests from dicts, free ports, a tiny real GGUF, HTTP.

The GGUF is the tiny model of ``tests/tinymodel.py``, converted once a session. This is not a
``conftest.py`` because the top-level tests import names from theirs as ``conftest``.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

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
    """Write ``afs.yaml`` (and the data file it names) under `root` and load it.

    LM Studio's folder is under `root` unless `deploy` says otherwise: no test writes to
    the real ``~/.lmstudio``.
    """
    root.mkdir(parents=True, exist_ok=True)
    data = json.loads(json.dumps(BASE))
    data["specialists"] = {name: {"role": "Specialist", "base": "tiny", "mix": "general",
                                  "hardware": "cpu", **body}
                           for name, body in specialists.items()}
    data["deploy"] = {"lmstudio_dir": str(root / "lmstudio" / "models"), **(deploy or {})}
    (root / "chat.jsonl").write_text(CHAT_LINE + "\n", encoding="utf-8")
    path = root / "afs.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return load(path)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_CONVERTED: dict[str, Path] = {}


def shared_tiny_gguf(tmp_path_factory) -> Path:
    """An F16 GGUF of the tiny ChatML model (eos ``<|im_end|>``), converted once a session.

    Each test module wraps it in its own ``tiny_gguf`` fixture (an imported fixture would
    read, to a linter, as an import the test's argument redefines).
    """
    if "f16" not in _CONVERTED:
        _CONVERTED["f16"] = make_tiny_gguf(tmp_path_factory.mktemp("tiny-gguf"))
    return _CONVERTED["f16"]


def place_served(manifest: Manifest, name: str, gguf: Path) -> Path:
    """Link `gguf` where specialist `name` serves it from, with a quantize report beside it
    (the deploy task's input), as if the build had made them."""
    import os

    from afs_build.deploy.server import served_gguf
    from afs_build.paths import Layout

    layout = Layout.of(manifest)
    target = served_gguf(layout, manifest.specialists[name])
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        os.link(gguf, target)
    report = layout.post(name).quantize_report
    if not report.exists():
        report.write_text(json.dumps({"report": {"quants": {}}}) + "\n", encoding="utf-8")
    return target


def get(port: int, path: str, key: str | None = None) -> tuple[int, dict]:
    """GET `path` on a loopback server: (status, JSON body)."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def post_raw(port: int, path: str, body: bytes, headers: dict | None = None) -> tuple[int, dict]:
    """POST raw bytes to `path` on a loopback server: (status, JSON body)."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", body,
                                     {"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def post(port: int, path: str, body: dict, key: str | None = None) -> tuple[int, dict]:
    """POST `body` as JSON to `path` on a loopback server: (status, JSON body)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return post_raw(port, path, json.dumps(body).encode(), headers)


def rss_kib(pid: int) -> int:
    """A process's resident memory in KiB (from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def log_text(path: Path, needle: str, count: int = 1, timeout: float = 15.0) -> str:
    """`path`'s text once `needle` appears `count` times in it (the server's output reaches
    server.log through a pump thread), or as it is after `timeout` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text() if path.exists() else ""
        if text.count(needle) >= count or time.monotonic() > deadline:
            return text
        time.sleep(0.05)
