"""The ifd quality signal: its arithmetic, real llama.cpp losses on a tiny GGUF, the cache,
the score stage with the signal on and off, and the manifest checks.

A tiny model's weights are random, so nothing here asserts that a good answer scores better
than a bad one: that is measured on SmolLM2 (notes/quality.md). What is asserted: the mapping
on known losses, that the losses are the ones llama.cpp's own logits give, that they are
cached, reported with a reason, and that with the signal off nothing changes.
"""

from __future__ import annotations

import json
import math
import os

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before ggml loads: see FIELD-NOTES

from afs_build.data import ifd  # noqa: E402
from afs_build.data.quality import QualityError, score_sample  # noqa: E402
from afs_build.data.records import make_sample  # noqa: E402
from afs_build.errors import ManifestError  # noqa: E402
from afs_build.manifest import load  # noqa: E402
from afs_build.paths import Layout  # noqa: E402
from afs_build.stages import baseline, ingest, score  # noqa: E402
from afs_build.uptodate import file_records  # noqa: E402
from conftest import CHAT, at  # noqa: E402
from stage_helpers import quiet_log  # noqa: E402,F401 (a fixture)
from tinymodel import tiny_gguf  # noqa: E402

import llama_cpp  # noqa: E402  (required: a declared dependency must fail, not skip, when missing)

pytestmark = pytest.mark.usefixtures("quiet_log")

PAIRS = [("What is the capital of France?", "Paris is the capital of France."),
         ("What is 12 plus 30?", "12 plus 30 is 42."),
         ("Write a function.", "def add(a, b):\n    return a + b"),
         ("Say nothing.", "")]


@pytest.fixture(scope="module")
def gguf(tmp_path_factory):
    return tiny_gguf(tmp_path_factory.mktemp("ifd-model"))


# --- the mapping ----------------------------------------------------------------------------

@pytest.mark.parametrize("loss, alone, tokens, value, reason, ratio", [
    (1.0, 2.0, 8, 1.0, "ok", 0.5),
    (1.8, 2.0, 8, 1.0, "ok", 0.9),
    (1.9, 2.0, 8, 0.75, "answer predictable without the question (IFD 0.95)", 0.95),
    (2.1, 2.0, 8, 0.25, "answer less likely after the question than without it (IFD 1.05): "
                        "unrelated to it?", 1.05),
    (3.0, 2.0, 8, 0.0, "answer less likely after the question than without it (IFD 1.50): "
                       "unrelated to it?", 1.5),
    (0.1, 2.0, 8, 0.6, "answer mostly follows from the question's words (IFD 0.05)", 0.05),
    (0.0, 2.0, 8, 0.5, "answer mostly follows from the question's words (IFD 0.00)", 0.0),
    (0.0, 0.0, 8, 1.0, "answer predictable with or without the question", None),
    (0.0, 0.0, 0, 1.0, "no answer tokens to measure", None),
    (3.0, 2.0, 7, 1.0, "answer too short to judge (7 tokens)", None),
])
def test_mapping_on_known_losses(loss, alone, tokens, value, reason, ratio):
    got = ifd.ifd_value(loss, alone, tokens)
    assert got[:2] == (pytest.approx(value, abs=1e-4), reason)
    assert got[2] == (None if ratio is None else pytest.approx(ratio))


def test_score_uses_the_losses_and_keeps_them_with_the_reason():
    sample = make_sample("s", [{"role": "user", "content": PAIRS[0][0]},
                               {"role": "assistant", "content": PAIRS[0][1]}],
                         provenance={"file": "x.jsonl", "line": 1})
    values = {ifd.cache_key(*PAIRS[0]): (2.1, 2.0, 9)}
    scored = score_sample(sample, weights={"length": 1.0, "ifd": 1.0}, model_values=values)
    quality = scored["metadata"]["quality"]
    assert quality["signals"]["ifd"] == {
        "value": 0.25, "reason": "answer less likely after the question than without it "
                                 "(IFD 1.05): unrelated to it?",
        "ifd": 1.05, "loss": 2.1, "loss_alone": 2.0, "answer_tokens": 9}
    assert quality["score"] == pytest.approx((1.0 + 0.25) / 2)
    with pytest.raises(QualityError, match="needs a model's losses: set quality.model"):
        score_sample(sample, weights={"length": 1.0, "ifd": 1.0})


