"""The LoRA training loop: a standalone recipe that afs renders into each specialist's train.py.

This module is the body of every rendered ``train.py``: the script is a commented ``CONFIG``
block (the manifest's values for :class:`TrainConfig`), then this file's text verbatim, then
``cli(TrainConfig(**CONFIG))``. So it must stand alone: it imports nothing from afs and, at
import time, nothing beyond the standard library (torch, transformers and peft are imported
by the functions that use them), which also keeps it light for the afs modules that share its
helpers (bfloat16 detection, generation markers, the base-model checks). It needs only torch,
transformers and peft (and bitsandbytes for a 4bit/8bit base), and runs the same on a laptop
CPU or a rented GPU:

    python train.py --base BASE --train train.jsonl --eval eval.jsonl --out OUT [--max-steps N]

or data parallel on N GPUs (N CPU processes with --device cpu), each rank a share of every step:

    python -m torch.distributed.run --standalone --nproc_per_node N train.py ...

It writes into OUT the files the config names: a metrics file (one line per optimizer step),
a checkpoints folder (resumable: run it again with the same --out after a crash and it
continues from the last checkpoint), the adapter folder (peft format, with the tokenizer) and,
last, the summary. Under torchrun rank 0 writes them, with global numbers; resuming needs the
same number of ranks.

Read it top to bottom: the configuration, the base-model checks, data, model, data parallel,
checkpoints, then :func:`train`, a linear body.
"""

import argparse
import contextlib
import hashlib
import json
import math
import os
import platform
import random
import re
import shutil
import sys
import time
import warnings
from bisect import bisect_left, insort
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

IGNORE = -100  # label of a position that carries no loss
LR_SCHEDULES = ("cosine", "linear")
BASE_PRECISIONS = ("auto", "float32", "bfloat16", "float16", "8bit", "4bit")
# {% generation %} ... {% endgeneration %}: the template's own mark of the assistant's tokens
GENERATION_MARKER = re.compile(r"\{%-?\s*generation\s*-?%\}")
# a two-turn chat whose answers the base-model checks look for in the rendered template
PROBE = (("user", "Hello there."), ("assistant", "AFS-ANSWER-ONE"),
         ("user", "And again?"), ("assistant", "AFS-ANSWER-TWO"))


class ConfigError(Exception):
    """A problem the user fixes in the manifest or on the command line (printed without a traceback)."""


# -----------------------------------------------------------------------------------------------
# Configuration: every knob, with the comment the rendered script shows above its value
# -----------------------------------------------------------------------------------------------


def knob(doc: str) -> Any:
    """A required config field and its one-sentence comment."""
    return field(metadata={"doc": doc})


@dataclass(frozen=True)
class TrainConfig:
    """What one specialist's training reads; afs renders it from the manifest, nothing is implied."""

    specialist: str = knob("the specialist this script trains")
    manifest_digest: str = knob("digest of the manifest settings this script was rendered from "
                                "(the one the build compares)")
    base: str = knob("base model (--base): a local Hugging Face folder or a hub id")
    base_revision: str | None = knob("hub revision to pin (branch, tag or commit); ignored for a "
                                     "local folder")
    train_data: str = knob("training samples (--train), JSONL of canonical samples; relative paths "
                           "are relative to this script's folder, as is the default output folder "
                           "(--out)")
    eval_data: str = knob("evaluation samples (--eval); a missing file skips evaluation")
    metrics_file: str = knob("written into the output folder: one JSON line per optimizer step")
    checkpoints_dir: str = knob("written into the output folder: the latest resumable checkpoint")
    adapter_dir: str = knob("written into the output folder: the trained adapter (peft format) "
                            "with the tokenizer")
    summary_file: str = knob("written into the output folder, last: the run's summary (the "
                             "build's signal that training finished)")
    architectures: tuple[str, ...] = knob("model architectures afs can convert to GGUF after "
                                          "training; the first step refuses any other base "
                                          "(empty: no check)")
    seed: int = knob("seed for the LoRA initialization, dropout and the data order: a CPU run "
                     "repeats exactly")
    system_prompt: str = knob("system prompt inserted as the first turn of every sample that has "
                              "none ('' for none)")
    lora_r: int = knob("LoRA rank: the width of the low-rank update to each adapted matrix")
    lora_alpha: float = knob("LoRA alpha: the update is scaled by alpha / r")
    lora_dropout: float = knob("dropout on the LoRA path's input")
    lora_targets: tuple[str, ...] = knob("module names to adapt (the last part of the module path, "
                                         "e.g. q_proj), or ('all-linear',)")
    epochs: float = knob("passes over the training split (a fraction ends part-way through the "
                         "last pass)")
    learning_rate: float = knob("peak learning rate, reached after the warmup")
    lr_schedule: str = knob("learning-rate schedule after the warmup: 'cosine' or 'linear' decay "
                            "to zero")
    warmup_ratio: float = knob("fraction of the optimizer steps spent warming the learning rate "
                               "up from zero")
    weight_decay: float = knob("AdamW weight decay on the LoRA weights")
    max_grad_norm: float = knob("gradients are clipped to this global norm")
    batch_size: int = knob("sequences per micro-batch (packed rows when packing is on)")
    grad_accum: int = knob("micro-batches per optimizer step (on each rank)")
    max_seq_len: int = knob("longest sequence in tokens: longer samples are cut, packed rows hold "
                            "at most this many")
    packing: bool = knob("pack short samples into rows of max_seq_len (they never attend to each "
                         "other); else pad")
    gradient_checkpointing: bool = knob("recompute activations in the backward pass: less memory, "
                                        "about a third more time")
    checkpoint_every: int = knob("save a resumable checkpoint every this many optimizer steps (and "
                                 "after the last)")
    base_precision: str = knob("frozen base weights: auto (float32 on CPU, bfloat16 or float16 on "
                               "a GPU), float32, bfloat16, float16, or 8bit / 4bit (QLoRA, CUDA and "
                               "bitsandbytes only)")

    def __post_init__(self):
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"lr_schedule {self.lr_schedule!r}: expected one of {LR_SCHEDULES}")
        if self.base_precision not in BASE_PRECISIONS:
            raise ConfigError(f"base_precision {self.base_precision!r}: expected one of {BASE_PRECISIONS}")
        for name in ("batch_size", "grad_accum", "max_seq_len", "checkpoint_every", "lora_r"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} {getattr(self, name)!r}: expected a whole number >= 1")


