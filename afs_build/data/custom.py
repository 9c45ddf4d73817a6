"""Custom data sets: local JSONL, JSON, CSV or Parquet files (or a hub data set) in alpaca,
sharegpt or messages form. The file readers are in :mod:`afs_build.data.readers`.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Iterable, Iterator, Mapping

from afs_build.data.readers import (
    MAX_CHARS,
    RECORD_ERRORS,
    InputError,
    Item,
    Unusable,
    excerpt,
    expected_one_of,
    json_type,
    oversized,
    reader_for,
    require_files,
    unconvertible,
)
from afs_build.data.records import RECORD, ROLES, Record, Reject, make_sample

FORMATS: dict[str, tuple[str, ...]] = {
    "alpaca": ("instruction", "input", "output", "system"),
    "sharegpt": ("conversations", "from", "value", "system", "tools"),
    "messages": ("messages", "role", "content", "tools"),
}

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
    text. Raises FileNotFoundError for a missing file and InputError (a ValueError) for a bad
    format, field map or file type, before any record is read.
    """
    to_messages, names = _format_spec(format, fields)
    reader = reader_for(path)
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

    number = 0
    try:
        rows = load_dataset(hub_id, split=split, streaming=True)
        for number, row in enumerate(rows, start=1):
            size = len(json.dumps(row, ensure_ascii=False, default=str))
            if size > max_chars:
                yield oversized(source, hub_id, number, max_chars, size)
            else:
                yield number, row
    except Exception as exc:  # datasets raises many kinds (not found, offline, bad files...)
        where = f" at row {number + 1}" if number else ""
        raise InputError(f"cannot load the data set {hub_id!r} (split {split!r}){where}: "
                         f"{type(exc).__name__}: {exc}; check the hub id, the split and the "
                         f"network (hub data sets are downloaded when first read)") from None


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
        yield RECORD
        if isinstance(row, Reject):
            yield row
            continue
        line, value = row
        try:
            if not isinstance(value, dict):
                raise Unusable(f"expected a JSON object, got {json_type(value)}")
            messages, tools = to_messages(value, names)
            sample = make_sample(source, messages, tools=tools,
                                 provenance={**provenance, "line": line},
                                 metadata={"format": format, **(metadata or {})})
        except Unusable as exc:
            yield Reject(source, str(exc), file=file, line=line, excerpt=excerpt(value))
        except RECORD_ERRORS as exc:
            yield unconvertible(source, file, line, exc, value)
        else:
            yield sample


# --- formats ----------------------------------------------------------------------------------


def _format_spec(format: str, fields: Mapping[str, str] | None):
    if format not in FORMATS:
        raise InputError(expected_one_of("format", sorted(FORMATS), format))
    known = FORMATS[format]
    names = {name: name for name in known}
    for key, value in (fields or {}).items():
        if key not in known:
            raise InputError(expected_one_of(f"field of format {format!r}", known, key))
        if not isinstance(value, str) or not value:
            raise InputError(f"field {key!r}: expected a column name but received: {value!r}")
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
        if not isinstance(speaker, str):
            raise Unusable(f"field '{where}.{names['from']}': expected text, got {json_type(speaker)}")
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
        raw_calls = turn.get("tool_calls") or ()
        if not isinstance(raw_calls, (list, tuple)):
            raise Unusable(f"field '{where}.tool_calls': expected a list, got {json_type(raw_calls)}")
        calls = [_tool_call(call, f"{where}.tool_calls") for call in raw_calls]
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
    except (json.JSONDecodeError, RecursionError):
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
        except (json.JSONDecodeError, RecursionError):
            parsed = None  # kept as the text it is
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
        except (json.JSONDecodeError, RecursionError):
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
