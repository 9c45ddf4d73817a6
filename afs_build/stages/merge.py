"""Check that each adapter, merged tensor by tensor, computes what peft computes (merge:<specialist>).

The merge itself happens while ``gguf:<specialist>`` writes the GGUF; this task only proves,
on logits and before any GGUF is written, that afs's streamed merge equals base + adapter as
peft runs them. No weights are written.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterator

from .. import log
from ..atomic import write_json
from ..manifest import Manifest
from ..paths import Layout, PostFiles
from ..uptodate import code_files
from .common import action, task

NAME = "merge"
CODE = ("stages/merge.py", "post/merge.py", "post/weights.py")


def tasks(manifest: Manifest) -> Iterator[dict]:
    layout = Layout.of(manifest)
    for spec in manifest.trained:
        yield task(f"{NAME}:{spec.name}",
                   f"Check that {spec.title}'s adapter, merged tensor by tensor, computes what "
                   "peft computes (no weights written).",
                   run, manifest, spec.name,
                   file_dep=[layout.train(spec.name).summary, layout.base(spec.base).report,
                             *code_files(*CODE)],
                   task_dep=[f"train:{spec.name}"],
                   targets=[layout.post(spec.name).merge_report])


def base_folder(manifest: Manifest, model: str) -> Path:
    """The folder on this machine that base `model`'s weights and tokenizer are read from.

    A hub base is fetched into Hugging Face's cache (the training machine downloaded its own).
    """
    from .base import reference

    spec = manifest.models[model]
    if spec.kind == "hub":
        from ..post.weights import hub_folder

        return hub_folder(spec.hub, spec.revision)
    return Path(reference(manifest, model))


@action(NAME)
def run(manifest: Manifest, name: str) -> None:
    from ..post.merge import check_merge

    layout = Layout.of(manifest)
    spec = manifest.specialists[name]
    post = layout.post(name)
    task_name = f"{NAME}:{name}"
    with log.step(task_name, "checking the streamed merge against peft", specialist=name) as extra:
        report = check_merge(base_folder(manifest, spec.base), layout.train(name).adapter)
        extra.update(max_abs_logit_diff=report["max_abs_logit_diff"])
    write_json(post.merge_report, report)
    _remove_merged_copies(post, task_name)


def _remove_merged_copies(post: PostFiles, task_name: str) -> None:
    """Remove the merged HF folder (and its temporaries) that afs wrote before it streamed."""
    old = [post.merged] + sorted(post.folder.glob(f".{post.merged.name}.tmp-*")) \
        + sorted(post.folder.glob(f".{post.merged.name}.old-*"))
    for folder in (p for p in old if p.is_dir() and not p.is_symlink()):
        shutil.rmtree(folder, ignore_errors=True)
        log.event(f"removed {folder}: a merged copy of the model is no longer kept", task=task_name)
