"""Ollama Modelfiles: a round trip through Ollama's parsing rules, template families, and
values a Modelfile cannot carry. The golden Modelfile is rendered through the stage
(test_stage.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from afs_build.deploy import ollama
from afs_build.errors import StageError
from afs_build.paths import Layout
from deploy_helpers import shared_tiny_gguf, write_manifest
from tinymodel import CHAT_TEMPLATE

SYSTEM = 'You are Majora, keeper of "quests".\n\tAnswer in one line; never say """ inline.'

LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|start_header_id|>{{ message['role'] }}"
    "<|end_header_id|>\n\n{{ message['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    return shared_tiny_gguf(tmp_path_factory)


def parse_modelfile(text: str) -> list[tuple[str, str]]:
    """A port of Ollama's ``parser.ParseFile`` (ollama/ollama, parser/parser.go): the commands.

    Kept rune for rune, so what it reads is what ``ollama create`` reads.
    """
    valid = {"from", "license", "template", "system", "adapter", "draft", "renderer", "parser",
             "parameter", "message", "requires"}
    commands: list[tuple[str, str]] = []
    state, buf, name = "nil", [], ""

    def unquote(s: str) -> tuple[str, bool]:
        if s[:3] == '"""':
            return (s[3:-3], True) if len(s) >= 6 and s[-3:] == '"""' else ("", False)
        if s[:1] == '"':
            return (s[1:-1], True) if len(s) >= 2 and s[-1] == '"' else ("", False)
        return s, True

    for r in text:
        space, newline = r in " \t", r in "\r\n"
        if state == "nil":
            nxt, keep = ("comment", "") if r == "#" else ("nil", "") if space or newline \
                else ("name", r)
        elif state == "name":
            if r.isascii() and r.isalpha():
                nxt, keep = "name", r
            elif space:
                nxt, keep = "value", ""
            else:
                raise ValueError("invalid command")
        elif state == "value":
            nxt, keep = ("nil", r) if space or newline else ("value", r)
        elif state == "parameter":
            if (r.isascii() and r.isalnum()) or r == "_":
                nxt, keep = "parameter", r
            elif space:
                nxt, keep = "value", ""
            else:
                raise ValueError("unexpected EOF")
        else:  # comment
            nxt, keep = ("nil", "") if newline else ("comment", "")
        if nxt != state:
            if state == "name":
                word = "".join(buf).lower()
                if word not in valid:
                    raise ValueError(f"invalid command {word!r}")
                if word == "from":
                    name = "model"
                elif word == "parameter":
                    nxt = "parameter"
                else:
                    name = word
            elif state == "parameter":
                name = "".join(buf)
            elif state == "value":
                value, ok = unquote("".join(buf).strip())
                if not ok or space:
                    buf.append(r)
                    continue
                commands.append((name, value))
            buf = []
            state = nxt
        if keep and keep.isprintable():
            buf.append(keep)
    if state == "value":
        value, ok = unquote("".join(buf).strip())
        assert ok, "unterminated string"
        commands.append((name, value))
    return commands


@pytest.fixture
def manifest(tmp_path):
    return write_manifest(tmp_path, {"majora": {
        "role": "Quest Specialist", "version": 2, "port": 5000, "system_prompt": SYSTEM,
        "context_length": 4096, "quantize": ["Q4_K_M", "Q8_0"],
        "sampling": {"temperature": 0.7, "top_p": 0.95, "max_tokens": 256, "repeat_penalty": 1.05},
    }})


def render(manifest, info: ollama.ChatInfo, name: str = "majora") -> str:
    layout = Layout.of(manifest)
    ctx = ollama.context(manifest, name, layout.post(name).gguf("Q8_0"),
                         layout.deploy(name).modelfile, info, "0123456789abcdef")
    return ollama.render(ctx)


def test_ollama_reads_back_every_value(manifest):
    commands = parse_modelfile(render(manifest, ollama.ChatInfo(CHAT_TEMPLATE, ("<|im_end|>",))))
    assert commands == [
        ("model", "../post/majora-Q8_0.gguf"),
        ("template", ollama.CHATML),
        ("system", SYSTEM),
        ("stop", "<|im_end|>"), ("stop", "<|im_start|>"), ("stop", "<|endoftext|>"),
        ("temperature", "0.7"), ("top_p", "0.95"), ("repeat_penalty", "1.05"),
        ("num_ctx", "4096"), ("num_predict", "256"),
    ]


