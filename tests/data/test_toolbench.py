"""ToolBench converter: API list, ReAct turns, Finish, rejects, streaming, shipped data."""

import io
import json
from pathlib import Path

import jsonschema
import pytest

from afs_build.data.readers import _list_items, read_json_list_rows
from afs_build.data.records import Reject, split_records
from afs_build.data.toolbench import convert_toolbench

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "specs" / "sample.schema.json").read_text())

APIS = [
    {
        "name": "read_memory_for_snes_memory",
        "description": 'This is the subfunction for tool "snes_memory".',
        "parameters": {
            "type": "object",
            "properties": {
                "address": {"type": "STRING", "description": "24-bit address", "example_value": "$7E0010"},
                "length": {"type": "NUMBER", "description": "bytes", "example_value": 2},
                "when": {"type": "DATE (YYYY-MM-DD)", "description": "odd RapidAPI type"},
                "raw": {"type": "boolean", "default": False, "note": None},
            },
            "required": ["address", "missing"],
            "optional": ["length", "when", "raw"],
        },
    },
    {"name": "Finish", "description": "End the task.",
     "parameters": {"type": "object", "properties": {"return_type": {"type": "string"}}, "required": []}},
]

SYSTEM = (
    "You are AutoGPT-like.\nUse the functions.\n\n"
    "Specifically, you have access to the following APIs: " + str(APIS)  # a Python literal
)


def instance(*turns, system=SYSTEM, id="q1"):
    conversations = [{"from": "system", "value": system}] if system is not None else []
    conversations += [{"from": speaker, "value": value} for speaker, value in turns]
    return {"id": id, "conversations": conversations}


def call(name, arguments, thought="I should read it."):
    args = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return "assistant", f"\nThought: {thought}\nAction: {name}\nAction Input: {args}"


def finish(answer, return_type="give_answer"):
    payload = {"return_type": return_type, "final_answer": answer}
    return "assistant", "\nThought: \nAction: Finish\nAction Input: " + json.dumps(payload, indent=2)


GOOD = instance(
    ("user", "\nWhat is at $7E0010?\nBegin!\n"),
    call("read_memory_for_snes_memory", {"address": "$7E0010", "length": 1}),
    ("function", '{"error": "", "response": "{\'bytes\': \'09\'}"}'),
    finish("$7E0010 holds $09."),
)


def write(tmp_path, items, name="tb.json", indent=2) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(items, indent=indent), encoding="utf-8")
    return path


def convert(path, **kwargs):
    return split_records(convert_toolbench(path, source="tb", **kwargs))


def test_converts_instance_to_tools_and_tool_calls(tmp_path):
    samples, rejects = convert(write(tmp_path, [GOOD]))
    assert rejects == []
    (sample,) = samples
    assert sample["messages"] == [
        {"role": "system", "content": "You are AutoGPT-like.\nUse the functions."},
        {"role": "user", "content": "What is at $7E0010?"},
        {"role": "assistant", "content": "I should read it.",
         "tool_calls": [{"name": "read_memory_for_snes_memory",
                         "arguments": {"address": "$7E0010", "length": 1}}]},
        {"role": "tool", "name": "read_memory_for_snes_memory",
         "content": '{"error": "", "response": "{\'bytes\': \'09\'}"}'},
        {"role": "assistant", "content": "$7E0010 holds $09."},
    ]
    assert sample["provenance"] == {"file": str(tmp_path / "tb.json"), "line": 2}
    assert sample["metadata"] == {"toolbench_id": "q1"}
    jsonschema.Draft202012Validator(SCHEMA).validate(sample)


def test_api_list_becomes_json_schema_tools_without_finish(tmp_path):
    (sample,), _ = convert(write(tmp_path, [GOOD]))
    assert sample["tools"] == [{
        "name": "read_memory_for_snes_memory",
        "description": 'This is the subfunction for tool "snes_memory".',
        "parameters": {
            "type": "object",
            "properties": {
                "address": {"type": "string", "description": "24-bit address", "examples": ["$7E0010"]},
                "length": {"type": "number", "description": "bytes", "examples": [2]},
                "when": {"type": "string", "description": "odd RapidAPI type"},
                "raw": {"type": "boolean", "default": False, "note": None},
            },
            "required": ["address"],
        },
    }]


