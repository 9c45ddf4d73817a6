"""The rendered training script under torchrun: two CPU ranks over gloo, on the tiny model,
against the loop module run in this process with one rank.

Two ranks with grad_accum 1 take the same micro-batches per step as one process with grad_accum
2, and each step's gradient is a sum of two parts either way (autograd's accumulation, or
gloo's all_reduce) while the logged loss is a sum of two floats: with two addends the order
cannot change a bit, so the two runs must agree exactly, loss for loss and weight for weight.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from afs_build.training import loop, script
from test_train_script import QA, load_manifest, manifest_dict, metrics, render_through_stage, sample, write_jsonl

STEPS = 8  # 12 samples in micro-batches of 4: 3 per epoch, so rank 1 sits out every 2nd step
TIMEOUT = 180


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The tiny model, data, the script for grad_accum 1 (run on 2 ranks, rendered by the stage)
    and the config for grad_accum 2 (the loop run in this process, on one)."""
    from tinymodel import build_tiny_model

    root = tmp_path_factory.mktemp("distributed")
    tiny = build_tiny_model(root / "tiny")
    manifest = load_manifest(root, manifest_dict(grad_accum=1, checkpoint_every=2))
    rendered = render_through_stage(manifest)
    accum2 = load_manifest(root, manifest_dict(grad_accum=2, checkpoint_every=2))
    reworded = [sample(q.replace("?", ", please?"), a) for q, a in QA[:4]]
    train = write_jsonl(root / "train.jsonl", [sample(q, a) for q, a in QA] + reworded)
    evaluation = write_jsonl(root / "eval.jsonl", [sample(q, a) for q, a in QA[2:]])  # 2 batches: one per rank
    return {"root": root, "tiny": tiny, "script": rendered, "train": train, "eval": evaluation,
            "config1": script.config(manifest, "alpha", base=str(tiny)),
            "config2": script.config(accum2, "alpha", base=str(tiny))}


def torchrun(world, out: Path, **popen) -> subprocess.Popen:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(world["script"]), "--base", str(world["tiny"]), "--train", str(world["train"]),
               "--eval", str(world["eval"]), "--out", str(out), "--max-steps", str(STEPS), "--threads", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **popen)


def finish(process: subprocess.Popen) -> str:
    try:
        log, _ = process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, log[-4000:]
    return log


@pytest.fixture(scope="module")
def two_ranks(world):
    out = world["root"] / "two-ranks"
    return out, finish(torchrun(world, out))


@pytest.fixture(scope="module")
def one_process(world):
    """The reference: the loop in this process, grad_accum 2, one thread (threads restored)."""
    import torch

    out = world["root"] / "one-process"
    threads = torch.get_num_threads()
    try:
        assert loop.cli(world["config2"], [
            "--base", str(world["tiny"]), "--train", str(world["train"]), "--eval", str(world["eval"]),
            "--out", str(out), "--max-steps", str(STEPS), "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    return out


def summary(out: Path) -> dict:
    return json.loads((out / "training_summary.json").read_text())


def without_timing(lines: list[dict]) -> list[dict]:
    return [{k: v for k, v in m.items() if k not in ("tokens_per_second", "elapsed")} for m in lines]


@pytest.mark.parametrize("ranks, accum", [(1, 1), (2, 1), (2, 3), (3, 2)])
def test_ranks_split_each_epoch_into_disjoint_shares(ranks, accum):
    units = [[{"id": i}] for i in range(11)]
    batches = loop.micro_batches(units, 2, 7, 0)  # 6 micro-batches, the last of one unit
    shares = {rank: [] for rank in range(ranks)}
    for index in range(math.ceil(len(batches) / (accum * ranks))):
        steps = [loop.step_batches(batches, index, rank, ranks, accum) for rank in range(ranks)]
        assert all(group == steps[0][0] for group, _ in steps)  # every rank sees the same step
        assert sum(len(mine) for _, mine in steps) == len(steps[0][0])
        for rank, (_, mine) in enumerate(steps):
            assert len(mine) <= accum
            shares[rank] += mine
    for rank, share in shares.items():  # rank r: every ranks-th micro-batch of the epoch
        assert share == batches[rank::ranks]
    seen = [sample["id"] for share in shares.values() for rows in share for unit in rows for sample in unit]
    assert sorted(seen) == list(range(11))  # all of the data, none of it twice


@pytest.mark.slow
def test_two_ranks_train_exactly_like_one_process_accumulating_both_shares(world, two_ranks, one_process):
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    out, log = two_ranks
    lines = metrics(out)
    assert [m["step"] for m in lines] == list(range(1, STEPS + 1))
    assert sorted(p.name for p in out.rglob("*.jsonl")) == ["metrics.jsonl"]
    assert log.count("step 1/8 ") == 1 and "2 ranks" in log  # rank 0 alone reports
    assert without_timing(lines) == without_timing(metrics(one_process))  # losses, tokens, lr, eval
    assert [m["eval_loss"] is not None for m in lines] == [s % 2 == 0 for s in range(1, STEPS + 1)]

    two, one = summary(out), summary(one_process)
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert two["steps"] == STEPS and two["tokens_seen"] == one["tokens_seen"] == sum(m["tokens"] for m in lines)
    assert two["eval_loss"] == one["eval_loss"] and two["train_loss"] == one["train_loss"]

    # the same adapter, bit for bit, and peft loads it
    weights = load_file(out / "adapter" / "adapter_model.safetensors")
    reference = load_file(one_process / "adapter" / "adapter_model.safetensors")
    assert weights.keys() == reference.keys() and all(torch.equal(weights[k], reference[k]) for k in weights)
    base = AutoModelForCausalLM.from_pretrained(world["tiny"]).eval()
    ids = torch.tensor([[1, 87, 85, 261, 201]])
    with torch.no_grad():
        before = base(ids).logits
        after = PeftModel.from_pretrained(base, out / "adapter").eval()(ids).logits
    assert not torch.allclose(before, after)

    (checkpoint,) = (out / "checkpoints").glob("step-*")
    saved = torch.load(checkpoint / "trainer.pt", weights_only=True)
    assert len(saved["rank_rngs"]) == 2  # each rank's RNG states, restored per rank on a resume


@pytest.mark.slow
def test_two_ranks_resume_after_being_stopped(world, two_ranks):
    out = world["root"] / "stopped"
    process = torchrun(world, out)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not list((out / "checkpoints").glob("step-*")) and time.monotonic() < deadline:
            time.sleep(0.01)
        # torchrun stops its ranks (each in a session of its own) on SIGTERM, as on a preemption
        process.send_signal(signal.SIGTERM)
        log, _ = process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode != 0, log[-4000:]
    at = max(int(p.name.split("-")[1]) for p in (out / "checkpoints").glob("step-*"))
    assert 0 < at < STEPS, "the run ended before it could be stopped"
    assert not (out / "training_summary.json").exists()

    log = finish(torchrun(world, out))
    assert f"resuming from step-{at:06d} (step {at})" in log
    assert f"step {at + 1}/{STEPS} " in log and "step 1/8 " not in log
    assert summary(out)["resumed_from_step"] == at and summary(out)["world_size"] == 2
    # the resumed run is the uninterrupted one: same shares, optimizer state and RNG, same losses
    assert without_timing(metrics(out)) == without_timing(metrics(two_ranks[0]))
