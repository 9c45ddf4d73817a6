"""Prepare each base model for training and check its architecture, chat template and stop tokens (base:<model>)."""

from __future__ import annotations

import json
from typing import Iterator

from .. import log
from ..atomic import write_json
from ..errors import StageError
from ..manifest import Manifest, plain
from ..paths import Layout
from ..uptodate import DigestChanged, SliceChanged
from .common import action

NAME = "base"
BASE_VERSION = 2  # 2: hub models are fetched (small files) and checked; architecture and size checks


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
        if model.kind == "hub":
            uptodate.append(HubChecked(str(files.report)))
        what = {"embedded": "Unpack the embedded model {} into a trainable folder and check it.",
                "path": "Check the local model folder of {}: architecture, chat template and stop tokens.",
                "hub": "Fetch the config and tokenizer of the hub model {} and check them (no weights)."}[model.kind]
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

        from ..training.digest import base_digest

        return base_digest(Path(self.folder))


class HubChecked:
    """doit ``uptodate``: false while the report says the hub was out of reach, so the check is
    tried again on the next build (and passes as soon as the network allows)."""

    reason = "hub model not checked yet (the hub was out of reach)"

    def __init__(self, report: str):
        self.report = report

    def __call__(self, task, values) -> bool:
        try:
            with open(self.report, encoding="utf-8") as handle:
                return bool(json.load(handle)["report"]["checked"])
        except (OSError, ValueError, KeyError, TypeError):
            return False

    def __repr__(self) -> str:
        return "HubChecked()"


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
    from ..training import digest, inspection, unpack

    layout = Layout.of(manifest)
    model = manifest.models[name]
    files = layout.base(name)
    task = f"{NAME}:{name}"
    with log.step(task, f"preparing {model.kind} base model"):
        if model.kind == "embedded":
            if not (files.hf / "config.json").exists():
                unpack.materialize_embedded(model.embedded, files.hf, task=task)
            report = inspection.inspect_base(files.hf)
            content = digest.base_digest(files.hf)
        elif model.kind == "path":
            folder = manifest.resolve(model.path)
            report = inspection.inspect_base(folder)
            content = digest.base_digest(folder)
        else:
            report = inspection.hub_report(model.hub, model.revision, files.hub)
            content = f"{model.hub}@{report.get('commit', model.revision)}"
        if model.kind != "embedded":  # the table's sizes are right by construction
            problem, warning = inspection.size_problem(name, model.params_b, report)
            if problem:
                raise StageError(f"{manifest.file}: {problem}")
            if warning:
                report["warnings"].append(warning)
        for warning in report.get("warnings", []):
            log.event(f"warning: {warning}", task=task)
    write_json(files.report, {"model": plain(model), "load": reference(manifest, name),
                              "digest": content, "report": report})
