"""Quality signals, the weighted score, and the file scorer the score stage runs."""

from __future__ import annotations

import json

import pytest

from afs_build.data.jsonl import JsonlError, read_jsonl, write_jsonl
from afs_build.data.quality import QualityError, score_file, score_sample, workers_for
from afs_build.data.records import Reject, make_sample
from afs_build.data.signals import DEFAULT_WEIGHTS, SIGNALS, Texts

QUESTION = "Write a Python function that adds two numbers and returns the sum."
ANSWER = "```python\ndef add(a, b):\n    return a + b\n```\nIt returns the sum of both arguments."
PROSE = ("Paris is the capital of France. It lies on the Seine and has been the seat of "
         "government for centuries. About two million people live in the city proper.")


def sample(user: str = QUESTION, answer: str = ANSWER, *, source: str = "s",
           system: str | None = None) -> dict:
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    return make_sample(source, messages, provenance={"file": "data.jsonl", "line": 7})


def signal(name: str, instruction: str, answer: str) -> tuple[float, str]:
    return SIGNALS[name](Texts(instruction, answer))


# --- each signal: a bad case and a clean case -----------------------------------------------

BAD = {
    "length": (QUESTION, "", 0.0, "empty answer"),
    "ratio": ("Explain this. " + "x = compute(y)\n" * 300, "Adds.", 0.3,
              "answer/instruction length ratio 0.001"),
    "repetition": ("Tell me a story.", "The cat sat on the mat and purred. " * 12, 0.0,
                   "91% repeated 3-grams"),
    "boilerplate": ("Tell me a joke.", "As an AI language model, I do not tell jokes.", 0.0,
                    'boilerplate: "as an ai language model"'),
    "echo": ("What is the capital of France?", "What is the capital of France?", 0.0,
             "answer repeats the instruction"),
    "code": (QUESTION, "```python\ndef add(a, b)\n    return a + b\n```", 0.3,
             "python block 1 does not parse: expected ':' (line 1)"),
    "garbage": ("Say it in French.", "Un caf\u00c3\u00a9 au lait, s'il vous pla\u00c3\u00aet.",
                0.3154, '2 garbage characters ("\u00c3\u00a9", "\u00c3\u00ae")'),
    "truncated": ("Explain photosynthesis.", "Plants turn light into sugar. They need water. "
                  "The energy is stored in the", 0.3, 'answer ends mid-sentence on "the"'),
}


@pytest.mark.parametrize("name", sorted(SIGNALS))
def test_signal_flags_its_problem(name):
    instruction, answer, value, reason = BAD[name]
    assert signal(name, instruction, answer) == (pytest.approx(value, abs=1e-4), reason)


@pytest.mark.parametrize("name", sorted(SIGNALS))
def test_signal_passes_clean_samples(name):
    assert signal(name, QUESTION, ANSWER) == (1.0, "ok")
    assert signal(name, "What is the capital of France?", PROSE) == (1.0, "ok")


def test_every_signal_has_a_bad_case():
    assert set(BAD) == set(SIGNALS) == set(DEFAULT_WEIGHTS)


@pytest.mark.parametrize("answer, reason", [
    ("```python\nprint 'hello'\n```", "python block 1 does not parse"),
    ("Here:\n```python\nx = 1\n", "unbalanced ``` fence"),
])
def test_code_signal_cases(answer, reason):
    value, why = signal("code", QUESTION, answer)
    assert value < 1.0 and why.startswith(reason)


def test_code_signal_skips_other_languages_and_dedents():
    assert signal("code", QUESTION, "```javascript\nfunction (\n```") == (1.0, "ok")
    indented = "1. Do this:\n\n   ```python\n   if x:\n       y = 1\n   ```"
    assert signal("code", QUESTION, indented) == (1.0, "ok")


def test_truncated_inside_code_block_and_prose_cases():
    assert signal("truncated", QUESTION, "```python\ndef f():\n    return") == (
        0.2, "answer ends inside a code block")
    assert signal("truncated", QUESTION, "Pick apples, pears,") == (
        0.4, "answer ends with a comma")
    # a docstring without a final period is not truncated
    assert signal("truncated", QUESTION, "Return the sum of a and b") == (1.0, "ok")
    assert signal("truncated", QUESTION, "x = add(1, 2)") == (1.0, "ok")


def test_boilerplate_late_in_the_answer_and_curly_apostrophes():
    late = PROSE + " " + PROSE + " I\u2019m unable to check live prices, though."
    assert signal("boilerplate", "Tell me about Paris.", late) == (
        0.3, "boilerplate: \"i'm unable to\"")
    assert signal("boilerplate", "q", "I\u2019m sorry, but I can\u2019t do that.")[0] == 0.0


def test_garbage_control_and_replacement_characters():
    value, reason = signal("garbage", "q", "bad \x01 byte and \ufffd here in a long answer")
    assert value < 1.0 and reason == '2 garbage characters ("\\x01", "\ufffd")'


def test_length_and_echo_edge_cases():
    assert signal("length", "", "An answer.") == (0.0, "empty instruction")
    assert signal("length", QUESTION, "ok") == (0.3, "answer too short (2 chars)")
    assert signal("echo", "Define recursion in one sentence please",
                  "Define recursion in one sentence please: it calls itself.") == (
        0.5, "answer starts by repeating the instruction")


