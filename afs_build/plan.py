"""``afs plan``: which tasks would run and why, and what training would take and cost.

Reads doit's state without running anything: for each task, doit's own up-to-date check
(with its reasons) is translated into words, and a task whose input task runs runs too.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import graph
from .estimate import CostLine, training_costs  # noqa: F401  (the plan shows them)
from .manifest import Manifest
from .paths import Layout


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
