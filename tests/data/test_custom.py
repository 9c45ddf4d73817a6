"""Custom converter: alpaca, sharegpt and messages forms from JSONL, JSON, CSV, Parquet and
a hub-style data set folder; field maps, rejects and the shipped files."""

import csv
import json
from pathlib import Path

import jsonschema
import pytest

from afs_build.data.custom import convert_custom, convert_custom_hub
from afs_build.data.readers import read_csv_rows
from afs_build.data.records import split_records

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "specs" / "sample.schema.json").read_text())


def jsonl(tmp_path, rows, name="data.jsonl") -> Path:
    path = tmp_path / name
    path.write_bytes(b"".join((row if isinstance(row, bytes) else
                               (row if isinstance(row, str) else json.dumps(row)).encode()) + b"\n"
                              for row in rows))
    return path


def convert(path, **kwargs):
    return split_records(convert_custom(path, source="custom", **kwargs))


def messages(samples):
    return [sample["messages"] for sample in samples]


def test_alpaca_with_field_map_input_and_system(tmp_path):
    path = jsonl(tmp_path, [
        {"question": "Capital of France?", "answer": "Paris."},
        {"question": "Translate.", "context": "cat", "answer": "chat", "sys": "Be brief."},
    ])
    samples, rejects = convert(path, format="alpaca",
                               fields={"instruction": "question", "output": "answer",
                                       "input": "context", "system": "sys"})
    assert rejects == []
    assert messages(samples) == [
        [{"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Paris."}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Translate.\n\ncat"},
         {"role": "assistant", "content": "chat"}],
    ]
    assert samples[1]["provenance"] == {"file": str(path), "line": 2}
    assert samples[1]["metadata"] == {"format": "alpaca"}


def test_sharegpt_json_list_with_field_map_and_roles(tmp_path):
    dialog = [
        {"speaker": "system", "text": "Be helpful."},
        {"speaker": "human", "text": "Read $7E0010."},
        {"speaker": "function_call", "text": json.dumps({"name": "read", "arguments": {"a": "$7E0010"}})},
        {"speaker": "observation", "text": "09"},
        {"speaker": "gpt", "text": "It holds $09."},
        {"speaker": "function", "text": "late result"},
    ]
    path = tmp_path / "chats.json"
    path.write_text(json.dumps([{"dialog": dialog}], indent=2), encoding="utf-8")
    samples, rejects = convert(path, format="sharegpt",
                               fields={"conversations": "dialog", "from": "speaker", "value": "text"})
    assert rejects == []
    assert messages(samples) == [[
        {"role": "system", "content": "Be helpful."},
        {"role": "user", "content": "Read $7E0010."},
        {"role": "assistant", "content": "", "tool_calls": [{"name": "read", "arguments": {"a": "$7E0010"}}]},
        {"role": "tool", "name": "read", "content": "09"},
        {"role": "assistant", "content": "It holds $09."},
        {"role": "tool", "name": "read", "content": "late result"},
    ]]
    assert samples[0]["provenance"]["line"] == 2


def test_messages_form_accepts_openai_tool_calls_and_tools(tmp_path):
    row = {
        "messages": [
            {"role": "user", "content": "Assemble NOP."},
            {"role": "assistant", "content": None, "tool_calls": [
                {"type": "function", "function": {"name": "asm", "arguments": '{"source": "NOP"}'}}]},
            {"role": "tool", "name": "asm", "content": "EA"},
            {"role": "assistant", "content": "NOP is $EA."},
        ],
        "tools": [{"type": "function", "function": {"name": "asm", "description": "Assemble.",
                                                    "parameters": {"type": "object", "properties": {}}}}],
    }
    samples, rejects = convert(jsonl(tmp_path, [row]), format="messages")
    assert rejects == []
    (sample,) = samples
    assert sample["messages"][1] == {"role": "assistant", "content": "",
                                     "tool_calls": [{"name": "asm", "arguments": {"source": "NOP"}}]}
    assert sample["messages"][2] == {"role": "tool", "content": "EA", "name": "asm"}
    assert sample["tools"] == [{"name": "asm", "description": "Assemble.",
                                "parameters": {"type": "object", "properties": {}}}]
    jsonschema.Draft202012Validator(SCHEMA).validate(sample)


def test_csv_rows_with_multiline_cells_and_json_cells(tmp_path):
    path = tmp_path / "data.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["instruction", "output"])
        writer.writerow(["Two\nlines", "ok"])
        writer.writerow(["Next", "fine"])
    samples, _ = convert(path, format="alpaca")
    assert [(s["provenance"]["line"], s["messages"][0]["content"]) for s in samples] == [
        (2, "Two\nlines"), (4, "Next")]

    chats = tmp_path / "chats.csv"
    turns = [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]
    with chats.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([["conversations"], [json.dumps(turns)]])
    samples, _ = convert(chats, format="sharegpt")
    assert messages(samples) == [[{"role": "user", "content": "Hi"},
                                  {"role": "assistant", "content": "Hello"}]]


