"""Run a reply's code against a question's tests, in a subprocess that cannot do much harm.

The reply's first Python code block becomes ``solution.py`` in a fresh scratch folder, the
question's ``tests`` become ``test_solution.py`` (plain ``def test_*():`` functions with
``assert``, importing from ``solution``), and a small harness runs each test function and
reports how many passed. The subprocess runs:

- in its own session, killed with its process group after ``timeout_s`` (wall clock);
- under ``resource.setrlimit`` limits: CPU seconds, address space, file size, open files, no
  core dumps (and processes, where the user is not root);
- with an empty environment, Python's isolated mode (``-I``), the scratch folder as its
  working folder and home;
- without the network: in a new network namespace (``unshare -n``) where this machine allows
  it, and always behind an audit hook (``sys.addaudithook``) that refuses sockets, new
  processes, signals, ``ctypes``, and files outside the scratch folder and Python's own.

A reply that trips any of these is a failed answer (score 0, with the reason), never a crashed
benchmark. This stops accidents and simple escapes; it is not a container: a determined
attacker inside the same interpreter can reach the harness's state. Evaluate untrusted models'
code on a machine you can throw away.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .grading import code_block

CPU_SECONDS = 10
MEMORY_BYTES = 1 << 30
FILE_BYTES = 16 << 20
OPEN_FILES = 64
OUTPUT_TAIL = 8192

HARNESS = r'''
import json, os, sys
nonce = sys.stdin.readline().strip()
sys.stdin.close()
HERE = os.path.realpath(os.getcwd())
ALLOWED = tuple({os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix,
                 sys.base_exec_prefix) if p} | {os.path.dirname(os.path.realpath(os.__file__))})
BLOCKED = ("socket.", "subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
           "os.fork", "os.forkpty", "os.kill", "os.killpg", "os.setuid", "ctypes.", "pty.",
           "os.chroot", "os.putenv", "os.unsetenv", "webbrowser.")
WRITES = ("os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.link",
          "os.symlink", "os.truncate", "shutil.rmtree", "os.utime")
READS = ("os.listdir", "os.scandir", "os.chdir")
READ_ROOTS = (HERE, "/dev/null", "/dev/urandom") + ALLOWED
tripped = []

def inside(path, roots):
    try:
        real = os.path.realpath(os.fsdecode(path) if not isinstance(path, int) else "/proc/self/fd")
    except (TypeError, ValueError):
        return False
    return any(real == r or real.startswith(r.rstrip("/") + "/") for r in roots)

def hook(event, args):
    bad = None
    if event.startswith(BLOCKED) or (event == "import" and args and str(args[0]).split(".")[0]
                                     in ("ctypes", "_ctypes", "_posixsubprocess", "pty")):
        bad = event if event != "import" else f"import {args[0]}"
    elif event == "open" and args and not isinstance(args[0], int):
        mode = str(args[1] or "r") if len(args) > 1 else "r"
        flags = args[2] if len(args) > 2 and isinstance(args[2], int) else 0
        writing = any(c in mode for c in "wax+") or flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
        if not inside(args[0], (HERE,) if writing else READ_ROOTS):
            bad = f"open {os.fsdecode(args[0])!r}"
    elif event in WRITES + READS and args and args[0] is not None and not isinstance(args[0], int) \
            and not inside(args[0], (HERE,) if event in WRITES else READ_ROOTS):
        bad = f"{event} {args[0]!r}"
    if bad:
        tripped.append(bad)
        raise PermissionError(f"blocked by the sandbox: {bad}")

sys.path.insert(0, HERE)
sys.addaudithook(hook)
passed, failures, total = 0, [], 0
try:
    import test_solution
    tests = [(n, f) for n, f in vars(test_solution).items() if n.startswith("test") and callable(f)]
except BaseException as err:
    tests, failures = [], [f"the solution or its tests did not load: {type(err).__name__}: {err}"]
for name, test in tests:
    total += 1
    try:
        test()
        passed += 1
    except BaseException as err:
        failures.append(f"{name}: {type(err).__name__}: {str(err)[:200]}")
if tripped:
    passed = 0
sys.stdout.write("\n" + json.dumps({"nonce": nonce, "passed": passed, "total": max(total, 1),
                                    "failures": failures[:5], "blocked": tripped[:3]}) + "\n")
sys.stdout.flush()
os._exit(0)
'''


@functools.lru_cache(maxsize=1)
def network_namespace() -> list[str]:
    """``["unshare", "-n"]`` (or its rootless form) where it works on this machine, else []."""
    tool = shutil.which("unshare")
    if tool is None:
        return []
    for prefix in ([tool, "-n"], [tool, "-r", "-n"]):
        try:
            if subprocess.run(prefix + ["true"], capture_output=True, timeout=10).returncode == 0:
                return prefix
        except (OSError, subprocess.SubprocessError):
            continue
    return []


def _limits(cpu: int) -> None:
    import resource

    os.setsid()
    for name, value in (("RLIMIT_CPU", cpu), ("RLIMIT_AS", MEMORY_BYTES), ("RLIMIT_FSIZE", FILE_BYTES),
                        ("RLIMIT_NOFILE", OPEN_FILES), ("RLIMIT_CORE", 0)):
        resource.setrlimit(getattr(resource, name), (value, value))
    if os.getuid() != 0:  # root is not held to RLIMIT_NPROC; the audit hook refuses forks anyway
        resource.setrlimit(resource.RLIMIT_NPROC, (64, 64))


def run_tests(question: dict, reply: str) -> tuple[float, str]:
    """(share of the tests passed, reason) for the reply's code; 0 when it has none or escapes."""
    code = code_block(reply)
    if code is None:
        return 0.0, "no Python code block in the reply"
    timeout = float(question.get("timeout_s") or CPU_SECONDS)
    scratch = Path(tempfile.mkdtemp(prefix="afs-code-"))
    nonce = secrets.token_hex(16)
    try:
        (scratch / "solution.py").write_text(code, encoding="utf-8")
        (scratch / "test_solution.py").write_text(question["tests"], encoding="utf-8")
        (scratch / "harness.py").write_text(HARNESS, encoding="utf-8")
        out_path = scratch / ".out"
        command = network_namespace() + [sys.executable, "-I", "-B", "harness.py"]
        env = {"PATH": "/usr/bin:/bin", "HOME": str(scratch), "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}
        with open(out_path, "wb") as out:
            process = subprocess.Popen(command, cwd=scratch, env=env, stdin=subprocess.PIPE, stdout=out,
                                       stderr=subprocess.STDOUT,
                                       preexec_fn=functools.partial(_limits, int(timeout) + 1))
            try:
                process.communicate((nonce + "\n").encode(), timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill(process)
                return 0.0, f"timed out after {timeout:g} s"
        return _verdict(out_path, nonce, process.returncode)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _kill(process: subprocess.Popen) -> None:
    import signal

    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


def _verdict(out_path: Path, nonce: str, code: int) -> tuple[float, str]:
    with open(out_path, "rb") as handle:
        handle.seek(max(0, out_path.stat().st_size - OUTPUT_TAIL))
        tail = handle.read().decode("utf-8", "replace")
    for line in reversed(tail.splitlines()):
        try:
            report = json.loads(line)
        except ValueError:
            continue
        if isinstance(report, dict) and report.get("nonce") == nonce:
            if report["blocked"]:
                return 0.0, f"blocked by the sandbox: {'; '.join(report['blocked'])}"
            reason = "; ".join(report["failures"])
            return report["passed"] / report["total"], reason
    if code < 0:
        import signal

        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        return 0.0, f"the code was killed ({name}: a CPU, memory or file-size limit)"
    return 0.0, f"the code ended the test run itself (exit {code}): {tail.strip()[-120:]}"
