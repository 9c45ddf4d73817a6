"""Run each specialist's OpenAI-compatible server in the background; report on them; stop them.

Each server is ``python -m afs_build.serve`` (see :mod:`afs_build.serve`) in its own session,
with its output piped through :mod:`afs_build.deploy.logpump` (redacted) into ``server.log``,
and a pid file (JSON) beside it::

    {"pid": 4242, "port": 5000, "host": "127.0.0.1", "specialist": "majora",
     "gguf": "/abs/majora-Q4_K_M.gguf", "gguf_size": ..., "gguf_mtime_ns": ..., "n_ctx": 2048,
     "auth": false, "code": "<digest of the serving code>", "started": "...", "token": "...",
     "log": "..."}

The server's command line carries ``--pid-file`` (that file's absolute path), its port and the
pid file's token. afs finds its servers by that command line (:mod:`.processes`): a pid file
left behind, a reused pid or a hand-edited file never gets another program killed, and a
server whose pid file was deleted is still found and stopped.

The process gets an explicit environment: what Python and llama.cpp need, never the caller's
secrets (``HF_TOKEN``, ``OPENAI_API_KEY``, ...). Its only secret is the API key when it has
one (``AFS_API_KEY`` in its environment, never on its command line).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

from ..atomic import write_json
from ..errors import AfsError, StageError, one_of, suggest
from ..manifest import Manifest, Specialist
from ..paths import Layout
from . import processes
from .access import client_key, served_env

TOKEN_PREFIX = "afs-serve-"
GRACE_SECONDS = 10.0
PORT_WAIT_SECONDS = 2.0
LOG_TAIL_LINES = 20
# What the served process runs: a change restarts a running server on the next deploy.
SERVING_CODE = ("serve.py", "deploy/access.py", "deploy/guard.py", "deploy/request_checks.py",
                "deploy/logpump.py", "retrieval/endpoints.py", "retrieval/context.py",
                "retrieval/search.py")


def serving_code() -> str:
    """A digest of the code a served process runs."""
    from ..uptodate import PACKAGE, file_digest

    return "-".join(file_digest(PACKAGE / f)[:8] for f in SERVING_CODE)


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


def probe(host: str, port: int, alias: str, timeout: float = 2.0,
          key: Optional[str] = None) -> str:
    """``healthy`` (``/v1/models`` lists `alias`), ``unauthorized`` (401) or ``down``."""
    target = connect_host(host)
    if ":" in target:
        target = f"[{target}]"
    request = urllib.request.Request(f"http://{target}:{port}/v1/models")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            data = json.loads(r.read())
    except urllib.error.HTTPError as err:
        return "unauthorized" if err.code == 401 else "down"
    except (OSError, ValueError):
        return "down"
    ids = [m.get("id") for m in data.get("data", []) if isinstance(m, dict)] \
        if isinstance(data, dict) else []
    return "healthy" if alias in ids else "down"


def healthy(host: str, port: int, alias: str, timeout: float = 2.0,
            key: Optional[str] = None) -> bool:
    """Whether ``/v1/models`` on `host`:`port` answers and lists `alias`."""
    return probe(host, port, alias, timeout, key) == "healthy"


def _tail(log_file: Path, offset: int, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with open(log_file, "rb") as handle:
            handle.seek(offset)
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return "  (no log)"
    kept = text.rstrip().splitlines()[-lines:]
    return "\n".join(f"  {line}" for line in kept) if kept else "  (the log is empty)"


# --- pid files ------------------------------------------------------------------------------


def read_pid_file(path: Path) -> Optional[dict]:
    """The pid file's record, or None (missing or unreadable: nothing afs can act on)."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def owned(record: dict, pid_file: Optional[Path] = None) -> bool:
    """Whether the record's process is alive and is the afs server that wrote `record`.

    Its command line must run afs's server with the record's token and port (and, given
    `pid_file`, with that pid file).
    """
    pid, token = record.get("pid"), record.get("token")
    if not isinstance(pid, int) or pid <= 0 or not isinstance(token, str) \
            or not token.startswith(TOKEN_PREFIX):
        return False
    args = processes.argv(pid)
    if not args or processes.SERVE_MODULE not in args \
            or processes.option(args, "--token") != token:
        return False
    if "port" in record and processes.option(args, "--port") != str(record["port"]):
        return False
    return pid_file is None or processes.is_server(args, pid_file)


