"""Merge, convert to GGUF (with parity checks) and quantize each specialist (merge:, gguf:, quantize:).

Served-only specialists (``train: false``) skip the merge: their GGUF is made from the base.
Later tasks depend on each step's small JSON report, never on the weights themselves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from .. import log
from ..atomic import write_json
from ..manifest import Manifest
from ..paths import Layout
from .common import read_samples, user_errors

PARITY_PROMPTS = 3
FLOAT_TYPES = ("F16", "BF16", "F32")
GENERAL_TEXT = ("The Super Nintendo Entertainment System was released in 1990. Its main processor "
                "is a 65816 running at up to 3.58 MHz, and its picture processing unit draws up to "
                "four background layers and 128 sprites. Programs are written in assembly.")


def merge_tasks(manifest: Manifest) -> Iterator[dict]:
    layout = Layout.of(manifest)
    for spec in manifest.trained:
        post = layout.post(spec.name)
        yield {
            "name": f"merge:{spec.name}",
            "doc": f"Merge {spec.title}'s adapter into its base and check the logits agree.",
            "actions": [(run_merge, [manifest, spec.name])],
            "file_dep": [str(layout.train(spec.name).summary), str(layout.base(spec.base).report)],
            "task_dep": [f"train:{spec.name}"],
            "targets": [str(post.merge_report)],
            "clean": True,
        }


def gguf_tasks(manifest: Manifest) -> Iterator[dict]:
    layout = Layout.of(manifest)
    for spec in manifest.specialists.values():
        post = layout.post(spec.name)
        source = post.merge_report if spec.train else layout.base(spec.base).report
        file_dep = [str(source)] + ([str(layout.mix(spec.name).eval)] if spec.train else [])
        yield {
            "name": f"gguf:{spec.name}",
            "doc": f"Convert {spec.title} to an F16 GGUF and check tokenizer and generation parity.",
            "actions": [(run_gguf, [manifest, spec.name])],
            "file_dep": file_dep,
            "task_dep": [f"merge:{spec.name}" if spec.train else f"base:{spec.base}"],
            "targets": [str(post.gguf_report), str(post.gguf("F16"))]
                       + [str(post.gguf(t)) for t in spec.quantize if t in FLOAT_TYPES and t != "F16"],
            "clean": True,
        }


def quantize_tasks(manifest: Manifest) -> Iterator[dict]:
    from ..graph import SliceChanged

    layout = Layout.of(manifest)
    for spec in manifest.specialists.values():
        post = layout.post(spec.name)
        yield {
            "name": f"quantize:{spec.name}",
            "doc": f"Quantize {spec.title} to {', '.join(spec.quantize)} and measure what each costs.",
            "actions": [(run_quantize, [manifest, spec.name])],
            "file_dep": [str(post.gguf_report)],
            "task_dep": [f"gguf:{spec.name}"],
            "targets": [str(post.quantize_report)] + [str(post.gguf(q)) for q in spec.quantize],
            "uptodate": [SliceChanged(f"specialists.{spec.name}.quantize", list(spec.quantize))],
            "clean": True,
        }


def hf_folder(manifest: Manifest, name: str) -> Path:
    """The HF folder a specialist's GGUF is made from: its merged model, or its base."""
    from .base import reference

    spec = manifest.specialists[name]
    layout = Layout.of(manifest)
    if spec.train:
        return layout.post(name).merged
    return Path(reference(manifest, spec.base))


def eval_texts(manifest: Manifest, name: str, limit: int | None = None) -> list[list[dict]]:
    """The specialist's held-out conversations (a served-only model has none: empty)."""
    spec = manifest.specialists[name]
    if not spec.train:
        return []
    out = []
    for sample in read_samples(Layout.of(manifest).mix(name).eval):
        out.append(sample["messages"])
        if limit and len(out) >= limit:
            break
    return out


@user_errors
def run_merge(manifest: Manifest, name: str) -> None:
    from ..post.merge import merge_adapter
    from .base import reference

    layout = Layout.of(manifest)
    log.setup(layout.log_file)
    spec = manifest.specialists[name]
    post = layout.post(name)
    with log.step(f"merge:{name}", "merging the adapter", specialist=name):
        report = merge_adapter(Path(reference(manifest, spec.base)), layout.train(name).adapter, post.merged)
    write_json(post.merge_report, report)


@user_errors
def run_gguf(manifest: Manifest, name: str) -> None:
    from ..post import parity
    from ..post.gguf_convert import convert_folder

    layout = Layout.of(manifest)
    log.setup(layout.log_file)
    post = layout.post(name)
    folder = hf_folder(manifest, name)
    task = f"gguf:{name}"
    spec = manifest.specialists[name]
    with log.step(task, "converting to GGUF", specialist=name):
        conversion = convert_folder(folder, post.gguf("F16"), outtype="F16", name=name)
        for outtype in (t for t in spec.quantize if t in FLOAT_TYPES and t != "F16"):
            convert_folder(folder, post.gguf(outtype), outtype=outtype, name=name)
    with log.step(task, "checking parity with transformers", specialist=name):
        prompts = _prompts(manifest, name)
        tokens = parity.tokenization_parity(folder, post.gguf("F16"))
        generation = parity.generation_parity(folder, post.gguf("F16"), prompts)
        report = {"conversion": conversion, "tokenization": tokens, "generation": generation}
        parity.check(tokens)
        parity.check(generation)
    write_json(post.gguf_report, report)


def _prompts(manifest: Manifest, name: str) -> list[list[dict]]:
    """Eval conversations cut before their last answer, with the specialist's system prompt."""
    spec = manifest.specialists[name]
    prompts = []
    for messages in eval_texts(manifest, name, PARITY_PROMPTS):
        cut = messages[:max(i for i, m in enumerate(messages) if m["role"] == "assistant")]
        prompts.append(cut)
    if not prompts:  # a served-only model: a few fixed questions
        system = [{"role": "system", "content": spec.system_prompt}] if spec.system_prompt else []
        prompts = [system + [{"role": "user", "content": q}] for q in
                   ("What is the capital of France?", "Write a haiku about memory.", "What is 12 plus 30?")]
    return prompts


@user_errors
def run_quantize(manifest: Manifest, name: str) -> None:
    from ..post import quantize

    layout = Layout.of(manifest)
    log.setup(layout.log_file)
    spec = manifest.specialists[name]
    post = layout.post(name)
    task = f"quantize:{name}"
    files = {"F16": post.gguf("F16")}
    results = {}
    for qtype in spec.quantize:
        if qtype in FLOAT_TYPES:  # written by the gguf task straight from the HF weights
            files[qtype] = post.gguf(qtype)
            continue
        with log.step(task, f"quantizing to {qtype}", specialist=name):
            results[qtype] = quantize.quantize(post.gguf("F16"), post.gguf(qtype), qtype)
        if results[qtype].get("fallback_count"):
            log.event(f"warning: {results[qtype].get('warning')}", task=task, specialist=name)
        files[qtype] = post.gguf(qtype)
    with log.step(task, "measuring size, speed and perplexity", specialist=name):
        if spec.train:
            texts = quantize.eval_texts(layout.mix(name).eval, hf_folder(manifest, name), limit=32)
        else:  # a served-only model has no eval split of its own
            texts = [GENERAL_TEXT]
        measured = quantize.report(files, texts, quantized=results)
    write_json(post.quantize_report, {"quantize": results, "report": measured})
