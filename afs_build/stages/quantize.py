"""Quantize each GGUF and measure what each type costs (quantize:<specialist>)."""

from __future__ import annotations

from typing import Iterator

from .. import log
from ..atomic import write_json
from ..manifest import Manifest
from ..paths import Layout
from ..uptodate import OutputsIntact, SliceChanged, code_files
from .common import action, task
from .gguf import FLOAT_TYPES, float_types, remove_leftovers
from .merge import base_folder

NAME = "quantize"
CODE = ("stages/quantize.py", "post/quantize.py", "post/gguf_info.py")
GENERAL_TEXT = ("The Super Nintendo Entertainment System was released in 1990. Its main processor "
                "is a 65816 running at up to 3.58 MHz, and its picture processing unit draws up to "
                "four background layers and 128 sprites. Programs are written in assembly.")


def tasks(manifest: Manifest) -> Iterator[dict]:
    layout = Layout.of(manifest)
    for spec in manifest.specialists.values():
        post = layout.post(spec.name)
        # F16/BF16/F32 are the gguf task's files: two tasks must not share a target
        outputs = [post.gguf(q) for q in spec.quantize if q not in FLOAT_TYPES]
        yield task(f"{NAME}:{spec.name}",
                   f"Quantize {spec.title} to {', '.join(spec.quantize)} and measure what each costs.",
                   run, manifest, spec.name,
                   file_dep=[post.gguf_report, *code_files(*CODE)],
                   task_dep=[f"gguf:{spec.name}"],
                   targets=[post.quantize_report, *outputs],
                   uptodate=[SliceChanged(f"specialists.{spec.name}.quantize", list(spec.quantize)),
                             OutputsIntact(post.quantize_report, outputs)])


@action(NAME)
def run(manifest: Manifest, name: str) -> None:
    from ..post import quantize
    from ..uptodate import file_records

    layout = Layout.of(manifest)
    spec = manifest.specialists[name]
    post = layout.post(name)
    task_name = f"{NAME}:{name}"
    remove_leftovers([post.quantize_report] + [post.gguf(q) for q in spec.quantize
                                               if q not in FLOAT_TYPES], task_name)
    files = {t: post.gguf(t) for t in float_types(spec)}
    results = {}
    for qtype in spec.quantize:
        if qtype in FLOAT_TYPES:  # written by the gguf task straight from the HF weights
            continue
        with log.step(task_name, f"quantizing to {qtype}", specialist=name):
            results[qtype] = quantize.quantize(post.gguf("F16"), post.gguf(qtype), qtype)
        if results[qtype].get("fallback_count"):
            log.event(f"warning: {results[qtype].get('warning')}", task=task_name, specialist=name)
        files[qtype] = post.gguf(qtype)
    with log.step(task_name, "measuring size, speed and perplexity", specialist=name):
        if spec.train:  # rendered with the base's tokenizer: training does not change it
            texts = quantize.eval_texts(layout.mix(name).eval, base_folder(manifest, spec.base),
                                        limit=32)
        else:  # a served-only model has no eval split of its own
            texts = [GENERAL_TEXT]
        measured = quantize.report(files, texts, quantized=results)
    write_json(post.quantize_report, {"quantize": results, "report": measured,
                                      "files": file_records(files.values())})
