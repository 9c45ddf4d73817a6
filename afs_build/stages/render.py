"""Render each specialist's standalone training script (and SkyPilot task) from templates (render:<specialist>)."""

from __future__ import annotations

from typing import Iterator

from .. import log
from ..atomic import atomic_path
from ..manifest import Manifest
from ..paths import Layout
from ..uptodate import SliceChanged, slice_digest
from ..resources import templates_dir
from .common import action

NAME = "render"
TEMPLATES = ("train.py.j2",)
SKY_TEMPLATES = ("sky.yaml.j2",)


def training_slice(manifest: Manifest, name: str) -> dict:
    """Everything a specialist's training reads from the manifest, and nothing else.

    Serving settings (port, quantize, sampling), descriptions and other specialists are left
    out, so editing them never retrains this one.
    """
    spec = manifest.specialists[name]
    keep = ("base", "system_prompt", "lora", "epochs", "learning_rate", "batch_size", "grad_accum",
            "max_seq_len", "warmup_ratio", "packing", "gradient_checkpointing", "checkpoint_every",
            "base_precision", "hardware")
    return {"specialist": {k: getattr(spec, k) for k in keep},
            "model": manifest.models[spec.base],
            "hardware": hardware_slice(manifest.hardware[spec.hardware]),
            "seed": manifest.project.seed}


def hardware_slice(hw) -> dict:
    """What of a hardware entry changes how training runs (not its price or memory)."""
    return {"backend": hw.backend, "gpu": hw.gpu, "count": hw.count, "infra": hw.infra, "spot": hw.spot}


def template_files(manifest: Manifest, name: str) -> list[str]:
    folder = templates_dir()
    names = TEMPLATES + (SKY_TEMPLATES if _rented(manifest, name) else ())
    return [str(folder / t) for t in names]


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
            "file_dep": [str(layout.base(spec.base).report)] + template_files(manifest, spec.name),
            "task_dep": [f"base:{spec.base}"],
            "targets": targets,
            "uptodate": [SliceChanged(f"specialists.{spec.name} (training)", training_slice(manifest, spec.name))],
            "clean": True,
        }


@action(NAME)
def run(manifest: Manifest, name: str) -> None:
    from ..training import script
    from .base import reference

    layout = Layout.of(manifest)
    spec = manifest.specialists[name]
    files = layout.train(name)
    context = script.context(manifest, name, base=reference(manifest, spec.base))
    # The header names the digest of what this script was rendered from: the training slice,
    # not the whole manifest, so an unrelated edit leaves the script byte-identical.
    context["manifest_digest"] = slice_digest(training_slice(manifest, name))[:16]
    with log.step(f"{NAME}:{name}", "rendering the training script", specialist=name):
        with atomic_path(files.script) as tmp:
            tmp.write_text(script.render(context), encoding="utf-8")
        if _rented(manifest, name):
            from ..training import skypilot

            mix = layout.mix(name)
            text = skypilot.task_yaml(manifest, name, script=files.script, train=mix.train,
                                      eval=mix.eval, base=reference(manifest, spec.base))
            with atomic_path(files.sky_task) as tmp:
                tmp.write_text(text, encoding="utf-8")