def test_step_instance_ends_with_a_tool_call_and_raw_arguments_stay_text(tmp_path):
    step = instance(("user", "Read it"), call("read_memory_for_snes_memory", "address=$10", thought=""),
                    id="Step 2: Read it")
    (sample,), _ = convert(write(tmp_path, [step]))
    assert sample["messages"][-1] == {
        "role": "assistant", "content": "",
        "tool_calls": [{"name": "read_memory_for_snes_memory", "arguments": "address=$10"}],
    }


def test_prompt_without_api_list_keeps_system_and_has_no_tools(tmp_path):
    item = instance(("user", "Hi"), ("assistant", "Hello."), system="Be brief.")
    (sample,), _ = convert(write(tmp_path, [item]))
    assert "tools" not in sample
    assert sample["messages"] == [{"role": "system", "content": "Be brief."},
                                  {"role": "user", "content": "Hi"},
                                  {"role": "assistant", "content": "Hello."}]


def test_final_answer_with_raw_newlines_is_accepted(tmp_path):
    raw = '\nThought: \nAction: Finish\nAction Input: {"return_type": "give_answer", "final_answer": "a\nb"}'
    (sample,), _ = convert(write(tmp_path, [instance(("user", "q"), ("assistant", raw))]))
    assert sample["messages"][-1] == {"role": "assistant", "content": "a\nb"}


@pytest.mark.parametrize("item, reason", [
    ({"id": 1}, "missing field 'conversations'"),
    ([1, 2], "expected a JSON object, got array"),
    (instance(("user", "q"), finish("", "give_up_and_restart")),
     "conversations[2]: the conversation gives up (Finish return_type 'give_up_and_restart')"),
    (instance(("user", "q"), finish("  ")), "conversations[2]: Finish gives no final_answer"),
    (instance(("user", "q"), ("function", "{}")),
     "conversations[2]: a function result with no tool call before it"),
    (instance(("user", "q"), ("robot", "beep")),
     "conversations[2]: unknown speaker 'robot'; expected one of: "
     "['assistant', 'function', 'system', 'user']"),
    (instance(("user", "q")), "conversation has no assistant turn"),
    ({"conversations": [{"from": "user"}]}, "missing field 'conversations[0].value'"),
    (instance(("user", "q"), ("assistant", "x"), system="Specifically, you have access to the following APIs: [oops"),
     "API list is not a Python literal: '[' was never closed (<unknown>, line 1)"),
    (instance(("user", "q"), ("assistant", "x"),
              system="Specifically, you have access to the following APIs: [{'description': 'no name'}]"),
     "API list entry 0 has no name"),
])
def test_unusable_instances_are_rejected_with_reason_and_line(tmp_path, item, reason):
    path = write(tmp_path, [GOOD, item], indent=None)
    samples, rejects = convert(path)
    assert len(samples) == 1
    assert [(r.reason, r.file, r.line) for r in rejects] == [(reason, str(path), 1)]
    assert rejects[0].excerpt


@pytest.mark.parametrize("broken, reason", [
    ('{"id": 2,\n "conversations" []}', "malformed JSON: Expecting ':' delimiter"),
    ('{"id": 2,\n "conversations": [}', "malformed JSON: Expecting value"),  # a mismatched bracket
])
def test_malformed_item_is_rejected_at_its_line_and_the_rest_converts(tmp_path, broken, reason):
    good = json.dumps(GOOD)
    path = tmp_path / "tb.json"
    path.write_text(f"[\n{good},\n{broken},\n{good}\n]\n", encoding="utf-8")
    samples, rejects = convert(path)
    assert len(samples) == 2
    assert [(r.reason, r.line) for r in rejects] == [(reason, 4)]


