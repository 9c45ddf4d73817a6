"""The synthetic converter: facts through Jinja templates, and the optional teacher model."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jsonschema
import pytest

from afs_build.data.records import split_records
from afs_build.data.synthetic import (
    FactsError,
    TeacherConfig,
    TeacherError,
    TemplateError,
    convert_synthetic,
    load_templates,
)

REPO = Path(__file__).resolve().parents[2]
VALIDATOR = jsonschema.Draft202012Validator(json.loads((REPO / "specs/sample.schema.json").read_text()))
SHIPPED = {"snes-hardware": 1180, "asm-65816": 910, "optimization": 880, "debugging": 630}

FACTS = """\
- topic: ppu
  register: INIDISP
  address: "$2100"
  answer: Forced blank and brightness.
- topic: dma
  register: MDMAEN
  address: "$420B"
  answer: Starts DMA on the channels whose bits are set.
- topic: ppu
  subject: VRAM
  answer: 64 KiB of video memory.
- register: HDMAEN
  address: null
  answer: Enables HDMA.
"""

TEMPLATES = """\
- name: register
  when: [register, address]
  system: You are a SNES hardware expert.
  questions:
    - "What does {{ register }} do?"
    - "What is at {{ address }}?"
    - "Explain {{ register }} ({{ address }})."
  answer: "{{ register }} ({{ address }}): {{ answer }}"
- name: concept
  when: subject
  questions: ["What is {{ subject }}?", "Explain {{ subject }}."]
  answer: "{{ answer }}"
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def convert(facts: Path, templates: Path, **options) -> tuple[list[dict], list]:
    return split_records(convert_synthetic(facts, templates, source="snes", **options))


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    return write(tmp_path / "facts.yaml", FACTS), write(tmp_path / "templates.yaml", TEMPLATES)


def test_each_fact_template_and_paraphrase_becomes_a_sample(files):
    facts, templates = files
    samples, rejects = convert(facts, templates)
    assert rejects == []
    assert [s["messages"][-2]["content"] for s in samples] == [
        "What does INIDISP do?", "What is at $2100?", "Explain INIDISP ($2100).",
        "What does MDMAEN do?", "What is at $420B?", "Explain MDMAEN ($420B).",
        "What is VRAM?", "Explain VRAM.",
    ]  # HDMAEN has address: null, so the register template does not apply to it
    first = samples[0]
    assert first["messages"] == [
        {"role": "system", "content": "You are a SNES hardware expert."},
        {"role": "user", "content": "What does INIDISP do?"},
        {"role": "assistant", "content": "INIDISP ($2100): Forced blank and brightness."},
    ]
    assert first["provenance"] == {"file": str(facts), "line": 1, "generator": "template:register"}
    assert first["metadata"] == {"kind": "synthetic", "template": "register", "paraphrase": 0, "topic": "ppu"}
    assert samples[6]["provenance"]["line"] == 9
    assert samples[6]["messages"] == [{"role": "user", "content": "What is VRAM?"},
                                      {"role": "assistant", "content": "64 KiB of video memory."}]
    for sample in samples:
        VALIDATOR.validate(sample)


def test_paraphrases_are_capped_and_chosen_by_seed(files, tmp_path: Path):
    facts, templates = files
    picks = lambda seed: [(s["provenance"]["line"], s["metadata"]["paraphrase"])  # noqa: E731
                          for s in convert(facts, templates, seed=seed, paraphrases=2)[0]]
    assert picks(1) == picks(1)
    assert len(picks(1)) == 6
    assert {line for line, _ in picks(1)} == {1, 5, 9}
    assert any(picks(seed) != picks(1) for seed in range(2, 12))
    # A fact's choice depends on its content, not its position: adding a fact changes nothing else.
    more = write(tmp_path / "more.yaml", "- register: TM\n  address: \"$212C\"\n  answer: Main screen.\n" + FACTS)
    moved = {(s["messages"][-2]["content"]) for s in convert(more, templates, seed=1, paraphrases=2)[0]}
    kept = {(s["messages"][-2]["content"]) for s in convert(facts, templates, seed=1, paraphrases=2)[0]}
    assert kept < moved
    with pytest.raises(ValueError, match=r"^paraphrases must be at least 1 \(or None for all\), got 0$"):
        list(convert_synthetic(facts, templates, source="snes", paraphrases=0))