# The knobs that shape training (recorded in the summary, part of a checkpoint's fingerprint).
HYPERPARAMETERS = ("seed", "system_prompt", "lora_r", "lora_alpha", "lora_dropout", "lora_targets",
                   "epochs", "learning_rate", "lr_schedule", "warmup_ratio", "weight_decay",
                   "max_grad_norm", "batch_size", "grad_accum", "max_seq_len", "packing",
                   "gradient_checkpointing", "checkpoint_every", "base_precision")


def hyperparameters(config: TrainConfig) -> dict:
    values = asdict(config)
    return {k: list(values[k]) if isinstance(values[k], tuple) else values[k] for k in HYPERPARAMETERS}


def knob_docs() -> dict[str, str]:
    """Each config field's comment, in field order (what the rendered config block shows)."""
    return {f.name: f.metadata["doc"] for f in fields(TrainConfig)}


# -----------------------------------------------------------------------------------------------
# Command line
# -----------------------------------------------------------------------------------------------


def parse_args(config: TrainConfig, argv=None):
    here = Path(__file__).resolve().parent  # the rendered script's folder
    parser = argparse.ArgumentParser(description=f"LoRA fine-tune of the specialist {config.specialist!r}.")
    parser.add_argument("--base", default=config.base, help="base model: Hugging Face folder or hub id (default: %(default)s)")
    parser.add_argument("--train", default=str(here / config.train_data), help="training samples, JSONL (default: %(default)s)")
    parser.add_argument("--eval", default=str(here / config.eval_data), help="evaluation samples, JSONL; a missing file skips evaluation (default: %(default)s)")
    parser.add_argument("--out", default=str(here), help="output folder (default: %(default)s)")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps (tests, benchmarks)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: a CUDA GPU when there is one")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: the CPUs this process may use)")
    parser.add_argument("--check-only", action="store_true", help="check the base model (config, tokenizer, chat template) and stop")
    return parser.parse_args(argv)


def cli(config: TrainConfig, argv=None) -> int:
    """The script's entry point: train, or print a user's mistake without a traceback (exit 2)."""
    try:
        train(config, parse_args(config, argv))
    except ConfigError as err:
        print(f"ERROR: {err}", file=sys.stderr, flush=True)
        return 2
    return 0


# -----------------------------------------------------------------------------------------------
# Hardware facts and the chat template, shared with afs (light: no torch needed)
# -----------------------------------------------------------------------------------------------


def cpu_has_bfloat16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU has bfloat16 arithmetic (x86 AVX512-BF16 or AMX, Arm BF16), on Linux.

    Elsewhere, or where /proc/cpuinfo cannot be read, the answer is no: emulated bfloat16 is
    slower than float32. afs's time estimates ask the same question.
    """
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    flags = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def has_generation_markers(template) -> bool:
    """True when a chat template marks the assistant's tokens with {% generation %}."""
    return bool(template) and GENERATION_MARKER.search(template) is not None


def has_native_tools(template) -> bool:
    """True when the template renders `tools` and assistant `tool_calls` itself."""
    return "tool_calls" in template and "tools" in template


def chat_template(tokenizer):
    """The tokenizer's chat template (the default of named ones), or None."""
    template = tokenizer.chat_template
    if isinstance(template, dict):  # named templates: the default one renders conversations
        template = template.get("default") or next(iter(template.values()), None)
    return template or None


# -----------------------------------------------------------------------------------------------
# The base model's checks: the ones whose failure shows up only later, as a model that trains
# but rambles when served. afs runs them in base:<model>; this script runs them first, before
# loading any weight, where the base is a hub model afs could not fetch.
# -----------------------------------------------------------------------------------------------


def check_base(where, tokenizer, model_config, generation_eos, generation_file="generation_config.json",
               architectures=()) -> dict:
    """Problems, warnings and facts about a base: architecture, chat template, stop and pad tokens.

    `where` names the base in messages; `generation_eos` is the generation config's
    eos_token_id (read from `generation_file`). Reads the tokenizer and configs only.
    """
    problems, warns = [], []

    def fail(what, fix):
        problems.append(f"{where}: {what}; {fix}")

    architecture = (getattr(model_config, "architectures", None) or [None])[0]
    unsupported = unsupported_architecture(architecture, architectures)
    if unsupported:
        problems.append(f"{where}: {unsupported}")
    template = chat_template(tokenizer)
    eot = None
    if not template:
        fail("the tokenizer has no chat template (LM Studio and Ollama would fall back to a generic "
             "one and the model would ramble)",
             "set `chat_template` in tokenizer_config.json or add chat_template.jinja")
    else:
        eot = _end_of_turn(tokenizer, fail, warns)

    gen_eos = _ids(generation_eos)
    special = _special_tokens(tokenizer)
    if eot is not None:
        eot_id = eot["id"]
        if eot_id != tokenizer.eos_token_id and eot_id not in gen_eos:
            fail(f"the end-of-turn token {eot['token']} (id {eot_id}) is neither the tokenizer's "
                 f"eos_token ({tokenizer.eos_token}, id {tokenizer.eos_token_id}) nor in "
                 f"{generation_file} eos_token_id {gen_eos}, so generation would not stop after an answer",
                 f"add {eot_id} ({eot['token']}) to eos_token_id in generation_config.json "
                 f"and set eos_token to {eot['token']} in tokenizer_config.json")
        elif eot_id not in gen_eos:
            warns.append(f"{generation_file} eos_token_id {gen_eos} lacks the end-of-turn token "
                         f"{eot['token']} (id {eot_id}): transformers' generate() will not stop after "
                         f"an answer; add {eot_id} to eos_token_id in generation_config.json")
        elif eot_id != tokenizer.eos_token_id:
            warns.append(f"the tokenizer's eos_token is {tokenizer.eos_token}, not the end-of-turn "
                         f"token {eot['token']}: a GGUF converted from this folder may not stop "
                         f"after an answer; set eos_token to {eot['token']} in tokenizer_config.json")

    pad = {"token": tokenizer.pad_token, "id": tokenizer.pad_token_id,
           "same_as_end_of_turn": bool(eot and tokenizer.pad_token_id == eot["id"])}
    if tokenizer.pad_token_id is None:
        spare = [t for t in special if t not in {eot and eot["token"], tokenizer.bos_token}]
        example = f" (e.g. {spare[0]})" if spare else ""
        fail("the tokenizer has no pad token",
             f"set `pad_token` in tokenizer_config.json to a token other than the end-of-turn token{example}")
    elif pad["same_as_end_of_turn"]:
        warns.append(f"the pad token is the end-of-turn token {eot['token']}: padding must be masked "
                     f"in the labels by position (attention mask), never by token id, or the model "
                     f"never learns to stop")

    add_bos = _adds_bos(tokenizer)
    bos = {"token": tokenizer.bos_token, "id": tokenizer.bos_token_id,
           "in_template": bool(template and tokenizer.bos_token and "bos_token" in template)}
    if add_bos and bos["in_template"]:
        warns.append(f"the chat template writes {tokenizer.bos_token} and the tokenizer adds it "
                     f"again: tokenize rendered chats with add_special_tokens=False")

    text = model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config
    vocab = getattr(text, "vocab_size", None)
    for role, ident in (("end-of-turn", eot and eot["id"]), ("pad", pad["id"]), ("bos", bos["id"])):
        if ident is not None and vocab and ident >= vocab:
            fail(f"the {role} token id {ident} is outside the embedding matrix (vocab_size {vocab})",
                 "resize the token embeddings to the tokenizer and save the model again")

    markers = has_generation_markers(template)
    if markers and eot is not None and not problems:
        _check_markers(tokenizer, eot, fail)
    return {"problems": problems, "warnings": warns, "architecture": architecture,
            "template": template, "end_of_turn": eot,
            "eos": {"token": tokenizer.eos_token, "id": tokenizer.eos_token_id},
            "eos_token_ids": gen_eos, "pad": pad, "bos": bos, "add_bos": add_bos,
            "generation_markers": markers, "vocab_size": vocab}


