"""Run each specialist's OpenAI-compatible server in the background; report on them; stop them.

Each server is ``python -m afs_build.serve`` (see :mod:`afs_build.serve`) in its own session,
logging to ``server.log``, with a pid file (JSON) beside it::

    {"pid": 4242, "port": 5000, "host": "127.0.0.1", "specialist": "majora",
     "gguf": "/abs/majora-Q4_K_M.gguf", "gguf_size": ..., "gguf_mtime_ns": ..., "n_ctx": 2048,
     "started": "2025-01-01T12:00:00+00:00", "token": "afs-serve-...", "log": "..."}

The token is also on the server's command line (``--token``). afs signals a process only when
it is alive and its command line carries ``afs_build.serve`` and the pid file's token: a pid
file left behind, a reused pid or a hand-edited file never gets another program killed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterable, Optional

from ..atomic import write_json
from ..errors import AfsError, StageError, one_of, suggest
from ..manifest import Manifest, Specialist
from ..paths import Layout

TOKEN_PREFIX = "afs-serve-"
GRACE_SECONDS = 10.0
PORT_WAIT_SECONDS = 2.0
LOG_TAIL_LINES = 20
PACKAGE_ROOT = Path(__file__).resolve().parents[2]


# --- processes ------------------------------------------------------------------------------


# Servers this process started, kept so that they are reaped when they exit (a zombie would
# look alive) and Python does not warn about dropping a running child.
_CHILDREN: dict[int, subprocess.Popen] = {}


def _reap(pid: int) -> None:
    """Collect `pid` if it is our own exited child (else it lingers as a zombie and looks alive)."""
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is not None:
            del _CHILDREN[pid]
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _command_line(pid: int) -> Optional[str]:
    """The running process's command line, or None when it is gone (or a zombie)."""
    _reap(pid)
    proc = Path("/proc") / str(pid)
    if Path("/proc/self").exists():
        try:
            stat = (proc / "stat").read_text()
            # A zombie leader whose other threads still run is still exiting (its sockets are
            # still open): dead only once it is the last thread left.
            if stat[stat.rfind(")") + 2:].startswith("Z") and len(os.listdir(proc / "task")) <= 1:
                return None
            return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            return None
    try:  # no /proc (macOS): ask ps
        out = subprocess.run(["ps", "-o", "stat=,command=", "-p", str(pid)], capture_output=True,
                             text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    if not out or out.startswith("Z"):
        return None
    return out.split(None, 1)[1] if " " in out else ""


def owned(record: dict) -> bool:
    """Whether the pid file's process is alive and is the afs server that wrote `record`."""
    pid, token = record.get("pid"), record.get("token")
    if not isinstance(pid, int) or pid <= 0 or not isinstance(token, str) \
            or not token.startswith(TOKEN_PREFIX):
        return False
    line = _command_line(pid)
    return line is not None and "afs_build.serve" in line and f"--token {token}" in line


def _alive(pid: int) -> bool:
    return _command_line(pid) is not None


def _terminate(pid: int, grace: float = GRACE_SECONDS) -> None:
    """SIGTERM `pid` (and its session), then SIGKILL after `grace` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            # start() makes each server a session (and group) leader: signal its whole group.
            if os.getpgid(pid) == pid:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not _alive(pid):
                return
            time.sleep(0.05)


def read_pid_file(path: Path) -> Optional[dict]:
    """The pid file's record, or None (missing or unreadable: nothing afs can act on)."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


# --- network --------------------------------------------------------------------------------


def connect_host(host: str) -> str:
    """The address a client dials for a server bound to `host` (a wildcard means loopback)."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def port_free(host: str, port: int) -> bool:
    """Whether a server could bind `host`:`port` now (SO_REUSEADDR, as uvicorn binds)."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return True  # the server will report the bad host itself
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError:
            return False
    return True


def healthy(host: str, port: int, alias: str, timeout: float = 2.0) -> bool:
    """Whether ``/v1/models`` on `host`:`port` answers and lists `alias`."""
    target = connect_host(host)
    if ":" in target:
        target = f"[{target}]"
    try:
        with urllib.request.urlopen(f"http://{target}:{port}/v1/models", timeout=timeout) as r:
            data = json.loads(r.read())
    except (OSError, ValueError, urllib.error.URLError):
        return False
    ids = [m.get("id") for m in data.get("data", []) if isinstance(m, dict)] \
        if isinstance(data, dict) else []
    return alias in ids


def _tail(log_file: Path, offset: int, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with open(log_file, "rb") as handle:
            handle.seek(offset)
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return "  (no log)"
    kept = text.rstrip().splitlines()[-lines:]
    return "\n".join(f"  {line}" for line in kept) if kept else "  (the log is empty)"


# --- start ----------------------------------------------------------------------------------


def _gguf_identity(gguf: Path) -> dict[str, Any]:
    st = gguf.stat()
    return {"gguf": str(gguf), "gguf_size": st.st_size, "gguf_mtime_ns": st.st_mtime_ns}


def start(name: str, gguf: Path, *, host: str, port: int, n_ctx: int, pid_file: Path,
          log_file: Path, timeout: float = 60, retrieval: Optional[Path] = None) -> dict:
    """Serve `gguf` as `name` on `host`:`port` in the background; return its pid record.

    The record carries an ``action``: ``started``; ``restarted`` (afs's server for `name` was
    serving another GGUF or settings, or had crashed); or ``kept`` (the same GGUF is already
    served and healthy). Ready means ``/v1/models`` lists `name`; otherwise StageError with
    the tail of the server's log.
    """
    gguf = Path(gguf).absolute()
    pid_file, log_file = Path(pid_file), Path(log_file)
    if not gguf.is_file():
        raise StageError(f"cannot serve specialist {name}: {gguf} does not exist; build it "
                         f"first (afs build)")
    wanted = {**_gguf_identity(gguf), "host": host, "port": port, "n_ctx": n_ctx}
    if retrieval is not None:  # its settings are part of what is served: a change restarts
        wanted["retrieval"] = Path(retrieval).read_text(encoding="utf-8")
    record = read_pid_file(pid_file)
    action = "started"
    if record is not None:
        if owned(record):
            same = all(record.get(k) == v for k, v in wanted.items())
            if same and healthy(host, port, name):
                return {**record, "action": "kept"}
            _terminate(record["pid"])
        action = "restarted"
        pid_file.unlink(missing_ok=True)
    # A server that has just exited (killed above, or crashed) may hold its socket a moment.
    deadline = time.monotonic() + (PORT_WAIT_SECONDS if record is not None else 0)
    while not port_free(host, port) and time.monotonic() < deadline:
        time.sleep(0.05)
    if not port_free(host, port):
        raise StageError(f"port {port} (specialist {name}) is already in use by another "
                         f"program; stop it or change specialists.{name}.port")

    token = TOKEN_PREFIX + secrets.token_hex(8)
    command = [sys.executable, "-m", "afs_build.serve", "--model", str(gguf), "--alias", name,
               "--host", host, "--port", str(port), "--n-ctx", str(n_ctx), "--token", token]
    if retrieval is not None:
        command += ["--retrieval", str(Path(retrieval).absolute())]
    env = {k: v for k, v in os.environ.items() if k != "CONFIG_FILE"}
    env.update(OMP_WAIT_POLICY="PASSIVE", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(PACKAGE_ROOT),
                                                        env.get("PYTHONPATH")])))
    log_file.parent.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    with open(log_file, "ab") as log:
        offset = log.tell()
        log.write(f"--- afs: {started} serving {gguf} as {name} on {host}:{port}\n".encode())
        log.flush()
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
    _CHILDREN[proc.pid] = proc
    record = {"pid": proc.pid, "specialist": name, **wanted, "started": started,
              "token": token, "log": str(log_file)}
    write_json(pid_file, record)

    deadline = time.monotonic() + timeout
    while True:
        code = proc.poll()
        if code is not None:
            _CHILDREN.pop(proc.pid, None)
            pid_file.unlink(missing_ok=True)
            raise StageError(f"the server for specialist {name} exited with code {code} before "
                             f"it was ready; the end of {log_file}:\n{_tail(log_file, offset)}")
        if healthy(host, port, name, timeout=1.0):
            return {**record, "action": action}
        if time.monotonic() > deadline:
            _terminate(proc.pid, grace=5.0)
            pid_file.unlink(missing_ok=True)
            raise StageError(f"the server for specialist {name} on port {port} was not ready "
                             f"within {timeout:g} s; the end of {log_file}:\n"
                             f"{_tail(log_file, offset)}")
        time.sleep(0.1)


