"""Render each specialist's standalone training script (and SkyPilot task) from templates (render:<specialist>)."""

from __future__ import annotations

from typing import Iterator

from .. import log
from ..atomic import atomic_path
from ..manifest import Manifest
from ..paths import Layout
from ..resources import templates_dir
from ..training.script import training_slice
from ..uptodate import SliceChanged, code_files
from .common import action

NAME = "render"
TEMPLATES = ("train.py.j2",)
SKY_TEMPLATES = ("sky.yaml.j2",)
# The code a script is made of: the loop (its text is the script's body), the renderer (and
# the training defaults it holds) and the layout the output names come from.
CODE = ("training/loop.py", "training/script.py", "paths.py")
SKY_CODE = ("training/skypilot.py",)


def slice_label(name: str) -> str:
    return f"specialists.{name} (training)"


def template_files(manifest: Manifest, name: str) -> list[str]:
    folder = templates_dir()
    names = TEMPLATES + (SKY_TEMPLATES if _rented(manifest, name) else ())
    return [str(folder / t) for t in names]


def input_code(manifest: Manifest, name: str) -> list[str]:
    """The templates and afs source files whose edit re-renders `name` (a file_dep each)."""
    return template_files(manifest, name) + code_files(*CODE, *(SKY_CODE if _rented(manifest, name) else ()))


def _rented(manifest: Manifest, name: str) -> bool:
    return manifest.hardware[manifest.specialists[name].hardware].backend == "skypilot"


def tasks(manifest: Manifest) -> Iterator[dict]:

    layout = Layout.of(manifest)
    for spec in manifest.trained:
        files = layout.train(spec.name)
        targets = [str(files.script)] + ([str(files.sky_task)] if _rented(manifest, spec.name) else [])
        yield {
            "name": f"{NAME}:{spec.name}",
            "doc": f"Render {spec.title}'s standalone LoRA training script.",
            "actions": [(run, [manifest, spec.name])],
            "file_dep": [str(layout.base(spec.base).report)] + input_code(manifest, spec.name),
            "task_dep": [f"base:{spec.base}"],
            "targets": targets,
            # Its digest is the one the script's header carries (training.script.settings_digest).
            "uptodate": [SliceChanged(slice_label(spec.name), training_slice(manifest, spec.name))],
            "clean": True,
        }


@action(NAME)
def run(manifest: Manifest, name: str) -> None:
    from ..training import script
    from .base import reference

    layout = Layout.of(manifest)
    spec = manifest.specialists[name]
    files = layout.train(name)
    base = reference(manifest, spec.base)
    config = script.config(manifest, name, base=base)
    with log.step(f"{NAME}:{name}", "rendering the training script", specialist=name):
        with atomic_path(files.script) as tmp:
            tmp.write_text(script.render(config, script.header(manifest, name)), encoding="utf-8")
        if _rented(manifest, name):
            from ..training import skypilot

            mix = layout.mix(name)
            text = skypilot.task_yaml(manifest, name, script=files.script, train=mix.train,
                                      eval=mix.eval, base=base)
            with atomic_path(files.sky_task) as tmp:
                tmp.write_text(text, encoding="utf-8")