def test_chatml_template_is_ollamas_own():
    # ollama/ollama template/chatml.gotmpl, byte for byte.
    assert ollama.CHATML == ("{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}"
                             "<|im_end|>\n{{ end }}<|im_start|>assistant\n")


def test_written_from_a_real_gguf(manifest, tiny_gguf):
    info = ollama.chat_info(tiny_gguf)
    assert info == ollama.ChatInfo(CHAT_TEMPLATE, ("<|im_end|>",))
    layout = Layout.of(manifest)
    out = ollama.write_modelfile(manifest, "majora", tiny_gguf, layout.deploy("majora").modelfile,
                                 "0123456789abcdef")
    commands = dict(parse_modelfile(out.read_text(encoding="utf-8")))
    assert Path(out.parent, commands["model"]).resolve() == tiny_gguf.resolve()
    assert commands["template"] == ollama.CHATML


def test_llama3_family(manifest):
    commands = parse_modelfile(render(manifest, ollama.ChatInfo(LLAMA3_TEMPLATE,
                                                                ("<|eot_id|>", "<|end_of_text|>"))))
    assert ("template", ollama.LLAMA3) in commands
    assert [v for k, v in commands if k == "stop"] == [
        "<|eot_id|>", "<|start_header_id|>", "<|end_of_text|>", "<|eom_id|>"]


def test_model_end_tokens_are_stops_too(manifest):
    commands = parse_modelfile(render(manifest, ollama.ChatInfo(CHAT_TEMPLATE, ("</s>",))))
    assert [v for k, v in commands if k == "stop"] == [
        "<|im_end|>", "<|im_start|>", "<|endoftext|>", "</s>"]


def test_unknown_template_family_is_a_clear_error(manifest):
    with pytest.raises(StageError) as err:
        render(manifest, ollama.ChatInfo("{{ messages[0]['content'] }}### Response:", ()))
    gguf = Layout.of(manifest).post("majora").gguf("Q8_0")
    assert str(err.value) == (
        f"{gguf}: unknown chat template family; afs translates these to Ollama templates: "
        "chatml (<|im_start|>, <|im_end|>); llama3 (<|start_header_id|>, <|end_header_id|>, "
        "<|eot_id|>). The template begins: \"{{ messages[0]['content'] }}### Response:\"")


def test_missing_template_is_a_clear_error(manifest):
    with pytest.raises(StageError, match="the GGUF has no chat template"):
        render(manifest, ollama.ChatInfo(None, ()))


def test_system_prompt_that_would_end_the_string_early(tmp_path):
    manifest = write_manifest(tmp_path, {"majora": {
        "port": 5000, "system_prompt": 'Say """\nthen stop'}})
    with pytest.raises(StageError) as err:
        render(manifest, ollama.ChatInfo(CHAT_TEMPLATE, ()))
    assert str(err.value) == (
        f"{manifest.file}: specialists.majora.system_prompt: has three double quotes at the end "
        "of a line, which ends a Modelfile string early (Ollama has no escape for it); reword it")


def test_system_prompt_with_a_character_ollama_drops(tmp_path):
    manifest = write_manifest(tmp_path, {"majora": {"port": 5000, "system_prompt": "a\u00a0b"}})
    with pytest.raises(StageError, match=r"U\+00A0, which Ollama's Modelfile parser drops"):
        render(manifest, ollama.ChatInfo(CHAT_TEMPLATE, ()))


def test_empty_system_prompt_writes_no_system_line(tmp_path):
    manifest = write_manifest(tmp_path, {"majora": {"port": 5000}})
    commands = parse_modelfile(render(manifest, ollama.ChatInfo(CHAT_TEMPLATE, ())))
    assert "system" not in dict(commands)


@pytest.mark.parametrize("value", ['"""', 'x """ y', 'ends with """', 'a"\n""b', '"\nx', "\t"])
def test_quote_round_trips_or_refuses(value):
    try:
        quoted = ollama.quote(value, "v")
    except StageError:
        assert ollama._ENDS_EARLY.search(value)
        return
    assert parse_modelfile(f"FROM x\nSYSTEM {quoted}\n") == [("model", "x"), ("system", value)]