def test_non_utf8_item_is_rejected_at_its_line(tmp_path):
    good = json.dumps(GOOD).encode()
    bad = b'{"id": 2,\n "conversations": [{"from": "user", "value": "caf\xe9"}]}'
    path = tmp_path / "tb.json"
    path.write_bytes(b"[\n" + good + b",\n" + bad + b",\n" + good + b"\n]")
    samples, rejects = convert(path)
    assert len(samples) == 2
    assert [(r.reason, r.line) for r in rejects] == [("not valid UTF-8 (byte 0xe9)", 4)]


def test_oversized_item_is_rejected_without_parsing(tmp_path):
    big = instance(("user", "x" * 5000), ("assistant", "ok"), system=None, id="big")
    samples, rejects = convert(write(tmp_path, [GOOD, big], indent=None), max_chars=4000)
    assert len(samples) == 1
    assert rejects[0].reason == "record longer than 4000 characters (max_chars)"
    assert rejects[0].line == 1
    assert rejects[0].detail["chars"] > 5000


@pytest.mark.parametrize("text, reason, line", [
    ('{"id": 1}', "expected a JSON list ('[') at the top level", 1),
    ("", "expected a JSON list ('[') at the top level", 1),
    ('[\n{"id": 1}\n{"id": 2}]', "malformed JSON list: unexpected '{' between items", 3),
    ('[\n{"id": 1},\n{"id": 2', "malformed JSON list: the file ends before the closing ']'", 3),
    ('[{"id": 1}]\nextra', "malformed JSON list: unexpected 'e' after the closing ']'", 2),
])
def test_broken_list_structure_ends_with_one_reject(tmp_path, text, reason, line):
    path = tmp_path / "tb.json"
    path.write_text(text, encoding="utf-8")
    records = list(convert_toolbench(path, source="tb"))
    assert isinstance(records[-1], Reject)
    assert (records[-1].reason, records[-1].line) == (reason, line)


@pytest.mark.parametrize("chunk_chars", [1, 2, 3, 7, 64, 1 << 20])
def test_list_scanner_matches_json_loads_for_any_chunk_size(chunk_chars):
    items = [{"a": "x]}\\\"{[", "b": [1, {"c": None}]}, "str,]", 3.5, [], {}, True, None,
             {"unicode": "é\u2028"}]
    text = json.dumps(items, indent=2)
    found = list(_list_items(io.StringIO(text), 10**9, chunk_chars))
    assert [json.loads(item) for _, item, _ in found] == items
    lines = text.split("\n")
    for line, item, _ in found:  # each item starts on the line reported
        assert item.split("\n")[0] in lines[line - 1]


def test_reader_streams_one_item_at_a_time(tmp_path):
    path = write(tmp_path, [GOOD] * 3)
    items = read_json_list_rows(path, source="tb", chunk_chars=16)
    line, first = next(items)  # the rest of the file is not read yet
    assert first == GOOD and line == 2


def test_missing_file_raises_at_call_time(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        convert_toolbench(tmp_path / "nope.json", source="tb")


def test_shipped_snes_tools_convert_and_validate():
    samples, rejects = convert(ROOT / "data" / "toolbench" / "snes-tools.json")
    assert rejects == []
    assert len(samples) == 67
    validator = jsonschema.Draft202012Validator(SCHEMA)
    for sample in samples:
        validator.validate(sample)
        assert sample["tools"] and all(tool["name"] != "Finish" for tool in sample["tools"])
    finished = [s for s in samples if "tool_calls" not in s["messages"][-1]]
    assert len(finished) == 63  # the other 4 are search steps ending in a call
    assert len({sample["id"] for sample in samples}) == len(samples)


def test_output_jsonl_loads_with_datasets(tmp_path):
    import datasets
    samples, _ = convert(ROOT / "data" / "toolbench" / "snes-tools.json")
    out = tmp_path / "out.jsonl"
    out.write_text("".join(json.dumps(s, sort_keys=True) + "\n" for s in samples), encoding="utf-8")
    loaded = datasets.load_dataset("json", data_files=str(out), split="train",
                                   cache_dir=str(tmp_path / "cache"))
    assert len(loaded) == len(samples)
    assert loaded[0]["messages"][1]["content"] == samples[0]["messages"][1]["content"]
