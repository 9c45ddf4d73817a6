"""The rendered training script: its text, its data handling, and real runs on a tiny model."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from afs_build import manifest as manifest_module
from afs_build.errors import StageError
from afs_build.training import local, script

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


def import_script(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A project with the tiny model, its rendered script, the script as a module, and data."""
    from tinymodel import build_tiny_model

    root = tmp_path_factory.mktemp("project")
    tiny = build_tiny_model(root / "tiny")
    manifest = load_manifest(root, manifest_dict())
    path = root / "train.py"
    path.write_text(script.render(script.context(manifest, "alpha", base=str(tiny))), encoding="utf-8")
    train = write_jsonl(root / "train.jsonl", [sample(q, a) for q, a in QA])
    evaluation = write_jsonl(root / "eval.jsonl", [sample(q, a) for q, a in QA[:3]])
    return {"root": root, "tiny": tiny, "manifest": manifest, "script": path, "train": train,
            "eval": evaluation, "module": import_script(path, "rendered_train")}


@pytest.fixture(scope="module")
def full_run(world):
    """One uninterrupted 30-step run through run_local (the reference for later tests)."""
    out = world["root"] / "full"
    summary = local.run_local(world["script"], base=world["tiny"], train=world["train"], eval=world["eval"],
                              out=out, log_file=out / "train.log", max_steps=30)
    return out, summary


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


# --- the rendered text ------------------------------------------------------------------------


def test_context_keys(world):
    ctx = script.context(world["manifest"], "alpha", base="some/model")
    assert sorted(ctx) == sorted([
        "specialist", "title", "role", "manifest_file", "manifest_digest", "base", "base_revision",
        "train_data", "eval_data", "seed", "system_prompt", "lora_r", "lora_alpha", "lora_dropout",
        "lora_targets", "epochs", "learning_rate", "lr_schedule", "warmup_ratio", "weight_decay",
        "max_grad_norm", "batch_size", "grad_accum", "max_seq_len", "packing",
        "gradient_checkpointing", "checkpoint_every", "base_precision"])
    assert ctx["train_data"] == "../../../data/mix/alpha/train.jsonl"
    assert ctx["base_revision"] is None  # a path model has no hub revision


def test_header_and_config_block(world):
    manifest = world["manifest"]
    text = script.render(script.context(manifest, "alpha", base="models/tiny"))
    lines = text.splitlines()
    assert lines[:4] == [
        "#!/usr/bin/env python3",
        "# LoRA fine-tune of the specialist alpha: Alpha v1, Test specialist with a newline; import os.",
        "#",
        f"# Rendered by afs from afs.yaml (manifest digest {manifest.digest}). Do not edit",
    ]
    start = lines.index("# the specialist this script trains")
    end = next(i for i, line in enumerate(lines) if line.startswith("BASE_PRECISION = "))
    assert "\n".join(lines[start:end + 1]) == GOLDEN_CONFIG.format(digest=manifest.digest).rstrip("\n")
    # every knob has its one-line comment right above it
    knobs = [i for i in range(start, end + 1) if lines[i][:1].isupper()]
    assert all(lines[i - 1].startswith("# ") or lines[i - 1][:1].isupper() for i in knobs)


