"""The build graph: stage list, doit wiring and content-based up-to-date checks.

Each stage module exposes ``tasks(manifest) -> Iterator[dict]``: pure functions of the
manifest that yield doit task dicts named ``<stage>:<name>``. They do no I/O beyond file stats.
:func:`namespace` turns the stage list into what ``dodo.py`` hands to doit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from .manifest import Manifest
from .paths import Layout
from .stages import (base, baseline, compare, deploy, evaluate, gguf, index, ingest, judge, merge,
                     mix, quantize, render, report, scorecard, score, screenshots, site, train)


@dataclass(frozen=True)
class Stage:
    """One pipeline stage: its name (the task prefix), what it does, and its task generator."""

    name: str
    doc: str
    tasks: Callable[[Manifest], Iterator[dict]]


def _stage(module) -> Stage:
    return Stage(module.NAME, module.__doc__.strip().splitlines()[0], module.tasks)


# The pipeline in order.
STAGES = (
    _stage(ingest), _stage(score), _stage(index), _stage(mix), _stage(base), _stage(baseline),
    _stage(render), _stage(train), _stage(merge), _stage(gguf), _stage(quantize), _stage(deploy),
    _stage(evaluate), _stage(compare), _stage(judge), _stage(screenshots), _stage(report),
    _stage(scorecard), _stage(site),
)


def all_tasks(manifest: Manifest) -> Iterator[dict]:
    """Every task of every stage, in pipeline order."""
    for stage in STAGES:
        yield from stage.tasks(manifest)


def namespace(manifest: Manifest) -> dict:
    """The names ``dodo.py`` exports: one ``task_<stage>`` group per stage and DOIT_CONFIG."""
    layout = Layout.of(manifest)
    names: dict = {
        "DOIT_CONFIG": {
            "dep_file": str(layout.state_db),
            "backend": "json",
            "check_file_uptodate": "md5",  # content, not mtime: a touched file is not a change
            "verbosity": 2,
            "action_string_formatting": "new",
            "sort": "definition",
        }
    }
    names["task_afs"] = _creator(manifest)
    return names


def _creator(manifest: Manifest) -> Callable:
    """One task creator for the whole pipeline, so that doit keeps the stages' order.

    Every task carries its full ``<stage>:<name>`` as basename, and each stage gets a group
    task (``doit ingest`` runs every ingest task).
    """

    def task_afs():
        for stage in STAGES:
            tasks = list(stage.tasks(manifest))
            yield {"basename": stage.name, "doc": stage.doc,
                   "task_dep": [t["name"] for t in tasks], "actions": None}
            for task in tasks:
                yield {"basename": task["name"], **{k: v for k, v in task.items() if k != "name"}}

    return task_afs


def dodo_namespace() -> dict:
    """What ``dodo.py`` exports; a manifest error becomes doit's own one-line ERROR."""
    from doit.exceptions import InvalidDodoFile

    from .errors import AfsError
    from .manifest import load

    path, shown = manifest_path()
    # ggml's OpenMP threads spin by default: on 2 cores that makes a busy machine crawl.
    # libgomp reads this once, when llama.cpp loads, so set it before any task imports it.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        manifest = load(path, shown)
    except AfsError as err:
        raise InvalidDodoFile(f"invalid manifest\n{err}") from None
    return namespace(manifest)


def manifest_path() -> tuple[Path, str]:
    """The manifest doit builds, and its name as the user wrote it.

    ``$AFS_MANIFEST``, else ``afs.yaml``, taken from the folder doit was started in (doit
    moves into the dodo file's folder before loading it).
    """
    from doit import loader

    given = os.environ.get("AFS_MANIFEST", "afs.yaml")
    start = Path(loader.initial_workdir or os.getcwd())
    return start / given, given
