"""Quantize each GGUF and measure what each type costs (quantize:<specialist>)."""

from __future__ import annotations

from typing import Iterator

from .. import log
from ..atomic import write_json
from ..manifest import Manifest
from ..paths import Layout
from ..uptodate import SliceChanged
from .common import action
from .gguf import FLOAT_TYPES, hf_folder

NAME = "quantize"
GENERAL_TEXT = ("The Super Nintendo Entertainment System was released in 1990. Its main processor "
                "is a 65816 running at up to 3.58 MHz, and its picture processing unit draws up to "
                "four background layers and 128 sprites. Programs are written in assembly.")


def tasks(manifest: Manifest) -> Iterator[dict]:

    layout = Layout.of(manifest)
    for spec in manifest.specialists.values():
        post = layout.post(spec.name)
        yield {
            "name": f"quantize:{spec.name}",
            "doc": f"Quantize {spec.title} to {', '.join(spec.quantize)} and measure what each costs.",
            "actions": [(run, [manifest, spec.name])],
            "file_dep": [str(post.gguf_report)],
            "task_dep": [f"gguf:{spec.name}"],
            "targets": [str(post.quantize_report)] + [str(post.gguf(q)) for q in spec.quantize],
            "uptodate": [SliceChanged(f"specialists.{spec.name}.quantize", list(spec.quantize))],
            "clean": True,
        }


@action(NAME)
def run(manifest: Manifest, name: str) -> None:
    from ..post import quantize

    layout = Layout.of(manifest)
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