def unsupported_architecture(architecture, architectures):
    """Why afs cannot convert `architecture` to GGUF; None when it can (or no list is given)."""
    if not architectures or architecture in architectures:
        return None
    return (f"architecture {architecture!r} cannot be converted to GGUF by afs, so a specialist "
            f"trained on it could not be served; expected one of: "
            f"{', '.join(repr(a) for a in sorted(architectures))}")


def _end_of_turn(tokenizer, fail, warns):
    """The token that ends an assistant turn in the rendered chat, or None (a problem recorded)."""
    messages = [{"role": role, "content": content} for role, content in PROBE]
    try:
        full = tokenizer.apply_chat_template(messages, tokenize=False)
        prompt = tokenizer.apply_chat_template(messages[:3], tokenize=False, add_generation_prompt=True)
    except Exception as err:  # jinja raises many types; the user needs the message
        fail(f"the chat template fails on a two-turn user/assistant conversation: {err}",
             "fix `chat_template` in tokenizer_config.json (or chat_template.jinja)")
        return None
    answer = PROBE[-1][1]
    if answer not in full:
        fail("the chat template drops the assistant's message",
             "render message['content'] for assistant turns in `chat_template`")
        return None
    if not full.startswith(prompt):
        warns.append("the prompt rendered with add_generation_prompt is not a prefix of the whole "
                     "conversation: the model is served a different text than it is trained on")
    tail = full[full.rindex(answer) + len(answer):]
    ids = tokenizer(tail, add_special_tokens=False)["input_ids"] if tail else []
    special = _special_tokens(tokenizer)
    for position, ident in enumerate(ids):
        if ident in special.values():
            if tokenizer.decode(ids[:position]).strip():
                break
            return {"token": tokenizer.convert_ids_to_tokens(ident), "id": ident}
    fail(f"the chat template does not end an assistant turn with a special token (after the answer "
         f"it renders {tail!r})",
         "end every assistant turn with the end-of-turn token, e.g. <|im_end|>, in `chat_template`")
    return None


def _check_markers(tokenizer, eot, fail):
    """The {% generation %} span must hold the answer and its end-of-turn token: that is the loss."""
    messages = [{"role": role, "content": content} for role, content in PROBE]
    try:
        out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True)
    except Exception as err:
        fail(f"the {{% generation %}} markers do not render: {err}",
             "fix the markers in `chat_template` or remove them")
        return
    masked = [i for i, m in zip(out["input_ids"], out["assistant_masks"]) if m]
    answers = tokenizer.decode([i for i in masked if i != eot["id"]])
    if masked.count(eot["id"]) < 2 or any(a not in answers for _, a in PROBE[1::2]):
        fail(f"the {{% generation %}} span does not cover each answer and its end-of-turn token "
             f"{eot['token']} (the model would not learn to stop)",
             f"put {{% endgeneration %}} after {eot['token']} in `chat_template`")


