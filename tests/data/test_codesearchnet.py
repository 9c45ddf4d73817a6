"""CodeSearchNet converter: both directions, docstring cutting, filters, rejects, shipped data."""

import gzip
import json
from collections import Counter
from pathlib import Path

import jsonschema
import pytest

from afs_build.data.codesearchnet import PHRASINGS, convert_codesearchnet, without_docstring
from afs_build.data.records import split_records

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "specs" / "sample.schema.json").read_text())
SHIPPED = ROOT / "data" / "codesearchnet" / "python-debugging.jsonl.gz"

PY_CODE = '''def clamp(value, low, high):
    """Return value limited to the range [low, high].

    Raises ValueError when low > high.
    """
    if low > high:
        raise ValueError("empty range")
    return max(low, min(value, high))'''
PY_DOC = "Return value limited to the range [low, high].\n\nRaises ValueError when low > high."

JAVA_CODE = '''/**
 * Returns the larger of two ints.
 */
public static int max(int a, int b) {
    return a > b ? a : b;
}'''


def record(**overrides):
    base = {
        "repo": "example/tools", "path": "tools/num.py", "func_name": "clamp",
        "original_string": PY_CODE, "language": "python", "code": PY_CODE,
        "code_tokens": ["def", "clamp"], "docstring": PY_DOC, "docstring_tokens": ["Return"],
        "sha": "0" * 40, "url": "https://github.com/example/tools/blob/0/tools/num.py#L1-L8",
        "partition": "train",
    }
    base.update(overrides)
    return base


def write(tmp_path, lines, name="csn.jsonl") -> Path:
    path = tmp_path / name
    data = b"".join((line if isinstance(line, bytes) else
                     (line if isinstance(line, str) else json.dumps(line)).encode()) + b"\n"
                    for line in lines)
    if name.endswith(".gz"):
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def convert(paths, **kwargs):
    return split_records(convert_codesearchnet(paths, source="csn", **kwargs))


def test_record_becomes_doc2code_and_code2doc_pairs(tmp_path):
    path = write(tmp_path, [record()])
    samples, rejects = convert(path)
    assert rejects == []
    doc2code, code2doc = samples
    assert doc2code["metadata"] == {"language": "python", "direction": "doc2code",
                                    "partition": "train", "repo": "example/tools"}
    assert doc2code["messages"][1] == {"role": "assistant", "content": f"```python\n{PY_CODE}\n```"}
    assert PY_DOC in doc2code["messages"][0]["content"]
    assert "`clamp`" in doc2code["messages"][0]["content"]
    assert code2doc["messages"][1] == {"role": "assistant", "content": PY_DOC}
    question = code2doc["messages"][0]["content"]
    assert "Return value limited" not in question
    assert 'def clamp(value, low, high):\n    if low > high:' in question
    assert doc2code["provenance"] == {
        "file": str(path), "line": 1, "symbol": "clamp", "path": "tools/num.py",
        "url": "https://github.com/example/tools/blob/0/tools/num.py#L1-L8",
    }
    for sample in samples:
        jsonschema.Draft202012Validator(SCHEMA).validate(sample)


def test_phrasing_is_deterministic_and_varies_across_records(tmp_path):
    lines = [record(func_name=f"clamp_{i}", code=PY_CODE.replace("clamp", f"clamp_{i}"))
             for i in range(30)]
    path = write(tmp_path, lines)
    first, _ = convert(path)
    again, _ = convert(path)
    assert [s["id"] for s in first] == [s["id"] for s in again]
    openings = {s["messages"][0]["content"].split("`")[0] for s in first}
    assert len(openings) == len(PHRASINGS["doc2code"]) + len(PHRASINGS["code2doc"])


def test_methods_are_named_as_methods(tmp_path):
    samples, _ = convert(write(tmp_path, [record(func_name="Range.clamp")]), directions=["doc2code"])
    assert "method `Range.clamp`" in samples[0]["messages"][0]["content"]


def test_filters_language_partition_and_direction(tmp_path):
    path = write(tmp_path, [
        record(),
        record(partition="valid"),
        record(partition="test"),
        record(language="java", code=JAVA_CODE, docstring="Returns the larger of two ints."),
    ])
    assert len(convert(path)[0]) == 4  # python train and java train, both directions
    assert len(convert(path, languages=["python"])[0]) == 2
    held_out, _ = convert(path, partitions=("valid", "test"), directions=("code2doc",))
    assert [s["metadata"]["partition"] for s in held_out] == ["valid", "test"]


def test_java_doc_comment_is_cut_from_the_code(tmp_path):
    path = write(tmp_path, [record(language="java", code=JAVA_CODE, func_name="Util.max",
                                   docstring="Returns the larger of two ints.")])
    (sample,), _ = convert(path, directions=["code2doc"])
    assert sample["messages"][0]["content"].endswith(
        "```java\npublic static int max(int a, int b) {\n    return a > b ? a : b;\n}\n```")


@pytest.mark.parametrize("code, doc, expected", [
    ("def f():\n    '''Do it now please.'''\n    return 1", "Do it now please.", "def f():\n    return 1"),
    ("def f():\n    # Adds one to x here.\n    # Really.\n    return 1", "Adds one to x here.\nReally.",
     "def f():\n    return 1"),
    ("func Max(a, b int) int {\n\treturn a\n}", "Max returns the larger value.",
     "func Max(a, b int) int {\n\treturn a\n}"),
])
def test_without_docstring(code, doc, expected):
    assert without_docstring(code, doc) == expected


