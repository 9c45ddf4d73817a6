"""Render a specialist's standalone LoRA training script from ``templates/train.py.j2``.

:func:`context` is the one place that turns the manifest into the template's values;
:func:`render` lays them out. Values that reach Python source go through the ``py`` filter
(``repr``), and text that reaches a comment through ``comment`` (one line), so a quote or a
newline in a system prompt or a role cannot break, or inject into, the script. The same
manifest renders byte-identical scripts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..manifest import Manifest
from ..paths import Layout
from ..resources import templates_dir

TEMPLATE = "train.py.j2"
LR_SCHEDULE = "cosine"  # not a manifest knob (yet): the script also takes "linear"
WEIGHT_DECAY = 0.0
MAX_GRAD_NORM = 1.0


def context(manifest: Manifest, specialist: str, *, base: str) -> dict[str, Any]:
    """The template context for `specialist`; `base` is what the script loads (folder or hub id).

    The data paths are relative to the script's folder, so the script does not name the
    machine it was rendered on.
    """
    spec = manifest.specialists[specialist]
    model = manifest.models[spec.base]
    layout = Layout.of(manifest)
    here = layout.train(specialist).folder
    mix = layout.mix(specialist)
    return {
        "specialist": spec.name,
        "title": spec.title,
        "role": spec.role,
        "manifest_file": manifest.file.name,
        "manifest_digest": manifest.digest,
        "base": str(base),
        "base_revision": model.revision if model.kind == "hub" else None,
        "train_data": Path(os.path.relpath(mix.train, here)).as_posix(),
        "eval_data": Path(os.path.relpath(mix.eval, here)).as_posix(),
        "seed": manifest.project.seed,
        "system_prompt": spec.system_prompt,
        "lora_r": spec.lora.r,
        "lora_alpha": spec.lora.alpha,
        "lora_dropout": spec.lora.dropout,
        "lora_targets": list(spec.lora.targets),
        "epochs": spec.epochs,
        "learning_rate": spec.learning_rate,
        "lr_schedule": LR_SCHEDULE,
        "warmup_ratio": spec.warmup_ratio,
        "weight_decay": WEIGHT_DECAY,
        "max_grad_norm": MAX_GRAD_NORM,
        "batch_size": spec.batch_size,
        "grad_accum": spec.grad_accum,
        "max_seq_len": spec.max_seq_len,
        "packing": spec.packing,
        "gradient_checkpointing": spec.gradient_checkpointing,
        "checkpoint_every": spec.checkpoint_every,
        "base_precision": spec.base_precision,
    }


def py(value: Any) -> str:
    """`value` as a Python literal (strings through ``repr``, so any quote is escaped)."""
    import jinja2

    if isinstance(value, jinja2.Undefined):
        str(value)  # StrictUndefined raises here, naming the missing value
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(py(v) for v in value) + "]"
    if value is None or isinstance(value, (str, bool, int, float)):
        return repr(value)
    raise TypeError(f"cannot write a {type(value).__name__} into Python source: {value!r}")


def comment(value: Any) -> str:
    """`value` on one line, for a ``#`` comment (a newline would end the comment)."""
    return " ".join(str(value).split())


def render(context: dict[str, Any]) -> str:
    """The training script's source text."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir())),
                             undefined=jinja2.StrictUndefined, autoescape=False,
                             keep_trailing_newline=True)
    env.filters["py"] = py
    env.filters["comment"] = comment
    return env.get_template(TEMPLATE).render(context)
