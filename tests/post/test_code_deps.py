"""The code that makes the post-training outputs is an input of their tasks: editing it re-plans them.

A build is recorded as done without running anything (every input and output exists, doit's
state says each task succeeded, as its runner would record it), over a copy of the package
so that the test can edit code. Then one module is edited and `afs plan` must re-plan exactly
the tasks that module's code makes, and what follows them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from afs_build import graph, plan, uptodate
from afs_build.manifest import load
from afs_build.paths import Layout, SiteFiles

TRAINED, SERVED = ("alpha", "beta"), ("gamma",)
ALL = TRAINED + SERVED


def stage(name: str, specialists=ALL) -> set[str]:
    return {f"{name}:{s}" for s in specialists}


def record_done(manifest) -> None:
    """Make every task of `manifest` up to date without running it."""
    from doit.dependency import Dependency, JsonDB, MD5Checker
    from doit.loader import load_tasks

    namespace = graph.namespace(manifest)
    tasks = [t for t in load_tasks(namespace, config=namespace["DOIT_CONFIG"]) if t.actions]
    build, site = Layout.of(manifest).build, SiteFiles.of(manifest).folder
    for task in tasks:
        for path in map(Path, [*task.file_dep, *task.targets]):
            if not path.exists():
                # inputs outside build/ (and the site's pages) are real files
                assert path.is_relative_to(build) or path.is_relative_to(site), path
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(f"{path.name}\n")
    for task in tasks:  # reports that record their outputs' sizes and digests, as the stages do
        for check, _, _ in task.uptodate:
            if isinstance(check, uptodate.OutputsIntact):
                check.report.write_text(json.dumps({"files": uptodate.file_records(check.files)}))
    by_name = {t.name: t for t in tasks}
    dep = Dependency(JsonDB, str(Layout.of(manifest).state_db), checker_cls=MD5Checker)
    try:
        for task in tasks:
            dep.get_status(task, by_name)  # runs the checks, which compute what they save
            task.save_extra_values()
            dep.save_success(task)
    finally:
        dep.close()


@pytest.fixture
def built(project, minimal, tmp_path, monkeypatch):
    """A recorded build of two trained specialists and a served-only one, over a code copy."""
    package = tmp_path / "code" / "afs_build"
    shutil.copytree(uptodate.PACKAGE, package, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(uptodate, "PACKAGE", package)
    minimal["specialists"]["gamma"] = {"role": "Third", "base": "tiny", "train": False, "port": 6003}
    path = project.write(minimal)
    record_done(load(path))
    runs = {p.name for p in plan.task_plans(load(path)) if p.runs}
    assert runs == stage("deploy")  # no server answers here; everything else is up to date
    return path, package


# module edited -> the tasks whose own inputs it is (everything after them follows)
EDITS = {
    "post/merge.py": stage("merge", TRAINED) | stage("gguf", TRAINED),
    "post/weights.py": stage("merge", TRAINED) | stage("gguf"),
    "post/gguf_convert.py": stage("gguf"),
    "post/architectures.py": stage("gguf"),
    "post/vocab.py": stage("gguf"),
    "post/parity.py": stage("gguf"),
    "post/quantize.py": stage("quantize"),
    "post/gguf_info.py": stage("quantize"),
    "stages/merge.py": stage("merge", TRAINED),
    "stages/gguf.py": stage("gguf"),
    "stages/quantize.py": stage("quantize"),
}


@pytest.mark.parametrize("module", sorted(EDITS))
def test_editing_post_training_code_replans_exactly_its_tasks(built, module):
    path, package = built
    with open(package / module, "a", encoding="utf-8") as handle:
        handle.write("\n# an edit\n")
    plans = {p.name: p for p in plan.task_plans(load(path))}
    changed = f"input content changed: {package / module}"
    direct = {name for name, p in plans.items() if changed in p.reasons}
    assert direct == EDITS[module]
    follows = set()
    for name in direct:  # what runs after a re-planned task: its later stages
        stage_name, specialist = name.split(":")
        later = {"merge": ("gguf", "quantize"), "gguf": ("quantize",), "quantize": ()}[stage_name]
        follows |= {f"{s}:{specialist}" for s in later}
    assert {n for n, p in plans.items() if p.runs} == direct | follows | stage("deploy")


def test_editing_other_code_replans_no_post_training_task(built):
    path, package = built
    (package / "post" / "gguf_info.py").touch()  # touched, not changed: content decides
    for module in ("errors.py", "deploy/server.py", "atomic.py"):
        with open(package / module, "a", encoding="utf-8") as handle:
            handle.write("\n# an edit\n")
    runs = {p.name for p in plan.task_plans(load(path)) if p.runs}
    assert not runs & (stage("merge", TRAINED) | stage("gguf") | stage("quantize"))