def test_csv_facts_and_bad_entries_are_rejected(tmp_path: Path):
    templates = write(tmp_path / "templates.yaml", TEMPLATES)
    facts = write(tmp_path / "facts.csv", 'register,address,answer\nINIDISP,$2100,"Brightness, blanking."\n'
                                          "MDMAEN,,Starts DMA.\n\nHDMAEN,$420C,Enables HDMA.,extra\n")
    samples, rejects = convert(facts, templates, paraphrases=1)
    assert [(s["provenance"]["line"], s["messages"][-1]["content"]) for s in samples] == [
        (2, "INIDISP ($2100): Brightness, blanking.")]
    assert [r.to_json() for r in rejects] == [{
        "source": "snes", "reason": "row has 4 fields, the header has 3", "file": str(facts), "line": 5,
        "excerpt": "HDMAEN,$420C,Enables HDMA.,extra"}]
    blank = write(tmp_path / "blank.yaml", "- name: t\n  questions: ['{{ register }}', '  ']\n  answer: '{{ address | default(\"\") }}'\n")
    _, rejects = convert(facts, blank)
    assert [(r.reason, r.line) for r in rejects] == [
        ("template 't' rendered an empty question (questions[1])", 2),
        ("template 't' rendered an empty answer", 3),  # MDMAEN's blank address cell is absent
        ("row has 4 fields, the header has 3", 5)]
    listed = write(tmp_path / "list.yaml", "- just a string\n- register: TM\n  address: x\n  answer: y\n")
    _, rejects = convert(listed, templates)
    assert [(r.reason, r.line, r.excerpt) for r in rejects] == [("fact is not a mapping: got a string", 1,
                                                                 '"just a string"')]


@pytest.mark.parametrize("text, message", [
    ("name: x\n", "{t}: expected a list of templates, got a mapping"),
    ("- name: t\n  questions: [q]\n  answr: a\n",
     "{t}:1: template 't': unknown key 'answr' (did you mean 'answer'?); "
     "expected one of: 'answer', 'name', 'questions', 'system', 'when'"),
    ("- name: t\n  questions: [q]\n", "{t}:1: template 't': missing key 'answer'"),
    ("- name: t\n  questions: []\n  answer: a\n", "{t}:1: template 't': 'questions' must be a non-empty list of strings"),
    ("- name: t\n  questions: [q]\n  answer: a\n- name: t\n  questions: [q]\n  answer: a\n",
     "{t}:4: template 't': duplicate template name"),
    ("- name: t\n  questions: ['ok', '{{ x }']\n  answer: a\n",
     "{t}:1: template 't': syntax error in questions[1]: unexpected '}' (line 1 of the template text)"),
    ("- [not, a, mapping]\n", "{t}:1: template #1: expected a mapping with keys name, questions, answer, got a list"),
    ("- name: t\n  questions: [q\n", "{t}:3:1: invalid YAML: expected ',' or ']', but got '<stream end>'"),
])
def test_template_file_errors_name_file_template_and_problem(tmp_path: Path, text: str, message: str):
    templates = write(tmp_path / "templates.yaml", text)
    with pytest.raises(TemplateError) as caught:
        load_templates(templates)
    assert str(caught.value) == message.replace("{t}", str(templates))
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("answer, problem", [
    ("{{ adress }}", "'adress' is undefined in answer"),
    ("{{ answer.__class__ }}", "access to attribute '__class__' of 'str' object is unsafe. in answer"),
])
def test_render_errors_name_template_and_fact(files, answer: str, problem: str):
    facts, _ = files
    templates = write(facts.parent / "bad.yaml", f"- name: t\n  questions: [q]\n  answer: '{answer}'\n")
    with pytest.raises(TemplateError) as caught:
        list(convert_synthetic(facts, templates, source="snes"))
    assert str(caught.value) == f"{templates}:1: template 't': {problem} (rendering the fact at {facts}:1)"


def test_missing_inputs_are_named(tmp_path: Path, files):
    facts, templates = files
    mapping = write(tmp_path / "mapping.yaml", "register: INIDISP\n")
    with pytest.raises(FactsError, match=f"^{mapping}: expected a list of facts \\(mappings\\), got a mapping$"):
        list(convert_synthetic(mapping, templates, source="snes"))
    text = write(tmp_path / "facts.txt", "INIDISP\n")
    with pytest.raises(FactsError, match=f"^{text}: facts must be a .yaml, .yml, .json or .csv file, got '.txt'$"):
        list(convert_synthetic(text, templates, source="snes"))
    with pytest.raises(FileNotFoundError, match="^facts file not found: .*nope.yaml$"):
        list(convert_synthetic(tmp_path / "nope.yaml", templates, source="snes"))
    with pytest.raises(FileNotFoundError, match="^templates file not found: .*nope.yaml$"):
        list(convert_synthetic(facts, tmp_path / "nope.yaml", source="snes"))


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_fact_files_render_and_validate(name: str):
    folder = REPO / "data" / "synthetic"
    samples, rejects = convert(folder / f"{name}.yaml", folder / "templates.yaml")
    assert rejects == []
    assert len(samples) == SHIPPED[name]
    assert len({s["id"] for s in samples}) == len(samples)
    templates_of_fact: dict[int, set] = {}
    for sample in samples:
        templates_of_fact.setdefault(sample["provenance"]["line"], set()).add(sample["metadata"]["template"])
    # `when` fields do not overlap, but for the optimization patterns, asked both by what they
    # do (optimization-pattern) and by the problem they solve (optimization-problem)
    per_fact = 2 if name == "optimization" else 1
    assert all(len(names) == per_fact for names in templates_of_fact.values()), templates_of_fact
    for sample in samples:
        VALIDATOR.validate(sample)
        assert sample["messages"][-1]["content"].strip() and "{{" not in sample["messages"][-1]["content"]