def _special_tokens(tokenizer):
    found = {t.content: i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    found.update(zip(tokenizer.all_special_tokens, tokenizer.all_special_ids))
    return dict(sorted(found.items(), key=lambda item: item[1]))


def _adds_bos(tokenizer):
    ids = tokenizer("a")["input_ids"]
    return bool(ids) and tokenizer.bos_token_id is not None and ids[0] == tokenizer.bos_token_id


def _ids(value):
    if value is None:
        return []
    return sorted({int(v) for v in value}) if isinstance(value, (list, tuple, set)) else [int(value)]


def preflight(config: TrainConfig, base, revision):
    """The first step: check the base's config, tokenizer and chat template; (tokenizer, warnings).

    Only the small files are read (for a hub model, downloaded): a base that would train for
    hours and then not convert or not stop when served fails here, in seconds.
    """
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    where = {} if Path(base).is_dir() or not revision else {"revision": revision}
    model_config = AutoConfig.from_pretrained(base, **where)
    tokenizer = AutoTokenizer.from_pretrained(base, **where)
    try:
        generation = GenerationConfig.from_pretrained(base, **where)
        generation_file = "generation_config.json"
    except (OSError, ValueError):  # no generation_config.json: the model config's values count
        generation = GenerationConfig.from_model_config(model_config)
        generation_file = "config.json"
    found = check_base(base, tokenizer, model_config, generation.eos_token_id, generation_file,
                       config.architectures)
    if found["problems"]:
        raise ConfigError("the base model fails the checks afs makes before training:\n"
                          + "\n".join(found["problems"]))
    return tokenizer, found["warnings"]


# -----------------------------------------------------------------------------------------------
# Data: canonical samples -> chat template -> token ids with labels on the assistant's tokens
# -----------------------------------------------------------------------------------------------


def read_jsonl(path):
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def template_of(tokenizer):
    template = chat_template(tokenizer)
    if not template:
        raise ConfigError("the base model's tokenizer has no chat template; use an instruct model "
                          "or add a chat_template to its tokenizer_config.json")
    return template


def chat_turns(sample, system_prompt, native_tools):
    """(messages, tools) in the form chat templates take, from one canonical sample.

    With a template that knows tools, calls and results use its own format (the Hugging Face
    convention); otherwise they become text in the Hermes style most servers parse: tool
    definitions in the system turn, <tool_call> blocks in the assistant turn, and results as a
    user turn in <tool_response> blocks.
    """
    messages = list(sample["messages"])
    tools = sample.get("tools") or []
    if system_prompt and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system_prompt})
    if native_tools:
        turns = []
        for m in messages:
            turn = {"role": m["role"], "content": m["content"]}
            if m.get("tool_calls"):
                turn["tool_calls"] = [{"type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
                                      for c in m["tool_calls"]]
            if m["role"] == "tool" and m.get("name"):
                turn["name"] = m["name"]
            turns.append(turn)
        defs = [{"type": "function", "function": {"name": t["name"], "description": t.get("description", ""),
                                                  "parameters": t.get("parameters") or {"type": "object", "properties": {}}}}
                for t in tools]
        return turns, defs or None
    turns = []
    for m in messages:
        content = m["content"]
        if m.get("tool_calls"):
            calls = [json.dumps({"name": c["name"], "arguments": c["arguments"]}, ensure_ascii=False)
                     for c in m["tool_calls"]]
            content = "\n".join(([content] if content else []) + [f"<tool_call>\n{c}\n</tool_call>" for c in calls])
        if m["role"] == "tool":
            block = f"<tool_response>\n{content}\n</tool_response>"
            if turns and turns[-1].get("from_tool"):  # consecutive results: one user turn
                turns[-1]["content"] += "\n" + block
                continue
            turns.append({"role": "user", "content": block, "from_tool": True})
            continue
        turns.append({"role": m["role"], "content": content})
    if tools:
        listing = "You can call these tools:\n" + "\n".join(
            json.dumps({"name": t["name"], "description": t.get("description", ""),
                        "parameters": t.get("parameters") or {"type": "object", "properties": {}}}, ensure_ascii=False)
            for t in tools)
        if turns[0]["role"] == "system":
            turns[0]["content"] = (turns[0]["content"] + "\n\n" + listing).strip()
        else:
            turns.insert(0, {"role": "system", "content": listing})
    return [{k: v for k, v in t.items() if k != "from_tool"} for t in turns], None


def assistant_mask_by_markers(tokenizer, turns, tools):
    """Token ids and the template's own assistant mask ({% generation %} markers)."""
    out = tokenizer.apply_chat_template(turns, tools=tools, tokenize=True, return_dict=True,
                                        return_assistant_tokens_mask=True)
    return list(out["input_ids"]), [bool(x) for x in out["assistant_masks"]]


def assistant_mask_by_prefixes(tokenizer, turns, tools):
    """Token ids and an assistant mask found by rendering prefixes of the conversation.

    Assistant turn i spans the characters between the rendering of turns[:i] with the generation
    prompt and the rendering of turns[:i+1] (trailing whitespace after the end-of-turn token
    excluded, as generation markers do); tokens overlapping such a span are the assistant's.
    """
    def render(ts, prompt):
        return tokenizer.apply_chat_template(ts, tools=tools, tokenize=False, add_generation_prompt=prompt)

    text = render(turns, False)
    spans = []
    for i, turn in enumerate(turns):
        if turn["role"] != "assistant":
            continue
        before = render(turns[:i], True) if i else ""
        through = render(turns[:i + 1], False)
        if not (text.startswith(through) and through.startswith(before)):
            raise ConfigError("the chat template renders earlier turns differently once later turns "
                              "follow, so the assistant's tokens cannot be found by prefixes; add "
                              "{% generation %}...{% endgeneration %} markers around the assistant turn")
        spans.append((len(before), len(through.rstrip())))
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = [any(start < b and end > a for a, b in spans) for start, end in encoded["offset_mapping"]]
    return list(encoded["input_ids"]), mask


def tokenize(tokenizer, samples, system_prompt, max_seq_len):
    """Samples as {"input_ids", "labels"}, cut to max_seq_len; also how many were dropped.

    Labels are the token ids on the assistant's tokens and IGNORE elsewhere. The first token of
    every sample is IGNORE too, so no token predicts across the border of two packed samples.
    A sample left with no assistant token after the cut is dropped.
    """
    template = template_of(tokenizer)
    native_tools = has_native_tools(template)
    by_markers = has_generation_markers(template)
    encoded, dropped = [], 0
    for sample in samples:
        turns, tools = chat_turns(sample, system_prompt, native_tools)
        ids, mask = (assistant_mask_by_markers if by_markers else assistant_mask_by_prefixes)(tokenizer, turns, tools)
        ids, mask = ids[:max_seq_len], mask[:max_seq_len]
        labels = [i if m else IGNORE for i, m in zip(ids, mask)]
        labels[0] = IGNORE
        if all(label == IGNORE for label in labels):
            dropped += 1
            continue
        encoded.append({"input_ids": ids, "labels": labels})
    return encoded, dropped


def pack(samples, capacity):
    """Rows of samples whose lengths add up to at most `capacity` (best fit, longest first).

    Deterministic for a given sample order; the rows are built once and shuffled each epoch,
    so every epoch has the same number of optimizer steps.
    """
    order = sorted(range(len(samples)), key=lambda i: (-len(samples[i]["input_ids"]), i))
    rows, free = [], []  # free: sorted (room left, row index)
    for i in order:
        size = len(samples[i]["input_ids"])
        at = bisect_left(free, (size, -1))
        if at < len(free):
            room, row = free.pop(at)
        else:
            room, row = capacity, len(rows)
            rows.append([])
        rows[row].append(samples[i])
        if room - size > 0:
            insort(free, (room - size, row))
    return rows


def units_of(samples, packing, max_seq_len):
    """The units batches are made of: packed rows, or one sample per row."""
    return pack(samples, max_seq_len) if packing else [[s] for s in samples]


def collate(rows, pad_id, attn_implementation="sdpa"):
    """One micro-batch: rows padded on the right to the longest, with position ids and a mask.

    Rows of one sample need no attention mask: attention is causal, so a real token never sees
    the padding after it (and without a mask SDPA can use its fastest kernels). Packed rows get
    a block-diagonal causal mask, boolean (True = may attend) for SDPA, additive for eager
    attention, and position ids that restart at every sample. Padding forms a block of its own,
    so no query row is empty (an all-masked row would give NaN).
    """
    import torch

    width = max(sum(len(s["input_ids"]) for s in row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    segments = torch.full((len(rows), width), -1, dtype=torch.long)
    tokens = 0
    for r, row in enumerate(rows):
        at = 0
        for k, sample in enumerate(row):
            n = len(sample["input_ids"])
            ids[r, at:at + n] = torch.tensor(sample["input_ids"])
            labels[r, at:at + n] = torch.tensor(sample["labels"])
            positions[r, at:at + n] = torch.arange(n)
            segments[r, at:at + n] = k
            at += n
        positions[r, at:] = torch.arange(at, width)  # no restart: transformers would see a packed row
        tokens += at
    batch = {"input_ids": ids, "labels": labels, "position_ids": positions, "attention_mask": None,
             "tokens": tokens}
    if any(len(row) > 1 for row in rows):
        causal = torch.ones(width, width, dtype=torch.bool).tril()
        allowed = (segments[:, :, None] == segments[:, None, :]) & causal
        allowed = allowed[:, None]  # (batch, 1, query, key): the same mask for every head
        if attn_implementation == "eager":
            allowed = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)
        batch["attention_mask"] = allowed
    return batch


BATCH_WINDOW = 8  # micro-batches whose units are sorted by length together


def micro_batches(units, batch_size, seed, epoch, window=BATCH_WINDOW):
    """The epoch's micro-batches: the units in a seeded order, batch_size at a time.

    A batch is padded to its longest row, so the units of every `window` batches in that order
    are sorted by length before they are cut into batches, and the batches are shuffled again:
    each batch holds units of about one length (the default mixes, 100-token replayed answers
    next to 300-400-token samples with retrieved context, were 17-21% padding otherwise and are
    5-7% so), while what a batch sees stays random beyond its window.
    """
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(units)))
    rng.shuffle(order)
    span = batch_size * max(1, window)
    batches = []
    for k in range(0, len(order), span):
        part = sorted(order[k:k + span], key=lambda i: unit_tokens(units[i]))
        batches += [part[j:j + batch_size] for j in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return [[units[i] for i in batch] for batch in batches]


def unit_tokens(unit):
    """Tokens in one unit (a packed row or a single sample)."""
    return sum(len(sample.get("input_ids", ())) for sample in unit)


def label_count(rows):
    return sum(label != IGNORE for row in rows for sample in row for label in sample["labels"])


# -----------------------------------------------------------------------------------------------
# Model: the base, LoRA, and a loss that runs the output layer on the answer positions only
# -----------------------------------------------------------------------------------------------


def pick_device(name):
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA GPU is visible to torch")
    return torch.device("cuda" if name in ("cuda", "auto") and torch.cuda.is_available() else "cpu")


def precision(base_precision, device, cpu_bf16=None):
    """(weight dtype, autocast dtype or None, quantization or None) for `base_precision` on `device`.

    On CUDA the compute runs under bfloat16 autocast where the GPU has it (float16 with a
    gradient scaler otherwise). On a CPU, auto keeps float32 weights and computes under
    bfloat16 autocast where the CPU multiplies bfloat16 natively (`cpu_bf16`, detected when
    None; about twice as fast as float32 there), plain float32 elsewhere; float32 asks for
    plain float32 on any CPU.
    """
    import torch

    if base_precision in ("4bit", "8bit"):
        if device.type != "cuda":
            raise ConfigError(f"base_precision {base_precision!r} needs a CUDA GPU and bitsandbytes, "
                              f"but this run is on {device.type}; use base_precision: auto to train here")
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise ConfigError(f"base_precision {base_precision!r} needs the bitsandbytes package: "
                              "pip install bitsandbytes") from None
    half = {"bfloat16": torch.bfloat16, "float16": torch.float16}
    if device.type == "cuda":
        fastest = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        weights = half.get(base_precision) or (torch.float32 if base_precision == "float32" else fastest)
        amp = fastest if weights == torch.float32 else weights
        return weights, amp, (base_precision if base_precision in ("4bit", "8bit") else None)
    weights = half.get(base_precision, torch.float32)
    if base_precision == "auto" and (cpu_has_bfloat16() if cpu_bf16 is None else cpu_bf16):
        return weights, torch.bfloat16, None
    return weights, (weights if weights != torch.float32 else None), None


def load_model(base, revision, device, weights, amp, quantization):
    from transformers import AutoModelForCausalLM

    where = {} if Path(base).is_dir() or not revision else {"revision": revision}
    options = {"dtype": weights}
    if quantization:
        from transformers import BitsAndBytesConfig

        options["quantization_config"] = (
            BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=amp)
            if quantization == "4bit" else BitsAndBytesConfig(load_in_8bit=True))
        options["device_map"] = {"": device.index or 0}
    model = AutoModelForCausalLM.from_pretrained(base, **options, **where)
    if not quantization:
        model.to(device)
    model.config.use_cache = False
    return model


