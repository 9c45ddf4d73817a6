"""The build graph: stage list, doit wiring and content-based up-to-date checks.

Each stage module exposes ``tasks(manifest) -> Iterator[dict]``: pure functions of the
manifest that yield doit task dicts named ``<stage>:<name>``. They do no I/O beyond file stats.
:func:`namespace` turns the stage list into what ``dodo.py`` hands to doit.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from .manifest import Manifest, plain
from .paths import Layout
from .stages import base, deploy, evaluate, ingest, mix, post, render, score, train


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
    _stage(ingest), _stage(score), _stage(mix), _stage(base), _stage(render), _stage(train),
    Stage("merge", "Merge each trained adapter into its base (merge:<specialist>).", post.merge_tasks),
    Stage("gguf", "Convert each specialist to an F16 GGUF with parity checks (gguf:<specialist>).",
          post.gguf_tasks),
    Stage("quantize", "Quantize each GGUF and measure what each type costs (quantize:<specialist>).",
          post.quantize_tasks),
    _stage(deploy), _stage(evaluate),
)


class SliceChanged:
    """doit ``uptodate``: true while the manifest slice a task reads is unchanged.

    Like ``doit.tools.config_changed``, but several may sit on one task, each is labelled (so
    ``afs plan`` can say which slice changed) and values are made JSON-ready first.
    """

    def __init__(self, label: str, value):
        self.label = label
        self.value = plain(value)
        self.digest = hashlib.sha256(json.dumps(self.value, sort_keys=True).encode()).hexdigest()

    def configure_task(self, task) -> None:
        task.value_savers.append(lambda: {f"slice:{self.label}": self.digest})

    def __call__(self, task, values) -> bool:
        return values.get(f"slice:{self.label}") == self.digest

    def __repr__(self) -> str:
        return f"SliceChanged({self.label!r})"

    @property
    def reason(self) -> str:
        """Why the task runs when this check fails, in `afs plan`'s words."""
        return f"manifest slice changed: {self.label}"


class TreeChanged:
    """doit ``uptodate``: true while the content of a set of files is unchanged.

    For inputs that are a folder (a codebase) rather than a fixed list of files. Hashes are
    reused while a file's size and mtime are unchanged, so a no-op check costs only stats;
    a touched but unchanged file re-hashes to the same digest and rebuilds nothing.
    """

    def __init__(self, label: str, list_files: Callable[[], Iterable[Path]], root: Path):
        self.label = label
        self.list_files = list_files
        self.root = root
        self.state: dict = {}

    def configure_task(self, task) -> None:
        task.value_savers.append(lambda: {f"tree:{self.label}": self.state})

    def __call__(self, task, values) -> bool:
        previous = values.get(f"tree:{self.label}") or {}
        known = previous.get("files", {})
        files: dict[str, list] = {}
        for path in sorted(self.list_files()):
            stat = path.stat()
            rel = path.relative_to(self.root).as_posix()
            old = known.get(rel)
            if old and old[0] == stat.st_size and old[1] == stat.st_mtime_ns:
                files[rel] = old
            else:
                files[rel] = [stat.st_size, stat.st_mtime_ns, file_digest(path)]
        digest = hashlib.sha256(json.dumps([[k, v[2]] for k, v in files.items()]).encode()).hexdigest()
        self.state = {"digest": digest, "files": files}
        return previous.get("digest") == digest

    def __repr__(self) -> str:
        return f"TreeChanged({self.label!r})"

    @property
    def reason(self) -> str:
        return f"input content changed: {self.label}"


class DigestChanged:
    """doit ``uptodate``: true while `compute()` returns what it returned at the last success.

    For inputs whose content is summarised by a cheap digest (a model folder's config,
    tokenizer and weight headers) rather than by hashing every byte.
    """

    def __init__(self, label: str, compute: Callable[[], str]):
        self.label = label
        self.compute = compute
        self.value: str | None = None

    def configure_task(self, task) -> None:
        task.value_savers.append(lambda: {f"digest:{self.label}": self.value})

    def __call__(self, task, values) -> bool:
        self.value = self.compute()
        return values.get(f"digest:{self.label}") == self.value

    def __repr__(self) -> str:
        return f"DigestChanged({self.label!r})"

    @property
    def reason(self) -> str:
        return f"input content changed: {self.label}"


def file_digest(path: Path) -> str:
    """Content digest of one file (xxh3-128: fast, and only compared with itself)."""
    import xxhash

    digest = xxhash.xxh3_128()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
