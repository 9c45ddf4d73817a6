"""Custom data sets: local JSONL, JSON, CSV or Parquet files (or a hub data set) in alpaca,
sharegpt or messages form, and the streaming readers every file-based converter shares.

The readers yield ``(line, value)`` pairs or :class:`Reject` entries, never raise for bad
records, and hold one record in memory at a time: a JSON list is scanned item by item rather
than loaded whole, and a JSONL line longer than ``max_chars`` is skipped without being read
into memory.
"""

from __future__ import annotations

import csv
import difflib
import json
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Union

from afs_build.data.records import EXCERPT_CHARS, ROLES, Record, Reject, make_sample

MAX_CHARS = 100_000

FORMATS: dict[str, tuple[str, ...]] = {
    "alpaca": ("instruction", "input", "output", "system"),
    "sharegpt": ("conversations", "from", "value", "system", "tools"),
    "messages": ("messages", "role", "content", "tools"),
}

SUFFIXES = (".csv", ".json", ".jsonl", ".jsonl.gz", ".ndjson", ".parquet")

# ShareGPT speakers as the common tools write them (FastChat, LLaMA-Factory, OpenAI exports).
SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "function": "tool",
    "observation": "tool",
    "tool": "tool",
}
FUNCTION_CALL = "function_call"

# What a reader yields: a parsed record with its line (or row number), or a Reject.
Item = Union[tuple[int, Any], Reject]


class Unusable(ValueError):
    """A record that cannot become a sample; the message is the reject reason."""


# --- public converters ----------------------------------------------------------------------


def convert_custom(
    path,
    *,
    source: str,
    format: str,
    fields: Mapping[str, str] | None = None,
    max_chars: int = MAX_CHARS,
) -> Iterator[Record]:
    """Convert a local JSONL, JSON (list), CSV or Parquet file in alpaca, sharegpt or messages form.

    ``fields`` maps the format's field names to the file's (``{"instruction": "question"}``).
    In CSV and Parquet files, list-valued fields (conversations, messages, tools) may be JSON
    text. Raises FileNotFoundError for a missing file and ValueError for a bad format, field map
    or file type, before any record is read.
    """
    to_messages, names = _format_spec(format, fields)
    reader = _reader_for(path)
    require_files([path])
    rows = reader(path, source=source, max_chars=max_chars)
    return _samples(rows, to_messages, names, source=source, format=format,
                    provenance={"file": os.fspath(path)})


def convert_custom_hub(
    hub_id: str,
    *,
    source: str,
    format: str,
    fields: Mapping[str, str] | None = None,
    split: str = "train",
    max_chars: int = MAX_CHARS,
) -> Iterator[Record]:
    """Convert a data set loaded by ``datasets.load_dataset(hub_id, split=split)``, streamed.

    ``hub_id`` may also be a local folder of data files: the same call loads both.
    """
    to_messages, names = _format_spec(format, fields)
    if os.path.exists(hub_id):
        provenance = {"file": hub_id}
    else:
        provenance = {"url": f"https://huggingface.co/datasets/{hub_id}"}
    rows = _hub_rows(hub_id, split=split, source=source, max_chars=max_chars)
    return _samples(rows, to_messages, names, source=source, format=format,
                    provenance=provenance, metadata={"split": split})


def _hub_rows(hub_id: str, *, split: str, source: str, max_chars: int) -> Iterator[Item]:
    from datasets import load_dataset  # heavy: imported only when a hub source is converted

    rows = load_dataset(hub_id, split=split, streaming=True)
    for number, row in enumerate(rows, start=1):
        size = len(json.dumps(row, ensure_ascii=False, default=str))
        if size > max_chars:
            yield oversized(source, hub_id, number, max_chars, size)
        else:
            yield number, row


def _samples(
    rows: Iterable[Item],
    to_messages: Callable,
    names: dict[str, str],
    *,
    source: str,
    format: str,
    provenance: dict,
    metadata: dict | None = None,
) -> Iterator[Record]:
    file = provenance.get("file") or provenance.get("url")
    for row in rows:
        if isinstance(row, Reject):
            yield row
            continue
        line, value = row
        try:
            if not isinstance(value, dict):
                raise Unusable(f"expected a JSON object, got {json_type(value)}")
            messages, tools = to_messages(value, names)
            yield make_sample(
                source,
                messages,
                tools=tools,
                provenance={**provenance, "line": line},
                metadata={"format": format, **(metadata or {})},
            )
        except Unusable as exc:
            yield Reject(source, str(exc), file=file, line=line, excerpt=excerpt(value))


