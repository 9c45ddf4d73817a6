"""Run a rendered training script on this machine, in a subprocess, and read its summary.

The script does the work (and the resuming: run it again with the same output folder and it
continues from its last checkpoint); this module starts it with the current Python, copies its
output into ``train.log`` through the same redaction as the JSON log (a token printed by a
library never reaches the file), shows a progress bar on a terminal by following the metrics
file, and turns a failure into a :class:`~afs_build.errors.StageError` that quotes the end of
the log.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import IO, Mapping, Optional

from ..errors import StageError
from ..log import redact
from ..paths import TrainFiles

TAIL_LINES = 20
POLL_SECONDS = 0.5


def run_local(script: Path, files: TrainFiles, *, base: str, train: Path, eval: Path,
              max_steps: Optional[int] = None, env: Optional[Mapping[str, str]] = None) -> dict:
    """Run `script` into ``files.folder`` to completion and return its parsed summary.

    `env` adds to (or overrides) this process's environment. ``OMP_WAIT_POLICY=PASSIVE`` is
    set unless `env` says otherwise: spinning OpenMP threads make a busy 2-core machine crawl.
    """
    out, log_file = files.folder, files.log
    out.mkdir(parents=True, exist_ok=True)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(script), "--base", str(base), "--train", str(train),
               "--eval", str(eval), "--out", str(out)]
    if max_steps is not None:
        command += ["--max-steps", str(max_steps)]
    environment = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONUNBUFFERED": "1",
                   "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    with log_file.open("a", encoding="utf-8") as log:
        log.write(redact(f"$ {' '.join(command)}\n"))
        log.flush()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   env=environment, stdin=subprocess.DEVNULL, text=True,
                                   errors="replace", bufsize=1)
        copier = threading.Thread(target=_copy_redacted, args=(process.stdout, log), daemon=True)
        copier.start()
        try:
            if sys.stdout.isatty():
                _follow(process, files.metrics, Path(script).parent.name)
            code = process.wait()
        except BaseException:  # Ctrl-C: stop the child too; its checkpoints let a rerun resume
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
            raise
        finally:
            copier.join(timeout=30)
    if code != 0:
        raise StageError(f"training script {script} failed (exit code {code}); "
                         f"the last {TAIL_LINES} lines of {log_file}:\n{_tail(log_file)}")
    summary = files.summary
    try:
        return json.loads(summary.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise StageError(f"training script {script} exited without a readable {summary}: {err}") from err


def _copy_redacted(stream: IO[str], log: IO[str]) -> None:
    """Copy the child's output line by line into the log, secrets replaced (as in the JSON log)."""
    with stream:
        for line in stream:
            log.write(redact(line))
            log.flush()


def _tail(path: Path, lines: int = TAIL_LINES) -> str:
    with path.open(encoding="utf-8", errors="replace") as handle:
        return "".join(deque(handle, maxlen=lines)).rstrip("\n")


def _follow(process: subprocess.Popen, metrics: Path, label: str) -> None:
    """A rich progress bar fed by the step lines of `metrics` until `process` ends."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn())
    offset = 0
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task(f"training {label}", total=None, loss="-")
        while True:
            finished = process.poll() is not None
            offset, last = _read_new(metrics, offset)
            if last is not None:
                progress.update(task, completed=last["step"], total=last.get("total_steps"),
                                loss=f"{last['loss']:.4f}")
            if finished:
                return
            time.sleep(POLL_SECONDS)


def _read_new(metrics: Path, offset: int) -> tuple[int, Optional[dict]]:
    """The last complete line after `offset` (parsed), and the new offset."""
    try:
        with metrics.open("rb") as handle:
            if handle.seek(0, os.SEEK_END) < offset:  # rewritten by a resume: start over
                offset = 0
            handle.seek(offset)
            chunk = handle.read()
    except OSError:
        return offset, None
    complete = chunk[:chunk.rfind(b"\n") + 1]
    lines = [line for line in complete.splitlines() if line.strip()]
    try:
        return offset + len(complete), (json.loads(lines[-1]) if lines else None)
    except ValueError:
        return offset + len(complete), None