def test_parquet_is_read_in_batches(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    path = tmp_path / "data.parquet"
    table = pa.table({"instruction": [f"q{i}" for i in range(5)], "output": [f"a{i}" for i in range(5)]})
    pq.write_table(table, path, row_group_size=2)
    samples, _ = convert(path, format="alpaca")
    assert [(s["provenance"]["line"], s["messages"][1]["content"]) for s in samples] == [
        (i + 1, f"a{i}") for i in range(5)]


def test_rejects_carry_exact_reasons_and_lines(tmp_path):
    path = jsonl(tmp_path, [
        {"question": "q", "answer": "a"},             # 1: fine
        {"question": "q"},                           # 2
        {"question": "q", "answer": "  "},           # 3
        '{"question": "q", "answer": ',             # 4
        b'{"question": "caf\xe9", "answer": "a"}',   # 5
        "[1]",                                       # 6
        {"question": 3, "answer": "a"},              # 7
        {"question": "q" * 300, "answer": "a"},      # 8
    ])
    samples, rejects = convert(path, format="alpaca", max_chars=200,
                               fields={"instruction": "question", "output": "answer"})
    assert len(samples) == 1
    assert [(r.reason, r.line) for r in rejects] == [
        ("missing field 'answer' (for 'output')", 2),
        ("empty field 'answer' (for 'output')", 3),
        ("malformed JSON: Expecting value", 4),
        ("not valid UTF-8 (byte 0xe9)", 5),
        ("expected a JSON object, got array", 6),
        ("field 'question' (for 'instruction'): expected text, got number", 7),
        ("record longer than 200 characters (max_chars)", 8),
    ]
    assert all(r.file == str(path) for r in rejects)


@pytest.mark.parametrize("row, reason", [
    ({"conversations": [{"from": "robot", "value": "x"}]},
     "conversations[0]: unknown speaker 'robot'; expected one of: ['assistant', 'function', "
     "'function_call', 'gpt', 'human', 'observation', 'system', 'tool', 'user']"),
    ({"conversations": [{"from": "human", "value": "only a question"}]}, "conversation has no assistant turn"),
    ({"conversations": [{"from": "human"}]}, "missing field 'conversations[0].value'"),
    ({"conversations": []}, "empty field 'conversations'"),
    ({"conversations": "not a list"}, "field 'conversations': expected a list, got string"),
    ({}, "missing field 'conversations'"),
    ({"conversations": [{"from": "function_call", "value": "nope"}]},
     "conversations[0]: function_call value is not JSON"),
])
def test_sharegpt_rejects(tmp_path, row, reason):
    samples, rejects = convert(jsonl(tmp_path, [row]), format="sharegpt")
    assert samples == []
    assert [(r.reason, r.line) for r in rejects] == [(reason, 1)]


def test_messages_reject_unknown_role(tmp_path):
    row = {"messages": [{"role": "narrator", "content": "x"}]}
    _, (reject,) = convert(jsonl(tmp_path, [row]), format="messages")
    assert reject.reason == ("messages[0]: unknown role 'narrator'; "
                             "expected one of: ['system', 'user', 'assistant', 'tool']")


def test_non_utf8_csv_row_is_rejected_and_reading_goes_on(tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes(b"instruction,output\nq1,a1\ncaf\xe9,a2\nq3,a3\n")
    records = list(read_csv_rows(path, source="custom"))
    assert [record[0] for record in records if isinstance(record, tuple)] == [2, 4]
    (reject,) = [record for record in records if not isinstance(record, tuple)]
    assert (reject.reason, reject.line) == ("not valid UTF-8 (byte 0xe9)", 3)


def test_bad_arguments_raise_before_reading(tmp_path):
    path = jsonl(tmp_path, [{}])
    with pytest.raises(ValueError, match=r"format: expected one of: \['alpaca', 'messages', 'sharegpt'\] "
                                         r"but received: 'alpacca'; did you mean 'alpaca'\?"):
        convert_custom(path, source="custom", format="alpacca")
    with pytest.raises(ValueError, match="field of format 'alpaca': .* but received: 'outptu'"):
        convert_custom(path, source="custom", format="alpaca", fields={"outptu": "answer"})
    with pytest.raises(ValueError, match=r"file type: expected one of: .* but received: '\.txt'"):
        convert_custom(tmp_path / "data.txt", source="custom", format="alpaca")
    with pytest.raises(FileNotFoundError, match="absent.jsonl"):
        convert_custom(tmp_path / "absent.jsonl", source="custom", format="alpaca")


def test_hub_loader_reads_a_local_dataset_folder_like_a_hub_id(tmp_path):
    import datasets  # noqa: F401
    folder = tmp_path / "my-dataset"
    folder.mkdir()
    rows = [{"q": f"question {i}", "a": f"answer {i}"} for i in range(3)]
    jsonl(folder, rows, "train.jsonl")
    fields = {"instruction": "q", "output": "a"}
    samples, rejects = split_records(convert_custom_hub(str(folder), source="custom", format="alpaca",
                                                        fields=fields, split="train"))
    assert rejects == []
    local, _ = convert(folder / "train.jsonl", format="alpaca", fields=fields)
    assert messages(samples) == messages(local)
    assert [s["id"] for s in samples] == [s["id"] for s in local]
    assert samples[2]["provenance"] == {"file": str(folder), "line": 3}
    assert samples[0]["metadata"] == {"format": "alpaca", "split": "train"}


def test_shipped_files_convert_and_validate():
    validator = jsonschema.Draft202012Validator(SCHEMA)
    for name, format, count in [("general-chat.jsonl", "alpaca", 126),
                                ("debugging-sharegpt.json", "sharegpt", 60)]:
        samples, rejects = convert(ROOT / "data" / "custom" / name, format=format)
        assert rejects == []
        assert len(samples) == count
        for sample in samples:
            validator.validate(sample)
            assert sample["messages"][-1]["role"] == "assistant"


def test_output_jsonl_loads_with_datasets(tmp_path):
    import datasets
    samples, _ = convert(ROOT / "data" / "custom" / "debugging-sharegpt.json", format="sharegpt")
    out = tmp_path / "out.jsonl"
    out.write_text("".join(json.dumps(s, sort_keys=True) + "\n" for s in samples), encoding="utf-8")
    loaded = datasets.load_dataset("json", data_files=str(out), split="train",
                                   cache_dir=str(tmp_path / "cache"))
    assert len(loaded) == 60
    assert loaded[0]["messages"][0]["role"] == "system"