GOLDEN_CONFIG = r'''# the specialist this script trains
SPECIALIST = 'alpha'
# digest of the manifest settings this script was rendered from
MANIFEST_DIGEST = '{digest}'
# base model (--base): a local Hugging Face folder or a hub id
BASE = 'models/tiny'
# hub revision to pin (branch, tag or commit); ignored for a local folder
BASE_REVISION = None
# training and evaluation samples (--train, --eval), JSONL of canonical samples; relative paths
# are relative to this script's folder, as is the default output folder (--out)
TRAIN_DATA = '../../../data/mix/alpha/train.jsonl'
EVAL_DATA = '../../../data/mix/alpha/eval.jsonl'
# seed for the LoRA initialization, dropout and the data order: a CPU run repeats exactly
SEED = 7
# system prompt inserted as the first turn of every sample that has none ('' for none)
SYSTEM_PROMPT = 'You answer "briefly"; it\'s a test.\nSecond line with a \\ backslash and """ quotes.'
# LoRA rank: the width of the low-rank update to each adapted matrix
LORA_R = 16
# LoRA alpha: the update is scaled by alpha / r
LORA_ALPHA = 32.0
# dropout on the LoRA path's input
LORA_DROPOUT = 0.0
# module names to adapt (the last part of the module path, e.g. q_proj)
LORA_TARGETS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj']
# passes over the training split (a fraction ends part-way through the last pass)
EPOCHS = 20.0
# peak learning rate, reached after the warmup
LEARNING_RATE = 0.003
# learning-rate schedule after the warmup: 'cosine' or 'linear' decay to zero
LR_SCHEDULE = 'cosine'
# fraction of the optimizer steps spent warming the learning rate up from zero
WARMUP_RATIO = 0.1
# AdamW weight decay on the LoRA weights
WEIGHT_DECAY = 0.0
# gradients are clipped to this global norm
MAX_GRAD_NORM = 1.0
# sequences per micro-batch (packed rows when PACKING is on)
BATCH_SIZE = 4
# micro-batches per optimizer step
GRAD_ACCUM = 1
# longest sequence in tokens: longer samples are cut, packed rows hold at most this many
MAX_SEQ_LEN = 128
# pack short samples into rows of MAX_SEQ_LEN (they never attend to each other); else pad
PACKING = False
# recompute activations in the backward pass: less memory, about a third more time
GRADIENT_CHECKPOINTING = False
# save a resumable checkpoint every this many optimizer steps (and after the last)
CHECKPOINT_EVERY = 5
# frozen base weights: auto (float32 on CPU, bfloat16 or float16 on a GPU), float32,
# bfloat16, float16, or 8bit / 4bit (QLoRA, CUDA and bitsandbytes only)
BASE_PRECISION = 'auto'
'''


def test_render_parses_quotes_safely_and_is_deterministic(world):
    ctx = script.context(world["manifest"], "alpha", base="a 'quoted' \"base\"")
    text = script.render(ctx)
    assert text == script.render(script.context(world["manifest"], "alpha", base="a 'quoted' \"base\""))
    tree = ast.parse(text)
    values = {node.targets[0].id: ast.literal_eval(node.value) for node in tree.body
              if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
              and node.targets[0].id in ("SYSTEM_PROMPT", "BASE", "LORA_TARGETS")}
    assert values == {"SYSTEM_PROMPT": SYSTEM_PROMPT, "BASE": "a 'quoted' \"base\"",
                      "LORA_TARGETS": list(ctx["lora_targets"])}
    # the role's newline did not escape the comment: nothing but comments before the imports
    head = text[:text.index("from __future__")].splitlines()
    assert all(line.startswith("#") or not line for line in head)


def test_render_is_strict_about_missing_values(world):
    import jinja2

    ctx = script.context(world["manifest"], "alpha", base="x")
    del ctx["lora_r"]
    with pytest.raises(jinja2.UndefinedError, match="lora_r"):
        script.render(ctx)


# --- data: chat template, masks, tools, packing -------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(world):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(world["tiny"])


def labelled_text(tokenizer, item) -> str:
    return tokenizer.decode([t for t in item["labels"] if t != -100])


def test_labels_cover_the_assistant_only(world, tokenizer):
    mod = world["module"]
    two_turns = {**sample("Hi?", "Hello."), "messages": [
        {"role": "user", "content": "What is 12 plus 30?"}, {"role": "assistant", "content": "42."},
        {"role": "user", "content": "And 7 times 6?"}, {"role": "assistant", "content": "Also 42."}]}
    (item,), dropped = mod.tokenize(tokenizer, [two_turns], mod.SYSTEM_PROMPT, 128)
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
    mod = world["module"]
    samples = [sample(q, a) for q, a in QA] + [TOOL_SAMPLE]
    marked, dropped = mod.tokenize(tokenizer, samples, mod.SYSTEM_PROMPT, 1024)
    assert dropped == 0
    plain = type(tokenizer).from_pretrained(world["tiny"])
    plain.chat_template = tokenizer.chat_template.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    assert not mod.has_generation_markers(plain.chat_template)
    diffed, _ = mod.tokenize(plain, samples, mod.SYSTEM_PROMPT, 1024)
    assert diffed == marked


def test_tool_calls_as_text_without_template_support(world, tokenizer):
    mod = world["module"]
    (item,), _ = mod.tokenize(tokenizer, [TOOL_SAMPLE], "", 1024)
    text = tokenizer.decode(item["input_ids"])
    assert '<|im_start|>system\nYou can call these tools:\n{"name": "lookup"' in text
    assert '<|im_start|>user\n<tool_response>\n{"address": "$00:8000"}\n</tool_response><|im_end|>' in text
    assert labelled_text(tokenizer, item) == ('Looking it up.\n<tool_call>\n{"name": "lookup", "arguments": '
                                              '{"name": "NMI"}}\n</tool_call><|im_end|>NMI is at $00:8000.<|im_end|>')