def test_docstring_that_shares_a_line_rejects_only_code2doc(tmp_path):
    code = 'def f(): """Return the answer to everything."""; return 42'
    path = write(tmp_path, [record(code=code, docstring="Return the answer to everything.")])
    samples, rejects = convert(path)
    assert [s["metadata"]["direction"] for s in samples] == ["doc2code"]
    assert [(r.reason, r.line, r.detail) for r in rejects] == [
        ("docstring could not be cut from the code (code2doc skipped)", 1, {"direction": "code2doc"})]


def test_rejects_carry_exact_reasons_and_lines(tmp_path):
    bare = record()
    del bare["docstring"], bare["code"]
    path = write(tmp_path, [
        record(),                                   # 1
        record(docstring="   "),                    # 2
        '{"repo": "x", "code": ',                  # 3
        bare,                                       # 4
        b'{"docstring": "caf\xe9"}',                # 5
        "",                                         # 6 (blank lines are skipped)
        record(code=7),                             # 7
        "[1, 2]",                                   # 8
        record(code="   "),                         # 9
    ])
    samples, rejects = convert(path)
    assert len(samples) == 2
    assert [(r.reason, r.line) for r in rejects] == [
        ("empty docstring", 2),
        ("malformed JSON: Expecting value", 3),
        ("missing fields 'code', 'docstring'", 4),
        ("not valid UTF-8 (byte 0xe9)", 5),
        ("field 'code': expected text, got number", 7),
        ("expected a JSON object, got array", 8),
        ("empty code", 9),
    ]
    assert all(r.file == str(path) and r.source == "csn" for r in rejects)


def test_oversized_lines_are_rejected_and_skipped(tmp_path):
    huge = record(code="x = 1\n" * 2000)  # far past the limit: skipped unread
    near = record(docstring="é" * 900)  # within the byte bound, over max_chars once decoded
    samples, rejects = convert(write(tmp_path, [huge, near, record()]), max_chars=1000)
    assert len(samples) == 2
    assert [(r.reason, r.line) for r in rejects] == [
        ("record longer than 1000 characters (max_chars)", 1),
        ("record longer than 1000 characters (max_chars)", 2),
    ]


def test_reads_gzip_and_several_files(tmp_path):
    plain = write(tmp_path, [record()], "a.jsonl")
    packed = write(tmp_path, [record(), record(func_name="other")], "b.jsonl.gz")
    samples, _ = convert([plain, packed], directions=["doc2code"])
    assert [(Path(s["provenance"]["file"]).name, s["provenance"]["line"]) for s in samples] == [
        ("a.jsonl", 1), ("b.jsonl.gz", 1), ("b.jsonl.gz", 2)]


def test_corrupt_gzip_is_rejected_not_raised(tmp_path):
    path = tmp_path / "bad.jsonl.gz"
    path.write_bytes(gzip.compress(json.dumps(record()).encode() + b"\n")[:-12])
    records = list(convert_codesearchnet(path, source="csn"))
    assert records[-1].reason.startswith("unreadable file: ")


def test_bad_arguments_and_missing_files_raise_before_reading(tmp_path):
    with pytest.raises(ValueError, match=r"direction: expected one of: \['doc2code', 'code2doc'\] "
                                         r"but received: 'doc2cod'; did you mean 'doc2code'\?"):
        convert_codesearchnet([], source="csn", directions=["doc2cod"])
    with pytest.raises(ValueError, match="language: .* but received: 'pyhton'; did you mean 'python'"):
        convert_codesearchnet([], source="csn", languages=["pyhton"])
    with pytest.raises(FileNotFoundError, match="missing.jsonl.gz"):
        convert_codesearchnet([tmp_path / "missing.jsonl.gz"], source="csn")


def test_shipped_python_debugging_converts_and_validates():
    samples, rejects = convert(SHIPPED)
    assert rejects == []
    assert len(samples) == 222  # 111 train records, both directions
    validator = jsonschema.Draft202012Validator(SCHEMA)
    for sample in samples:
        validator.validate(sample)
    assert Counter(s["metadata"]["direction"] for s in samples) == {"doc2code": 111, "code2doc": 111}
    for sample in samples:
        if sample["metadata"]["direction"] == "code2doc":
            first_line = sample["messages"][1]["content"].splitlines()[0]
            assert first_line not in sample["messages"][0]["content"]
    held_out, _ = convert(SHIPPED, partitions=["valid", "test"])
    assert len(held_out) == 24


def test_output_jsonl_loads_with_datasets(tmp_path):
    import datasets
    samples, _ = convert(SHIPPED)
    out = tmp_path / "out.jsonl"
    out.write_text("".join(json.dumps(s, sort_keys=True) + "\n" for s in samples), encoding="utf-8")
    loaded = datasets.load_dataset("json", data_files=str(out), split="train",
                                   cache_dir=str(tmp_path / "cache"))
    assert len(loaded) == len(samples)
    assert loaded[5]["metadata"]["direction"] == samples[5]["metadata"]["direction"]
