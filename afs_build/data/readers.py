"""Streaming readers every file-based converter shares, and their reject helpers.

The readers (``read_*_rows``) yield ``(line, value)`` pairs or :class:`Reject` entries, never
raise for bad records, and hold one record in memory at a time: a JSON list is scanned item by
item rather than loaded whole (about 45 MB/s), a JSONL line far over ``max_chars`` is skipped
without being held, and Parquet is read in batches.
"""

from __future__ import annotations

import csv
import difflib
import gzip
import json
import os
import re
import zlib
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Union

from afs_build.data.formats import TABLE_SUFFIXES, extension
from afs_build.data.records import EXCERPT_CHARS, Reject
from afs_build.errors import StageError

MAX_CHARS = 100_000
SUFFIXES = TABLE_SUFFIXES

# What a reader yields: a parsed record with its line (or row number), or a Reject.
Item = Union[tuple[int, Any], Reject]


class Unusable(ValueError):
    """A record that cannot become a sample; the message is the reject reason."""


class InputError(StageError, ValueError):
    """A setting or an input file a converter cannot use at all (the message says which)."""


# --- shared helpers for every converter --------------------------------------------------------


def require_files(paths: Iterable) -> None:
    """Raise FileNotFoundError naming the first input that is not a file."""
    for path in paths:
        if not Path(path).is_file():
            raise FileNotFoundError(f"input file not found: {os.fspath(path)}")


def expected_one_of(what: str, choices: Iterable[str], received: Any) -> str:
    choices = list(choices)
    message = f"{what}: expected one of: {choices} but received: {received!r}"
    close = difflib.get_close_matches(str(received), choices, n=1)
    return f"{message}; did you mean {close[0]!r}?" if close else message


def json_type(value: Any) -> str:
    """The JSON name of a value's type, for messages."""
    if value is None:
        return "null"
    names = {bool: "boolean", int: "number", float: "number", str: "string",
             list: "array", dict: "object"}
    return names.get(type(value), type(value).__name__)