# --- formats ----------------------------------------------------------------------------------


def _format_spec(format: str, fields: Mapping[str, str] | None):
    if format not in FORMATS:
        raise ValueError(expected_one_of("format", sorted(FORMATS), format))
    known = FORMATS[format]
    names = {name: name for name in known}
    for key, value in (fields or {}).items():
        if key not in known:
            raise ValueError(expected_one_of(f"field of format {format!r}", known, key))
        if not isinstance(value, str) or not value:
            raise ValueError(f"field {key!r}: expected a column name but received: {value!r}")
        names[key] = value
    converters = {"alpaca": _alpaca, "sharegpt": _sharegpt, "messages": _messages}
    return converters[format], names


def _alpaca(row: dict, names: dict[str, str]):
    instruction = _text(row, names, "instruction", required=True)
    extra = _text(row, names, "input")
    output = _text(row, names, "output", required=True)
    system = _text(row, names, "system")
    messages = [{"role": "system", "content": system}] if system else []
    user = f"{instruction}\n\n{extra}" if extra else instruction
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
    return messages, None


def _sharegpt(row: dict, names: dict[str, str]):
    turns = _list(row, names, "conversations")
    system = _text(row, names, "system")
    messages = [{"role": "system", "content": system}] if system else []
    last_tool = None
    for index, turn in enumerate(turns):
        where = f"{names['conversations']}[{index}]"
        if not isinstance(turn, dict):
            raise Unusable(f"{where}: expected an object, got {json_type(turn)}")
        speaker = turn.get(names["from"])
        value = turn.get(names["value"])
        if speaker is None:
            raise Unusable(f"missing field '{where}.{names['from']}'")
        if not isinstance(value, str):
            raise Unusable(f"missing field '{where}.{names['value']}'")
        if speaker == FUNCTION_CALL:
            call = _function_call(value, where)
            last_tool = call["name"]
            messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
            continue
        role = SHAREGPT_ROLES.get(speaker)
        if role is None:
            raise Unusable(
                f"{where}: unknown speaker {speaker!r}; "
                f"expected one of: {sorted([*SHAREGPT_ROLES, FUNCTION_CALL])}"
            )
        message = {"role": role, "content": value}
        if role == "tool" and last_tool:
            message["name"] = last_tool
        messages.append(message)
    return _checked(messages), _tools(row, names)


def _messages(row: dict, names: dict[str, str]):
    turns = _list(row, names, "messages")
    messages = []
    for index, turn in enumerate(turns):
        where = f"{names['messages']}[{index}]"
        if not isinstance(turn, dict):
            raise Unusable(f"{where}: expected an object, got {json_type(turn)}")
        role = turn.get(names["role"])
        if role not in ROLES:
            raise Unusable(f"{where}: unknown role {role!r}; expected one of: {list(ROLES)}")
        content = turn.get(names["content"])
        calls = [_tool_call(call, f"{where}.tool_calls") for call in turn.get("tool_calls") or ()]
        if content is None and calls:
            content = ""  # OpenAI writes null content for a turn that only calls tools
        if not isinstance(content, str):
            raise Unusable(f"missing field '{where}.{names['content']}'")
        message = {"role": role, "content": content}
        if isinstance(turn.get("name"), str) and role == "tool":
            message["name"] = turn["name"]
        if calls:
            message["tool_calls"] = calls
        messages.append(message)
    return _checked(messages), _tools(row, names)


def _checked(messages: list[dict]) -> list[dict]:
    if not any(message["role"] == "assistant" for message in messages):
        raise Unusable("conversation has no assistant turn")
    return messages


def _function_call(value: str, where: str) -> dict:
    try:
        call = json.loads(value)
    except json.JSONDecodeError:
        raise Unusable(f"{where}: function_call value is not JSON") from None
    return _tool_call(call, where)


