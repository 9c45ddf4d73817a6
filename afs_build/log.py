"""Logging: JSON lines under the build folder, readable lines and progress bars on the console.

Every record carries the run id, the task, the specialist (where there is one) and, for the
end of a step, its duration. Secrets never reach a log: values of environment variables whose
names look secret, and whatever the data stages' secrets gate finds (its rules, in
:mod:`afs_build.data.secrets`: API keys and tokens, private keys, passwords given to
secret-looking names, e-mail addresses), are replaced before a record is written.
"""

from __future__ import annotations

import contextlib
import json
import logging
import logging.handlers
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

LOGGER = "afs"
MAX_BYTES = 5 * 2**20
BACKUPS = 5
SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.I)
REDACTED = "[redacted]"


def run_id() -> str:
    """One id per build: inherited through ``AFS_RUN_ID`` by every process of the run."""
    value = os.environ.get("AFS_RUN_ID")
    if not value:
        value = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        os.environ["AFS_RUN_ID"] = value
    return value


def redact(text: str) -> str:
    """`text` with secrets replaced: secret-named environment values, then the gate's rules."""
    from .data.secrets import redact as by_rules  # compiled on first use, not at import

    for name, value in os.environ.items():
        if value and len(value) >= 8 and SECRET_NAME.search(name) and value in text:
            text = text.replace(value, REDACTED)
    return by_rules(text)


def _redacted(value: Any) -> Any:
    """A JSON-ready copy of a log record's value with every string redacted."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {str(key): _redacted(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redacted(item) for item in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return redact(str(value))


class JsonLinesFormatter(logging.Formatter):
    """One JSON object per record, secrets redacted."""

    FIELDS = ("task", "specialist", "source", "duration_s", "count")

    def format(self, record: logging.LogRecord) -> str:
        event = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "run": run_id(),
            "event": record.getMessage(),
        }
        for key in self.FIELDS:
            event[key] = getattr(record, key, None)
        extra = getattr(record, "data", None)
        if extra:
            event["data"] = extra
        # Redacted field by field, before JSON escapes quotes the rules read.
        return json.dumps(_redacted(event), ensure_ascii=False)


def setup(log_file: Path, *, console: bool = True) -> logging.Logger:
    """Attach the rotating JSON-lines file handler (once per file) and a console handler."""
    logger = logging.getLogger(LOGGER)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    log_file = Path(log_file)
    if not any(getattr(h, "baseFilename", None) == str(log_file.absolute()) for h in logger.handlers):
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(log_file, maxBytes=MAX_BYTES,
                                                       backupCount=BACKUPS, encoding="utf-8")
        handler.setFormatter(JsonLinesFormatter())
        logger.addHandler(handler)
    if console and not any(isinstance(h, _ConsoleHandler) for h in logger.handlers):
        logger.addHandler(_ConsoleHandler())
    return logger


class _ConsoleHandler(logging.StreamHandler):
    """Human-readable lines: ``[task] message in 1.2s (key=value, ...)``."""

    def format(self, record: logging.LogRecord) -> str:
        where = getattr(record, "task", None)
        text = record.getMessage()
        duration = getattr(record, "duration_s", None)
        if duration is not None:
            text += f" in {duration:.1f}s"
        details = {k: getattr(record, k, None) for k in ("count",)}
        details.update(getattr(record, "data", None) or {})
        shown = ", ".join(f"{k}={v}" for k, v in details.items()
                          if v is not None and not isinstance(v, dict) and k != "error")
        if shown:
            text += f" ({shown})"
        return redact(f"[{where}] {text}" if where else text)


def event(message: str, *, task: str | None = None, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event; known fields become top-level keys, the rest go under ``data``."""
    known = {k: fields.pop(k) for k in list(fields) if k in JsonLinesFormatter.FIELDS}
    logging.getLogger(LOGGER).log(level, message, extra={"task": task, **known, "data": fields or None})


def internal_error(task: str, err: BaseException) -> None:
    """Record an unexpected exception with its traceback in the JSON log only."""
    import traceback

    trace = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    logger = logging.getLogger(LOGGER)
    record = logger.makeRecord(LOGGER, logging.ERROR, __file__, 0, f"internal error: {err!r}", (), None,
                               extra={"task": task, "data": {"traceback": trace}})
    for handler in logger.handlers:
        if not isinstance(handler, _ConsoleHandler):
            handler.handle(record)


@contextlib.contextmanager
def step(task: str, message: str, **fields: Any) -> Iterator[dict]:
    """Log the start and the end (with its duration) of a step; the yielded dict adds fields."""
    started = time.perf_counter()
    event(f"{message}: start", task=task, **fields)
    extra: dict = {}
    try:
        yield extra
    except Exception as err:
        event(f"{message}: failed", task=task, level=logging.ERROR, error=str(err),
              duration_s=round(time.perf_counter() - started, 3), **fields)
        raise
    event(f"{message}: done", task=task, duration_s=round(time.perf_counter() - started, 3),
          **fields, **extra)


def progress(description: str, total: int | None = None):
    """A rich progress bar on a terminal (silent elsewhere), as a context manager.

    Use ``with progress("converting", total) as advance: advance(n)``.
    """
    return _Progress(description, total)


class _Progress:
    def __init__(self, description: str, total: int | None):
        self.description = description
        self.total = total
        self._bar = None

    def __enter__(self):
        import sys

        if sys.stderr.isatty():
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn,
                                       TextColumn, TimeElapsedColumn)

            self._bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), transient=True)
            self._bar.start()
            self._id = self._bar.add_task(self.description, total=self.total)
        return self.advance

    def advance(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.advance(self._id, n)

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()
