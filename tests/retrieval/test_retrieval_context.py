"""The prompt format of retrieved chunks, and training samples that carry it."""

from __future__ import annotations

import json

from afs_build import log
from afs_build.paths import Layout
from afs_build.retrieval.build import build
from afs_build.retrieval.chunking import Chunk
from afs_build.retrieval.context import augment, clip, format_context, prompt_text, sources_line, with_context
from afs_build.retrieval.training import add_context
from retrieval_helpers import write_project

CHUNKS = [Chunk("code", "data/decontam.py", 59, 64, "Decontaminator", "class", "python",
                'class Decontaminator:\n    """Drop samples that match a question."""\n\n    def __init__(self): ...'),
          Chunk("facts", "data/facts.yaml", 7, 7, "", "entry", "yaml", "- register: INIDISP")]


def test_the_context_format_is_path_and_symbol_first_then_the_question():
    assert with_context("Which file defines `Decontaminator`?", CHUNKS, 70) == (
        "Context:\n"
        "[1] data/decontam.py:59-64 Decontaminator\n"
        "class Decontaminator:\n"
        '    """Drop samples that match a question."""\n\n'
        "[2] data/facts.yaml:7\n"
        "register: INIDISP\n\n"
        "Question: Which file defines `Decontaminator`?")
    assert format_context([], 10) == "Context:\n"
    assert with_context("Q?", [], 10) == "Q?"
    assert clip("abcdef", 3) == "abc" and clip("ab\ncd\nef", 6) == "ab\ncd"
    # a long last line is cut after a word, not dropped, when 40 or more characters are left
    assert clip("name: X\n" + "word " * 30, 60) == "name: X\n" + " ".join(["word"] * 10)
    assert clip("a" * 30 + "\n" + "word " * 30, 60) == "a" * 30
    assert sources_line(CHUNKS) == "Sources: [1] data/decontam.py:59-64 (Decontaminator); [2] data/facts.yaml:7"


def test_a_fact_entry_shows_its_fields_on_one_line_and_its_answer_unfolded():
    entry = Chunk("facts", "data/facts.yaml", 3, 9, "INIDISP", "entry", "yaml",
                  '- topic: ppu\n  register: INIDISP\n  address: "$2100"\n  answer: >-\n'
                  '    Bit 7 turns forced blanking on. Bits 0-3 set the master brightness from 0 to 15,\n'
                  '    in sixteen steps, which games fade in and out.')
    assert prompt_text(entry) == ("register: INIDISP; address: $2100\n"
                                  "Bit 7 turns forced blanking on. Bits 0-3 set the master brightness from 0 to 15, "
                                  "in sixteen steps, which games fade in and out.")
    broken = Chunk("facts", "f.yaml", 1, 1, "", "entry", "yaml", "- a: [unclosed")
    assert prompt_text(broken) == broken.text and prompt_text(CHUNKS[0]) == CHUNKS[0].text