def _tool_call(call: Any, where: str) -> dict:
    """A tool call in the canonical form, from the plain or the OpenAI (``function``) form."""
    if isinstance(call, dict) and isinstance(call.get("function"), dict):
        call = call["function"]
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        raise Unusable(f"{where}: a tool call needs a 'name'")
    arguments = call.get("arguments", {})
    if isinstance(arguments, str):
        try:
            parsed = json.loads(arguments)
        except json.JSONDecodeError:
            parsed = None
        arguments = parsed if isinstance(parsed, dict) else arguments
    if not isinstance(arguments, (dict, str)):
        arguments = json.dumps(arguments, ensure_ascii=False)
    return {"name": call["name"], "arguments": arguments}


def _tools(row: dict, names: dict[str, str]) -> list[dict] | None:
    tools = _list(row, names, "tools", required=False)
    out = []
    for index, tool in enumerate(tools or ()):
        if isinstance(tool, dict) and isinstance(tool.get("function"), dict):
            tool = tool["function"]
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise Unusable(f"{names['tools']}[{index}]: a tool needs a 'name'")
        parameters = tool.get("parameters") or {"type": "object", "properties": {}}
        if not isinstance(parameters, dict):
            raise Unusable(f"{names['tools']}[{index}]: 'parameters' must be an object")
        description = str(tool.get("description") or "")
        out.append({"name": tool["name"], "description": description, "parameters": parameters})
    return out or None


def _label(names: dict[str, str], key: str) -> str:
    return repr(names[key]) if names[key] == key else f"{names[key]!r} (for {key!r})"


def _text(row: dict, names: dict[str, str], key: str, *, required: bool = False) -> str:
    value = row.get(names[key])
    if value is None:
        if required:
            raise Unusable(f"missing field {_label(names, key)}")
        return ""
    if not isinstance(value, str):
        raise Unusable(f"field {_label(names, key)}: expected text, got {json_type(value)}")
    if required and not value.strip():
        raise Unusable(f"empty field {_label(names, key)}")
    return value


def _list(row: dict, names: dict[str, str], key: str, *, required: bool = True):
    value = row.get(names[key])
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:  # CSV cells and Parquet string columns carry lists as JSON text
            value = json.loads(value)
        except json.JSONDecodeError:
            raise Unusable(f"field {_label(names, key)}: not valid JSON") from None
    if value is None or value == "":
        if required:
            raise Unusable(f"missing field {_label(names, key)}")
        return None
    if not isinstance(value, list):
        raise Unusable(f"field {_label(names, key)}: expected a list, got {json_type(value)}")
    if required and not value:
        raise Unusable(f"empty field {_label(names, key)}")
    return value


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


# --- readers ---------------------------------------------------------------------------------


def _reader_for(path) -> Callable[..., Iterator[Item]]:
    name = os.fspath(path).lower()
    if name.endswith((".jsonl", ".ndjson", ".jsonl.gz")):
        return read_jsonl
    if name.endswith(".json"):
        return read_json_list
    if name.endswith(".csv"):
        return read_csv
    if name.endswith(".parquet"):
        return read_parquet
    raise ValueError(expected_one_of(f"{os.fspath(path)}: file type", SUFFIXES, Path(name).suffix))


def read_jsonl(path, *, source: str, max_chars: int = MAX_CHARS) -> Iterator[Item]:
    """Yield ``(line, value)`` for each non-blank line of a JSONL file (``.gz`` too), or a Reject."""
    import gzip

    file = os.fspath(path)
    opener = gzip.open if file.endswith(".gz") else open
    limit = 4 * max_chars + 2  # a character is at most 4 UTF-8 bytes, plus the line end
    with opener(path, "rb") as handle:
        number = 0
        while True:
            try:
                raw = handle.readline(limit)
            except (OSError, EOFError) as exc:  # a corrupt or truncated gzip stream
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


# Bytes that are not UTF-8 survive decoding with surrogateescape as lone surrogates.
_ESCAPED = re.compile("[\udc80-\udcff]")


