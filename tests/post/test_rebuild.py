"""Through doit, on a tiny served-only model: damaged GGUFs are rebuilt, killed runs' temporaries removed.

One build on purpose (conversion, parity, quantization and the report are real); then a GGUF
is truncated, another overwritten in place, temporaries are left as a killed run leaves them,
and `afs plan` must say why each task runs again and the next `doit` must repair it all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from afs_build import plan
from afs_build.manifest import load
from afs_build.uptodate import sampled_digest
from conftest import REPO
from leftovers import writer

def doit(root, *args) -> set[str]:
    """Run doit in `root`; the names of the tasks it ran."""
    result = subprocess.run([sys.executable, "-m", "doit", "-f", str(REPO / "dodo.py"), *args],
                            cwd=root, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "AFS_MANIFEST": "afs.yaml"})
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return {line[3:] for line in result.stdout.splitlines() if line.startswith(".  ")}


def reasons(path) -> dict[str, tuple[str, ...]]:
    """What would run and why; the site's pages, never built in these tests, left out."""
    return {p.name: p.reasons for p in plan.task_plans(load(path)) if p.runs and not p.name.startswith("site:")}


@pytest.mark.slow
def test_damaged_ggufs_are_rebuilt_and_leftovers_removed(project, minimal):
    from tinymodel import build_tiny_model

    build_tiny_model(project.root / "tiny")
    manifest = {"project": {"name": "demo"},
                "models": {"tiny": {"path": "tiny", "params_b": 0.001}},
                "specialists": {"alpha": {"role": "Tester", "base": "tiny", "train": False,
                                          "quantize": ["Q8_0"], "port": 6101,
                                          "context_length": 256}}}
    path = project.write(manifest)
    assert doit(project.root, "quantize:alpha") == {"base:tiny", "gguf:alpha", "quantize:alpha"}
    post = project.root / "build" / "specialists" / "alpha" / "post"
    f16, q8 = post / "alpha-F16.gguf", post / "alpha-Q8_0.gguf"
    gguf_files = json.loads((post / "gguf.json").read_text())["files"]
    quant_files = json.loads((post / "quantize.json").read_text())["files"]
    assert gguf_files == {"alpha-F16.gguf": {"bytes": f16.stat().st_size, "digest": sampled_digest(f16)}}
    assert quant_files == {**gguf_files, "alpha-Q8_0.gguf": {"bytes": q8.stat().st_size,
                                                             "digest": sampled_digest(q8)}}
    assert not [p for p in post.iterdir() if p.name.endswith(".tmp")]
    assert set(reasons(path)) == {"deploy:alpha"}  # never deployed: the rest is up to date

    # damage from outside: Q8_0 cut short, F16 overwritten in place (same size)
    size = q8.stat().st_size
    with open(q8, "r+b") as f:
        f.truncate(size // 2)
    with open(f16, "r+b") as f:
        f.seek(f16.stat().st_size - 4096)
        f.write(os.urandom(4096))
    # leftovers of killed runs, a running writer's temporary, and files that are not afs's
    killed = [writer(target, "kill") for target in (f16, q8, post / "quantize.json")]
    live, live_name = writer(q8, "sleep")
    others = [".alpha-Q8_0.gguf.tmp", "alpha-Q8_0.gguf.abcd1234.tmp", ".alpha-Q4_K_M.gguf.abcd1234.tmp",
              "notes.txt"]
    for name in others:
        (post / name).write_text("not afs's")
    (post / ".alpha-F16.gguf.dir12345.tmp").mkdir()
    try:
        plans = reasons(path)
        assert plans["gguf:alpha"] == (f"output damaged: the content of {f16} differs from the "
                                       "digest gguf.json records",)
        assert plans["quantize:alpha"] == (
            f"output damaged: {q8} is {size // 2} bytes, quantize.json records {size}",
            "an input task runs: gguf:alpha")

        assert doit(project.root, "quantize:alpha") == {"gguf:alpha", "quantize:alpha"}
        assert f16.stat().st_size == gguf_files["alpha-F16.gguf"]["bytes"]
        assert sampled_digest(f16) == gguf_files["alpha-F16.gguf"]["digest"]  # the same file again
        assert q8.stat().st_size == size
        left = {p.name for p in post.iterdir()}
        assert not {name for _, name in killed} & left  # the killed runs' temporaries are gone
        assert live_name in left  # a running writer's is not
        assert set(others) | {".alpha-F16.gguf.dir12345.tmp"} <= left  # nor anything not afs's
        assert set(reasons(path)) == {"deploy:alpha"}
        assert doit(project.root, "quantize:alpha") == set()
    finally:
        live.kill()
        live.wait()