# --- teacher ---------------------------------------------------------------------------------

KEY = "sk-test-7f3a9c"


class Teacher:
    """A tiny OpenAI-compatible chat-completions server on 127.0.0.1, recording each request."""

    def __init__(self):
        self.requests: list[dict] = []
        self.status = 200
        self.reply: bytes | None = None
        teacher = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                teacher.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                if teacher.status != 200:
                    payload = json.dumps({"error": f"bad key {self.headers.get('Authorization')}"}).encode()
                else:
                    question = body["messages"][-1]["content"]
                    payload = teacher.reply or json.dumps({"choices": [{"index": 0, "message": {
                        "role": "assistant", "content": f"Teacher on: {question}"}}]}).encode()
                self.send_response(teacher.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def teacher(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AFS_TEACHER_KEY", KEY)
    server = Teacher()
    yield server
    server.server.shutdown()
    server.server.server_close()


def test_teacher_answers_are_cached_and_the_key_is_never_written(teacher, files, tmp_path: Path):
    facts, templates = files
    config = TeacherConfig(base_url=teacher.url, model="tiny-teacher", api_key_env="AFS_TEACHER_KEY",
                           temperature=0.0, max_tokens=64, timeout=10)
    cache = tmp_path / "cache"
    samples, rejects = convert(facts, templates, teacher=config, cache_dir=cache)
    assert rejects == [] and len(samples) == 8
    assert len(teacher.requests) == 8
    request = teacher.requests[0]
    assert request["path"] == "/v1/chat/completions"
    assert request["auth"] == f"Bearer {KEY}"
    assert request["body"] == {"model": "tiny-teacher", "temperature": 0.0, "max_tokens": 64, "messages": [
        {"role": "system", "content": "You are a SNES hardware expert."},
        {"role": "user", "content": "What does INIDISP do?"}]}
    assert samples[0]["messages"][-1] == {"role": "assistant", "content": "Teacher on: What does INIDISP do?"}
    assert samples[0]["provenance"]["generator"] == "teacher:tiny-teacher"
    assert samples[0]["metadata"]["teacher"] == "tiny-teacher"
    again, _ = convert(facts, templates, teacher=config, cache_dir=cache)
    assert len(teacher.requests) == 8  # every answer came from the cache
    assert again == samples
    assert len(list(cache.glob("*.json"))) == 8
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
    assert KEY not in json.dumps(samples)


def test_teacher_errors_name_the_endpoint_not_the_key(teacher, files, monkeypatch):
    facts, templates = files
    config = TeacherConfig(base_url=teacher.url, model="tiny-teacher", api_key_env="AFS_TEACHER_KEY")
    teacher.status = 401
    with pytest.raises(TeacherError) as caught:
        list(convert_synthetic(facts, templates, source="snes", teacher=config))
    assert str(caught.value) == (f"teacher request to {teacher.url}/chat/completions failed: HTTP 401 Unauthorized: "
                                 '{"error": "bad key Bearer ***"}')
    teacher.status, teacher.reply = 200, b'{"choices": []}'
    with pytest.raises(TeacherError) as caught:
        list(convert_synthetic(facts, templates, source="snes", teacher=config))
    assert str(caught.value) == (f"teacher at {teacher.url}/chat/completions returned an unexpected response "
                                 '(expected choices[0].message.content): {"choices": []}')
    monkeypatch.delenv("AFS_TEACHER_KEY")
    with pytest.raises(TeacherError) as caught:
        list(convert_synthetic(facts, templates, source="snes", teacher=config))
    assert str(caught.value) == (f"teacher 'tiny-teacher' at {teacher.url}/chat/completions: environment variable "
                                 "AFS_TEACHER_KEY (api_key_env) is not set")