# --- status and stop ------------------------------------------------------------------------


def served_kind(spec: Specialist) -> str:
    """The type a specialist serves: ``serve_quant``, else the last of ``quantize``, else F16."""
    return spec.serve_quant or (spec.quantize[-1] if spec.quantize else "F16")


def served_gguf(layout: Layout, spec: Specialist) -> Path:
    """The GGUF file a specialist serves (see :func:`served_kind`)."""
    return layout.post(spec.name).gguf(served_kind(spec))


def status(layout: Layout, manifest: Manifest) -> list[dict]:
    """One row per specialist: port, file, pid and state (``healthy``, ``down``, ``stopped``).

    ``down`` means a pid file says the server should run but it is gone or does not answer.
    """
    rows = []
    for spec in manifest.specialists.values():
        record = read_pid_file(layout.deploy(spec.name).pid)
        row = {"specialist": spec.name, "port": spec.port,
               "file": str(served_gguf(layout, spec)), "pid": None,
               "alive": False, "healthy": False, "state": "stopped"}
        if record is not None:
            alive = owned(record)
            port = record.get("port", spec.port)
            ok = alive and healthy(record.get("host", manifest.deploy.host), port, spec.name)
            row.update(port=port, file=record.get("gguf", row["file"]), pid=record.get("pid"),
                       alive=alive, healthy=ok, state="healthy" if ok else "down")
        rows.append(row)
    return rows


def _check_names(manifest: Manifest, names: Iterable[str]) -> list[str]:
    names = list(names)
    for name in names:
        if name not in manifest.specialists:
            raise AfsError(f"{manifest.file}: unknown specialist {name!r}; expected one of: "
                           f"{one_of(manifest.specialists)}{suggest(name, manifest.specialists)}")
    return names


def stop(layout: Layout, manifest: Manifest, names: Optional[Iterable[str]] = None) -> list[str]:
    """Stop the servers afs started for `names` (default: all); return those it stopped.

    Pid files are removed; a pid file whose process is not afs's server is removed without
    signalling anything.
    """
    chosen = _check_names(manifest, names) if names else list(manifest.specialists)
    stopped = []
    for name in chosen:
        pid_file = layout.deploy(name).pid
        record = read_pid_file(pid_file)
        if record is not None and owned(record):
            _terminate(record["pid"])
            stopped.append(name)
        pid_file.unlink(missing_ok=True)
    return stopped
