"""Exact and near-duplicate removal, the two-pass index, and the JSONL helpers it streams."""

from __future__ import annotations

import re

import numpy as np
import pytest

from afs_build.data.dedup import (
    DedupIndex,
    dedup,
    lsh_bands,
    minhash_signatures,
    normalize_text,
)
from afs_build.data.jsonl import AtomicJsonlWriter, JsonlError, read_jsonl, write_jsonl
from afs_build.data.records import Reject, make_sample

QUESTION = ("Write a Python function that parses an ISO 8601 date string and returns a "
            "datetime object, raising ValueError when the input is malformed.")


def sample(user: str, *, source: str = "s", score: float | None = 0.5, answer: str = "ok",
           system: str | None = None) -> dict:
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    metadata = {"quality": {"score": score}} if score is not None else {}
    return make_sample(source, messages, provenance={"file": f"{source}.jsonl", "line": 1},
                       metadata=metadata)


def test_normalize_text():
    assert normalize_text("  Ｈｅｌｌｏ\tWORLD\n\n again ") == "hello world again"
    assert normalize_text("Straße") == "strasse"


def test_exact_duplicates_across_sources_keep_the_best_scored():
    low = sample(QUESTION, source="a", score=0.5)
    best = sample(QUESTION.upper().replace(" ", "  "), source="b", score=0.9, answer="OK")
    mid = sample("\uff37" + QUESTION[1:], source="c", score=0.7, system="Be brief.")
    other = sample("How many legs does a spider have?", source="a")
    kept, rejects, stats = dedup([low, best, mid, other])
    assert kept == [best, other]
    assert [r.reason for r in rejects] == [f"duplicate of {best['id']}"] * 2
    assert [r.source for r in rejects] == ["a", "c"]
    assert rejects[0].detail == {"id": low["id"], "duplicate_of": best["id"]}
    assert rejects[0].excerpt == QUESTION and rejects[0].file == "a.jsonl"
    assert stats["exact_duplicates"] == 2 and stats["kept"] == 2


def test_a_duplicate_needs_the_same_answer_too():
    # one character apart, different facts: both stay (instruction-only dedup dropped them)
    first = sample("I see code accessing $2100 on the SNES. Which register is that, and what does it do?",
                   answer="INIDISP (screen display): bit 7 forces blank, bits 0-3 set the brightness.")
    second = sample("I see code accessing $2101 on the SNES. Which register is that, and what does it do?",
                    answer="OBSEL (object size and tile base): bits 5-7 pick the sprite sizes.")
    same_question = sample(first["messages"][0]["content"], answer="Something else entirely, at length.")
    kept, rejects, stats = dedup([first, second, same_question])
    assert len(kept) == 3 and not rejects
    assert stats["exact_duplicates"] == 0 and stats["near_duplicates"] == 0
    # the same pair with a reworded answer is a near duplicate
    reworded = sample(first["messages"][0]["content"] + " ",
                      answer="INIDISP (screen display): bit 7 forces blank; bits 0-3 set the brightness.")
    kept, rejects, stats = dedup([first, reworded])
    assert len(kept) == 1 and stats["exact_duplicates"] + stats["near_duplicates"] == 1


def test_ties_go_to_the_smallest_id_and_missing_scores_count_as_zero():
    first, second = sample(QUESTION, source="x"), sample(QUESTION, source="y")
    kept, rejects, _ = dedup([first, second])
    assert kept[0]["id"] == min(first["id"], second["id"])
    unscored = sample(QUESTION, source="z", score=None)
    kept, _, _ = dedup([unscored, sample(QUESTION, source="w", score=0.1)])
    assert kept[0]["source"] == "w"


def test_near_duplicates_across_sources_keep_the_best_scored():
    original = sample(QUESTION, source="a", score=0.6)
    edited = sample(QUESTION.replace("malformed", "malformed or empty"), source="b", score=0.8)
    unrelated = sample("Explain how a hash map handles collisions with open addressing and "
                       "why the load factor matters for lookups.", source="a")
    kept, rejects, stats = dedup([original, edited, unrelated], threshold=0.8)
    assert kept == [edited, unrelated]
    (reject,) = rejects
    match = re.fullmatch(rf"near-duplicate of {edited['id']} \(jaccard ~(0\.\d\d)\)",
                         reject.reason)
    assert match and float(match.group(1)) >= 0.8
    assert reject.detail["duplicate_of"] == edited["id"]
    assert stats["near_duplicates"] == 1 and stats["exact_duplicates"] == 0


def test_near_can_be_switched_off_and_exact_too():
    original = sample(QUESTION, source="a")
    edited = sample(QUESTION.replace("malformed", "malformed or empty"), source="b")
    kept, _, stats = dedup([original, edited], near=False)
    assert len(kept) == 2 and stats["near"] is False
    copies = [sample(QUESTION, source="a"), sample(QUESTION, source="b")]
    kept, rejects, stats = dedup(copies, exact=False)
    assert len(kept) == 1 and stats["exact_duplicates"] == 0
    assert rejects[0].reason.endswith("(jaccard ~1.00)")