def linear_names(model):
    """The distinct last names of the model's linear layers (what LoRA targets name)."""
    import torch
    from transformers.pytorch_utils import Conv1D

    head = model.get_output_embeddings()
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                   if isinstance(module, (torch.nn.Linear, Conv1D)) and module is not head})


def add_lora(model, config: TrainConfig, quantization=None):
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    every = list(config.lora_targets) == ["all-linear"]
    available = linear_names(model)
    missing = [t for t in config.lora_targets if t not in available]
    if missing and not every:
        raise ConfigError(f"LoRA targets not in the model: {', '.join(map(repr, missing))}; "
                          f"its linear modules are: {', '.join(map(repr, available))} "
                          f"(set lora.targets of the specialist {config.specialist!r} in the manifest)")
    checkpointing = {"use_reentrant": False}
    if quantization:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing,
                                                gradient_checkpointing_kwargs=checkpointing)
    elif config.gradient_checkpointing and hasattr(model, "activation_checkpointing_enable"):  # transformers 5.2x
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=checkpointing)
    elif config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpointing)
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules="all-linear" if every else list(config.lora_targets),
                      bias="none", task_type="CAUSAL_LM")
    with warnings.catch_warnings():  # peft 0.21 asks transformers 5.2x a deprecated question
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, lora)