def test_augment_changes_only_the_query_turn_of_a_copy():
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "first"},
                {"role": "assistant", "content": "A"}, {"role": "user", "content": "second"}]
    last = augment(messages, CHUNKS[:1], 20)
    assert last[3]["content"].startswith("Context:\n[1] data/decontam.py:59-64") and last[3]["content"].endswith("Question: second")
    assert last[1]["content"] == "first" and messages[3]["content"] == "second"
    first = augment(messages, CHUNKS[:1], 20, last=False)
    assert first[1]["content"].endswith("Question: first") and first[3]["content"] == "second"
    parts = [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    assert augment(parts, CHUNKS, 20) == parts  # not plain text: left alone


def test_training_samples_get_their_own_question_s_context(tmp_path):
    manifest = write_project(tmp_path, specialists={"hylia": {
        "role": "R", "base": "tiny", "mix": "general", "hardware": "cpu", "port": 6111,
        "retrieval": {"index": "code", "top_k": 2, "context_chars": 80, "train_context": True,
                      "min_similarity": None}}})
    log.setup(Layout.of(manifest).log_file)
    build(manifest, "code", "index:code")
    samples = [{"id": "a", "messages": [{"role": "user", "content": "Which file defines `minhash_signatures`?"},
                                        {"role": "assistant", "content": "dedup.py"}],
                "provenance": {"path": "dedup.py"}},
               {"id": "b", "messages": [{"role": "assistant", "content": "no user turn"}]}]
    (train, evals), stats = add_context(manifest, "hylia", samples, samples[:1])
    user = train[0]["messages"][0]["content"]
    assert user.startswith("Context:\n[1] dedup.py:6-8 minhash_signatures\n")
    assert user.endswith("\n\nQuestion: Which file defines `minhash_signatures`?")
    assert train[0]["messages"][1] == samples[0]["messages"][1] and train[0]["id"] == "a"
    assert train[0]["metadata"]["retrieved"][0] == "dedup.py:6-8" and len(train[0]["metadata"]["retrieved"]) == 2
    assert train[1] == samples[1] and evals[0]["messages"] == train[0]["messages"]
    assert stats == {"index": "code", "top_k": 2, "context_chars": 80, "min_similarity": None, "samples": 3,
                     "with_context": 2, "without_query": 1, "below_similarity": 0, "own_file_retrieved": 2,
                     "with_provenance": 2}
    json.dumps(train)


def test_a_sample_whose_question_finds_nothing_similar_enough_stays_without_context(tmp_path):
    manifest = write_project(tmp_path, specialists={"hylia": {
        "role": "R", "base": "tiny", "mix": "general", "hardware": "cpu", "port": 6111,
        "retrieval": {"index": "code", "top_k": 2, "train_context": True, "min_similarity": 0.9999}}})
    log.setup(Layout.of(manifest).log_file)
    build(manifest, "code", "index:code")
    sample = {"id": "a", "messages": [{"role": "user", "content": "What is the capital of Japan?"},
                                      {"role": "assistant", "content": "Tokyo."}]}
    (train,), stats = add_context(manifest, "hylia", [sample])
    assert train == [sample]
    assert (stats["with_context"], stats["below_similarity"], stats["min_similarity"]) == (0, 1, 0.9999)


def test_the_mix_of_a_train_context_specialist_carries_the_context(tmp_path):
    import os
    import subprocess
    import sys

    from conftest import REPO

    write_project(tmp_path, specialists={"hylia": {
        "role": "R", "base": "tiny", "mix": "general", "hardware": "cpu", "port": 6112,
        "retrieval": {"index": "code", "top_k": 1, "train_context": True}}})
    run = subprocess.run([sys.executable, "-m", "doit", "-f", str(REPO / "dodo.py"), "mix:hylia"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])})
    assert run.returncode == 0, run.stdout + run.stderr
    assert ".  index:code" in run.stdout  # the index is built first
    folder = tmp_path / "build" / "data" / "mix" / "hylia"
    samples = [json.loads(line) for name in ("train.jsonl", "eval.jsonl")
               for line in (folder / name).read_text().splitlines()]
    assert samples and all(s["messages"][0]["content"].startswith("Context:\n[1] ") for s in samples)
    assert all(s["messages"][0]["content"].endswith("Question: What is 2 plus 2?") for s in samples)
    assert json.loads((folder / "context.json").read_text())["with_context"] == len(samples)

    from afs_build import plan

    def planned(**retrieval):
        manifest = write_project(tmp_path, specialists={"hylia": {
            "role": "R", "base": "tiny", "mix": "general", "hardware": "cpu", "port": 6112,
            "retrieval": {"index": "code", "top_k": 1, **retrieval}}})
        return {t.name for t in plan.task_plans(manifest) if t.runs and t.name.startswith(("mix:", "index:"))}

    assert planned(train_context=True) == set()  # as built
    assert planned(train_context=False) == {"mix:hylia"}  # turning it off mixes again
