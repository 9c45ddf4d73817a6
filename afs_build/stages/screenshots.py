"""Draw the replies meant to be seen and compare them with their baselines (screenshots:family).

Every evaluated reply to a question with a ``render`` type (markdown, code, ansi, html) is
drawn in headless Chromium at ``eval.screenshots``' viewport and fonts, and compared with its
baseline (``<baselines>/<specialist>/<question>.png`` beside the manifest) by the share of
pixels that differ and by SSIM, against the question's thresholds (or the manifest's). A
missing baseline is recorded from this run; ``afs screenshots --accept`` takes the current
images as the new baselines. Each specialist's folder gets the baseline, actual and difference
images, ``screenshots.json`` and an HTML page that shows them side by side.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterator

from .. import log
from ..atomic import write_json
from ..manifest import Manifest
from ..paths import Layout
from ..uptodate import SliceChanged, code_files
from .common import action, task

NAME = "screenshots"
CODE = ("stages/screenshots.py", "evaluation/render.py", "evaluation/chromium.py", "evaluation/images.py")


class BaselinesChanged:
    """doit ``uptodate``: false when the baseline images differ from those after the last run
    (recorded after it, so a run that records missing baselines is up to date next time)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.reason = f"screenshot baselines changed: {folder}"

    def digest(self) -> str:
        from ..uptodate import file_digest

        items = sorted(self.folder.rglob("*.png")) if self.folder.is_dir() else []
        text = "\n".join(f"{p.relative_to(self.folder).as_posix()} {file_digest(p)}" for p in items)
        return hashlib.sha256(text.encode()).hexdigest()

    def configure_task(self, task) -> None:
        task.value_savers.append(lambda: {"baselines": self.digest()})

    def __call__(self, task, values) -> bool:
        return values.get("baselines") == self.digest()

    def __repr__(self) -> str:
        return f"BaselinesChanged({str(self.folder)!r})"


def tasks(manifest: Manifest) -> Iterator[dict]:
    if not manifest.eval.suite:
        return
    layout = Layout.of(manifest)
    names = list(manifest.specialists)
    baselines = manifest.resolve(manifest.eval.screenshots.baselines)
    yield task(f"{NAME}:family", "Draw the replies meant to be seen and compare them with their baselines.",
               run, manifest, "family",
               file_dep=[manifest.resolve(manifest.eval.suite)] + [layout.eval(n).results for n in names]
               + code_files(*CODE),
               task_dep=[f"eval:{n}" for n in names],
               targets=[layout.screenshots(n).report for n in names],
               uptodate=[SliceChanged("eval.screenshots", manifest.eval.screenshots), BaselinesChanged(baselines)])


@action(NAME)
def run(manifest: Manifest, name: str) -> None:
    from ..data.jsonl import read_jsonl
    from ..errors import StageError
    from ..evaluation import suite

    layout = Layout.of(manifest)
    settings = manifest.eval.screenshots
    questions = {q["id"]: q for q in suite.load(manifest.resolve(manifest.eval.suite), manifest.eval.suite,
                                                 specialists=list(manifest.specialists), judges=manifest.eval.judges)}
    baselines = manifest.resolve(settings.baselines)
    todo = {}
    for spec in manifest.specialists:
        rows = [r for r in read_jsonl(layout.eval(spec).results)
                if r["question_id"] in questions and questions[r["question_id"]].get("render") and not r.get("error")]
        todo[spec] = rows
    shots = sum(len(r) for r in todo.values())
    task_name = f"{NAME}:{name}"
    mismatched = []
    if shots:
        from ..evaluation.chromium import Browser

        with log.step(task_name, f"drawing {shots} replies in Chromium"), \
                Browser(settings.width, settings.height) as browser:
            for spec, rows in todo.items():
                report = compare_all(browser, layout.screenshots(spec), rows, questions, baselines / spec, settings)
                mismatched += [f"{spec}/{q}" for q, r in report["questions"].items() if r["status"] == "differs"]
    else:
        for spec in todo:
            write_report(layout.screenshots(spec), {"questions": {}, "differs": 0, "recorded": 0, "matches": 0})
    if mismatched:
        text = (f"{len(mismatched)} screenshots differ from their baselines beyond the thresholds: "
                f"{', '.join(mismatched[:8])} (pages: {layout.screenshots(mismatched[0].split('/')[0]).page}; "
                f"afs screenshots --accept takes them as the new baselines)")
        if settings.require_match:
            raise StageError(text + " (eval.screenshots.require_match is true)")
        log.event("WARNING: " + text, task=task_name)