def autocast(device, amp):
    """bfloat16/float16 autocast where `amp` asks for it, else nothing (plain float32)."""
    import torch

    return torch.autocast(device.type, dtype=amp) if amp is not None else contextlib.nullcontext()


def loss_sum(model, batch, device):
    """Summed cross-entropy over the labelled tokens of a micro-batch.

    The decoder runs on every position, the output projection only where a label follows: on
    short answers after long prompts that skips most of the (vocabulary-wide) logits.
    """
    import torch

    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    mask = batch["attention_mask"]
    hidden = causal_lm.get_decoder()(
        input_ids=batch["input_ids"].to(device), position_ids=batch["position_ids"].to(device),
        attention_mask=None if mask is None else mask.to(device), use_cache=False).last_hidden_state
    targets = batch["labels"][:, 1:].to(device)
    keep = targets != IGNORE
    logits = causal_lm.get_output_embeddings()(hidden[:, :-1][keep])
    softcap = getattr(causal_lm.config, "final_logit_softcapping", None)
    if softcap:  # Gemma-style models squash their logits
        logits = torch.tanh(logits / softcap) * softcap
    return torch.nn.functional.cross_entropy(logits.float(), targets[keep], reduction="sum")


def evaluate(model, units, device, amp, pad_id, batch_size, rank=0, world=1):
    """Mean token loss over the evaluation units (None without any).

    Under torchrun rank r evaluates every world-th batch and the sums are added over the ranks.
    """
    import torch

    if not units:
        return None
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for k in range(rank * batch_size, len(units), world * batch_size):
            rows = units[k:k + batch_size]
            with autocast(device, amp):
                total += loss_sum(model, collate(rows, pad_id, model.config._attn_implementation), device).item()
            count += label_count(rows)
    model.train()
    total, count = sum_over_ranks([total, count], device, world)
    return total / count


def schedule(step, total, warmup, kind="cosine"):
    """Learning-rate factor at `step`: linear warmup, then cosine or linear decay to zero."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * progress)) if kind == "cosine" else max(0.0, 1 - progress)


# -----------------------------------------------------------------------------------------------
# Data parallel under torchrun: every rank holds the whole model and takes a share of each step
# -----------------------------------------------------------------------------------------------


def start_ranks(device):
    """(rank, world size, device) of this process: (0, 1, `device`) unless torchrun started it.

    torchrun sets WORLD_SIZE, RANK and LOCAL_RANK. A rank trains on the GPU of its local rank
    and talks to the others over NCCL, or on the CPU over gloo.
    """
    import torch

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                         device_id=device if device.type == "cuda" else None)
    return rank, world, device


def step_batches(batches, index, rank, world, grad_accum):
    """(the micro-batches of the epoch's step `index` over all ranks, this rank's share).

    Every rank computes the same seeded order; a step takes `grad_accum` micro-batches per rank
    from it and rank r gets every world-th one. The last step of an epoch may leave a rank
    fewer, or none: it still joins the gradient sum (with zeros), so no rank waits forever.
    """
    span = grad_accum * world
    group = batches[index * span:(index + 1) * span]
    return group, group[rank::world]


def sum_over_ranks(values, device, world):
    """The numbers `values` added up over the ranks (as they are on a single process)."""
    if world == 1:
        return list(values)
    import torch

    total = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(total)
    return total.tolist()


def sum_grads_over_ranks(params, bucket=1 << 24):
    """Add up the gradients of `params` over the ranks, in flat buffers of up to `bucket` elements."""
    import torch

    buckets, size = [], 0
    for p in params:
        if p.grad is None:  # a rank without a micro-batch in this step adds zeros
            p.grad = torch.zeros_like(p)
        if not buckets or buckets[-1][0].dtype != p.grad.dtype or size + p.grad.numel() > bucket:
            buckets.append([])
            size = 0
        buckets[-1].append(p.grad)
        size += p.grad.numel()
    for grads in buckets:
        flat = torch.cat([g.reshape(-1) for g in grads])
        torch.distributed.all_reduce(flat)
        for g, part in zip(grads, flat.split([g.numel() for g in grads])):
            g.copy_(part.view_as(g))


def rng_state():
    import torch

    return torch.get_rng_state(), (torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [])


def barrier(world):
    if world > 1:
        import torch

        torch.distributed.barrier()


# -----------------------------------------------------------------------------------------------
# Checkpoints and outputs, each written to a temporary name and renamed into place
# -----------------------------------------------------------------------------------------------


def write_json(path, value):
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def replace_dir(tmp, final):
    """Rename the finished folder `tmp` onto `final` (an older `final` is moved away first)."""
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.rename(final, old)
    os.rename(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def fingerprint(config: TrainConfig, base, train_path, max_steps, world=1):
    """What a checkpoint must match to be resumed: this script, the settings, the base and the
    training data, and the number of ranks (which sets what a step is).

    The script's own text is included so that a checkpoint written by an older training loop
    is never taken as a finished run of a newer one.
    """
    settings = [hyperparameters(config), base, max_steps] + ([world] if world > 1 else [])
    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update(json.dumps(settings, sort_keys=True).encode())
    with open(train_path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def save_checkpoint(folder, model, optimizer, scheduler, scaler, state, rank_rngs=None):
    """Write the checkpoint of `state['step']`; `rank_rngs` holds every rank's RNG states under torchrun."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step-{state['step']:06d}"
    tmp = folder / f".tmp-{final.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp / "adapter")
    rng, cuda_rng = rng_state()
    trainer = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
               "scaler": scaler.state_dict(), "rng": rng, "cuda_rng": cuda_rng}
    if rank_rngs is not None:
        trainer["rank_rngs"] = rank_rngs
    torch.save(trainer, tmp / "trainer.pt")
    write_json(tmp / "state.json", state)
    replace_dir(tmp, final)
    for older in sorted(folder.glob("step-*"))[:-1]:  # the latest is all a resume needs
        shutil.rmtree(older, ignore_errors=True)


