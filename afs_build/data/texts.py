"""The text of a sample as the data stages read it: instruction, answer, and every field.

Dedup and decontamination compare instructions and answers; the secrets gate reads every
field a sample carries (system prompt, turns, tool calls, tool definitions), each with a name
that says where in the sample it is.
"""

from __future__ import annotations

from typing import Iterator

from afs_build.data.records import canonical_json


def sample_texts(sample: dict) -> tuple[str, str]:
    """The instruction (user turns) and answer (assistant turns and tool calls) of a sample.

    Turns are joined with newlines; system and tool-result turns belong to neither. A tool call
    reads as ``name(arguments)`` so an answer that only calls tools is not empty.
    """
    user: list[str] = []
    assistant: list[str] = []
    for message in sample["messages"]:
        role = message["role"]
        if role == "user":
            user.append(message["content"])
        elif role == "assistant":
            if message["content"]:
                assistant.append(message["content"])
            for call in message.get("tool_calls") or ():
                assistant.append(call_text(call))
    return "\n".join(user), "\n".join(assistant)


def call_text(call: dict) -> str:
    """A tool call as ``name(arguments)``, the arguments as canonical JSON."""
    arguments = call.get("arguments")
    if not isinstance(arguments, str):
        arguments = canonical_json(arguments)
    return f"{call.get('name', '')}({arguments})"


def sample_fields(sample: dict) -> Iterator[tuple[str, str]]:
    """Every text of a sample with where it is: ``("messages[2].content", text)``, ...

    Tool calls and tool definitions are read as canonical JSON, so a key in them reads as
    ``"name":"value"``.
    """
    for index, message in enumerate(sample["messages"]):
        if message["content"]:
            yield f"messages[{index}].content", message["content"]
        for number, call in enumerate(message.get("tool_calls") or ()):
            yield f"messages[{index}].tool_calls[{number}]", call_text(call)
    for index, tool in enumerate(sample.get("tools") or ()):
        yield f"tools[{index}]", canonical_json(tool)