def read_json_list(
    path, *, source: str, max_chars: int = MAX_CHARS, chunk_chars: int = 1 << 20
) -> Iterator[Item]:
    """Yield ``(line, value)`` for each item of a file holding one JSON list, or a Reject.

    The list is scanned in chunks and each item parsed on its own, so memory stays flat however
    long the list, and a broken item costs only that item. A broken list structure (no ``[``,
    garbage between items, a missing ``]``) ends the file with one Reject.
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
        except _BrokenList as exc:
            yield Reject(source, exc.reason, file=file, line=exc.line)


class _BrokenList(Exception):
    def __init__(self, line: int, reason: str):
        super().__init__(reason)
        self.line, self.reason = line, reason


_BEFORE, _FIRST, _NEXT, _AFTER_ITEM, _DONE, _NESTED, _STRING, _SCALAR = range(8)
_SPECIAL = re.compile(r'[{}\[\]"]')
_IN_STRING = re.compile(r'["\\]')
_NON_SPACE = re.compile(r"\S")
_SCALAR_END = re.compile(r"[,\]\s]")


def _list_items(handle, max_chars: int, chunk_chars: int) -> Iterator[tuple[int, str | None, int]]:
    """Split a JSON list into its items' texts: ``(first line, text or None if too long, size)``."""
    state, depth, escape = _BEFORE, 0, False
    line, start_line = 1, 0
    pieces: list[str] = []
    size = 0
    while chunk := handle.read(chunk_chars):
        pos = counted = seg = 0
        end = len(chunk)
        while pos < end:
            if state in (_NESTED, _STRING):
                if escape:
                    escape, pos = False, pos + 1
                    continue
                match = (_IN_STRING if state == _STRING else _SPECIAL).search(chunk, pos)
                if match is None:
                    pos = end
                    break
                pos, char = match.end(), match.group()
                if char == "\\":
                    escape = True
                    continue
                if char == '"':
                    if state == _NESTED:
                        state = _STRING
                        continue
                    state = _NESTED if depth else _AFTER_ITEM
                else:
                    depth += 1 if char in "{[" else -1
                    if depth:
                        continue
                    state = _AFTER_ITEM
                if state == _AFTER_ITEM:  # the item closed at pos
                    size += pos - seg
                    if size <= max_chars:
                        pieces.append(chunk[seg:pos])
                    yield start_line, ("".join(pieces) if size <= max_chars else None), size
                    pieces, size = [], 0
                continue
            if state == _SCALAR:
                match = _SCALAR_END.search(chunk, pos)
                if match is None:
                    pos = end
                    break
                pos, state = match.start(), _AFTER_ITEM
                size += pos - seg
                if size <= max_chars:
                    pieces.append(chunk[seg:pos])
                yield start_line, ("".join(pieces) if size <= max_chars else None), size
                pieces, size = [], 0
                continue
            match = _NON_SPACE.search(chunk, pos)
            if match is None:
                pos = end
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
                state = _NESTED if char in "{[" else _STRING if char == '"' else _SCALAR
                depth = 1 if char in "{[" else 0
                seg, start_line = pos, line
                if state == _SCALAR:
                    continue
            elif state == _BEFORE:
                raise _BrokenList(line, "expected a JSON list ('[') at the top level")
            elif state == _DONE:
                raise _BrokenList(line, f"malformed JSON list: unexpected {char!r} after the closing ']'")
            else:
                raise _BrokenList(line, f"malformed JSON list: unexpected {char!r} between items")
            pos += 1
        line += chunk.count("\n", counted, end)
        if state in (_NESTED, _STRING, _SCALAR):
            size += end - seg
            if size <= max_chars:
                pieces.append(chunk[seg:])
    if state == _BEFORE:
        raise _BrokenList(1, "expected a JSON list ('[') at the top level")
    if state != _DONE:
        raise _BrokenList(line, "malformed JSON list: the file ends before the closing ']'")


def read_csv(path, *, source: str, max_chars: int = MAX_CHARS) -> Iterator[Item]:
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


def read_parquet(path, *, source: str, max_chars: int = MAX_CHARS, batch_rows: int = 1024
                 ) -> Iterator[Item]:
    """Yield ``(row number, row dict)`` for each row of a Parquet file, read in batches."""
    import pyarrow.parquet as pq

    file = os.fspath(path)
    number = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows):
        for row in batch.to_pylist():
            number += 1
            size = len(json.dumps(row, ensure_ascii=False, default=str))
            if size > max_chars:
                yield oversized(source, file, number, max_chars, size)
            else:
                yield number, row
