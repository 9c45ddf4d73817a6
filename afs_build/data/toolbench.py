"""ToolBench training instances into samples with tool definitions and tool calls.

ToolBench (OpenBMB/ToolBench, the ToolLLaMA training files) stores each instance as
``{"id": ..., "conversations": [{"from": ..., "value": ...}, ...]}``. What needs care:

- The system message ends with the API list as ``str()`` of a Python list (single quotes,
  True/False/None), after "Specifically, you have access to the following APIs:". It is parsed
  with ``ast.literal_eval``, becomes the sample's ``tools`` and is cut from the system prompt.
- Assistant turns are ReAct text, ``Thought: ...\\nAction: name\\nAction Input: {json}``. They
  become tool calls, with the thought kept as the turn's content.
- ``Finish`` is ToolBench's protocol for ending, not a tool: ``give_answer`` becomes a plain
  final answer and ``Finish`` is dropped from the tools; an instance that gives up is rejected.
- The released files hold one instance per search step ("Step 4: <query>"), each a prefix of
  the full conversation ending in a tool call. They are kept: the dedup stage sees the overlap.
- The rest of the system prompt, which still describes the ReAct format and ``Finish``, is kept
  as written; the trailing "Begin!" of each query is dropped.

Conversion runs at about 14 MB/s (``literal_eval`` of the repeated API lists is most of it), so
the full ToolBench training file takes minutes, in flat memory.
"""

from __future__ import annotations

import ast
import json
import os
import re
from typing import Any, Iterator

from afs_build.data.readers import (
    MAX_CHARS,
    RECORD_ERRORS,
    Unusable,
    excerpt,
    json_type,
    read_json_list_rows,
    require_files,
    unconvertible,
)
from afs_build.data.records import RECORD, Record, Reject, make_sample

API_MARKER = "Specifically, you have access to the following APIs:"
FINISH = "Finish"
SPEAKERS = ("assistant", "function", "system", "user")
JSON_TYPES = ("array", "boolean", "integer", "null", "number", "object", "string")

_REACT = re.compile(
    r"\A\s*(?:Thought:[ \t]*(?P<thought>.*?)\s*)?"
    r"Action:[ \t]*(?P<action>[^\n]*?)[ \t]*\n\s*"
    r"Action Input:[ \t]*(?P<input>.*?)\s*\Z",
    re.S,
)
# ToolBench appends this to each query; it is prompt scaffolding, not the user's words.
_BEGIN = re.compile(r"\s*Begin!\s*\Z")


def convert_toolbench(path, *, source: str, max_chars: int = MAX_CHARS) -> Iterator[Record]:
    """Convert a ToolBench JSON list of instances into samples with tools and tool calls.

    The file is scanned item by item (memory stays flat); its line numbers are the lines where
    each instance starts. Raises FileNotFoundError for a missing file.
    """
    require_files([path])
    return _convert(path, source=source, max_chars=max_chars)


def _convert(path, *, source: str, max_chars: int) -> Iterator[Record]:
    file = os.fspath(path)
    for item in read_json_list_rows(path, source=source, max_chars=max_chars):
        yield RECORD
        if isinstance(item, Reject):
            yield item
            continue
        line, instance = item
        try:
            messages, tools = instance_messages(instance)
            metadata = {"toolbench_id": str(instance["id"])} if instance.get("id") is not None else {}
            sample = make_sample(source, messages, tools=tools, metadata=metadata,
                                 provenance={"file": file, "line": line})
        except Unusable as exc:
            yield Reject(source, str(exc), file=file, line=line, excerpt=excerpt(instance))
        except RECORD_ERRORS as exc:
            yield unconvertible(source, file, line, exc, instance)
        else:
            yield sample


def instance_messages(instance: Any) -> tuple[list[dict], list[dict]]:
    """The canonical messages and tools of one ToolBench instance; raises Unusable."""
    if not isinstance(instance, dict):
        raise Unusable(f"expected a JSON object, got {json_type(instance)}")
    turns = instance.get("conversations")
    if turns is None:
        raise Unusable("missing field 'conversations'")
    if not isinstance(turns, list) or not turns:
        raise Unusable("field 'conversations': expected a non-empty list")
    messages: list[dict] = []
    tools: list[dict] = []
    last_tool = None
    for index, turn in enumerate(turns):
        where = f"conversations[{index}]"
        if not isinstance(turn, dict):
            raise Unusable(f"{where}: expected an object, got {json_type(turn)}")
        speaker, value = turn.get("from"), turn.get("value")
        if speaker is None:
            raise Unusable(f"missing field '{where}.from'")
        if not isinstance(value, str):
            raise Unusable(f"missing field '{where}.value'")
        if speaker == "system":
            prompt, tools = split_api_list(value)
            if prompt:
                messages.append({"role": "system", "content": prompt})
        elif speaker == "user":
            messages.append({"role": "user", "content": _BEGIN.sub("", value).strip()})
        elif speaker == "assistant":
            message = _assistant(value, where)
            calls = message.get("tool_calls")
            last_tool = calls[0]["name"] if calls else last_tool
            messages.append(message)
        elif speaker == "function":
            if last_tool is None:
                raise Unusable(f"{where}: a function result with no tool call before it")
            messages.append({"role": "tool", "name": last_tool, "content": value})
        else:
            raise Unusable(
                f"{where}: unknown speaker {speaker!r}; expected one of: {list(SPEAKERS)}")
    if not any(message["role"] == "assistant" for message in messages):
        raise Unusable("conversation has no assistant turn")
    return messages, tools


