"""``afs plan``: which tasks would run and why, and what training would take and cost.

Reads doit's state without running anything: for each task, doit's own up-to-date check
(with its reasons) is translated into words, and a task whose input task runs runs too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

from . import estimate, graph
from .checks import EMBEDDED_PARAMS_B
from .manifest import Manifest
from .paths import Layout


# Chat-template markers around a system, a user and an assistant turn (ChatML: about 15).
TEMPLATE_TOKENS = 15


@dataclass(frozen=True)
class TaskPlan:
    name: str
    doc: str
    runs: bool
    reasons: tuple[str, ...]


def task_plans(manifest: Manifest) -> list[TaskPlan]:
    """Every task in pipeline order, whether it would run, and why."""
    from doit.dependency import Dependency, JsonDB, MD5Checker
    from doit.loader import load_tasks

    namespace = graph.namespace(manifest)
    tasks = [t for t in load_tasks(namespace, config=namespace["DOIT_CONFIG"]) if t.actions]  # not the stage groups
    by_name = {t.name: t for t in tasks}
    state = Layout.of(manifest).state_db
    dep = Dependency(JsonDB, str(state), checker_cls=MD5Checker) if state.exists() else None
    plans: dict[str, TaskPlan] = {}
    try:
        for task in tasks:
            reasons = list(_reasons(task, by_name, dep))
            upstream = [d for d in task.task_dep if d in plans and plans[d].runs]
            if upstream:
                reasons.append("an input task runs: " + ", ".join(upstream))
            plans[task.name] = TaskPlan(task.name, task.doc or "", bool(reasons), tuple(reasons))
    finally:
        if dep is not None:
            dep.close()
    return list(plans.values())


def _reasons(task, tasks: dict, dep) -> list[str]:
    if dep is None or not dep._get(task.name, "checker:"):
        return ["new: never built successfully"]
    status = dep.get_status(task, tasks, get_log=True)
    if status.status == "up-to-date":
        return []
    out: list[str] = []
    for reason, value in status.reasons.items():
        if reason == "uptodate_false":
            for check, _args, _kwargs in value:
                out.append(getattr(check, "reason", f"not up to date: {check!r}"))
        elif reason == "changed_file_dep":
            out.extend(f"input content changed: {path}" for path in value)
        elif reason == "missing_target":
            out.extend(f"output missing: {path}" for path in value)
        elif reason == "added_file_dep":
            out.extend(f"new input: {path}" for path in value)
        elif reason == "removed_file_dep":
            out.extend(f"input removed: {path}" for path in value)
        elif reason == "has_no_dependencies":
            out.append("always runs (no inputs)")
        elif reason == "checker_changed":
            out.append("doit's file checker changed")
        else:
            out.append(f"{reason}: {value}")
    return out


@dataclass(frozen=True)
class CostLine:
    specialist: str
    title: str
    hardware: str
    gpu: str
    count: int
    estimate: estimate.TrainingEstimate
    actual_hours: Optional[float] = None  # from the last training run, where there was one
    actual_cost: Optional[float] = None


def training_costs(manifest: Manifest, hardware_override: Optional[dict[str, str]] = None) -> list[CostLine]:
    """One estimate per trained specialist; `hardware_override` maps specialist (or '*') to hardware."""
    override = hardware_override or {}
    layout = Layout.of(manifest)
    lines = []
    for spec in manifest.trained:
        hw = manifest.hardware[override.get(spec.name, override.get("*", spec.hardware))]
        model = manifest.models[spec.base]
        params = model.params_b or EMBEDDED_PARAMS_B[model.embedded]
        mix = manifest.mixes[spec.mix]
        tokens, where = _train_tokens(layout, spec, mix)
        tps = estimate.throughput(hw.gpu, hw.count, params, hw.tokens_per_second, spec.base_precision)
        est = estimate.training(tokens, spec.epochs, tps, hw.overhead_minutes, hw.price_per_hour, where)
        actual = _actual(layout, spec.name)
        lines.append(CostLine(spec.name, spec.title, hw.name, hw.gpu, hw.count, est,
                              *(actual if actual else (None, None))))
    return lines


def _actual(layout: Layout, name: str) -> Optional[tuple[float, float]]:
    """Hours and dollars of the last recorded training run of `name`."""
    path = layout.train(name).summary
    if not path.exists():
        return None
    try:
        afs = json.loads(path.read_text(encoding="utf-8"))["afs"]
        return afs["wall_seconds"] / 3600, afs["cost"]
    except (KeyError, ValueError, TypeError):
        return None


def _train_tokens(layout: Layout, spec, mix) -> tuple[int, str]:
    """Training tokens per epoch: from the built mix where it exists, else from its size.

    Each sample is also trained with the specialist's system prompt and the chat template's
    markers, which the mix's counts do not include.
    """
    from .data.tokens import estimate_tokens, sample_tokens

    per_sample = estimate_tokens(spec.system_prompt) + TEMPLATE_TOKENS if spec.system_prompt else TEMPLATE_TOKENS
    train = layout.mix(spec.name).train
    if train.exists():  # each sample as long as it trains: cut at max_seq_len
        try:
            with open(train, encoding="utf-8") as handle:
                return sum(min(sample_tokens(json.loads(line)) + per_sample, spec.max_seq_len)
                           for line in handle if line.strip()), "data"
        except (KeyError, ValueError, TypeError, OSError):
            pass
    if mix.tokens:
        return mix.tokens, "estimate"
    return mix.samples * (min(mix.avg_tokens, spec.max_seq_len) + per_sample), "estimate"
