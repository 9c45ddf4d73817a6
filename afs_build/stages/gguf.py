"""Convert each specialist to an F16 GGUF and check tokenizer and generation parity (gguf:<specialist>).

Served-only specialists (``train: false``) are converted from their base.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from .. import log
from ..atomic import write_json
from ..manifest import Manifest
from ..paths import Layout
from .common import action, read_samples

NAME = "gguf"
PARITY_PROMPTS = 3
FLOAT_TYPES = ("F16", "BF16", "F32")


def tasks(manifest: Manifest) -> Iterator[dict]:
    layout = Layout.of(manifest)
    for spec in manifest.specialists.values():
        post = layout.post(spec.name)
        source = post.merge_report if spec.train else layout.base(spec.base).report
        file_dep = [str(source)] + ([str(layout.mix(spec.name).eval)] if spec.train else [])
        yield {
            "name": f"gguf:{spec.name}",
            "doc": f"Convert {spec.title} to an F16 GGUF and check tokenizer and generation parity.",
            "actions": [(run, [manifest, spec.name])],
            "file_dep": file_dep,
            "task_dep": [f"merge:{spec.name}" if spec.train else f"base:{spec.base}"],
            "targets": [str(post.gguf_report), str(post.gguf("F16"))]
                       + [str(post.gguf(t)) for t in spec.quantize if t in FLOAT_TYPES and t != "F16"],
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


@action(NAME)
def run(manifest: Manifest, name: str) -> None:
    from ..post import parity
    from ..post.gguf_convert import convert_folder

    layout = Layout.of(manifest)
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