def test_dropped_samples_are_similar_to_the_sample_they_name():
    # a chain: each step changes a few words; greedy resolution never names a far sample
    words = QUESTION.split()
    chain = []
    for step in range(6):
        changed = list(words)
        for i in range(step * 3):
            changed[i % len(words)] = f"w{i}"
        chain.append(sample(" ".join(changed), source=f"s{step}", score=1 - step / 10))
    kept, rejects, _ = dedup(chain, threshold=0.7)
    assert rejects and kept[0] is chain[0]
    for reject in rejects:
        assert reject.detail["jaccard"] >= 0.7


def test_samples_without_a_user_turn_are_never_duplicates():
    lonely = [make_sample("s", [{"role": "assistant", "content": f"hello {i}"}],
                          provenance={"line": i + 1}) for i in range(3)]
    kept, rejects, _ = dedup(lonely)
    assert kept == lonely and rejects == []


def test_input_rejects_pass_through_and_results_are_deterministic():
    earlier = Reject("s", "malformed JSON", line=2)
    records = [sample(QUESTION, source=str(i), score=i / 10) for i in range(5)] + [earlier]
    first = dedup(records, seed=3)
    assert first == dedup(records, seed=3)
    assert earlier in first[1]


def test_two_passes_over_a_jsonl_file(tmp_path):
    records = [sample(QUESTION, source="a", score=0.2), sample(QUESTION, source="b", score=0.4),
               sample("Completely different question about sorting algorithms?", source="a")]
    path = tmp_path / "scored.jsonl"
    assert write_jsonl(path, records) == 3
    index = DedupIndex()
    for record in read_jsonl(path):
        index.add(record)
    result = index.finish()
    assert result.keep_mask.tolist() == [False, True, True]
    assert result.kept_ids() == {records[1]["id"], records[2]["id"]}
    out = list(result.apply(read_jsonl(path)))
    assert [type(r) for r in out] == [Reject, dict, dict]
    assert out[0].reason == f"duplicate of {records[1]['id']}"
    with pytest.raises(ValueError, match="sample 0 has id .* but the first pass saw"):
        list(result.apply(reversed(records)))
    with pytest.raises(ValueError, match="2 samples, but the first pass saw 3"):
        list(result.apply(records[:2]))


def test_signature_blocks_give_the_same_decisions(monkeypatch):
    import afs_build.data.dedup as module

    base = QUESTION.split()
    records = []
    for i in range(40):
        words = list(base)
        words[i % len(words)] = f"x{i % 7}"
        records.append(sample(" ".join(words), source=f"s{i}", score=(i % 5) / 5))
    expected = dedup(records, threshold=0.7)
    monkeypatch.setattr(module._Signatures, "BLOCK", 3)
    assert dedup(records, threshold=0.7) == expected
    assert expected[2]["near_duplicates"] > 0


def test_parameters_are_checked():
    with pytest.raises(ValueError, match="threshold must be in"):
        DedupIndex(threshold=0)
    with pytest.raises(ValueError, match="num_perm must be between"):
        DedupIndex(num_perm=1)
    with pytest.raises(ValueError, match="shingle must be between"):
        DedupIndex(shingle=0)


def test_lsh_bands_cover_the_permutations():
    assert lsh_bands(0.85, 128) == (9, 14)
    bands, rows = lsh_bands(0.5, 64)
    assert bands * rows <= 64


def test_minhash_estimates_jaccard():
    rng = np.random.default_rng(0)
    alphabet = np.array(list("abcdefghij klmnopqrstuvwxyz"))
    base = "".join(rng.choice(alphabet, 600))
    edited = base[:450] + "".join(rng.choice(alphabet, 150))
    texts = [base, edited, "short", "x"]
    signatures = minhash_signatures(texts, num_perm=256, shingle=5, seed=0)
    assert signatures.shape == (4, 256)

    def shingles(text):
        padded = "\0" * 4 + text + "\0" * 4
        return {padded[i:i + 5] for i in range(len(padded) - 4)}

    true = len(shingles(base) & shingles(edited)) / len(shingles(base) | shingles(edited))
    estimate = np.mean(signatures[0] == signatures[1])
    assert abs(estimate - true) < 0.1
    assert np.mean(signatures[0] == signatures[2]) < 0.1
    again = minhash_signatures(texts, num_perm=256, shingle=5, seed=0)
    assert np.array_equal(signatures, again)
    assert not np.array_equal(signatures, minhash_signatures(texts, num_perm=256, shingle=5,
                                                             seed=1))


# --- JSONL helpers --------------------------------------------------------------------------


def test_jsonl_round_trip_with_rejects_and_sorted_keys(tmp_path):
    path = tmp_path / "out" / "x.jsonl"
    write_jsonl(path, [{"b": 1, "a": "é"}, Reject("s", "why", line=3)])
    assert path.read_bytes().decode() == ('{"a":"é","b":1}\n'
                                          '{"line":3,"reason":"why","source":"s"}\n')
    assert list(read_jsonl(path)) == [{"a": "é", "b": 1},
                                      {"line": 3, "reason": "why", "source": "s"}]


def test_jsonl_write_is_atomic(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"old":true}\n')
    with pytest.raises(RuntimeError):
        with AtomicJsonlWriter(path) as writer:
            writer.write({"new": True})
            raise RuntimeError("boom")
    assert path.read_text() == '{"old":true}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["x.jsonl"]


def test_jsonl_errors_name_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a":1}\n\n{"a":\n')
    with pytest.raises(JsonlError, match=r"bad\.jsonl:3: invalid JSON"):
        list(read_jsonl(path))