def latest_checkpoint(folder):
    found = sorted(folder.glob("step-*")) if folder.is_dir() else []
    return found[-1] if found else None


def load_checkpoint(path, model, optimizer, scheduler, scaler, rank=0):
    """Load a checkpoint into this process (every rank loads it whole); its state.json."""
    import torch
    from peft import set_peft_model_state_dict
    from peft.utils import load_peft_weights

    set_peft_model_state_dict(model, load_peft_weights(str(path / "adapter"), device="cpu"))
    saved = torch.load(path / "trainer.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    scaler.load_state_dict(saved["scaler"])
    rng, cuda_rng = saved["rank_rngs"][rank] if "rank_rngs" in saved else (saved["rng"], saved["cuda_rng"])
    torch.set_rng_state(rng)
    if cuda_rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_rng)
    return json.loads((path / "state.json").read_text(encoding="utf-8"))


def keep_metrics_until(path, step):
    """Drop the lines a killed run wrote after its last checkpoint (they are redone)."""
    if path.exists():
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(line + "\n" for line in lines if json.loads(line)["step"] <= step), encoding="utf-8")
        os.replace(tmp, path)


def peak_memory(device):
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "cuda_max_memory_allocated"
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (rss if sys.platform == "darwin" else rss * 1024), "max_rss"


# -----------------------------------------------------------------------------------------------
# Training
# -----------------------------------------------------------------------------------------------


