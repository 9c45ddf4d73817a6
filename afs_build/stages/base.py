"""Prepare each base model for training and check its chat template and stop tokens (base:<model>)."""

from __future__ import annotations

from typing import Iterator

from .. import log
from ..atomic import write_json
from ..manifest import Manifest, plain
from ..paths import Layout
from ..uptodate import DigestChanged, SliceChanged
from .common import action

NAME = "base"
BASE_VERSION = 1


def used_models(manifest: Manifest) -> list[str]:
    """Models some specialist uses, in manifest order (unused ones are not built)."""
    used = {s.base for s in manifest.specialists.values()}
    return [name for name in manifest.models if name in used]


def tasks(manifest: Manifest) -> Iterator[dict]:

    layout = Layout.of(manifest)
    for name in used_models(manifest):
        model = manifest.models[name]
        files = layout.base(name)
        uptodate: list = [SliceChanged(f"models.{name}", {"model": model, "version": BASE_VERSION})]
        if model.kind == "path":
            uptodate.append(DigestChanged(f"models.{name}.path", _FolderDigest(str(manifest.resolve(model.path)))))
        what = {"embedded": "Unpack the embedded model {} into a trainable folder and check it.",
                "path": "Check the local model folder of {}: chat template and stop tokens.",
                "hub": "Record the hub model {} (it is loaded and checked where it trains)."}[model.kind]
        yield {
            "name": f"{NAME}:{name}",
            "doc": what.format(repr(name)),
            "actions": [(run, [manifest, name])],
            "targets": [str(files.report)],
            "uptodate": uptodate,
            "clean": True,
        }


class _FolderDigest:
    """A picklable call of base_digest for one folder."""

    def __init__(self, folder: str):
        self.folder = folder

    def __call__(self) -> str:
        from pathlib import Path

        from ..training.base import base_digest

        return base_digest(Path(self.folder))


def reference(manifest: Manifest, name: str) -> str:
    """What a training script loads for model `name`: a local folder, or the hub id."""
    model = manifest.models[name]
    if model.kind == "embedded":
        return str(Layout.of(manifest).base(name).hf)
    if model.kind == "path":
        return str(manifest.resolve(model.path))
    return model.hub


@action(NAME)
def run(manifest: Manifest, name: str) -> None:
    from ..training import base

    layout = Layout.of(manifest)
    model = manifest.models[name]
    files = layout.base(name)
    task = f"{NAME}:{name}"
    with log.step(task, f"preparing {model.kind} base model"):
        if model.kind == "embedded":
            if not (files.hf / "config.json").exists():
                base.materialize_embedded(model.embedded, files.hf, task=task)
            report = base.inspect_base(files.hf)
            digest = base.base_digest(files.hf)
        elif model.kind == "path":
            folder = manifest.resolve(model.path)
            report = base.inspect_base(folder)
            digest = base.base_digest(folder)
        else:
            report = base.hub_report(model.hub, model.revision)
            digest = f"{model.hub}@{model.revision}"
        for warning in report.get("warnings", []):
            log.event(f"warning: {warning}", task=task)
    write_json(files.report, {"model": plain(model), "load": reference(manifest, name),
                              "digest": digest, "report": report})