# --- the score ------------------------------------------------------------------------------


def test_score_is_kept_in_metadata_and_the_input_is_not_changed():
    original = sample()
    scored = score_sample(original, weights=DEFAULT_WEIGHTS, threshold=0.5)
    assert "quality" not in original["metadata"]
    quality = scored["metadata"]["quality"]
    assert quality["score"] == 1.0
    assert quality["signals"]["code"] == {"value": 1.0, "reason": "ok"}
    assert set(quality["signals"]) == set(SIGNALS)


def test_score_is_the_weighted_mean_of_weighted_signals_only():
    refusal = sample(answer="As an AI language model, I cannot write code for you today.")
    scored = score_sample(refusal, weights={"length": 1.0, "boilerplate": 1.0}, threshold=0.5)
    assert scored["metadata"]["quality"]["score"] == 0.5
    assert set(scored["metadata"]["quality"]["signals"]) == {"length", "boilerplate"}


def test_below_threshold_reject_names_the_lowest_signal():
    refusal = sample(answer="As an AI language model, I cannot write code for you today.")
    result = score_sample(refusal, weights={"length": 1.0, "boilerplate": 3.0}, threshold=0.5)
    assert isinstance(result, Reject)
    assert result.reason == ("quality below threshold: 0.25 < 0.50 (lowest: boilerplate 0.00 "
                             "'boilerplate: \"as an ai language model\"')")
    assert result.excerpt == QUESTION
    assert result.detail["quality"]["score"] == 0.25


def test_a_score_just_under_the_threshold_prints_enough_digits():
    refusal = sample(answer="As an AI language model, I cannot write code for you today.")
    result = score_sample(refusal, weights={"length": 1.0, "boilerplate": 1.0}, threshold=0.5001)
    assert result.reason.startswith("quality below threshold: 0.5000 < 0.5001 (lowest: ")


def test_weights_are_checked(tmp_path):
    source = tmp_path / "samples.jsonl"
    write_jsonl(source, [sample()])
    with pytest.raises(QualityError, match=r"unknown quality signal 'repetiton'.*did you mean "
                                           r"'repetition'\?"):
        score_file(source, tmp_path / "out.jsonl", tmp_path / "rej.jsonl",
                   weights={"repetiton": 1.0}, threshold=0.5)
    assert not (tmp_path / "out.jsonl").exists()
    with pytest.raises(ValueError, match="weight of 'echo' must be a number >= 0"):
        score_sample(sample(), weights={"echo": -1}, threshold=0.5)
    with pytest.raises(QualityError, match="all zero"):
        score_sample(sample(), weights={"echo": 0}, threshold=0.5)
    with pytest.raises(QualityError, match="threshold must be a number in"):
        score_sample(sample(), weights=DEFAULT_WEIGHTS, threshold=1.5)


@pytest.mark.parametrize("workers", [1, 2])
def test_score_file_scores_each_sample_in_order(tmp_path, workers, monkeypatch):
    import afs_build.data.quality as quality

    monkeypatch.setattr(quality, "_CHUNK_LINES", 2)  # several chunks, to check their order
    records = [sample(answer=f"{PROSE} ({i})") for i in range(5)] + [sample(answer="")]
    records.insert(2, sample(answer="As an AI language model, I cannot."))
    source = tmp_path / "samples.jsonl"
    write_jsonl(source, records)
    done = []
    counts = score_file(source, tmp_path / "scored.jsonl", tmp_path / "rejects.jsonl",
                        weights=DEFAULT_WEIGHTS, threshold=0.9, workers=workers,
                        progress=done.append)
    expected = [score_sample(r, weights=DEFAULT_WEIGHTS, threshold=0.9) for r in records]
    assert counts == {"samples": 5, "rejects": 2,
                      "reject_reasons": {"quality below threshold": 2}}
    assert sum(done) == len(records) and len(done) == 4
    assert list(read_jsonl(tmp_path / "scored.jsonl")) == [
        r for r in expected if not isinstance(r, Reject)]
    assert list(read_jsonl(tmp_path / "rejects.jsonl")) == [
        r.to_json() for r in expected if isinstance(r, Reject)]


def test_score_file_names_a_broken_line(tmp_path):
    source = tmp_path / "samples.jsonl"
    source.write_text(json.dumps(sample()) + "\n{broken\n")
    with pytest.raises(JsonlError, match=r"samples\.jsonl:2: invalid JSON"):
        score_file(source, tmp_path / "out.jsonl", tmp_path / "rejects.jsonl")
    assert not (tmp_path / "out.jsonl").exists()


def test_workers_auto_is_one_process_for_small_inputs_and_busy_cpus(monkeypatch):
    import os

    from afs_build.data.quality import AUTO_MIN_BYTES

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (1.0, 1.0, 1.0))  # the build alone
    assert workers_for("auto", 1000) == 1
    assert workers_for("auto", AUTO_MIN_BYTES) == 2
    monkeypatch.setattr(os, "getloadavg", lambda: (6.5, 6.0, 6.0))  # other jobs hold the CPUs
    assert workers_for("auto", AUTO_MIN_BYTES) == 1
    assert workers_for(3, 10) == 3