# --- real llama.cpp -------------------------------------------------------------------------

def reference_losses(gguf, question: str, answer: str) -> tuple[float, float]:
    """The same two mean losses from llama-cpp-python's high-level API, one text at a time."""
    import numpy as np

    llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=1024, logits_all=True, n_threads=1,
                          verbose=False)
    means = []
    for prefix in (question + ifd.SEPARATOR, ifd.SEPARATOR):
        head = llm.tokenize(prefix.encode(), add_bos=False, special=False)
        said = llm.tokenize(answer.encode(), add_bos=False, special=False)
        tokens = head + said
        llm.reset()
        llm.eval(tokens)
        logits = np.asarray(llm.scores[:len(tokens)], dtype=np.float64)
        lse = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
        losses = [lse[p] - logits[p, tokens[p + 1]] for p in range(len(head) - 1, len(tokens) - 1)]
        means.append(sum(losses) / len(losses))
    llm.close()
    return means[0], means[1]


def test_losses_are_llama_cpps_own_and_batching_changes_nothing(gguf):
    model = ifd.LossModel(gguf, threads=1, max_sequences=3)  # several batches of two pairs
    try:
        batched = model.losses(PAIRS)
        alone = [model.losses([pair])[0] for pair in PAIRS]
        tokens = [len(model.tokens(answer)) for _, answer in PAIRS]
    finally:
        model.close()
    assert [n for *_, n in batched] == tokens and tokens[-1] == 0 and min(tokens[:-1]) > 3
    for (loss, loss_alone, _), single in zip(batched, alone):
        assert loss == pytest.approx(single[0], abs=2e-3)
        assert loss_alone == pytest.approx(single[1], abs=2e-3)
    for (question, answer), (loss, loss_alone, _) in zip(PAIRS[:2], batched):
        want = reference_losses(gguf, question, answer)
        assert (loss, loss_alone) == (pytest.approx(want[0], abs=2e-3),
                                      pytest.approx(want[1], abs=2e-3))
        # random weights: near log(vocab), and the question changes the loss
        assert 0.5 * math.log(1024) < loss_alone < 2 * math.log(1024) and loss != loss_alone


def test_long_turns_are_cut_to_their_token_budget(gguf):
    model = ifd.LossModel(gguf, threads=1)
    try:
        long_answer = "word " * (4 * ifd.MAX_ANSWER_TOKENS)
        (_, _, n), = model.losses([("Why? " * 2000, long_answer)])
    finally:
        model.close()
    assert n == ifd.MAX_ANSWER_TOKENS


def test_cache_computes_each_sample_once(gguf, tmp_path):
    cache = tmp_path / "cache" / "losses.sqlite"
    done = []
    first, counts = ifd.compute_losses(PAIRS + PAIRS[:1], gguf, cache, progress=done.append)
    assert counts == {"computed": 4, "cached": 0} and sum(done) == 5
    # the second run loads no model at all: a missing GGUF would fail if it tried
    again, counts = ifd.compute_losses(PAIRS, tmp_path / "absent.gguf", cache)
    assert counts == {"computed": 0, "cached": 4}
    assert again == first
    more, counts = ifd.compute_losses(PAIRS + [("New?", "New answer.")], gguf, cache)
    assert counts == {"computed": 1, "cached": 4}


# --- the score stage ------------------------------------------------------------------------

def quality_project(project, minimal, **quality):
    minimal["quality"] = quality
    return project.write(minimal)


def place_baseline(manifest_path, gguf) -> None:
    """What baseline:tiny writes (its F16 GGUF and report), without converting SmolLM2."""
    files = Layout.of(load(manifest_path)).baseline("tiny")
    files.folder.mkdir(parents=True, exist_ok=True)
    os.link(gguf, files.gguf("F16"))
    files.report.write_text(json.dumps({"model": "tiny",
                                        "files": file_records([files.gguf("F16")])}))


def scored(manifest_path) -> list[dict]:
    files = Layout.of(load(manifest_path)).score("chat")
    return [json.loads(line) for line in files.samples.read_text().splitlines()]


