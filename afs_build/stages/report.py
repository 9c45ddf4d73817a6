"""Sum up the family: every trained specialist against its base, loudly (report:family)."""

from __future__ import annotations

import json
from typing import Iterator

from .. import log
from ..atomic import write_json
from ..manifest import Manifest
from ..paths import Layout
from ..uptodate import code_files
from .common import action, task

NAME = "report"


def tasks(manifest: Manifest) -> Iterator[dict]:
    if not manifest.eval.suite or not manifest.trained:
        return
    layout = Layout.of(manifest)
    reports = [layout.compare(s.name).report for s in manifest.trained]
    yield task(f"{NAME}:family", "Print and write the family's comparison with the bases.", run, manifest, "family",
               file_dep=reports + code_files("stages/report.py", "evaluation/compare.py"),
               task_dep=[f"compare:{s.name}" for s in manifest.trained], targets=[layout.family_report])


def family(manifest: Manifest) -> dict:
    """{specialist: its compare.json, or None where it has not been compared yet}."""
    layout = Layout.of(manifest)
    out = {}
    for spec in manifest.trained:
        path = layout.compare(spec.name).report
        try:
            out[spec.name] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            out[spec.name] = None
    return out


def lines(manifest: Manifest, reports: dict) -> list[str]:
    from ..evaluation.compare import VERDICT_BETTER, line

    out = []
    for name, report in reports.items():
        title = manifest.specialists[name].title
        if report is None:
            out.append(f"{title}: not compared yet (doit compare:{name})")
        else:
            mark = "" if report["verdict"] == VERDICT_BETTER else "WARNING: "
            out.append(mark + line(title, report))
    return out


@action(NAME)
def run(manifest: Manifest, name: str) -> None:
    from ..evaluation.compare import VERDICT_BETTER

    reports = family(manifest)
    for text in lines(manifest, reports):
        log.event(text, task=f"{NAME}:{name}")
    behind = [n for n, r in reports.items() if r and r["verdict"] != VERDICT_BETTER]
    if behind:
        log.event(f"WARNING: {len(behind)} of {len(reports)} specialists are not better than their "
                  f"base on their own categories: {', '.join(behind)}", task=f"{NAME}:{name}")
    write_json(Layout.of(manifest).family_report,
               {"specialists": {n: ({k: r[k] for k in ("verdict", "own", "general", "overall", "version")}
                                    if r else None) for n, r in reports.items()},
                "not_better": behind})
