"""Convert each specialist to an F16 GGUF, its adapter merged in as it is written (gguf:<specialist>).

No merged copy of the model is written: the base is read one tensor at a time, the LoRA added
where it applies, and each tensor written to its place in the GGUF. The parity checks compare
the GGUF with base + adapter as peft runs them, in memory. Served-only specialists
(``train: false``) are converted from their base.
"""

from __future__ import annotations

from typing import Iterator

from .. import log
from ..atomic import remove_stale, write_json
from ..manifest import Manifest, Specialist
from ..paths import Layout
from ..uptodate import OutputsIntact, code_files
from .common import action, read_samples, task
from .merge import base_folder

NAME = "gguf"
PARITY_PROMPTS = 3
FLOAT_TYPES = ("F16", "BF16", "F32")
CODE = ("stages/gguf.py", "post/gguf_convert.py", "post/weights.py", "post/architectures.py",
        "post/vocab.py", "post/parity.py")


def float_types(spec: Specialist) -> list[str]:
    """The GGUF types this task writes: F16 always, and BF16/F32 where `quantize` lists them."""
    return ["F16"] + [t for t in spec.quantize if t in FLOAT_TYPES and t != "F16"]


def tasks(manifest: Manifest) -> Iterator[dict]:
    layout = Layout.of(manifest)
    for spec in manifest.specialists.values():
        post = layout.post(spec.name)
        outputs = [post.gguf(t) for t in float_types(spec)]
        if spec.train:
            file_dep = [layout.train(spec.name).summary, post.merge_report,
                        layout.mix(spec.name).eval, layout.base(spec.base).report,
                        *code_files(*CODE, "post/merge.py")]
            task_dep = [f"merge:{spec.name}"]
            doc = (f"Convert {spec.title} to an F16 GGUF, merging its adapter into each tensor, "
                   "and check tokenizer and generation parity against base + adapter.")
        else:
            file_dep = [layout.base(spec.base).report, *code_files(*CODE)]
            task_dep = [f"base:{spec.base}"]
            doc = f"Convert {spec.title} to an F16 GGUF and check tokenizer and generation parity."
        yield task(f"{NAME}:{spec.name}", doc, run, manifest, spec.name, file_dep=file_dep,
                   task_dep=task_dep, targets=[post.gguf_report, *outputs],
                   uptodate=[OutputsIntact(post.gguf_report, outputs)])


def convert(manifest: Manifest, name: str, outtype: str = "F16") -> dict:
    """Write the specialist's GGUF of `outtype` (what the task runs; the benchmark times it)."""
    from ..post.gguf_convert import convert_folder

    spec = manifest.specialists[name]
    layout = Layout.of(manifest)
    adapter = layout.train(name).adapter if spec.train else None
    report = convert_folder(base_folder(manifest, spec.base), layout.post(name).gguf(outtype),
                            outtype=outtype, name=name, adapter=adapter)
    return {**report, "adapter": None if adapter is None else str(adapter)}


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


def remove_leftovers(targets, task_name: str) -> None:
    """Remove the temporaries a killed run of this task left beside its targets."""
    for target in targets:
        for path in remove_stale(target):
            log.event(f"removed {path.name}, left by an interrupted run", task=task_name)


@action(NAME)
def run(manifest: Manifest, name: str) -> None:
    from ..post import parity
    from ..uptodate import file_records

    layout = Layout.of(manifest)
    post = layout.post(name)
    spec = manifest.specialists[name]
    task_name = f"{NAME}:{name}"
    outputs = {t: post.gguf(t) for t in float_types(spec)}
    remove_leftovers([post.gguf_report, *outputs.values()], task_name)
    folder = base_folder(manifest, spec.base)
    adapter = layout.train(name).adapter if spec.train else None
    doing = "converting to GGUF" + (", merging the adapter into each tensor" if adapter else "")
    with log.step(task_name, doing, specialist=name):
        conversion = convert(manifest, name, "F16")
        for outtype in list(outputs)[1:]:
            convert(manifest, name, outtype)
    against = "base + adapter (peft)" if adapter else "transformers"
    with log.step(task_name, f"checking parity with {against}", specialist=name):
        prompts = _prompts(manifest, name)
        tokens = parity.tokenization_parity(folder, outputs["F16"])
        generation = parity.generation_parity(folder, outputs["F16"], prompts, adapter=adapter)
        report = {"conversion": conversion, "tokenization": tokens, "generation": generation,
                  "files": file_records(outputs.values())}
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
