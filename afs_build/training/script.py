"""Render a specialist's standalone training script: a commented config block, then the loop.

:func:`config` is the one place that turns the manifest (and :data:`DEFAULTS`, the knobs the
manifest does not expose) into a :class:`~afs_build.training.loop.TrainConfig`; its digest is
the training slice's, the very value the render task compares. :func:`render` lays the config
out through ``templates/train.py.j2`` (every knob with its comment, values through ``repr``,
so a quote or a newline in a system prompt cannot break, or inject into, the script) and
appends the text of :mod:`afs_build.training.loop` verbatim: the script is one file that
needs only torch, transformers and peft. The same manifest renders byte-identical scripts.
"""

from __future__ import annotations

import math
import os
import textwrap
from dataclasses import fields
from pathlib import Path
from typing import Any

from ..manifest import Manifest
from ..paths import Layout
from ..post.architectures import FAMILIES
from ..uptodate import slice_digest
from . import loop
from .loop import TrainConfig

TEMPLATE = "train.py.j2"
# Training knobs that are not manifest settings (yet). Part of the training slice, so editing
# one re-renders and retrains every specialist.
DEFAULTS = {
    "lr_schedule": "cosine",  # the loop also takes "linear"
    "weight_decay": 0.0,
    "max_grad_norm": 1.0,
}
SPECIALIST_KEYS = ("base", "system_prompt", "lora", "epochs", "learning_rate", "batch_size",
                   "grad_accum", "max_seq_len", "warmup_ratio", "packing", "gradient_checkpointing",
                   "checkpoint_every", "base_precision", "hardware")
COMMENT_WIDTH = 92


def hardware_slice(hw) -> dict:
    """What of a hardware entry changes how training runs (not its price or memory)."""
    return {"backend": hw.backend, "gpu": hw.gpu, "count": hw.count, "infra": hw.infra, "spot": hw.spot}


def training_slice(manifest: Manifest, name: str) -> dict:
    """Everything a specialist's training reads from the manifest, and the loop's defaults.

    Serving settings (port, quantize, sampling), descriptions and other specialists are left
    out, so editing them never retrains this one.
    """
    spec = manifest.specialists[name]
    return {"specialist": {k: getattr(spec, k) for k in SPECIALIST_KEYS},
            "model": manifest.models[spec.base],
            "hardware": hardware_slice(manifest.hardware[spec.hardware]),
            "seed": manifest.project.seed,
            "defaults": DEFAULTS}


def settings_digest(manifest: Manifest, name: str) -> str:
    """The digest of :func:`training_slice`: written into the script, compared by the build."""
    return slice_digest(training_slice(manifest, name))


def config(manifest: Manifest, specialist: str, *, base: str) -> TrainConfig:
    """The training config of `specialist`; `base` is what the script loads (folder or hub id).

    The data paths are relative to the script's folder, so the script does not name the
    machine it was rendered on; the output names are the layout's, relative to the folder
    the script writes into.
    """
    spec = manifest.specialists[specialist]
    model = manifest.models[spec.base]
    layout = Layout.of(manifest)
    files = layout.train(specialist)
    mix = layout.mix(specialist)

    def inside(path: Path) -> str:
        return path.relative_to(files.folder).as_posix()

    return TrainConfig(
        specialist=spec.name,
        manifest_digest=settings_digest(manifest, specialist),
        base=str(base),
        base_revision=model.revision if model.kind == "hub" else None,
        train_data=Path(os.path.relpath(mix.train, files.folder)).as_posix(),
        eval_data=Path(os.path.relpath(mix.eval, files.folder)).as_posix(),
        metrics_file=inside(files.metrics),
        checkpoints_dir=inside(files.checkpoints),
        adapter_dir=inside(files.adapter),
        summary_file=inside(files.summary),
        architectures=tuple(sorted(FAMILIES)),
        seed=manifest.project.seed,
        system_prompt=spec.system_prompt,
        lora_r=spec.lora.r,
        lora_alpha=spec.lora.alpha,
        lora_dropout=spec.lora.dropout,
        lora_targets=tuple(spec.lora.targets),
        epochs=spec.epochs,
        learning_rate=spec.learning_rate,
        warmup_ratio=spec.warmup_ratio,
        batch_size=spec.batch_size,
        grad_accum=spec.grad_accum,
        max_seq_len=spec.max_seq_len,
        packing=spec.packing,
        gradient_checkpointing=spec.gradient_checkpointing,
        checkpoint_every=spec.checkpoint_every,
        base_precision=spec.base_precision,
        **DEFAULTS,
    )


def header(manifest: Manifest, specialist: str) -> dict[str, str]:
    """The header's words: who the script trains and where it was rendered from (one line each)."""
    spec = manifest.specialists[specialist]
    return {"specialist": spec.name, "title": spec.title, "role": spec.role,
            "manifest_file": manifest.file.name}


def py(value: Any) -> str:
    """`value` as a Python literal (strings through ``repr``, so any quote is escaped)."""
    if isinstance(value, tuple):
        return "(" + ", ".join(py(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, list):
        return "[" + ", ".join(py(v) for v in value) + "]"
    if isinstance(value, float) and not math.isfinite(value):
        raise TypeError(f"cannot write {value!r} into Python source as a literal")
    if value is None or isinstance(value, (str, bool, int, float)):
        return repr(value)
    raise TypeError(f"cannot write a {type(value).__name__} into Python source: {value!r}")


def comment(value: Any) -> str:
    """`value` on one line, for a ``#`` comment (a newline would end the comment)."""
    return " ".join(str(value).split())


def knobs(cfg: TrainConfig) -> list[dict]:
    """The config block's entries: each field's comment lines, name and literal value."""
    docs = loop.knob_docs()
    return [{"name": f.name, "value": py(getattr(cfg, f.name)),
             "doc": textwrap.wrap(comment(docs[f.name]), COMMENT_WIDTH)} for f in fields(cfg)]


def loop_source() -> str:
    """The loop module's text, as the script carries it."""
    return Path(loop.__file__).read_text(encoding="utf-8")


def render(cfg: TrainConfig, words: dict[str, str]) -> str:
    """The training script's source text for `cfg`, with the header `words` (see :func:`header`)."""
    import jinja2

    from ..resources import templates_dir

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir())),
                             undefined=jinja2.StrictUndefined, autoescape=False,
                             keep_trailing_newline=True)
    env.filters["comment"] = comment
    return env.get_template(TEMPLATE).render(
        **words, manifest_digest=cfg.manifest_digest, knobs=knobs(cfg), loop=loop_source())