def excerpt(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text[:EXCERPT_CHARS]


def oversized(source: str, file: str, line: int, max_chars: int, size: int | None) -> Reject:
    detail = {"chars": size} if size is not None else {}
    return Reject(source, f"record longer than {max_chars} characters (max_chars)",
                  file=file, line=line, detail=detail)


def not_utf8(source: str, file: str, line: int, byte: int, text: str = "") -> Reject:
    return Reject(source, f"not valid UTF-8 (byte 0x{byte:02x})", file=file, line=line,
                  excerpt=text.encode("utf-8", "replace").decode()[:EXCERPT_CHARS])


def malformed(source: str, file: str, line: int, exc: json.JSONDecodeError, text: str) -> Reject:
    return Reject(source, f"malformed JSON: {exc.msg}", file=file, line=line,
                  excerpt=text[:EXCERPT_CHARS])


def too_deep(source: str, file: str, line: int, text: str) -> Reject:
    return Reject(source, "malformed JSON: nested too deeply to read", file=file, line=line,
                  excerpt=text[:EXCERPT_CHARS])


def unconvertible(source: str, file: str | None, line: int | None, exc: Exception,
                  value: Any) -> Reject:
    """The reject of a record whose values a converter could not handle (odd types, depth)."""
    return Reject(source, f"cannot convert record: {type(exc).__name__}: {exc}"[:300],
                  file=file, line=line, excerpt=excerpt(value))


# Per-record problems a converter turns into a Reject rather than a failed stage: a value of an
# unexpected type deep in a record, or nesting deeper than Python's stack.
RECORD_ERRORS = (TypeError, ValueError, KeyError, AttributeError, IndexError, RecursionError)


# --- readers ---------------------------------------------------------------------------------


def reader_for(path) -> Callable[..., Iterator[Item]]:
    """The reader for a file, by its extension; raises InputError for a type none reads."""
    name = os.fspath(path).lower()
    if name.endswith((".jsonl", ".ndjson", ".jsonl.gz")):
        return read_jsonl_rows
    if name.endswith(".json"):
        return read_json_list_rows
    if name.endswith(".csv"):
        return read_csv_rows
    if name.endswith(".parquet"):
        return read_parquet_rows
    raise InputError(expected_one_of(f"{os.fspath(path)}: file type", SUFFIXES, extension(path))
                     + "; rename the file to its format's extension, or convert it")


def read_jsonl_rows(path, *, source: str, max_chars: int = MAX_CHARS) -> Iterator[Item]:
    """Yield ``(line, value)`` per non-blank line of a JSONL file (``.gz`` too), or a Reject."""
    file = os.fspath(path)
    opener = gzip.open if file.endswith(".gz") else open
    limit = 4 * max_chars + 2  # a character is at most 4 UTF-8 bytes, plus the line end
    with opener(path, "rb") as handle:
        number = 0
        while True:
            try:
                raw = handle.readline(limit)
            except (OSError, EOFError, zlib.error) as exc:  # a corrupt or truncated gzip stream
                yield Reject(source, f"unreadable file: {exc}", file=file, line=number + 1)
                return
            if not raw:
                return
            number += 1
            if len(raw) == limit and not raw.endswith(b"\n"):
                while (more := handle.readline(limit)) and not more.endswith(b"\n"):
                    pass
                yield oversized(source, file, number, max_chars, None)
                continue
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield not_utf8(source, file, number, raw[exc.start], raw.decode("utf-8", "replace"))
                continue
            text = text.rstrip("\r\n")
            if len(text) > max_chars:
                yield oversized(source, file, number, max_chars, len(text))
                continue
            try:
                yield number, json.loads(text)
            except json.JSONDecodeError as exc:
                yield malformed(source, file, number, exc, text)
            except RecursionError:
                yield too_deep(source, file, number, text)


# Bytes that are not UTF-8 survive decoding with surrogateescape as lone surrogates.
_ESCAPED = re.compile("[\udc80-\udcff]")


def read_json_list_rows(
    path, *, source: str, max_chars: int = MAX_CHARS, chunk_chars: int = 1 << 20
) -> Iterator[Item]:
    """Yield ``(line, value)`` for each item of a file holding one JSON list, or a Reject.

    The list is scanned in chunks and each item parsed on its own, so memory stays flat however
    long the list, and a broken item costs only that item (a mismatched bracket ends the item
    where it stands). A broken list structure (no ``[``, garbage between items, a missing
    ``]``) ends the file with one Reject.
    """
    file = os.fspath(path)
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as handle:
        try:
            for line, text, size in _list_items(handle, max_chars, chunk_chars):
                if text is None:
                    yield oversized(source, file, line, max_chars, size)
                elif bad := _ESCAPED.search(text):
                    at = line + text.count("\n", 0, bad.start())
                    yield not_utf8(source, file, at, ord(bad.group()) - 0xDC00, text)
                else:
                    try:
                        yield line, json.loads(text)
                    except json.JSONDecodeError as exc:
                        yield malformed(source, file, line + exc.lineno - 1, exc, text)
                    except RecursionError:
                        yield too_deep(source, file, line, text)
        except _BrokenList as exc:
            yield Reject(source, exc.reason, file=file, line=exc.line)


class _BrokenList(Exception):
    def __init__(self, line: int, reason: str):
        super().__init__(reason)
        self.line, self.reason = line, reason


_BEFORE, _FIRST, _NEXT, _AFTER_ITEM, _DONE, _NESTED, _STRING, _SCALAR = range(8)
_CLOSER = {"{": "}", "[": "]"}
_SPECIAL = re.compile(r'[{}\[\]"]')
_IN_STRING = re.compile(r'["\\]')
_NON_SPACE = re.compile(r"\S")
_SCALAR_END = re.compile(r"[,\]\s]")


def _list_items(handle, max_chars: int, chunk_chars: int) -> Iterator[tuple[int, str | None, int]]:
    """Split a JSON list into its items' texts: ``(first line, text or None if too long, size)``.

    A small state machine over chunks; regexes jump to the next character that matters, so
    the loop runs per bracket and quote, not per character.
    """
    state, escape = _BEFORE, False
    closers: list[str] = []  # the brackets the current item still has to close
    line = start_line = 1
    pieces: list[str] = []  # the current item's text, while it is within max_chars
    size = 0

    def take(text: str) -> None:
        nonlocal size
        size += len(text)
        if size <= max_chars:
            pieces.append(text)
        else:
            pieces.clear()

    while chunk := handle.read(chunk_chars):
        pos = counted = seg = 0  # seg: where the current item's text starts in this chunk
        end = len(chunk)
        while pos < end:
            if state in (_NESTED, _STRING, _SCALAR):
                if escape:
                    escape, pos = False, pos + 1
                    continue
                regex = {_NESTED: _SPECIAL, _STRING: _IN_STRING, _SCALAR: _SCALAR_END}[state]
                match = regex.search(chunk, pos)
                if match is None:
                    break
                char = match.group()
                pos = match.start() if state == _SCALAR else match.end()
                if state == _SCALAR:
                    state = _AFTER_ITEM
                elif char == "\\":
                    escape = True
                elif char == '"':
                    state = _STRING if state == _NESTED else _NESTED if closers else _AFTER_ITEM
                elif char in _CLOSER:
                    closers.append(_CLOSER[char])
                elif closers.pop() != char or not closers:
                    closers.clear()  # closed, or broken by a mismatched bracket: it ends here
                    state = _AFTER_ITEM
                if state == _AFTER_ITEM:
                    take(chunk[seg:pos])
                    yield start_line, ("".join(pieces) if size <= max_chars else None), size
                    pieces, size = [], 0
                continue
            match = _NON_SPACE.search(chunk, pos)
            if match is None:
                break
            pos, char = match.start(), match.group()
            line += chunk.count("\n", counted, pos)
            counted = pos
            if state == _BEFORE and char == "[":
                state = _FIRST
            elif state in (_FIRST, _AFTER_ITEM) and char == "]":
                state = _DONE
            elif state == _AFTER_ITEM and char == ",":
                state = _NEXT
            elif state in (_FIRST, _NEXT) and char not in ",]":
                seg, start_line = pos, line
                if char in _CLOSER:
                    state = _NESTED
                    closers.append(_CLOSER[char])
                elif char == '"':
                    state = _STRING
                else:
                    state = _SCALAR
                    continue  # a scalar's first character is part of it
            elif state == _BEFORE:
                raise _BrokenList(line, "expected a JSON list ('[') at the top level")
            elif state == _DONE:
                raise _BrokenList(
                    line, f"malformed JSON list: unexpected {char!r} after the closing ']'")
            else:
                raise _BrokenList(line, f"malformed JSON list: unexpected {char!r} between items")
            pos += 1
        line += chunk.count("\n", counted, end)
        if state in (_NESTED, _STRING, _SCALAR):
            take(chunk[seg:])
    if state == _BEFORE:
        raise _BrokenList(1, "expected a JSON list ('[') at the top level")
    if state != _DONE:
        raise _BrokenList(line, "malformed JSON list: the file ends before the closing ']'")


def read_csv_rows(path, *, source: str, max_chars: int = MAX_CHARS) -> Iterator[Item]:
    """Yield ``(line, row dict)`` for each row of a CSV file with a header line, or a Reject."""
    file = os.fspath(path)
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as handle:
        reader = csv.DictReader(handle)
        try:
            reader.fieldnames  # reads the header, which may span lines
            start = reader.line_num + 1
            for row in reader:
                line, start = start, reader.line_num + 1
                values = [value for value in row.values() if isinstance(value, str)]
                text = "\x1f".join(values)
                if bad := _ESCAPED.search(text):
                    yield not_utf8(source, file, line, ord(bad.group()) - 0xDC00, text)
                elif len(text) > max_chars:
                    yield oversized(source, file, line, max_chars, len(text))
                else:
                    yield line, {key: value for key, value in row.items() if key is not None}
        except csv.Error as exc:  # cannot resynchronize after a broken quote or a huge field
            yield Reject(source, f"malformed CSV: {exc}", file=file, line=reader.line_num)


def read_parquet_rows(path, *, source: str, max_chars: int = MAX_CHARS, batch_rows: int = 1024
                 ) -> Iterator[Item]:
    """Yield ``(row number, row dict)`` for each row of a Parquet file, read in batches."""
    import pyarrow.parquet as pq

    import pyarrow as pa

    file = os.fspath(path)
    number = 0
    try:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows):
            for row in batch.to_pylist():
                number += 1
                size = len(json.dumps(row, ensure_ascii=False, default=str))
                if size > max_chars:
                    yield oversized(source, file, number, max_chars, size)
                else:
                    yield number, row
    except (pa.ArrowException, ValueError) as exc:  # not Parquet, or damaged
        yield Reject(source, f"unreadable Parquet file: {exc}"[:300], file=file, line=number + 1)
