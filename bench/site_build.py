"""How long the site of the default family takes to build: the pages, then MkDocs.

What a user runs: ``doit site`` runs ``site:<specialist>`` for each specialist (its page) and
``site:family`` (the family pages, the assets and the MkDocs build); this times the same
functions those tasks call, in that order, into a temporary site folder. The build folder is
the manifest's own where it has been built (``doit``); where it has not, ``--fill`` writes
evaluation results, comparisons and training curves shaped as the stages write them for every
specialist and every question of the suite, so the pages are as long as after a real build.

Baseline, measured in the same run: ``mkdocs build`` of a one-page Material site with the same
theme settings, what MkDocs and the theme cost by themselves. Target: seconds.

    python bench/site_build.py [--manifest afs.yaml] [--fill] [--runs 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("NO_MKDOCS_2_WARNING", "1")


def _jsonl(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows), encoding="utf-8")


def fill(manifest) -> None:
    """Eval results, summaries, comparisons with the base and training curves for every
    specialist, shaped as eval, compare and train write them (scores drawn at random)."""
    from afs_build.atomic import write_json
    from afs_build.evaluation import compare, suite
    from afs_build.paths import Layout

    layout = Layout.of(manifest)
    rng = random.Random(0)
    questions = suite.load(manifest.resolve(manifest.eval.suite), specialists=list(manifest.specialists),
                           judges=manifest.eval.judges)
    for spec in manifest.specialists.values():
        asked = [q for q in questions if spec.name in q["specialists"]] or questions[:20]

        def results(who: str) -> list[dict]:
            return [{"run": "bench", "specialist": who, "model_file": None, "quant": spec.serve_quant,
                     "question_id": q["id"], "category": q["category"],
                     "reply": f"{who} answers: " + " ".join(rng.choice("abcdefgh") * 5 for _ in range(40)),
                     "score": rng.choice((0.0, 0.25, 0.5, 1.0)), "passed": rng.random() > 0.5,
                     "grader": q["grading"], "judgements": [], "latency_s": 0.4, "completion_tokens": 60,
                     "tokens_per_second": 90.0, "time": "2026-12-01T00:00:00+00:00"} for q in asked]

        mine = results(spec.name)
        files = layout.eval(spec.name)
        _jsonl(files.results, mine)
        write_json(files.summary, {"specialist": spec.name, "questions": len(mine), "passed": 0,
                                   "mean_score": sum(r["score"] for r in mine) / len(mine),
                                   "tokens_per_second": 90.0, "by_category": {}, "failures": []})
        if not spec.train:
            continue
        base = results(spec.base)
        own = compare.own_categories(questions, spec.name, spec.categories)
        report = compare.table(mine, base, own=own, general=manifest.eval.general_category, seed=0)
        report.update(specialist=spec.name, base=spec.base, version="bench", regression=None,
                      quantization={k: {"file": f"{spec.name}-{k}.gguf", "bytes": 10**8, "questions": 10,
                                        "mean_score": 0.3, "agreement_with_f16": 0.8, "tokens_per_second": 100.0}
                                    for k in ("F16", *spec.quantize)})
        _jsonl(layout.compare(spec.name).base_results, base)
        write_json(layout.compare(spec.name).report, report)
        _jsonl(layout.train(spec.name).metrics, [{"step": s, "loss": 3 - s / 100, "tokens_per_second": 200.0}
                                                 for s in range(1, 301)])
        write_json(layout.train(spec.name).summary, {"steps": 300, "train_loss": 0.1, "train_samples": 300,
                                                     "tokens_seen": 60000, "afs": {"wall_seconds": 420.0}})


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def baseline(folder: Path) -> float:
    """mkdocs build of a one-page Material site, fonts off (what the theme costs by itself)."""
    from mkdocs.commands.build import build
    from mkdocs.config import load_config

    (folder / "docs").mkdir(parents=True)
    (folder / "docs" / "index.md").write_text("# One page\n\nHello.\n")
    (folder / "mkdocs.yml").write_text("site_name: one\nuse_directory_urls: false\n"
                                       "theme:\n  name: material\n  font: false\nplugins:\n  - search\n")
    config = load_config(config_file=str(folder / "mkdocs.yml"), site_dir=str(folder / "out"))
    return timed(build, config)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", default=str(REPO / "afs.yaml"))
    parser.add_argument("--fill", action="store_true", help="write a shaped build folder (in a temporary "
                        "folder) instead of reading the manifest's own")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    import logging

    from afs_build.manifest import load
    from afs_build.site import build, inputs

    logging.getLogger("mkdocs").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        manifest = load(args.manifest)
        manifest = dataclasses.replace(manifest, site=dataclasses.replace(manifest.site, dir=str(Path(tmp) / "site")))
        if args.fill:
            project = dataclasses.replace(manifest.project, build_dir=str(Path(tmp) / "build"))
            manifest = dataclasses.replace(manifest, project=project)
            fill(manifest)
        present = [p for p in inputs.family_inputs(manifest) if Path(p).is_file()]
        print(f"{len(manifest.specialists)} specialists; {len(present)} of "
              f"{len(inputs.family_inputs(manifest))} site inputs present"
              f"{' (written by --fill)' if args.fill else ''}", flush=True)
        rows = {"specialist pages": [], "family pages and assets": [], "MkDocs HTML": [], "whole site": []}
        for _ in range(args.runs):
            pages = sum(timed(build.specialist_page, manifest, n)[0] for n in manifest.specialists)
            family = timed(build.family_pages, manifest)[0]
            html, folder = timed(build.html, manifest)
            for key, value in zip(rows, (pages, family, html, pages + family + html)):
                rows[key].append(value)
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        pages = len(list(folder.rglob("*.html")))
        base = statistics.median(baseline(Path(tmp) / f"baseline{i}") for i in range(args.runs))
    print(f"{'step':<26}{'median s':>10}")
    for key, values in rows.items():
        print(f"{key:<26}{statistics.median(values):>10.2f}")
    print(f"{'baseline: one-page mkdocs':<26}{base:>10.2f}")
    print(f"{pages} HTML files, {size / 2**20:.1f} MiB in all")


if __name__ == "__main__":
    main()
