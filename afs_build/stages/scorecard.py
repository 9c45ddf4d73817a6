"""Write the evaluation reports: per model and for the family, JSON, Markdown, HTML, charts (scorecard:family).

Nothing is asked here: the reports sum up what ``eval``, ``compare``, ``judge`` and
``screenshots`` wrote, at the stable paths of :meth:`afs_build.paths.Layout.model_report`
(``build/reports/eval/<model>/``) and ``family_eval_report`` (``build/reports/eval/_family/``).
The PNG charts are drawn by headless Chromium; without it the SVG charts (inline in the HTML
pages and beside them) are written and the PNGs are not, with a warning.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, Optional

from .. import log
from ..atomic import atomic_path, write_json
from ..manifest import Manifest
from ..paths import Layout, ReportFiles
from ..uptodate import code_files
from .common import action, task

NAME = "scorecard"
CODE = ("stages/scorecard.py", "evaluation/reports.py", "evaluation/charts.py")


def tasks(manifest: Manifest) -> Iterator[dict]:
    if not manifest.eval.suite:
        return
    layout = Layout.of(manifest)
    names = list(manifest.specialists)
    deps = [layout.eval(n).summary for n in names] + [layout.eval(n).results for n in names]
    deps += [layout.compare(s.name).report for s in manifest.trained] + [layout.screenshots(n).report for n in names]
    task_dep = [f"eval:{n}" for n in names] + [f"compare:{s.name}" for s in manifest.trained] + ["screenshots:family"]
    if manifest.eval.judges:
        deps.append(layout.judge().report)
        task_dep.append("judge:family")
    targets = [f for n in names for f in outputs(layout.model_report(n))] + outputs(layout.family_eval_report, family=True)
    yield task(f"{NAME}:family", "Write the evaluation reports: per model and for the family.", run, manifest, "family",
               file_dep=deps + code_files(*CODE), task_dep=task_dep, targets=targets)


def outputs(files: ReportFiles, family: bool = False) -> list[Path]:
    charts = ["categories", "speed"] if family else ["categories"]
    return [files.json, files.markdown, files.html] + [files.chart(c, "svg") for c in charts]


def read(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


@action(NAME)
def run(manifest: Manifest, name: str) -> None:
    from ..data.jsonl import read_jsonl
    from ..evaluation import reports, suite

    layout = Layout.of(manifest)
    judge = read(layout.judge().report) if manifest.eval.judges else None
    version = suite.version(manifest.resolve(manifest.eval.suite))
    built = {}
    for model in manifest.specialists:
        summary = read(layout.eval(model).summary) or {}
        results = list(read_jsonl(layout.eval(model).results))
        built[model] = reports.model_report(model, results, summary, suite_version=version, judge=judge,
                                            compare=read(layout.compare(model).report),
                                            screenshots=read(layout.screenshots(model).report))
    pngs = {}
    for model, report in built.items():
        pngs.update(write(layout.model_report(model), report, reports.model_markdown(report),
                          {"categories": reports.charts_categories(f"{model}: score per category", {model: report})}))
    family = reports.family_report(built, suite_version=version, judge=judge)
    pngs.update(write(layout.family_eval_report, family, reports.family_markdown(family),
                      {"categories": reports.charts_categories("the family: score per category", built),
                       "speed": reports.charts_speed("the family: speed against score", built)}))
    draw(pngs, f"{NAME}:{name}")


def write(files: ReportFiles, report: dict, markdown: str, svgs: dict[str, str]) -> dict[Path, str]:
    """The report's JSON, Markdown, HTML and SVG charts; {PNG path: SVG} for the PNGs to draw."""
    from ..evaluation.reports import html_page

    write_json(files.json, report)
    for path, text in [(files.markdown, markdown),
                       (files.html, html_page(report.get("model", "family"), markdown, list(svgs.values())))] + \
            [(files.chart(n, "svg"), s) for n, s in svgs.items()]:
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
    return {files.chart(n, "png"): s for n, s in svgs.items()}


def draw(pngs: dict[Path, str], task_name: str) -> None:
    from ..errors import StageError
    from ..evaluation import charts
    from ..evaluation.chromium import find

    if find() is None:
        log.event("WARNING: Chromium is not installed: the reports' PNG charts are not drawn (the SVG charts "
                  "are); apt-get install -y chromium", task=task_name)
        return
    try:
        charts.to_png(pngs)
    except StageError as err:
        log.event(f"WARNING: the PNG charts were not drawn: {err}", task=task_name)
