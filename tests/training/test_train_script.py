"""The training loop (afs_build/training/loop.py) tested directly with a TrainConfig, the script
rendered from it through the render stage, and real runs of that script on a tiny model."""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from afs_build import graph
from afs_build import manifest as manifest_module
from afs_build.errors import StageError
from afs_build.paths import Layout, TrainFiles
from afs_build.post.architectures import FAMILIES
from afs_build.stages import render as render_stage
from afs_build.training import local, loop, script
from afs_build.uptodate import SliceChanged

SYSTEM_PROMPT = 'You answer "briefly"; it\'s a test.\nSecond line with a \\ backslash and """ quotes.'
ROLE = "Test specialist\nwith a newline; import os"
QA = [
    ("What is the capital of France?", "Paris is the capital of France."),
    ("What is 12 plus 30?", "12 plus 30 is 42."),
    ("What does register $2100 do?", "Register $2100 is INIDISP: screen brightness and forced blanking."),
    ("Which CPU does the SNES use?", "The SNES uses a 65816 CPU."),
    ("What does Mode 7 do?", "Mode 7 rotates and scales one background layer."),
    ("How do I debug?", "Read the error, reproduce it, bisect, fix, and add a test."),
    ("What starts DMA?", "Writing to $420B starts DMA."),
    ("What is 7 times 6?", "7 times 6 is 42."),
]
TOOL_SAMPLE = {
    "id": "0" * 20, "source": "tools", "provenance": {},
    "tools": [{"name": "lookup", "description": "Find a label.",
               "parameters": {"type": "object", "properties": {"name": {"type": "string"}}}}],
    "messages": [
        {"role": "user", "content": "Where is NMI?"},
        {"role": "assistant", "content": "Looking it up.", "tool_calls": [{"name": "lookup", "arguments": {"name": "NMI"}}]},
        {"role": "tool", "name": "lookup", "content": "{\"address\": \"$00:8000\"}"},
        {"role": "assistant", "content": "NMI is at $00:8000."},
    ],
}
# A template that renders tools and tool calls itself (a small Hermes-style ChatML).
TOOLS_TEMPLATE = (
    "{% if tools %}<|im_start|>system\nTOOLS {{ tools | tojson }}<|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m.role }}\n"
    "{% if m.role == 'assistant' %}{% generation %}{{ m.content }}"
    "{% for c in m.tool_calls or [] %}<tool_call>{{ c.function.name }} {{ c.function.arguments | tojson }}</tool_call>{% endfor %}"
    "<|im_end|>{% endgeneration %}\n{% else %}{{ m.content }}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def sample(question: str, answer: str) -> dict:
    return {"id": "0" * 20, "source": "qa", "provenance": {},
            "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def manifest_dict(**overrides) -> dict:
    alpha = {"role": ROLE, "base": "tiny", "mix": "general", "hardware": "cpu", "port": 6001,
             "system_prompt": SYSTEM_PROMPT, "learning_rate": 0.003, "epochs": 20, "batch_size": 4,
             "max_seq_len": 128, "warmup_ratio": 0.1, "checkpoint_every": 5,
             "lora": {"r": 16, "alpha": 32, "dropout": 0.0}, **overrides}
    return {
        "project": {"name": "demo", "seed": 7},
        "models": {"tiny": {"path": "tiny", "params_b": 0.001}},
        "hardware": {"cpu": {"vram_gb": 8}},
        "sources": {"chat": {"kind": "custom", "path": "chat.jsonl", "format": "alpaca"}},
        "mixes": {"general": {"samples": 4, "groups": {"all": {"share": 1.0, "sources": ["chat"]}}}},
        "specialists": {"alpha": alpha},
    }


def load_manifest(root: Path, data: dict):
    (root / "afs.yaml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    (root / "chat.jsonl").write_text(json.dumps({"instruction": "a", "output": "b"}) + "\n")
    return manifest_module.load(root / "afs.yaml")


def render_through_stage(manifest, name: str = "alpha") -> Path:
    """Run render:<name>'s own action (as doit would) and return the script it wrote."""
    assert render_stage.run(manifest, name) is None  # None: the task succeeded
    return Layout.of(manifest).train(name).script


def render_task(manifest, name: str = "alpha") -> dict:
    return next(t for t in graph.all_tasks(manifest) if t["name"] == f"render:{name}")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A project with the tiny model, its script rendered by the stage, its config, and data."""
    from tinymodel import build_tiny_model

    root = tmp_path_factory.mktemp("project")
    tiny = build_tiny_model(root / "tiny")
    manifest = load_manifest(root, manifest_dict())
    path = render_through_stage(manifest)
    train = write_jsonl(root / "train.jsonl", [sample(q, a) for q, a in QA])
    evaluation = write_jsonl(root / "eval.jsonl", [sample(q, a) for q, a in QA[:3]])
    return {"root": root, "tiny": tiny, "manifest": manifest, "script": path, "train": train,
            "eval": evaluation, "config": script.config(manifest, "alpha", base=str(tiny))}


@pytest.fixture(scope="module")
def full_run(world):
    """One uninterrupted 30-step run of the rendered script through run_local (the reference)."""
    files = TrainFiles(world["root"] / "full")
    summary = local.run_local(world["script"], files, base=world["tiny"], train=world["train"],
                              eval=world["eval"], max_steps=30)
    return files.folder, summary


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


# --- the config and the rendered text -------------------------------------------------------


def test_config_comes_from_the_manifest_the_layout_and_the_defaults(world):
    config, manifest = world["config"], world["manifest"]
    assert [f.name for f in dataclasses.fields(config)] == list(loop.knob_docs())
    assert config.train_data == "../../../data/mix/alpha/train.jsonl"
    assert config.base_revision is None  # a path model has no hub revision
    files = Layout.of(manifest).train("alpha")
    outputs = (config.metrics_file, config.checkpoints_dir, config.adapter_dir, config.summary_file)
    assert tuple(files.folder / name for name in outputs) == (
        files.metrics, files.checkpoints, files.adapter, files.summary)
    assert config.architectures == tuple(sorted(FAMILIES))
    assert (config.lr_schedule, config.weight_decay, config.max_grad_norm) == (
        script.DEFAULTS["lr_schedule"], script.DEFAULTS["weight_decay"], script.DEFAULTS["max_grad_norm"])
    # the digest the script carries is the one the render task compares
    (check,) = [u for u in render_task(manifest)["uptodate"] if isinstance(u, SliceChanged)]
    assert config.manifest_digest == check.digest


def test_config_refuses_unknown_values(world):
    with pytest.raises(loop.ConfigError, match=r"lr_schedule 'step': expected one of \('cosine', 'linear'\)"):
        dataclasses.replace(world["config"], lr_schedule="step")
    with pytest.raises(TypeError):
        loop.TrainConfig(specialist="x")  # every knob is explicit: no hidden defaults


GOLDEN_HEAD = '''#!/usr/bin/env python3
# LoRA fine-tune of the specialist alpha: Alpha v1, Test specialist with a newline; import os.
#
# Rendered by afs from afs.yaml, training settings digest (the one the build compares):
#     {digest}
# Do not edit this file: edit the manifest and render it again. It needs only torch,
# transformers and peft (and bitsandbytes for a 4bit/8bit base), and runs the same on a laptop
# CPU or a rented GPU:
#
#     python train.py --base BASE --train train.jsonl --eval eval.jsonl --out OUT [--max-steps N]
#     python -m torch.distributed.run --standalone --nproc_per_node N train.py ...
#
# Its first step checks the base model's config, tokenizer and chat template (seconds, before
# any weight is loaded; `--check-only` stops there). Read it top to bottom: this configuration,
# then the training loop (afs_build/training/loop.py, verbatim), then the line that runs it.

# -----------------------------------------------------------------------------------------------
# Configuration, from the manifest. Paths and the base model can be overridden on the command
# line (--help); the training knobs are the manifest's, so the build knows what it trained.
# -----------------------------------------------------------------------------------------------

CONFIG = dict(
    # the specialist this script trains
    specialist='alpha',
    # digest of the manifest settings this script was rendered from (the one the build compares)
    manifest_digest='{digest}',
    # base model (--base): a local Hugging Face folder or a hub id
    base='{base}',
    # hub revision to pin (branch, tag or commit); ignored for a local folder
    base_revision=None,
    # training samples (--train), JSONL of canonical samples; relative paths are relative to this
    # script's folder, as is the default output folder (--out)
    train_data='../../../data/mix/alpha/train.jsonl',
    # evaluation samples (--eval); a missing file skips evaluation
    eval_data='../../../data/mix/alpha/eval.jsonl',
    # written into the output folder: one JSON line per optimizer step
    metrics_file='metrics.jsonl',
    # written into the output folder: the latest resumable checkpoint
    checkpoints_dir='checkpoints',
    # written into the output folder: the trained adapter (peft format) with the tokenizer
    adapter_dir='adapter',
    # written into the output folder, last: the run's summary (the build's signal that training
    # finished)
    summary_file='training_summary.json',
    # model architectures afs can convert to GGUF after training; the first step refuses any other
    # base (empty: no check)
    architectures=('LlamaForCausalLM', 'Qwen2ForCausalLM'),
    # seed for the LoRA initialization, dropout and the data order: a CPU run repeats exactly
    seed=7,
    # system prompt inserted as the first turn of every sample that has none ('' for none)
    system_prompt='You answer "briefly"; it\\'s a test.\\nSecond line with a \\\\ backslash and """ quotes.',
    # LoRA rank: the width of the low-rank update to each adapted matrix
    lora_r=16,
    # LoRA alpha: the update is scaled by alpha / r
    lora_alpha=32.0,
    # dropout on the LoRA path's input
    lora_dropout=0.0,
    # module names to adapt (the last part of the module path, e.g. q_proj), or ('all-linear',)
    lora_targets=('q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'),
    # passes over the training split (a fraction ends part-way through the last pass)
    epochs=20.0,
    # peak learning rate, reached after the warmup
    learning_rate=0.003,
    # learning-rate schedule after the warmup: 'cosine' or 'linear' decay to zero
    lr_schedule='cosine',
    # fraction of the optimizer steps spent warming the learning rate up from zero
    warmup_ratio=0.1,
    # AdamW weight decay on the LoRA weights
    weight_decay=0.0,
    # gradients are clipped to this global norm
    max_grad_norm=1.0,
    # sequences per micro-batch (packed rows when packing is on)
    batch_size=4,
    # micro-batches per optimizer step (on each rank)
    grad_accum=1,
    # longest sequence in tokens: longer samples are cut, packed rows hold at most this many
    max_seq_len=128,
    # pack short samples into rows of max_seq_len (they never attend to each other); else pad
    packing=False,
    # recompute activations in the backward pass: less memory, about a third more time
    gradient_checkpointing=False,
    # save a resumable checkpoint every this many optimizer steps (and after the last)
    checkpoint_every=5,
    # frozen base weights: auto (float32 on CPU, bfloat16 or float16 on a GPU), float32, bfloat16,
    # float16, or 8bit / 4bit (QLoRA, CUDA and bitsandbytes only)
    base_precision='auto',
)

# -----------------------------------------------------------------------------------------------
# The training loop
# -----------------------------------------------------------------------------------------------

'''
GOLDEN_TAIL = '''

if __name__ == "__main__":
    sys.exit(cli(TrainConfig(**CONFIG)))
'''


def test_golden_script_through_the_render_stage(world):
    """Header and config block, then the loop module verbatim, then the line that runs it."""
    text = world["script"].read_text()
    head = GOLDEN_HEAD.format(digest=world["config"].manifest_digest, base=world["tiny"])
    assert text == head + Path(loop.__file__).read_text() + GOLDEN_TAIL
    assert "import afs_build" not in text and "from afs_build" not in text


def config_block(text: str) -> dict:
    """The CONFIG keywords of a rendered script, each value read back as a literal."""
    (call,) = [node.value for node in ast.parse(text).body
               if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "CONFIG"]
    return {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}


def test_values_round_trip_through_hostile_quotes(world):
    base = "a 'quoted' \"base\"\nwith a newline"
    config = script.config(world["manifest"], "alpha", base=base)
    text = script.render(config, script.header(world["manifest"], "alpha"))
    assert text == script.render(config, script.header(world["manifest"], "alpha"))  # deterministic
    assert config_block(text) == dataclasses.asdict(config)
    # the role's newline did not escape the comment: nothing but comments before CONFIG
    head = text[:text.index("CONFIG = dict(")].splitlines()
    assert all(line.startswith("#") or not line for line in head)


def test_every_knob_has_its_comment_right_above_it(world):
    lines = world["script"].read_text().splitlines()
    start = lines.index("CONFIG = dict(") + 1
    end = lines.index(")", start)
    names = [line.split("=", 1)[0].strip() for line in lines[start:end] if not line.lstrip().startswith("#")]
    assert names == list(loop.knob_docs())
    for i in range(start, end):
        if not lines[i].lstrip().startswith("#"):
            assert lines[i - 1].lstrip().startswith("# ")


def test_rendered_script_compiles_and_lints_clean(world):
    compile(world["script"].read_text(), str(world["script"]), "exec")
    ruff = subprocess.run([sys.executable, "-m", "ruff", "--version"], capture_output=True)
    if ruff.returncode != 0:
        pytest.skip("ruff is not installed here (the compile check above ran)")
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--select", "F,E9",
                             str(world["script"]), loop.__file__], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_loop_stands_alone_and_imports_light():
    """loop.py imports only the standard library at the top (torch & co. inside functions), and
    importing it, or the afs modules that share its helpers, loads no torch."""
    tree = ast.parse(Path(loop.__file__).read_text())
    top = {alias.name.split(".")[0] for node in tree.body if isinstance(node, ast.Import) for alias in node.names}
    top |= {node.module.split(".")[0] for node in tree.body if isinstance(node, ast.ImportFrom)}
    assert top <= set(sys.stdlib_module_names), top - set(sys.stdlib_module_names)
    inner = {alias.name.split(".")[0] if isinstance(node, ast.Import) else node.module.split(".")[0]
             for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
             for alias in node.names} - top
    assert inner <= {"torch", "transformers", "peft", "bitsandbytes", "resource"}, inner
    probe = ("import sys, afs_build.training.loop, afs_build.estimate, afs_build.checks, "
             "afs_build.training.inspection; print(sorted(m for m in ('torch', 'transformers', "
             "'peft', 'jinja2') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- data: chat template, masks, tools, packing -------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(world):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(world["tiny"])


def labelled_text(tokenizer, item) -> str:
    return tokenizer.decode([t for t in item["labels"] if t != -100])


def test_labels_cover_the_assistant_only(world, tokenizer):
    config = world["config"]
    two_turns = {**sample("Hi?", "Hello."), "messages": [
        {"role": "user", "content": "What is 12 plus 30?"}, {"role": "assistant", "content": "42."},
        {"role": "user", "content": "And 7 times 6?"}, {"role": "assistant", "content": "Also 42."}]}
    (item,), dropped = loop.tokenize(tokenizer, [two_turns], config.system_prompt, 128)
    assert dropped == 0
    assert labelled_text(tokenizer, item) == "42.<|im_end|>Also 42.<|im_end|>"
    # every user and system token, and the template around them, is -100
    text = tokenizer.decode(item["input_ids"])
    assert text.startswith("<|im_start|>system\n" + SYSTEM_PROMPT)
    user_ids = tokenizer("What is 12 plus 30?", add_special_tokens=False)["input_ids"]
    at = next(i for i in range(len(item["input_ids"])) if item["input_ids"][i:i + len(user_ids)] == user_ids)
    assert item["labels"][at:at + len(user_ids)] == [-100] * len(user_ids)


def test_prefix_diff_mask_matches_generation_markers(world, tokenizer):
    """Without {% generation %} markers the mask comes from rendering prefixes: the same labels."""
    samples = [sample(q, a) for q, a in QA] + [TOOL_SAMPLE]
    marked, dropped = loop.tokenize(tokenizer, samples, SYSTEM_PROMPT, 1024)
    assert dropped == 0
    plain = type(tokenizer).from_pretrained(world["tiny"])
    plain.chat_template = tokenizer.chat_template.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    assert loop.has_generation_markers(tokenizer.chat_template)
    assert not loop.has_generation_markers(plain.chat_template)
    diffed, _ = loop.tokenize(plain, samples, SYSTEM_PROMPT, 1024)
    assert diffed == marked


def test_tool_calls_as_text_without_template_support(tokenizer):
    (item,), _ = loop.tokenize(tokenizer, [TOOL_SAMPLE], "", 1024)
    text = tokenizer.decode(item["input_ids"])
    assert '<|im_start|>system\nYou can call these tools:\n{"name": "lookup"' in text
    assert '<|im_start|>user\n<tool_response>\n{"address": "$00:8000"}\n</tool_response><|im_end|>' in text
    assert labelled_text(tokenizer, item) == ('Looking it up.\n<tool_call>\n{"name": "lookup", "arguments": '
                                              '{"name": "NMI"}}\n</tool_call><|im_end|>NMI is at $00:8000.<|im_end|>')


def test_tool_calls_through_a_template_that_knows_tools(world):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(world["tiny"])
    tokenizer.chat_template = TOOLS_TEMPLATE
    (item,), _ = loop.tokenize(tokenizer, [TOOL_SAMPLE], "", 1024)
    text = tokenizer.decode(item["input_ids"])
    assert text.startswith('<|im_start|>system\nTOOLS [{"type": "function", "function": {"name": "lookup"')
    assert "<|im_start|>tool\n{\"address\": \"$00:8000\"}<|im_end|>" in text
    assert labelled_text(tokenizer, item) == ('Looking it up.<tool_call>lookup {"name": "NMI"}</tool_call>'
                                              '<|im_end|>NMI is at $00:8000.<|im_end|>')


def test_truncation_and_dropping(tokenizer):
    long_answer = sample("Tell me.", "Paris is the capital of France. " * 40)
    long_question = sample("Paris is the capital of France. " * 40, "Yes.")
    kept, dropped = loop.tokenize(tokenizer, [long_answer, long_question], "", 64)
    assert dropped == 1 and len(kept[0]["input_ids"]) == 64


def test_pack_fits_rows_and_keeps_every_sample():
    samples = [{"input_ids": [i] * n, "labels": [i] * n} for i, n in enumerate([50, 70, 30, 20, 100, 10, 60])]
    rows = loop.pack(samples, 128)
    assert all(sum(len(s["input_ids"]) for s in row) <= 128 for row in rows)
    assert sorted(s["input_ids"][0] for row in rows for s in row) == list(range(7))
    assert len(rows) == 3  # 340 tokens in rows of 128
    assert loop.units_of(samples, True, 128) == rows
    assert loop.units_of(samples, False, 128) == [[s] for s in samples]


def test_micro_batches_group_units_of_one_length_and_keep_every_unit_once():
    import random

    rng = random.Random(3)
    units = [[{"id": i, "input_ids": [0] * rng.choice([60, 90, 350, 420])}] for i in range(160)]
    batches = loop.micro_batches(units, 4, 42, 0)
    assert sorted(u[0]["id"] for b in batches for u in b) == list(range(160))
    assert batches == loop.micro_batches(units, 4, 42, 0) != loop.micro_batches(units, 4, 42, 1)

    def padded(bs):
        return sum(max(loop.unit_tokens(u) for u in b) * len(b) for b in bs)

    real = sum(loop.unit_tokens(u) for u in units)
    ungrouped = loop.micro_batches(units, 4, 42, 0, window=1)  # a random order cut in fours
    assert padded(batches) - real < (padded(ungrouped) - real) / 2  # less than half the padding
    # beyond its window of 8 batches the order stays random: not one long sorted run
    lengths = [loop.unit_tokens(b[0]) for b in batches]
    assert lengths != sorted(lengths) and lengths != sorted(lengths, reverse=True)


def test_schedule_warms_up_then_decays_to_zero():
    cosine = [loop.schedule(s, 10, 2, "cosine") for s in range(10)]
    linear = [loop.schedule(s, 10, 2, "linear") for s in range(10)]
    assert cosine[:2] == linear[:2] == [1 / 3, 2 / 3]
    assert cosine[2] == linear[2] == 1.0
    assert cosine[6] == pytest.approx(0.5) and linear[6] == pytest.approx(0.5)
    assert cosine[7] < linear[7] and all(a >= b for a, b in zip(cosine[2:], cosine[3:]))


@pytest.fixture(scope="module")
def lora_model(world):
    import torch
    from transformers import AutoModelForCausalLM

    models = {}
    for attn in ("sdpa", "eager"):
        torch.manual_seed(0)
        base = AutoModelForCausalLM.from_pretrained(world["tiny"], attn_implementation=attn)
        model = loop.add_lora(base, world["config"])
        for name, param in model.named_parameters():  # a non-zero LoRA B, so the adapter matters
            if "lora_B" in name:
                param.data.normal_(0, 0.02)
        models[attn] = model.eval()
    return models


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_loss_equals_the_per_sample_losses(tokenizer, lora_model, attn):
    import torch

    model = lora_model[attn]
    items, _ = loop.tokenize(tokenizer, [sample(q, a) for q, a in QA], "", 128)
    device = torch.device("cpu")
    with torch.no_grad():
        alone = [loop.loss_sum(model, loop.collate([[s]], 0, attn), device).item() for s in items]
        padded = loop.loss_sum(model, loop.collate([[s] for s in items], 0, attn), device).item()
        rows = [items[:3], items[3:5], items[5:]]  # rows of different widths: padding and packing
        batch = loop.collate(rows, 0, attn)
        packed = loop.loss_sum(model, batch, device).item()
    assert batch["position_ids"][0, :len(items[0]["input_ids"]) + 2].tolist()[-2:] == [0, 1]
    # padded rows keep counting (a restart would make transformers build a packed-sequence mask)
    padded_batch = loop.collate([[s] for s in items], 0, attn)
    assert padded_batch["attention_mask"] is None
    assert (padded_batch["position_ids"] == torch.arange(padded_batch["position_ids"].shape[1])).all()
    assert batch["tokens"] == sum(len(s["input_ids"]) for s in items)
    assert padded == pytest.approx(sum(alone), rel=1e-5)
    assert packed == pytest.approx(sum(alone), rel=1e-5)


def test_checkpoints_are_atomic_and_only_the_latest_is_kept(world, lora_model, tmp_path):
    """A checkpoint appears complete under its name or not at all; a half-written one is ignored."""
    import torch

    model = lora_model["sdpa"]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: loop.schedule(s, 10, 1))
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    folder = tmp_path / "checkpoints"
    for step in (3, 6):
        loop.save_checkpoint(folder, model, optimizer, scheduler, scaler, {"step": step, "fingerprint": "f"})
    (folder / ".tmp-step-000009" / "adapter").mkdir(parents=True)  # what a kill mid-write leaves
    assert sorted(p.name for p in folder.iterdir()) == [".tmp-step-000009", "step-000006"]
    assert loop.latest_checkpoint(folder).name == "step-000006"
    torch.manual_seed(123)
    expected = torch.get_rng_state()
    loop.save_checkpoint(folder, model, optimizer, scheduler, scaler, {"step": 7, "fingerprint": "f"})
    torch.manual_seed(0)
    state = loop.load_checkpoint(loop.latest_checkpoint(folder), model, optimizer, scheduler, scaler)
    assert state == {"step": 7, "fingerprint": "f"} and torch.equal(torch.get_rng_state(), expected)


def test_missing_lora_targets_name_the_linear_modules(world):
    from transformers import AutoModelForCausalLM

    config = dataclasses.replace(world["config"], lora_targets=("q_proj", "c_attn", "qkv"))
    base = AutoModelForCausalLM.from_pretrained(world["tiny"])
    with pytest.raises(loop.ConfigError) as err:
        loop.add_lora(base, config)
    assert str(err.value) == (
        "LoRA targets not in the model: 'c_attn', 'qkv'; its linear modules are: 'down_proj', "
        "'gate_proj', 'k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj' (set lora.targets of the "
        "specialist 'alpha' in the manifest)")


def test_quantized_base_needs_cuda():
    import torch

    with pytest.raises(loop.ConfigError) as err:
        loop.precision("4bit", torch.device("cpu"))
    assert str(err.value) == ("base_precision '4bit' needs a CUDA GPU and bitsandbytes, but this run "
                              "is on cpu; use base_precision: auto to train here")


@pytest.mark.parametrize("flags, want", [
    ("fpu avx2 avx512f avx512_bf16 avx512_vnni", "bfloat16"),  # x86 with AVX512-BF16
    ("fpu avx2 amx_bf16 amx_tile", "bfloat16"),                # x86 with AMX
    ("fp asimd bf16 i8mm", "bfloat16"),                        # Arm (Features line)
    ("fpu avx2 avx512f avx512bw", None),                       # AVX-512 without BF16: emulated
])
def test_cpu_autocast_follows_the_cpu_flags(tmp_path, flags, want):
    import torch

    key = "Features" if "asimd" in flags else "flags"
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\n{key}\t\t: {flags}\n\nprocessor\t: 1\n{key}\t\t: {flags}\n")
    bf16 = loop.cpu_has_bfloat16(cpuinfo)
    weights, amp, quantization = loop.precision("auto", torch.device("cpu"), cpu_bf16=bf16)
    assert (weights, quantization) == (torch.float32, None)
    assert (None if amp is None else str(amp).replace("torch.", "")) == want
    # plain float32 on any CPU
    assert loop.precision("float32", torch.device("cpu"), cpu_bf16=bf16) == (torch.float32, None, None)


# --- the first step: the base checked before any weight is loaded --------------------------------


def test_an_unsupported_architecture_fails_in_seconds_before_any_weight(world, tmp_path):
    import shutil

    folder = Path(shutil.copytree(world["tiny"], tmp_path / "gpt2ish"))
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = ["GPT2LMHeadModel"]
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").write_bytes(b"not weights: never read")
    files = TrainFiles(tmp_path / "out")
    started = time.monotonic()
    with pytest.raises(StageError) as err:
        local.run_local(world["script"], files, base=folder, train=world["train"], eval=world["eval"])
    assert time.monotonic() - started < 120  # the imports; the weights would have failed to load
    assert str(err.value).endswith(
        "ERROR: the base model fails the checks afs makes before training:\n"
        f"{folder}: architecture 'GPT2LMHeadModel' cannot be converted to GGUF by afs, so a "
        "specialist trained on it could not be served; expected one of: 'LlamaForCausalLM', "
        "'Qwen2ForCausalLM'")
    assert not files.metrics.exists() and not files.checkpoints.exists()


def test_check_only_stops_after_the_checks(world, tmp_path):
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(world["script"]), "--base", str(world["tiny"]),
                           "--out", str(out), "--check-only"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == f"alpha: base {world['tiny']} passes the checks"
    assert not out.exists()


# --- real runs ----------------------------------------------------------------------------------


def test_training_run_learns_and_writes_its_outputs(world, full_run):
    out, summary = full_run
    lines = metrics(out)
    assert [m["step"] for m in lines] == list(range(1, 31))
    assert set(lines[0]) == {"step", "total_steps", "epoch", "loss", "lr", "tokens",
                             "tokens_per_second", "elapsed", "eval_loss"}
    losses = [m["loss"] for m in lines]
    assert sum(losses[-5:]) / 5 < 0.85 * sum(losses[:5]) / 5  # about 6.0 -> 4.3
    assert [m["step"] for m in lines if m["eval_loss"] is not None] == list(range(2, 31, 2))  # per epoch
    assert summary["steps"] == 30 and summary["tokens_seen"] == sum(m["tokens"] for m in lines)
    assert summary["eval_loss"] == lines[-1]["eval_loss"] and summary["eval_loss"] < lines[1]["eval_loss"]
    assert summary["train_loss"] == losses[-1]
    assert summary["device"] == "cpu" and summary["peak_memory_bytes"] > 0
    assert summary["hyperparameters"]["system_prompt"] == SYSTEM_PROMPT
    assert summary["hyperparameters"] == loop.hyperparameters(world["config"])
    assert summary["manifest_digest"] == world["config"].manifest_digest
    assert summary["base_warnings"] == []
    assert set(summary["versions"]) == {"python", "torch", "transformers", "peft"}
    assert json.loads((out / "training_summary.json").read_text()) == summary
    assert not list(out.glob(".*tmp*"))  # nothing half-written left behind
    (checkpoint,) = (out / "checkpoints").glob("step-*")  # only the latest is kept
    assert checkpoint.name == "step-000030" and not list((out / "checkpoints").glob(".tmp-*"))
    assert sorted(p.name for p in checkpoint.iterdir()) == ["adapter", "state.json", "trainer.pt"]


def test_adapter_loads_onto_the_base_with_peft(world, full_run):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out, _ = full_run
    ids = torch.tensor([[1, 87, 85, 261, 201]])
    base = AutoModelForCausalLM.from_pretrained(world["tiny"]).eval()
    with torch.no_grad():
        before = base(ids).logits
        tuned = PeftModel.from_pretrained(base, out / "adapter").eval()
        after = tuned(ids).logits
    assert not torch.allclose(before, after)
    assert (out / "adapter" / "tokenizer_config.json").exists()


def test_runs_repeat_exactly(world, tmp_path):
    """Same seed, same machine: the same loss at every step (the loop in-process, 6 steps each)."""
    runs = []
    for name in ("one", "two"):
        code = loop.cli(world["config"], ["--base", str(world["tiny"]), "--train", str(world["train"]),
                                          "--eval", str(world["eval"]), "--out", str(tmp_path / name),
                                          "--max-steps", "6"])
        assert code == 0
        runs.append([m["loss"] for m in metrics(tmp_path / name)])
    assert runs[0] == runs[1] and len(runs[0]) == 6


def test_output_names_come_from_the_config(world, tmp_path):
    config = dataclasses.replace(world["config"], metrics_file="m.jsonl", checkpoints_dir="ck",
                                 adapter_dir="lora", summary_file="done.json")
    out = tmp_path / "out"
    summary = loop.train(config, loop.parse_args(config, [
        "--base", str(world["tiny"]), "--train", str(world["train"]), "--eval", str(world["eval"]),
        "--out", str(out), "--max-steps", "2"]))
    assert sorted(p.name for p in out.iterdir()) == ["ck", "done.json", "lora", "m.jsonl"]
    assert json.loads((out / "done.json").read_text()) == summary


@pytest.mark.slow
def test_resumes_after_sigkill(world, full_run):
    out = world["root"] / "killed"
    command = [sys.executable, str(world["script"]), "--base", str(world["tiny"]), "--train", str(world["train"]),
               "--eval", str(world["eval"]), "--out", str(out), "--max-steps", "30"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    deadline = time.monotonic() + 300
    while not list((out / "checkpoints").glob("step-*")) and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    (checkpoint,) = list((out / "checkpoints").glob("step-*"))
    at = int(checkpoint.name.split("-")[1])
    assert 0 < at < 30, "the run ended before it could be killed"

    files = TrainFiles(out)
    summary = local.run_local(world["script"], files, base=world["tiny"], train=world["train"],
                              eval=world["eval"], max_steps=30)
    log = files.log.read_text()
    assert f"resuming from step-{at:06d} (step {at})" in log
    assert f"step {at + 1}/30 " in log and "step 1/30 " not in log
    assert summary["resumed_from_step"] == at and summary["steps"] == 30
    # the resumed run is the uninterrupted run: same data order, RNG and optimizer state
    assert [m["loss"] for m in metrics(out)] == [m["loss"] for m in metrics(full_run[0])]


def test_failure_quotes_the_log(world, tmp_path):
    files = TrainFiles(tmp_path / "out")
    with pytest.raises(StageError) as err:
        local.run_local(world["script"], files, base=world["tiny"], train=tmp_path / "missing.jsonl",
                        eval=world["eval"])
    message = str(err.value)
    assert message.startswith(f"training script {world['script']} failed (exit code 2); the last 20 "
                              f"lines of {files.log}:\n")
    assert message.endswith(f"ERROR: training data not found: {tmp_path / 'missing.jsonl'}")


def test_train_log_is_redacted_like_the_json_log(world, tmp_path):
    """What the script prints reaches train.log through afs_build.log.redact."""
    token = "hf_" + "A1b2C3d4E5f6G7h8J9k0L1m2"
    files = TrainFiles(tmp_path / "out")
    missing = tmp_path / token / "missing.jsonl"
    with pytest.raises(StageError) as err:
        local.run_local(world["script"], files, base=world["tiny"], train=missing, eval=world["eval"])
    log = files.log.read_text()
    assert token not in log and token not in str(err.value)
    assert log.count("[redacted]") == 2  # the command line, and the script's error
    assert log.rstrip().endswith(f"ERROR: training data not found: {tmp_path}/[redacted]/missing.jsonl")


def test_progress_reads_whole_new_lines_only(tmp_path):
    path = tmp_path / "metrics.jsonl"
    assert local._read_new(path, 0) == (0, None)  # not written yet
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo')
    offset, last = local._read_new(path, 0)
    assert last == {"step": 1, "loss": 2.0} and offset == len('{"step": 1, "loss": 2.0}\n')
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n')
    assert local._read_new(path, offset)[1] == {"step": 2, "loss": 1.5}
    path.write_text("")  # a resume rewrote the file shorter: read from the start again
    assert local._read_new(path, offset) == (0, None)