def compare_all(browser, files, rows: list[dict], questions: dict, baselines: Path, settings) -> dict:
    """Draw each row's reply, compare it with its baseline (recording a missing one), write the
    images, the report and the comparison page."""
    from ..atomic import atomic_path
    from ..evaluation import images, render

    out = {}
    for row in rows:
        q = questions[row["question_id"]]
        qid = q["id"]
        source = files.page_source(qid)
        source.parent.mkdir(parents=True, exist_ok=True)
        source.write_text(render.page(row["reply"], q["render"], font=settings.font, mono_font=settings.mono_font,
                                      font_size=settings.font_size, width=settings.width), encoding="utf-8")
        png = browser.screenshot(source)
        _write(files.image("actual", qid), png, atomic_path)
        baseline = baselines / f"{qid}.png"
        entry = {"render": q["render"], "reply_digest": hashlib.sha256(row["reply"].encode()).hexdigest()[:16],
                 "max_diff_ratio": q.get("max_diff_ratio") if q.get("max_diff_ratio") is not None else settings.max_diff_ratio,
                 "min_ssim": q.get("min_ssim") if q.get("min_ssim") is not None else settings.min_ssim}
        if not baseline.exists():
            _write(baseline, png, atomic_path)
            entry.update(status="recorded", diff_ratio=0.0, ssim=1.0)
        stats, diff = images.compare(baseline, png)
        if entry.get("status") != "recorded":
            ok = stats["diff_ratio"] <= entry["max_diff_ratio"] and stats["ssim"] >= entry["min_ssim"]
            entry.update(stats, status="matches" if ok else "differs")
        _write(files.image("baseline", qid), baseline.read_bytes(), atomic_path)
        _write(files.image("diff", qid), diff, atomic_path)
        out[qid] = entry
    report = {"questions": out, **{k: sum(1 for e in out.values() if e["status"] == k)
                                   for k in ("matches", "differs", "recorded")},
              "baselines": str(baselines), "viewport": [settings.width, settings.height],
              "font": settings.font, "mono_font": settings.mono_font, "font_size": settings.font_size}
    write_report(files, report)
    return report


def _write(path: Path, data: bytes, atomic_path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_report(files, report: dict) -> None:
    from ..atomic import atomic_path

    write_json(files.report, report)
    with atomic_path(files.page) as tmp:
        tmp.write_text(comparison_page(report), encoding="utf-8")


def comparison_page(report: dict) -> str:
    """The HTML page of baseline, actual and difference images, one row per question."""
    import html

    rows = []
    for qid, e in report["questions"].items():
        q = html.escape(qid)
        rows.append(f"<tr class='{e['status']}'><td><b>{q}</b><br>{e['status']}<br>{e['render']}<br>"
                    f"diff {e.get('diff_ratio', 0):.4f} (max {e['max_diff_ratio']:g})<br>"
                    f"SSIM {e.get('ssim', 1):.4f} (min {e['min_ssim']:g})</td>"
                    + "".join(f"<td><img src='{kind}/{q}.png' alt='{kind}'></td>"
                              for kind in ("baseline", "actual", "diff")) + "</tr>")
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>afs screenshots</title><style>"
            "body{font-family:sans-serif} img{max-width:400px;border:1px solid #ccc} td{vertical-align:top;padding:4px}"
            " tr.differs td:first-child{color:#b00}</style></head><body><h1>Screenshots against baselines</h1>"
            f"<p>{report.get('matches', 0)} match, {report.get('differs', 0)} differ, {report.get('recorded', 0)} "
            "recorded as new baselines.</p><table><tr><th>question</th><th>baseline</th><th>actual</th>"
            f"<th>difference</th></tr>{''.join(rows)}</table></body></html>\n")


def accept(manifest: Manifest, names=None) -> list[str]:
    """Take the current images as the new baselines (all specialists, or `names`)."""
    import shutil

    layout = Layout.of(manifest)
    baselines = manifest.resolve(manifest.eval.screenshots.baselines)
    taken = []
    for spec in names or manifest.specialists:
        folder = layout.screenshots(spec).folder / "actual"
        for png in sorted(folder.glob("*.png")) if folder.is_dir() else []:
            target = baselines / spec / png.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(png, target)
            taken.append(f"{spec}/{png.stem}")
    return taken