def train(config: TrainConfig, args):
    """One training run of `config` with the command line's `args`; the summary (rank 0) or None."""
    import peft
    import torch
    import transformers

    # peft 0.21 still asks transformers 5.2x a deprecated question on every model; the answer is right
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    process_start = time.perf_counter()
    out = Path(args.out)
    checkpoints, metrics_path = out / config.checkpoints_dir, out / config.metrics_file
    transformers.utils.logging.disable_progress_bar()
    if not args.check_only:
        # A summary from an earlier run must not outlive a run that fails: the build trusts it.
        (out / config.summary_file).unlink(missing_ok=True)

    # First, in seconds: the base's config, tokenizer and chat template (before any weight).
    tokenizer, base_warnings = preflight(config, args.base, config.base_revision)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, once
        for warning in base_warnings:
            print(f"warning: {warning}", flush=True)
    if args.check_only:
        print(f"{config.specialist}: base {args.base} passes the checks", flush=True)
        return None
    if not Path(args.train).is_file():
        raise ConfigError(f"training data not found: {args.train}")
    out.mkdir(parents=True, exist_ok=True)
    # under torchrun the ranks on one machine share its CPUs
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = args.threads or max(1, cpus // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    torch.set_num_threads(max(1, threads))
    # Under torchrun every rank runs this whole body; rank 0 alone prints and writes files.
    rank, world, device = start_ranks(pick_device(args.device))
    lead = rank == 0

    def say(text):
        if lead:
            print(text, flush=True)

    weights, amp, quantization = precision(config.base_precision, device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    say(f"{config.specialist}: base {args.base} on {device} ({threads} threads), weights {weights}, "
        f"autocast {amp}, quantization {quantization}" + (f", {world} ranks" if world > 1 else ""))

    # The model, with LoRA on the targets. Seeding first makes the LoRA initialization repeat.
    transformers.set_seed(config.seed)
    model = load_model(args.base, config.base_revision, device, weights, amp, quantization)
    model = add_lora(model, config, quantization)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    attn = model.config._attn_implementation
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total_params = sum(p.numel() for p in model.parameters())
    params = [p for p in model.parameters() if p.requires_grad]
    if world > 1:
        # The same seed gave every rank the same LoRA weights; rank 0's are made sure of (as
        # DistributedDataParallel does), then each rank draws its own dropout masks.
        for p in params:
            torch.distributed.broadcast(p.data, 0)
        torch.manual_seed(config.seed + rank)

    # The data, tokenized once; the units (packed rows or single samples) fixed for the run.
    # A step is grad_accum micro-batches on each of the ranks.
    train_samples, dropped = tokenize(tokenizer, read_jsonl(args.train), config.system_prompt, config.max_seq_len)
    if not train_samples:
        raise ConfigError(f"no usable training samples in {args.train} (every sample was empty "
                          "or lost its answer to max_seq_len)")
    eval_samples, eval_dropped = tokenize(tokenizer, read_jsonl(args.eval), config.system_prompt, config.max_seq_len)
    units = units_of(train_samples, config.packing, config.max_seq_len)
    eval_units = units_of(eval_samples, config.packing, config.max_seq_len)
    batches_per_epoch = math.ceil(len(units) / config.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / (config.grad_accum * world))
    total_steps = max(1, math.ceil(config.epochs * steps_per_epoch))
    if args.max_steps:
        total_steps = min(total_steps, args.max_steps)
    warmup = math.ceil(config.warmup_ratio * total_steps)
    say(f"{len(train_samples)} training samples ({dropped} dropped) in {len(units)} rows, "
        f"{len(eval_samples)} evaluation samples; {total_steps} steps, {steps_per_epoch} per epoch")

    # Optimizer and schedule over the LoRA weights only. Every rank steps its own copy with the
    # same summed gradients, so the copies stay equal, and the schedule counts global steps.
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay,
                                  **({"fused": True} if device.type == "cuda" else {}))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: schedule(s, total_steps, warmup, config.lr_schedule))
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16 and device.type == "cuda")

    # Resume from the latest checkpoint when it was made by this very configuration. Every rank
    # loads it (with its own RNG states) before rank 0 tidies the folder.
    config_fingerprint = fingerprint(config, args.base, args.train, args.max_steps, world)
    state = {"step": 0, "tokens_seen": 0, "elapsed": 0.0, "train_loss": None, "eval_losses": [],
             "fingerprint": config_fingerprint}
    resumed_from, stale = None, False
    latest = latest_checkpoint(checkpoints)
    if latest is not None:
        saved = json.loads((latest / "state.json").read_text(encoding="utf-8"))
        if saved.get("fingerprint") == config_fingerprint:
            state = load_checkpoint(latest, model, optimizer, scheduler, scaler, rank)
            resumed_from = state["step"]
            say(f"resuming from {latest.name} (step {resumed_from})")
        else:
            say(f"ignoring {latest.name}: made with other settings, data or base")
            stale = True
    barrier(world)
    if lead:
        for partial in checkpoints.glob(".tmp-*"):  # a checkpoint being written when a run was killed
            shutil.rmtree(partial, ignore_errors=True)
        if stale:
            shutil.rmtree(checkpoints)
        keep_metrics_until(metrics_path, state["step"])

    # The loop: grad_accum micro-batches per rank and optimizer step, the loss a mean over all
    # the labelled tokens of the step on all ranks (not a mean of micro-batch means).
    model.train()
    started = time.perf_counter() - state["elapsed"]
    epoch_batches = {}
    with open(metrics_path if lead else os.devnull, "a", encoding="utf-8") as metrics:
        for step in range(state["step"], total_steps):
            epoch, index = divmod(step, steps_per_epoch)
            if epoch not in epoch_batches:
                epoch_batches = {epoch: micro_batches(units, config.batch_size, config.seed, epoch)}
            group, mine = step_batches(epoch_batches[epoch], index, rank, world, config.grad_accum)
            labels, tokens, loss_total = sum(label_count(rows) for rows in group), 0, 0.0
            step_start = time.perf_counter()
            for rows in mine:
                batch = collate(rows, pad_id, attn)
                tokens += batch["tokens"]
                with autocast(device, amp):
                    loss = loss_sum(model, batch, device) / labels
                scaler.scale(loss).backward()
                loss_total += loss.item()
            if world > 1:
                # Each rank divided its loss by the label count of the whole step, so the sum of
                # the ranks' gradients is exactly the gradient of the step's mean token loss. The
                # ranks add them up here, once per step, rather than through
                # DistributedDataParallel: DDP syncs only a forward that goes through its wrapper
                # (the loss above reaches inside the model), averages where a sum is wanted, needs
                # no_sync() on all but the last micro-batch, and hangs on a rank without one. LoRA
                # gradients are small, so a few flat all_reduce calls after the backward cost
                # little. Before unscale_: every rank then sees the same infs (float16 scaling).
                sum_grads_over_ranks(params)
                loss_total, tokens = sum_over_ranks([loss_total, tokens], device, world)
                tokens = int(tokens)
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            lr = scheduler.get_last_lr()[0]
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            seconds = time.perf_counter() - step_start

            done = step + 1
            state.update(step=done, epoch=epoch, batch_in_epoch=(index + 1) * config.grad_accum * world,
                         tokens_seen=state["tokens_seen"] + tokens, train_loss=loss_total)
            eval_loss = None
            if done % steps_per_epoch == 0 or done == total_steps:
                eval_loss = evaluate(model, eval_units, device, amp, pad_id, config.batch_size, rank, world)
                state["eval_losses"].append({"step": done, "epoch": round(done / steps_per_epoch, 4), "loss": eval_loss})
            state["elapsed"] = time.perf_counter() - started
            record = {"step": done, "total_steps": total_steps, "epoch": round(done / steps_per_epoch, 4),
                      "loss": loss_total, "lr": lr, "tokens": tokens,
                      "tokens_per_second": round(tokens / seconds, 1), "elapsed": round(state["elapsed"], 3),
                      "eval_loss": eval_loss}
            metrics.write(json.dumps(record) + "\n")
            metrics.flush()
            say(f"step {done}/{total_steps} | loss {loss_total:.4f} | lr {lr:.2e} | "
                f"{tokens / seconds:.0f} tok/s" + ("" if eval_loss is None else f" | eval {eval_loss:.4f}"))
            if done % config.checkpoint_every == 0 or done == total_steps:
                rank_rngs = None
                if world > 1:  # each rank's own RNG states, so a resume draws the same dropout
                    rank_rngs = [None] * world
                    torch.distributed.all_gather_object(rank_rngs, rng_state())
                if lead:
                    save_checkpoint(checkpoints, model, optimizer, scheduler, scaler, state, rank_rngs)
                barrier(world)  # no rank runs ahead of a checkpoint that a crash would fall back to

    # Outputs: the adapter (with the tokenizer), then the summary, the build's signal, last.
    summary = None
    if lead:
        adapter = out / config.adapter_dir
        tmp = adapter.with_name(f".{adapter.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        replace_dir(tmp, adapter)
        memory, memory_kind = peak_memory(device)
        final_eval = state["eval_losses"][-1]["loss"] if state["eval_losses"] else None
        summary = {
            "specialist": config.specialist, "manifest_digest": config.manifest_digest, "base": args.base,
            "device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "threads": threads, "world_size": world, "weights_dtype": str(weights).replace("torch.", ""),
            "autocast": None if amp is None else str(amp).replace("torch.", ""), "quantization": quantization,
            "steps": state["step"], "total_steps": total_steps, "epochs": round(state["step"] / steps_per_epoch, 4),
            "tokens_seen": state["tokens_seen"], "train_seconds": round(state["elapsed"], 3),
            "wall_seconds": round(time.perf_counter() - process_start, 3),
            "tokens_per_second": round(state["tokens_seen"] / max(state["elapsed"], 1e-9), 1),
            "train_loss": state["train_loss"], "eval_loss": final_eval, "eval_losses": state["eval_losses"],
            "train_samples": len(train_samples), "train_dropped": dropped, "eval_samples": len(eval_samples),
            "eval_dropped": eval_dropped, "rows": len(units), "resumed_from_step": resumed_from,
            "peak_memory_bytes": memory, "peak_memory_kind": memory_kind,
            "trainable_parameters": trainable, "parameters": total_params,
            "base_warnings": base_warnings,
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "transformers": transformers.__version__, "peft": peft.__version__},
            "hyperparameters": hyperparameters(config),
        }
        write_json(out / config.summary_file, summary)
        print(f"done: {state['step']} steps, train loss {state['train_loss']:.4f}, eval loss {final_eval}", flush=True)
    if world > 1:
        barrier(world)  # the other ranks wait until the outputs are written
        torch.distributed.destroy_process_group()
    return summary
