"""Fast JSONL reading and atomic JSONL writing for the data stages.

orjson is used when installed (several times faster on both sides), the standard ``json``
module otherwise; both write compact UTF-8 with sorted keys, so a file's bytes depend only on
its records. A writer fills a temporary file in the target's folder and renames it over the
target only when every record is written: a crash or an exception leaves the old file (or
none), never half of a new one.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Iterable, Iterator

from afs_build.data.records import Reject

try:  # optional speed-up; the results are the same records either way
    import orjson
except ImportError:  # pragma: no cover - depends on the environment
    orjson = None

_BUFFER = 1 << 20


class JsonlError(ValueError):
    """A line of a JSONL file that is not valid JSON; the message names ``file:line``."""


if orjson is not None:
    _OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE
    _DECODE_ERROR: type[Exception] = orjson.JSONDecodeError

    def dumps_line(value: Any) -> bytes:
        """One JSONL line (with its newline) for ``value``: compact, sorted keys, UTF-8."""
        return orjson.dumps(value, option=_OPTIONS)

    loads = orjson.loads
else:  # pragma: no cover - exercised where orjson is missing
    _DECODE_ERROR = ValueError

    def dumps_line(value: Any) -> bytes:
        """One JSONL line (with its newline) for ``value``: compact, sorted keys, UTF-8."""
        text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return (text + "\n").encode()

    loads = json.loads


def read_jsonl_numbered(path) -> Iterator[tuple[int, Any]]:
    """Yield ``(line number, value)`` for each non-blank line; raises JsonlError on bad JSON."""
    with open(path, "rb", buffering=_BUFFER) as handle:
        for number, raw in enumerate(handle, start=1):
            if raw.isspace():
                continue
            try:
                yield number, loads(raw)
            except _DECODE_ERROR as exc:
                raise JsonlError(f"{os.fspath(path)}:{number}: invalid JSON: {exc}") from exc


def read_jsonl(path) -> Iterator[Any]:
    """Yield the value of each non-blank line of a JSONL file written by a stage."""
    for _, value in read_jsonl_numbered(path):
        yield value


class AtomicJsonlWriter:
    """Write records to ``path`` through a temporary file renamed into place on success.

    Use as a context manager; :class:`Reject` records are written as their ``to_json()``.
    ``count`` is the number of records written so far.
    """

    def __init__(self, path) -> None:
        self.path = os.fspath(path)
        self.count = 0
        folder = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        fd, self._temp = tempfile.mkstemp(
            prefix=f".{os.path.basename(self.path)}.", suffix=".tmp", dir=folder)
        self._handle = os.fdopen(fd, "wb", buffering=_BUFFER)

    def write(self, record: Any) -> None:
        if isinstance(record, Reject):
            record = record.to_json()
        self._handle.write(dumps_line(record))
        self.count += 1

    def write_lines(self, data: bytes, count: int) -> None:
        """Append ``count`` records already serialized by :func:`dumps_line`."""
        self._handle.write(data)
        self.count += count

    def __enter__(self) -> "AtomicJsonlWriter":
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
            os.chmod(self._temp, 0o644)  # mkstemp makes 0600; the data is not private
            os.replace(self._temp, self.path)
        else:
            self._handle.close()
            os.unlink(self._temp)


def write_jsonl(path, records: Iterable[Any]) -> int:
    """Write ``records`` atomically to ``path``; returns how many were written."""
    with AtomicJsonlWriter(path) as writer:
        for record in records:
            writer.write(record)
    return writer.count