def test_tool_calls_through_a_template_that_knows_tools(world):
    from transformers import AutoTokenizer

    mod = world["module"]
    tokenizer = AutoTokenizer.from_pretrained(world["tiny"])
    tokenizer.chat_template = TOOLS_TEMPLATE
    (item,), _ = mod.tokenize(tokenizer, [TOOL_SAMPLE], "", 1024)
    text = tokenizer.decode(item["input_ids"])
    assert text.startswith('<|im_start|>system\nTOOLS [{"type": "function", "function": {"name": "lookup"')
    assert "<|im_start|>tool\n{\"address\": \"$00:8000\"}<|im_end|>" in text
    assert labelled_text(tokenizer, item) == ('Looking it up.<tool_call>lookup {"name": "NMI"}</tool_call>'
                                              '<|im_end|>NMI is at $00:8000.<|im_end|>')


def test_truncation_and_dropping(world, tokenizer):
    mod = world["module"]
    long_answer = sample("Tell me.", "Paris is the capital of France. " * 40)
    long_question = sample("Paris is the capital of France. " * 40, "Yes.")
    kept, dropped = mod.tokenize(tokenizer, [long_answer, long_question], "", 64)
    assert dropped == 1 and len(kept[0]["input_ids"]) == 64


def test_pack_fits_rows_and_keeps_every_sample(world):
    mod = world["module"]
    samples = [{"input_ids": [i] * n, "labels": [i] * n} for i, n in enumerate([50, 70, 30, 20, 100, 10, 60])]
    rows = mod.pack(samples, 128)
    assert all(sum(len(s["input_ids"]) for s in row) <= 128 for row in rows)
    assert sorted(s["input_ids"][0] for row in rows for s in row) == list(range(7))
    assert len(rows) == 3  # 340 tokens in rows of 128


@pytest.fixture(scope="module")
def lora_model(world):
    import torch
    from transformers import AutoModelForCausalLM

    models = {}
    for attn in ("sdpa", "eager"):
        torch.manual_seed(0)
        base = AutoModelForCausalLM.from_pretrained(world["tiny"], attn_implementation=attn)
        model = world["module"].add_lora(base, None)
        for name, param in model.named_parameters():  # a non-zero LoRA B, so the adapter matters
            if "lora_B" in name:
                param.data.normal_(0, 0.02)
        models[attn] = model.eval()
    return models


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_loss_equals_the_per_sample_losses(world, tokenizer, lora_model, attn):
    import torch

    mod, model = world["module"], lora_model[attn]
    items, _ = mod.tokenize(tokenizer, [sample(q, a) for q, a in QA], "", 128)
    device = torch.device("cpu")
    with torch.no_grad():
        alone = [mod.loss_sum(model, mod.collate([[s]], 0, attn), device).item() for s in items]
        padded = mod.loss_sum(model, mod.collate([[s] for s in items], 0, attn), device).item()
        rows = [items[:3], items[3:5], items[5:]]  # rows of different widths: padding and packing
        batch = mod.collate(rows, 0, attn)
        packed = mod.loss_sum(model, batch, device).item()
    assert batch["position_ids"][0, :len(items[0]["input_ids"]) + 2].tolist()[-2:] == [0, 1]
    # padded rows keep counting (a restart would make transformers build a packed-sequence mask)
    padded_batch = mod.collate([[s] for s in items], 0, attn)
    assert padded_batch["attention_mask"] is None
    assert (padded_batch["position_ids"] == torch.arange(padded_batch["position_ids"].shape[1])).all()
    assert batch["tokens"] == sum(len(s["input_ids"]) for s in items)
    assert padded == pytest.approx(sum(alone), rel=1e-5)
    assert packed == pytest.approx(sum(alone), rel=1e-5)


def test_missing_lora_targets_name_the_linear_modules(world, monkeypatch):
    from transformers import AutoModelForCausalLM

    mod = world["module"]
    monkeypatch.setattr(mod, "LORA_TARGETS", ["q_proj", "c_attn", "qkv"])
    base = AutoModelForCausalLM.from_pretrained(world["tiny"])
    with pytest.raises(mod.ConfigError) as err:
        mod.add_lora(base, None)
    assert str(err.value) == (
        "LoRA targets not in the model: 'c_attn', 'qkv'; its linear modules are: 'down_proj', "
        "'gate_proj', 'k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj' (set lora.targets of the "
        "specialist 'alpha' in the manifest)")


