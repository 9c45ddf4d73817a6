"""The processes afs starts: reading their command lines, finding them, stopping them, locks.

afs recognises its servers by what they are, not by a file a racing run could delete: a live
process whose command line runs ``afs_build.serve`` with a given ``--pid-file`` (and port) is
that specialist's server, whether or not the pid file still exists. Command lines are read
from ``/proc`` where there is one, from ``ps`` otherwise (macOS).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

SERVE_MODULE = "afs_build.serve"
LOCK_NOTICE_SECONDS = 1.0

# Processes this process started, kept so that they are reaped when they exit (a zombie would
# look alive) and Python does not warn about dropping a running child.
_CHILDREN: dict[int, subprocess.Popen] = {}


def adopt(proc: subprocess.Popen) -> None:
    """Keep `proc` so that it is reaped once it exits."""
    _CHILDREN[proc.pid] = proc


def _reap(pid: int) -> None:
    """Collect `pid` if it is our own exited child (else it lingers as a zombie and looks alive)."""
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is not None:
            del _CHILDREN[pid]
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _proc_argv(pid: int) -> Optional[list[str]]:
    proc = Path("/proc") / str(pid)
    try:
        stat = (proc / "stat").read_text()
        # A zombie leader whose other threads still run is still exiting (its sockets are
        # still open): dead only once it is the last thread left.
        if stat[stat.rfind(")") + 2:].startswith("Z") and len(os.listdir(proc / "task")) <= 1:
            return None
        raw = (proc / "cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0")[:-1]]


def _ps(*args: str) -> list[str]:
    try:
        return subprocess.run(["ps", *args], capture_output=True, text=True,
                              timeout=10).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return []


def argv(pid: int) -> Optional[list[str]]:
    """The running process's arguments, or None when it is gone (or a zombie).

    Without ``/proc`` the arguments come from ``ps``, split at blanks: good enough to
    recognise afs's own command lines, whose paths afs chose.
    """
    _reap(pid)
    if Path("/proc/self").exists():
        return _proc_argv(pid)
    out = "".join(_ps("-o", "stat=,command=", "-p", str(pid))).strip()
    if not out or out.startswith("Z"):
        return None
    return out.split()[1:]


def alive(pid: int) -> bool:
    return argv(pid) is not None


def scan() -> Iterator[tuple[int, list[str]]]:
    """Every live process this user can see, with its arguments."""
    if Path("/proc/self").exists():
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                # No reaping here: a zombie reads as gone, and other children are not ours.
                args = _proc_argv(int(entry))
                if args:
                    yield int(entry), args
        return
    for line in _ps("-axww", "-o", "pid=,stat=,command="):
        parts = line.split()
        if len(parts) >= 3 and parts[0].isdigit() and not parts[1].startswith("Z"):
            yield int(parts[0]), parts[2:]


def option(args: list[str], name: str) -> Optional[str]:
    """The value after `name` (``--port``) in `args`, or None."""
    for i, arg in enumerate(args[:-1]):
        if arg == name:
            return args[i + 1]
    return None


def is_server(args: Optional[list[str]], pid_file: Path, port: Optional[int] = None) -> bool:
    """Whether `args` run afs's server for `pid_file` (and on `port`, when given)."""
    if not args or SERVE_MODULE not in args:
        return False
    if option(args, "--pid-file") != str(Path(pid_file).absolute()):
        return False
    return port is None or option(args, "--port") == str(port)


def servers(pid_file: Path) -> list[int]:
    """The pids of every afs server started for `pid_file`, found by their command lines."""
    return sorted(pid for pid, args in scan() if is_server(args, pid_file))


def terminate(pid: int, grace: float) -> None:
    """SIGTERM `pid` (and its process group), then SIGKILL after `grace` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            # The launcher makes each server a session (and group) leader: signal its group.
            if os.getpgid(pid) == pid:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not alive(pid):
                return
            time.sleep(0.05)


@contextlib.contextmanager
def locked(path: Path, on_wait: Optional[Callable[[], None]] = None) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if needed) for the block; wait for it.

    `on_wait` is called once when the lock is not free within a second, so that the user
    learns why nothing happens. The lock goes with the process: a killed holder frees it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        started = time.monotonic()
        told = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not told and on_wait and time.monotonic() - started > LOCK_NOTICE_SECONDS:
                    on_wait()
                    told = True
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
