"""Replay sources: prompts answered by the base's own GGUF (self-distillation against forgetting)."""

from __future__ import annotations

import json

import pytest

from afs_build.data.records import Reject
from afs_build.data.replay import convert_replay
from test_end_to_end import doit

PROMPTS = [
    {"instruction": "What is the capital of France?", "output": "Paris."},
    {"instruction": "What is 12 plus 30?", "output": "42."},
    {"instruction": "", "output": "no question"},
    {"instruction": "Name a planet.", "output": "Mars."},
]


@pytest.fixture(scope="module")
def gguf(tmp_path_factory):
    from tinymodel import tiny_gguf

    return tiny_gguf(tmp_path_factory.mktemp("tiny") / "tiny")


def write_prompts(path):
    path.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS), encoding="utf-8")
    return path


def replay(path, gguf, cache, **kwargs):
    from afs_build.data.records import Filtered, Marker

    return [r for r in convert_replay(path, source="replay", format="alpaca", fields={}, max_chars=10_000,
                                      gguf=gguf, model_digest="d1", max_tokens=8, cache_dir=cache, **kwargs)
            if not isinstance(r, (Marker, Filtered))]


def greedy(gguf, prompts, max_tokens=8):
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf), n_ctx=256, verbose=False, seed=0)
    try:
        return [llm.create_chat_completion([{"role": "user", "content": p}], temperature=0.0,
                                           max_tokens=max_tokens, seed=0)["choices"][0]["message"]["content"].strip()
                for p in prompts]
    finally:
        llm.close()


ASKED = ["What is the capital of France?", "What is 12 plus 30?", "Name a planet."]


def test_each_prompt_is_answered_by_the_model_greedily(tmp_path, gguf):
    records = replay(write_prompts(tmp_path / "p.jsonl"), gguf, tmp_path / "cache")
    assert len(records) == len(PROMPTS)
    unreadable = records[2]  # the empty instruction: the reader's reject, with its position
    assert isinstance(unreadable, Reject) and unreadable.file and unreadable.line == 3
    answered = [r for i, r in enumerate(records) if i != 2]
    for record, prompt, expected in zip(answered, ASKED, greedy(gguf, ASKED)):
        if not expected:  # a random tiny model may stop at once: an empty answer is rejected
            assert isinstance(record, Reject) and record.reason == "the model gave an empty answer"
            continue
        assert record["messages"] == [{"role": "user", "content": prompt},
                                      {"role": "assistant", "content": expected}]
        assert record["metadata"]["replay"] == {"model_digest": "d1", "max_tokens": 8}


def test_answers_are_cached_by_model_prompt_and_settings(tmp_path, gguf):
    prompts = write_prompts(tmp_path / "p.jsonl")
    first = replay(prompts, gguf, tmp_path / "cache")
    cache = json.loads((tmp_path / "cache" / "replay.json").read_text())
    assert sorted(cache.values()) == sorted(greedy(gguf, ASKED))
    # nothing is asked again: a model file that is not there is never opened
    assert replay(prompts, tmp_path / "missing.gguf", tmp_path / "cache") == first
    with pytest.raises(ValueError):  # another model digest asks again, and there is no model
        list(convert_replay(prompts, source="replay", format="alpaca", fields={}, max_chars=10_000,
                            gguf=tmp_path / "missing.gguf", model_digest="d2", max_tokens=8,
                            cache_dir=tmp_path / "cache"))


def test_two_models_answering_at_once_give_what_one_gives_in_the_files_order(tmp_path, gguf):
    prompts = write_prompts(tmp_path / "p.jsonl")
    one = replay(prompts, gguf, tmp_path / "one", workers=1)
    two = replay(prompts, gguf, tmp_path / "two", workers=2)
    assert two == one
    assert json.loads((tmp_path / "two" / "replay.json").read_text()) == \
        json.loads((tmp_path / "one" / "replay.json").read_text())


def test_answers_given_before_a_failure_are_kept_for_the_next_run(tmp_path, gguf, monkeypatch):
    from afs_build.data import replay as module

    prompts = write_prompts(tmp_path / "p.jsonl")
    calls = []
    real = module._Answerer.__call__

    def failing_second(self, prompt, max_tokens):
        calls.append(prompt)
        if len(calls) == 2:
            raise RuntimeError("the model died")
        return real(self, prompt, max_tokens)

    monkeypatch.setattr(module._Answerer, "__call__", failing_second)
    with pytest.raises(RuntimeError):
        replay(prompts, gguf, tmp_path / "cache", workers=1)
    kept = json.loads((tmp_path / "cache" / "replay.json").read_text())
    assert len(kept) == 1  # the first answer, not asked again below
    monkeypatch.setattr(module._Answerer, "__call__", real)
    assert replay(prompts, gguf, tmp_path / "cache", workers=1) == replay(prompts, gguf, tmp_path / "fresh", workers=1)
    assert len(json.loads((tmp_path / "cache" / "replay.json").read_text())) == 3


def test_limit_and_system_prompt(tmp_path, gguf):
    records = replay(write_prompts(tmp_path / "p.jsonl"), gguf, None, limit=1, system_prompt="Be brief.")
    # one prompt answered; the reader's reject of the empty instruction still passes through
    assert len(records) == 2 and isinstance(records[1], Reject) and records[1].line == 3
    if not isinstance(records[0], Reject):
        assert [m["role"] for m in records[0]["messages"]] == ["user", "assistant"]  # system turn not kept


@pytest.mark.slow
def test_a_mix_replays_the_bases_own_answers_through_doit(project, minimal):
    from tinymodel import build_tiny_model

    build_tiny_model(project.root / "tiny")
    minimal["models"] = {"tiny": {"path": "tiny", "params_b": 0.001}}
    minimal["sources"]["replayed"] = {"kind": "replay", "path": "chat.jsonl", "format": "alpaca",
                                      "model": "tiny", "max_tokens": 8}
    minimal["mixes"]["general"]["groups"] = {"all": {"share": 1.0, "sources": ["replayed"]}}
    del minimal["specialists"]["beta"]
    project.write(minimal)
    assert doit(project.root, "mix:alpha") == {"base:tiny", "baseline:tiny", "ingest:replayed",
                                                "score:replayed", "mix:alpha"}
    gguf = project.root / "build/models/tiny/gguf/tiny-F16.gguf"
    assert gguf.is_file() and (project.root / "build/cache/replay/replayed.json").is_file()
    assert doit(project.root, "mix:alpha") == set()
