"""Dedup, decontaminate and mix each specialist's sources into train/eval splits (mix:<specialist>)."""

from __future__ import annotations

from typing import Iterator

from ..manifest import Manifest
from ..paths import Layout

NAME = "mix"
MIXER_VERSION = 1


def slices(manifest: Manifest, specialist: str) -> list:
    """The manifest slices a specialist's mix reads."""
    from ..graph import SliceChanged

    spec = manifest.specialists[specialist]
    return [
        SliceChanged(f"specialists.{specialist}.mix", spec.mix),
        SliceChanged(f"mixes.{spec.mix}", manifest.mixes[spec.mix]),
        SliceChanged("dedup", manifest.dedup),
        SliceChanged("project.seed", manifest.project.seed),
        SliceChanged("eval.suite", manifest.eval.suite),
    ]


def tasks(manifest: Manifest) -> Iterator[dict]:
    layout = Layout.of(manifest)
    for spec in manifest.trained:
        mix = manifest.mixes[spec.mix]
        files = layout.mix(spec.name)
        file_dep = [str(layout.score(s).samples) for s in mix.sources]
        if manifest.eval.suite:
            file_dep.append(str(manifest.resolve(manifest.eval.suite)))
        yield {
            "name": f"{NAME}:{spec.name}",
            "doc": f"Dedup, decontaminate and mix {spec.title}'s data ({mix.name}) into train/eval splits.",
            "actions": [(run, [manifest, spec.name])],
            "file_dep": file_dep,
            "task_dep": [f"score:{s}" for s in mix.sources],
            "targets": [str(files.train), str(files.eval), str(files.stats), str(files.rejects)],
            "uptodate": slices(manifest, spec.name),
            "clean": True,
        }


def run(manifest: Manifest, specialist: str) -> None:
    raise NotImplementedError  # wired to afs_build.data.mix when it lands
