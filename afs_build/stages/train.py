"""Train each specialist's LoRA adapter, here or on a rented GPU (train:<specialist>)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import time
from typing import Iterator

from .. import log
from ..atomic import write_json
from ..estimate import training_costs
from ..manifest import Manifest, plain
from ..paths import Layout
from ..training.script import hardware_slice
from ..uptodate import SliceChanged
from .common import action

NAME = "train"


def tasks(manifest: Manifest) -> Iterator[dict]:

    layout = Layout.of(manifest)
    for spec in manifest.trained:
        files, mix = layout.train(spec.name), layout.mix(spec.name)
        hw = manifest.hardware[spec.hardware]
        file_dep = [str(files.script), str(mix.train), str(mix.eval), str(layout.base(spec.base).report)]
        if hw.backend == "skypilot":
            file_dep.append(str(files.sky_task))
        where = "on this machine" if hw.backend == "local" else f"on {hw.gpu} x{hw.count} through SkyPilot"
        yield {
            "name": f"{NAME}:{spec.name}",
            "doc": f"Train {spec.title}'s LoRA adapter {where}.",
            "actions": [(run, [manifest, spec.name])],
            "file_dep": file_dep,
            "task_dep": [f"render:{spec.name}", f"mix:{spec.name}"],
            # The adapter's weights are not a target doit hashes: later stages depend on the
            # summary, written last and atomically.
            "targets": [str(files.summary)],
            "uptodate": [SliceChanged(f"hardware.{hw.name}", hardware_slice(hw))],
            "clean": True,
        }


@contextlib.contextmanager
def one_at_a_time(layout: Layout) -> Iterator[None]:
    """Serialize local training: two torch jobs on two cores make each step 5-10 times slower."""
    layout.training_lock.parent.mkdir(parents=True, exist_ok=True)
    with open(layout.training_lock, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@action(NAME)
def run(manifest: Manifest, name: str) -> None:
    from .base import reference

    layout = Layout.of(manifest)
    spec = manifest.specialists[name]
    hw = manifest.hardware[spec.hardware]
    files, mix = layout.train(name), layout.mix(name)
    task = f"{NAME}:{name}"
    started = time.time()
    with log.step(task, f"training on {hw.name}", specialist=name) as summary_fields:
        if hw.backend == "local":
            from ..training.local import run_local

            with one_at_a_time(layout):
                summary = run_local(files.script, files, base=reference(manifest, spec.base),
                                    train=mix.train, eval=mix.eval)
        else:
            from ..training.skypilot import cluster_name, launch

            summary = launch(files, cluster=cluster_name(manifest.project.name, name),
                             price_per_hour=hw.price_per_hour)
        wall = time.time() - started
        summary_fields.update(steps=summary.get("steps"), train_loss=summary.get("train_loss"))
    summary["afs"] = {"hardware": plain(hw), "wall_seconds": round(wall, 1),
                      "cost": round(wall / 3600 * hw.price_per_hour, 4),
                      "estimate": _estimate(manifest, name)}
    write_json(files.summary, summary)


def _estimate(manifest: Manifest, name: str) -> dict:
    line = next(c for c in training_costs(manifest) if c.specialist == name)
    return {"hours": round(line.estimate.hours, 4), "cost": round(line.estimate.cost, 4),
            "tokens": line.estimate.tokens}


def read_summary(layout: Layout, name: str) -> dict | None:
    """The recorded training summary of `name`, if it has been trained."""
    path = layout.train(name).summary
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
