"""Temporaries as interrupted and running afs writers leave them: a real process in atomic_path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# Dies by SIGKILL inside atomic_path, as a killed gguf/quantize run does, or sleeps there
# holding its temporary, as a running one does.
WRITER = """
import os, signal, sys, time
from pathlib import Path
from afs_build.atomic import atomic_path
target, mode = Path(sys.argv[1]), sys.argv[2]
with atomic_path(target) as tmp:
    with open(tmp, "wb") as f:
        f.write(b"GGUF" + bytes(1 << 16))
    print(tmp.name, flush=True)
    if mode == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(600)
"""


def writer(target: Path, mode: str) -> tuple[subprocess.Popen, str]:
    """Start a writer of `target` (``kill`` or ``sleep``); the process and its temporary's name.

    A ``kill`` writer has died when this returns.
    """
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target), mode],
                            stdout=subprocess.PIPE, text=True, env=os.environ)
    name = proc.stdout.readline().strip()
    assert name.startswith(f".{target.name}.") and name.endswith(".tmp"), name
    if mode == "kill":
        proc.wait(timeout=60)
        assert proc.returncode == -9
    return proc, name
