"""Real tiny models served by afs's own server on loopback ports, for the evaluation tests."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator, Optional

from deploy.deploy_helpers import free_port


@contextlib.contextmanager
def serving(gguf: Path, folder: Path, name: str = "tiny", key: Optional[str] = None) -> Iterator[int]:
    """Serve `gguf` as `name` until the block ends; yields the port."""
    from afs_build.deploy import processes
    from afs_build.deploy.server import GRACE_SECONDS, running, start

    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    pid_file = folder / f"{name}.pid"
    record = start(name, gguf, host="127.0.0.1", port=port, n_ctx=512, pid_file=pid_file,
                   log_file=folder / f"{name}.log", key=key)
    try:
        yield port
    finally:
        for pid in running(pid_file) or [record["pid"]]:
            processes.terminate(pid, GRACE_SECONDS)