def split_api_list(system: str) -> tuple[str, list[dict]]:
    """Cut the API list from a ToolBench system prompt: ``(prompt, tools)``.

    A prompt without the marker line is kept whole, with no tools.
    """
    at = system.find(API_MARKER)
    if at < 0:
        return system.strip(), []
    literal = system[at + len(API_MARKER):].strip()
    try:
        apis = ast.literal_eval(literal)
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError) as exc:
        raise Unusable(f"API list is not a Python literal: {exc}") from None
    if not isinstance(apis, list):
        raise Unusable(f"API list: expected a list, got {json_type(apis)}")
    tools = [tool_definition(api, index) for index, api in enumerate(apis)]
    return system[:at].strip(), [tool for tool in tools if tool["name"] != FINISH]


def tool_definition(api: Any, index: int) -> dict:
    """A canonical tool from a ToolBench API dict (``required``/``optional`` parameter lists)."""
    if not isinstance(api, dict) or not isinstance(api.get("name"), str) or not api["name"]:
        raise Unusable(f"API list entry {index} has no name")
    return {
        "name": api["name"],
        "description": str(api.get("description") or ""),
        "parameters": _json_schema(api.get("parameters"), index),
    }


def _json_schema(parameters: Any, index: int) -> dict:
    """JSON Schema from ToolBench's parameters: ``optional`` dropped (implied), types normalized.

    ToolBench types are RapidAPI's (``STRING``, ``NUMBER``, ``ENUM``, ``DATE (YYYY-MM-DD)``...);
    anything that is not a JSON Schema type becomes ``string``, as ToolBench itself maps them.
    """
    if not isinstance(parameters, dict):
        return {"type": "object", "properties": {}}
    given = parameters.get("properties") or {}
    if not isinstance(given, dict):
        raise Unusable(f"API list entry {index}: 'properties' must be a mapping, "
                       f"got {json_type(given)}")
    required = parameters.get("required") or ()
    if not isinstance(required, (list, tuple)):
        raise Unusable(f"API list entry {index}: 'required' must be a list, got {json_type(required)}")
    properties = {}
    for name, spec in given.items():
        spec = dict(spec) if isinstance(spec, dict) else {}
        kind = str(spec.get("type", "string")).lower()
        spec["type"] = kind if kind in JSON_TYPES else "string"
        if "example_value" in spec:
            spec["examples"] = [spec.pop("example_value")]
        properties[str(name)] = spec
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    required = [name for name in required if isinstance(name, str) and name in properties]
    if required:
        schema["required"] = required
    return schema


def _assistant(value: str, where: str) -> dict:
    match = _REACT.match(value)
    if match is None:  # a plain reply with no action
        return {"role": "assistant", "content": value.strip()}
    thought = (match["thought"] or "").strip()
    action, raw = match["action"].strip(), match["input"]
    arguments = _arguments(raw)
    if action != FINISH:
        return {"role": "assistant", "content": thought,
                "tool_calls": [{"name": action, "arguments": arguments}]}
    if not isinstance(arguments, dict):
        raise Unusable(f"{where}: Finish arguments are not a JSON object")
    return_type = arguments.get("return_type")
    if return_type != "give_answer":
        raise Unusable(f"{where}: the conversation gives up (Finish return_type {return_type!r})")
    answer = arguments.get("final_answer")
    if not isinstance(answer, str) or not answer.strip():
        raise Unusable(f"{where}: Finish gives no final_answer")
    return {"role": "assistant", "content": answer.strip()}


def _arguments(raw: str) -> dict | str:
    """The parsed Action Input object, or the raw text where it is not a JSON object."""
    try:
        # strict=False: ToolBench final answers often hold raw newlines inside strings.
        parsed = json.loads(raw, strict=False)
    except (json.JSONDecodeError, RecursionError):
        return raw
    return parsed if isinstance(parsed, dict) else raw