def _forget(pid_file: Path, pid: int) -> None:
    """Remove the pid file if it still records `pid` (a racing run may have written its own)."""
    record = read_pid_file(pid_file)
    if record is not None and record.get("pid") == pid:
        pid_file.unlink(missing_ok=True)


def running(pid_file: Path) -> list[int]:
    """The pids of the servers afs started for `pid_file`: the pid file's own, then any other
    found by its command line (a racing run's, whose pid file was lost)."""
    record = read_pid_file(pid_file)
    first = [record["pid"]] if record is not None and owned(record, pid_file) else []
    return first + [pid for pid in processes.servers(pid_file) if pid not in first]


# --- start ----------------------------------------------------------------------------------


def _gguf_identity(gguf: Path) -> dict[str, Any]:
    st = gguf.stat()
    return {"gguf": str(gguf), "gguf_size": st.st_size, "gguf_mtime_ns": st.st_mtime_ns}


def start(name: str, gguf: Path, *, host: str, port: int, n_ctx: int, pid_file: Path,
          log_file: Path, key: Optional[str] = None, timeout: float = 60,
          retrieval: Optional[Path] = None) -> dict:
    """Serve `gguf` as `name` on `host`:`port` in the background; return its pid record.

    The record carries an ``action``: ``started``; ``restarted`` (afs's server for `name` was
    serving another GGUF, settings or serving code, or had crashed); or ``kept`` (the same is
    already served and healthy). Ready means ``/v1/models`` lists `name`; otherwise StageError
    with the tail of the server's log. Callers hold the specialist's deploy lock.
    """
    from .. import serve

    gguf = Path(gguf).absolute()
    pid_file, log_file = Path(pid_file).absolute(), Path(log_file).absolute()
    if not gguf.is_file():
        raise StageError(f"cannot serve specialist {name}: {gguf} does not exist; build it "
                         f"first (afs build)")
    wanted = {**_gguf_identity(gguf), "host": host, "port": port, "n_ctx": n_ctx,
              "auth": key is not None, "code": serving_code()}
    if retrieval is not None:  # its settings are part of what is served: a change restarts
        wanted["retrieval"] = Path(retrieval).read_text(encoding="utf-8")
    record = read_pid_file(pid_file)
    pids = running(pid_file)
    if record is not None and pids[:1] == [record.get("pid")] and len(pids) == 1 \
            and all(record.get(k) == v for k, v in wanted.items()) \
            and healthy(host, port, name, key=key):
        return {**record, "action": "kept"}
    for pid in pids:
        processes.terminate(pid, GRACE_SECONDS)
    action = "restarted" if record is not None or pids else "started"
    pid_file.unlink(missing_ok=True)
    # A server that has just exited (stopped above, or crashed) may hold its socket a moment.
    deadline = time.monotonic() + (PORT_WAIT_SECONDS if action == "restarted" else 0)
    while not port_free(host, port) and time.monotonic() < deadline:
        time.sleep(0.05)
    if not port_free(host, port):
        raise StageError(f"port {port} (specialist {name}) is already in use by another "
                         f"program; stop it or change specialists.{name}.port")

    token = TOKEN_PREFIX + secrets.token_hex(8)
    command = [sys.executable, "-m", "afs_build.serve", "--model", str(gguf), "--alias", name,
               "--host", host, "--port", str(port), "--n-ctx", str(n_ctx),
               "--max-body-bytes", str(serve.max_body_bytes(n_ctx)),
               "--pid-file", str(pid_file), "--token", token]
    env = served_env(key)
    if retrieval is not None:
        command += ["--retrieval", str(Path(retrieval).absolute())]
    log_file.parent.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    with open(log_file, "ab") as log:
        offset = log.tell()
        log.write(f"--- afs: {started} serving {gguf} as {name} on {host}:{port}\n".encode())
    proc, pump = _spawn(command, env, log_file)
    record = {"pid": proc.pid, "specialist": name, **wanted, "started": started,
              "token": token, "log": str(log_file)}
    write_json(pid_file, record)

    deadline = time.monotonic() + timeout
    while True:
        code = proc.poll()
        if code is not None:
            _forget(pid_file, proc.pid)
            _drain(pump)
            tail = _tail(log_file, offset)
            hint = ("\nThe server runs afs from its installed package: install afs (pip install "
                    ".) in this Python, or set PYTHONPATH to its source folder"
                    if "No module named 'afs_build" in tail else "")
            raise StageError(f"the server for specialist {name} exited with code {code} before "
                             f"it was ready; the end of {log_file}:\n{tail}{hint}")
        if healthy(host, port, name, timeout=1.0, key=key):
            return {**record, "action": action}
        if time.monotonic() > deadline:
            processes.terminate(proc.pid, 5.0)
            _forget(pid_file, proc.pid)
            _drain(pump)
            raise StageError(f"the server for specialist {name} on port {port} was not ready "
                             f"within {timeout:g} s; the end of {log_file}:\n"
                             f"{_tail(log_file, offset)}")
        time.sleep(0.1)