def test_stage_scores_caches_and_reports_the_signal(project, minimal, gguf):
    path = quality_project(project, minimal, model="tiny", weights={"ifd": 1.0})
    place_baseline(path, gguf)
    manifest = load(path)
    task = next(score.tasks(manifest))
    layout = Layout.of(manifest)
    assert str(layout.baseline("tiny").report) in task["file_dep"]
    assert "baseline:tiny" in task["task_dep"]
    assert [t["name"] for t in baseline.tasks(manifest)] == ["baseline:tiny"]
    assert ingest.run(manifest, "chat") is None
    assert score.run(manifest, "chat") is None
    meta = json.loads(layout.score("chat").meta.read_text())
    assert meta["model_signal"]["model"] == "tiny"
    assert (meta["model_signal"]["computed"], meta["model_signal"]["cached"]) == (len(CHAT), 0)
    samples = scored(path)
    assert len(samples) + meta["rejects"] == len(CHAT)
    for sample in samples + [json.loads(r)["detail"] for r in
                             layout.score("chat").rejects.read_text().splitlines()]:
        signal = sample.get("metadata", sample)["quality"]["signals"]["ifd"]
        assert set(signal) == {"value", "reason", "ifd", "loss", "loss_alone", "answer_tokens"}
        assert 0.0 <= signal["value"] <= 1.0 and signal["reason"]
        if signal["answer_tokens"] >= ifd.MIN_ANSWER_TOKENS:
            assert signal["ifd"] == pytest.approx(signal["loss"] / signal["loss_alone"], abs=1e-3)
        else:
            assert (signal["value"], signal["ifd"]) == (1.0, None)
    assert score.run(manifest, "chat") is None  # a rebuild: every loss from the cache
    meta = json.loads(layout.score("chat").meta.read_text())
    assert (meta["model_signal"]["computed"], meta["model_signal"]["cached"]) == (0, len(CHAT))


def test_signal_off_changes_no_score_and_no_task(project, minimal, gguf):
    plain = load(quality_project(project, minimal))
    off = load(quality_project(project, minimal, model="tiny", weights={"ifd": 0}))
    for manifest in (plain, off):
        assert manifest.quality.model_signal is None
    before, after = next(score.tasks(plain)), next(score.tasks(off))
    assert before["uptodate"][0].digest == after["uptodate"][0].digest
    assert before["file_dep"] == after["file_dep"] and after["task_dep"] == ["ingest:chat"]
    assert "ifd" not in before["uptodate"][0].value["weights"]
    assert ingest.run(off, "chat") is None
    assert score.run(off, "chat") is None
    samples = scored(project.manifest)
    assert all("ifd" not in s["metadata"]["quality"]["signals"] for s in samples)
    meta = json.loads(Layout.of(off).score("chat").meta.read_text())
    assert "model_signal" not in meta
    assert not Layout.of(off).cache("quality").exists()


# --- validation -----------------------------------------------------------------------------

def test_unknown_quality_model_is_rejected_with_its_position(project, minimal):
    path = quality_project(project, minimal, model="tinny", weights={"ifd": 1.0})
    with pytest.raises(ManifestError) as info:
        load(path)
    assert [str(p) for p in info.value.problems] == [
        f"{at(path, 'tinny')}: quality.model: unknown model 'tinny'; expected one of: "
        f"'tiny' (did you mean 'tiny'?)"]


def test_ifd_weight_needs_a_model(project, minimal):
    path = quality_project(project, minimal, weights={"ifd": 0.5})
    with pytest.raises(ManifestError) as info:
        load(path)
    assert [str(p) for p in info.value.problems] == [
        f"{at(path, '0.5')}: quality.weights.ifd: the ifd signal needs a model: set "
        f"quality.model to one of: 'tiny', or give ifd the weight 0"]


def test_afs_validate_rejects_the_unknown_model_and_warns_about_an_unused_one(project, minimal,
                                                                             capsys):
    from afs_build import cli

    path = quality_project(project, minimal, model="nosuch", weights={"ifd": 1.0})
    assert cli.main(["validate", str(path)]) != 0
    assert f"{at(path, 'nosuch')}: quality.model: unknown model 'nosuch'" in capsys.readouterr().err
    path = quality_project(project, minimal, model="tiny")
    assert cli.main(["validate", str(path)]) == 0
    where = at(path, "model: tiny").rsplit(":", 1)[0] + ":10"  # the value, after "  model: "
    assert capsys.readouterr().err == (
        f"{where}: quality.model: warning: quality.model is set but "
        f"quality.weights.ifd is 0, so the model scores nothing; give ifd a weight > 0 to use it\n")
