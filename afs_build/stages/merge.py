"""Merge each trained adapter into its base and check the logits agree (merge:<specialist>)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from .. import log
from ..atomic import write_json
from ..manifest import Manifest
from ..paths import Layout
from .common import action

NAME = "merge"


def tasks(manifest: Manifest) -> Iterator[dict]:
    layout = Layout.of(manifest)
    for spec in manifest.trained:
        post = layout.post(spec.name)
        yield {
            "name": f"merge:{spec.name}",
            "doc": f"Merge {spec.title}'s adapter into its base and check the logits agree.",
            "actions": [(run, [manifest, spec.name])],
            "file_dep": [str(layout.train(spec.name).summary), str(layout.base(spec.base).report)],
            "task_dep": [f"train:{spec.name}"],
            "targets": [str(post.merge_report)],
            "clean": True,
        }


@action(NAME)
def run(manifest: Manifest, name: str) -> None:
    from ..post.merge import merge_adapter
    from .base import reference

    layout = Layout.of(manifest)
    spec = manifest.specialists[name]
    post = layout.post(name)
    with log.step(f"merge:{name}", "merging the adapter", specialist=name):
        report = merge_adapter(Path(reference(manifest, spec.base)), layout.train(name).adapter, post.merged)
    write_json(post.merge_report, report)