def _spawn(command: list[str], env: dict, log_file: Path):
    """Start the server with its output piped through the redacting log pump."""
    # The working folder is the deploy folder: `python -m` puts it first on sys.path, and
    # afs must come from the installed package, not from wherever the build was started.
    cwd = log_file.parent
    read, write = os.pipe()
    try:
        pump = subprocess.Popen([sys.executable, "-m", "afs_build.deploy.logpump", str(log_file)],
                                stdin=read, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env=env, cwd=cwd, start_new_session=True)
        processes.adopt(pump)
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=write, stderr=write,
                                env=env, cwd=cwd, start_new_session=True)
        processes.adopt(proc)
    finally:
        os.close(read)
        os.close(write)
    return proc, pump


def _drain(pump: subprocess.Popen) -> None:
    """Wait a moment for the log pump to write a stopped server's last lines."""
    try:
        pump.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def copies(name: str, gguf: Path, count: int, *, n_ctx: int, folder: Path, key: Optional[str] = None,
           retrieval: Optional[Path] = None, warn: Callable[[str], None] = lambda text: None
           ) -> Iterator[tuple[str, ...]]:
    """`count` more servers of `gguf` as `name`, on free loopback ports until the block ends:
    yields their base URLs (``Endpoint.mirrors``). Their pid files and logs are
    ``folder/copy-<n>.pid`` and ``.log``; each is stopped when the block ends, however it ends.
    A copy that does not start is left out with a warning (`warn`): the block then runs on
    fewer, as it would on a smaller machine."""
    started: list[Path] = []
    urls: list[str] = []
    try:
        for n in range(1, count + 1):
            pid_file = Path(folder) / f"copy-{n}.pid"
            port = free_port()
            try:
                start(name, gguf, host="127.0.0.1", port=port, n_ctx=n_ctx, pid_file=pid_file,
                      log_file=Path(folder) / f"copy-{n}.log", key=key, retrieval=retrieval)
            except StageError as error:
                warn(f"a copy of the server for {name} did not start, answering with "
                     f"{len(urls) + 1} instead: {str(error).splitlines()[0]}")
                break
            started.append(pid_file)
            urls.append(f"http://127.0.0.1:{port}/v1")
        yield tuple(urls)
    finally:
        for pid_file in started:
            for pid in running(pid_file):
                processes.terminate(pid, GRACE_SECONDS)
            pid_file.unlink(missing_ok=True)


