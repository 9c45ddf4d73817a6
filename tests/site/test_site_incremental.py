"""The site's tasks through doit itself, on the fake build: an unchanged build folder rebuilds
nothing, a changed evaluation rebuilds only the pages that show it, and no model task reads
what the site's inputs are."""

from __future__ import annotations

import json
from pathlib import Path

from afs_build import graph
from afs_build.manifest import load
from afs_build.paths import Layout
from afs_build.stages import site as site_stage
from site_fixtures import write_build


def run_site_tasks(manifest, capsys) -> set[str]:
    """Run the site stage's tasks only (the rest of the build folder is written by hand, so
    there is nothing upstream to run); returns the names of the tasks doit ran: those whose
    target files were written anew (doit's own console lines depend on the reporter and the
    stream capture, so the files are the witness)."""
    from doit.cmd_base import ModuleTaskLoader
    from doit.doit_cmd import DoitMain

    tasks = list(site_stage.tasks(manifest))

    def task_site():
        for task in tasks:
            yield {"basename": task["name"], **{k: v for k, v in task.items() if k != "name"}}

    def stamps() -> dict:
        found = {}
        for task in tasks:
            target = Path(task["targets"][0])
            found[task["name"]] = (target.stat().st_ino, target.stat().st_mtime_ns) if target.exists() else None
        return found

    before = stamps()
    config = dict(graph.namespace(manifest)["DOIT_CONFIG"], verbosity=0)
    capsys.readouterr()
    code = DoitMain(ModuleTaskLoader({"DOIT_CONFIG": config, "task_site": task_site})).run([])
    out = capsys.readouterr().out
    assert code == 0, out
    after = stamps()
    return {name for name in after if after[name] != before[name]}


def test_only_the_pages_that_show_a_changed_result_are_rebuilt(tmp_path, capsys):
    manifest = load(write_build(tmp_path))
    layout = Layout.of(manifest)
    # every file_dep must exist under doit: index notes built too (the fixture leaves it out)
    layout.index("notes").report.parent.mkdir(parents=True)
    layout.index("notes").report.write_text(layout.index("docs").report.read_text())
    everything = {"site:alpha", "site:beta", "site:omega", "site:family"}
    assert run_site_tasks(manifest, capsys) == everything
    index = tmp_path / "site" / "build" / "index.html"
    assert index.is_file()
    assert run_site_tasks(manifest, capsys) == set()  # an unchanged build folder: nothing

    results = layout.eval("alpha").results
    results.write_text(results.read_text())  # touched, not changed: content decides
    assert run_site_tasks(manifest, capsys) == set()

    rows = [json.loads(line) for line in results.read_text().splitlines()]
    rows[0]["reply"] = "a new reply after a new evaluation"
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert run_site_tasks(manifest, capsys) == {"site:alpha", "site:family"}
    assert "a new reply after a new evaluation" in (tmp_path / "site/build/specialists/alpha.html").read_text()

    effect = layout.eval("beta").retrieval_effect
    effect.write_text(effect.read_text().replace('"questions_with_context": 3', '"questions_with_context": 2'))
    assert run_site_tasks(manifest, capsys) == {"site:beta", "site:family"}
    assert "2 of them got context" in (tmp_path / "site/build/specialists/beta.html").read_text()

    # reports that later stages write (scorecard:family, screenshots:family) are followed when
    # they appear and when they change, though a build need not have them
    report = layout.model_report("alpha").json
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text('{"model": "alpha"}')
    assert run_site_tasks(manifest, capsys) == {"site:alpha", "site:family"}
    assert run_site_tasks(manifest, capsys) == set()
    shots = layout.screenshots("beta").report
    shots.write_text('{"questions": {}, "differs": 0, "recorded": 0, "matches": 0}')
    assert run_site_tasks(manifest, capsys) == {"site:beta", "site:family"}


def test_no_model_task_reads_an_evaluation_result(tmp_path):
    """A changed eval result rebuilds pages, not models: no training or post-training task
    depends on what the evaluation writes."""
    manifest = load(write_build(tmp_path))
    layout = Layout.of(manifest)
    written = {str(p) for n in manifest.specialists for p in (layout.eval(n).results, layout.eval(n).summary,
                                                                layout.compare(n).report)}
    for task in graph.all_tasks(manifest):
        stage = task["name"].split(":")[0]
        if stage in ("mix", "render", "train", "merge", "gguf", "quantize", "base", "baseline"):
            assert not written & set(map(str, task.get("file_dep", ()))), task["name"]