def test_quantized_base_needs_cuda(world, monkeypatch):
    import torch

    mod = world["module"]
    monkeypatch.setattr(mod, "BASE_PRECISION", "4bit")
    with pytest.raises(mod.ConfigError) as err:
        mod.precision(torch.device("cpu"))
    assert str(err.value) == ("base_precision '4bit' needs a CUDA GPU and bitsandbytes, but this run "
                              "is on cpu; use base_precision: auto to train here")


@pytest.mark.parametrize("flags, want", [
    ("fpu avx2 avx512f avx512_bf16 avx512_vnni", "bfloat16"),  # x86 with AVX512-BF16
    ("fpu avx2 amx_bf16 amx_tile", "bfloat16"),                # x86 with AMX
    ("fp asimd bf16 i8mm", "bfloat16"),                        # Arm (Features line)
    ("fpu avx2 avx512f avx512bw", None),                       # AVX-512 without BF16: emulated
])
def test_cpu_autocast_follows_the_cpu_flags(world, monkeypatch, tmp_path, flags, want):
    import torch

    mod = world["module"]
    key = "Features" if "asimd" in flags else "flags"
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\n{key}\t\t: {flags}\n\nprocessor\t: 1\n{key}\t\t: {flags}\n")
    real_path = mod.Path
    monkeypatch.setattr(mod, "Path", lambda p, *a: real_path(cpuinfo) if p == "/proc/cpuinfo" else real_path(p, *a))
    weights, amp, quantization = mod.precision(torch.device("cpu"))
    assert (weights, quantization) == (torch.float32, None)
    assert (None if amp is None else str(amp).replace("torch.", "")) == want
    monkeypatch.setattr(mod, "BASE_PRECISION", "float32")  # plain float32 on any CPU
    assert mod.precision(torch.device("cpu")) == (torch.float32, None, None)


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
    assert summary["manifest_digest"] == world["manifest"].digest
    assert set(summary["versions"]) == {"python", "torch", "transformers", "peft"}
    assert json.loads((out / "training_summary.json").read_text()) == summary
    assert not list(out.glob(".*tmp*"))  # nothing half-written left behind


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
    """Same seed, same machine: the same loss at every step (in-process, 6 steps each)."""
    mod = world["module"]
    runs = []
    for name in ("one", "two"):
        mod.main(["--base", str(world["tiny"]), "--train", str(world["train"]), "--eval", str(world["eval"]),
                  "--out", str(tmp_path / name), "--max-steps", "6"])
        runs.append([m["loss"] for m in metrics(tmp_path / name)])
    assert runs[0] == runs[1] and len(runs[0]) == 6


@pytest.mark.slow
def test_resumes_after_sigkill(world, full_run):
    out = world["root"] / "killed"
    command = [sys.executable, str(world["script"]), "--base", str(world["tiny"]), "--train", str(world["train"]),
               "--eval", str(world["eval"]), "--out", str(out), "--max-steps", "30"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    deadline = time.monotonic() + 120
    while not list((out / "checkpoints").glob("step-*")) and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    (checkpoint,) = list((out / "checkpoints").glob("step-*"))
    at = int(checkpoint.name.split("-")[1])
    assert 0 < at < 30, "the run ended before it could be killed"

    summary = local.run_local(world["script"], base=world["tiny"], train=world["train"], eval=world["eval"],
                              out=out, log_file=out / "train.log", max_steps=30)
    log = (out / "train.log").read_text()
    assert f"resuming from step-{at:06d} (step {at})" in log
    assert f"step {at + 1}/30 " in log and "step 1/30 " not in log
    assert summary["resumed_from_step"] == at and summary["steps"] == 30
    # the resumed run is the uninterrupted run: same data order, RNG and optimizer state
    assert [m["loss"] for m in metrics(out)] == [m["loss"] for m in metrics(full_run[0])]


def test_failure_quotes_the_log(world, tmp_path):
    with pytest.raises(StageError) as err:
        local.run_local(world["script"], base=world["tiny"], train=tmp_path / "missing.jsonl",
                        eval=world["eval"], out=tmp_path / "out", log_file=tmp_path / "train.log")
    message = str(err.value)
    assert message.startswith(f"training script {world['script']} failed (exit code 2); the last 20 "
                              f"lines of {tmp_path / 'train.log'}:\n")
    assert message.endswith(f"ERROR: training data not found: {tmp_path / 'missing.jsonl'}")


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