# --- status and stop ------------------------------------------------------------------------


def served_kind(spec: Specialist) -> str:
    """The type a specialist serves: ``serve_quant``, else the last of ``quantize``, else F16."""
    return spec.serve_quant or (spec.quantize[-1] if spec.quantize else "F16")


def served_gguf(layout: Layout, spec: Specialist) -> Path:
    """The GGUF file a specialist serves (see :func:`served_kind`)."""
    return layout.post(spec.name).gguf(served_kind(spec))


def status(layout: Layout, manifest: Manifest) -> list[dict]:
    """One row per specialist: port, file, pids and state.

    ``healthy``: it answers and lists its name; ``unauthorized``: it answers 401 (this shell
    lacks the API key); ``down``: afs's server runs but does not answer, or the pid file says
    it should run but it is gone; ``stopped``: none runs.
    """
    rows = []
    key = client_key(manifest.deploy)
    for spec in manifest.specialists.values():
        pid_file = layout.deploy(spec.name).pid
        record = read_pid_file(pid_file)
        pids = running(pid_file)
        row = {"specialist": spec.name, "port": spec.port,
               "file": str(served_gguf(layout, spec)), "pid": None, "pids": pids,
               "alive": bool(pids), "healthy": False, "state": "stopped"}
        if pids:
            args = processes.argv(pids[0]) or []
            port = int(processes.option(args, "--port") or spec.port)
            host = processes.option(args, "--host") or manifest.deploy.host
            state = probe(host, port, spec.name, key=key)
            row.update(port=port, file=processes.option(args, "--model") or row["file"],
                       pid=pids[0], healthy=state == "healthy", state=state)
        elif record is not None:
            row.update(port=record.get("port", spec.port), file=record.get("gguf", row["file"]),
                       pid=record.get("pid"), state="down")
        rows.append(row)
    return rows


def check_names(manifest: Manifest, names: Iterable[str]) -> list[str]:
    """`names`, each a specialist of `manifest`; AfsError with a suggestion otherwise."""
    names = list(names)
    for name in names:
        if name not in manifest.specialists:
            raise AfsError(f"{manifest.file}: unknown specialist {name!r}; expected one of: "
                           f"{one_of(manifest.specialists)}{suggest(name, manifest.specialists)}")
    return names


def stop_one(layout: Layout, name: str) -> bool:
    """Stop every server afs started for specialist `name`; whether there was one.

    Callers hold the specialist's deploy lock. The pid file goes too; a pid file whose
    process is not afs's server is removed without signalling anything.
    """
    stopped = False
    # the deployed server, and any copy a killed eval or compare task left running (copies)
    for pid_file in [layout.deploy(name).pid, *sorted(layout.eval(name).folder.glob("copy-*.pid")),
                     *sorted(layout.compare(name).folder.glob("copy-*.pid"))]:
        pids = running(pid_file)
        for pid in pids:
            processes.terminate(pid, GRACE_SECONDS)
        pid_file.unlink(missing_ok=True)
        stopped = stopped or bool(pids)
    return stopped


def stop(layout: Layout, manifest: Manifest, names: Optional[Iterable[str]] = None,
         on_wait: Optional[Callable[[str], None]] = None) -> list[str]:
    """Stop the servers afs started for `names` (default: all); return those it stopped.

    Each specialist's deploy lock is taken first, so a deploy in progress finishes (and its
    server is then stopped) rather than starting a server after the stop.
    """
    chosen = check_names(manifest, names) if names else list(manifest.specialists)
    stopped = []
    for name in chosen:
        files = layout.deploy(name)
        with processes.locked(files.lock, on_wait and (lambda name=name: on_wait(name))):
            if stop_one(layout, name):
                stopped.append(name)
    return stopped
