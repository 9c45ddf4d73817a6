"""What an index covers: the files of its sources and paths, listed cheaply and read with care.

Listing only walks folders and stats (it is what the up-to-date check of ``index:<name>``
calls). Reading skips what cannot be indexed, each with a reason that the index's report
counts: binary files, files over ``max_file_kb``, text that is not UTF-8, empty files and
symbolic links (a link out of the tree would index files the user never named; a link inside
it would index the same file twice).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from ..manifest import Manifest, RetrievalIndex

PATHS = "paths"  # the source label of files named in an index's `paths`


@dataclass(frozen=True)
class InputFile:
    """One file an index reads: its source label, the path it is cited by, and where it is."""

    source: str
    rel: str
    path: Path
    facts: bool = False  # a synthetic source's fact table (chunked by entry)


@dataclass(frozen=True)
class Skip:
    """A file left out of the index, and why."""

    source: str
    rel: str
    reason: str

    def to_json(self) -> dict:
        return {"source": self.source, "file": self.rel, "reason": self.reason}


def _walk_entries(root: Path, include, exclude, gitignore) -> Iterator[tuple[str, bool]]:
    """(relative path, is a link) for each selected file, by the codebase converter's walker.

    The walker is shared so an index and the ingest of the same source see the same files;
    the data work of issue 9 moves it into ``data/codebase/walk.py``, and both layouts are read.
    """
    try:
        from ..data.codebase.walk import FILE, LINK, walk
    except ImportError:
        from ..data.codebase import _walk

        yield from _walk(root, tuple(include), tuple(exclude), gitignore)
        return
    for rel, status in walk(root, tuple(include), tuple(exclude), gitignore):
        if status in (FILE, LINK):
            yield rel, status == LINK


def _roots(manifest: Manifest, index: RetrievalIndex) -> Iterator[tuple[str, Path, tuple, tuple, bool, bool]]:
    """(source label, folder or file, include, exclude, respect_gitignore, is a fact table)."""
    for name in index.sources:
        source = manifest.sources[name]
        s = source.settings
        if source.kind == "codebase":
            yield (name, manifest.resolve(s["path"]), tuple(s["include"]), tuple(s["exclude"]),
                   s["respect_gitignore"], False)
        elif source.kind == "synthetic":
            yield name, manifest.resolve(s["facts"]), (), (), False, True
    for rel in index.paths:
        yield PATHS, manifest.resolve(rel), index.include, index.exclude, index.respect_gitignore, False


def list_inputs(manifest: Manifest, index: RetrievalIndex) -> tuple[list[InputFile], list[Skip]]:
    """The files `index` reads and the links it skips; stats only, no reading."""
    files: list[InputFile] = []
    skips: list[Skip] = []
    for label, target, include, exclude, gitignore, facts in _roots(manifest, index):
        if not target.is_dir():
            shown = _shown(manifest, target)
            files.append(InputFile(label, shown, target, facts))
            continue
        for rel, is_link in _walk_entries(target, include, exclude, gitignore):
            path = target / rel
            if is_link:
                skips.append(Skip(label, rel, _link_reason(target, path)))
            else:
                files.append(InputFile(label, rel, path, facts))
    return files, skips


def _shown(manifest: Manifest, path: Path) -> str:
    """A path as cited: relative to the manifest's folder when below it."""
    try:
        return path.relative_to(manifest.root).as_posix()
    except ValueError:
        return path.as_posix()


def _link_reason(tree: Path, link: Path) -> str:
    try:
        target = link.resolve(strict=False)
        target.relative_to(tree.resolve())
    except ValueError:
        return f"symbolic link out of the source tree: to {os.readlink(link)}, not followed"
    except (OSError, RuntimeError):
        return "symbolic link that cannot be resolved: not followed"
    return "symbolic link inside the source tree: its target is indexed under its own path"


def read_text(item: InputFile, max_bytes: int) -> tuple[Optional[str], Optional[str]]:
    """(text, None) for an indexable file, else (None, the reason it is skipped)."""
    try:
        size = item.path.stat().st_size
        if size > max_bytes:
            return None, f"file too large: {size} bytes, over max_file_kb={max_bytes // 1024}"
        data = item.path.read_bytes()
    except FileNotFoundError:
        return None, "file not found"
    except OSError as err:
        return None, f"cannot read file: {err.strerror or err}"
    if b"\0" in data:
        return None, "binary file: contains NUL bytes"
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as err:
        return None, f"not UTF-8 text: {err.reason} at byte {err.start}"
    if not text.strip():
        return None, "empty file"
    return text, None


class InputLister:
    """A picklable listing of an index's files (for the up-to-date check; doit may pickle)."""

    def __init__(self, manifest: Manifest, name: str):
        self.manifest, self.name = manifest, name

    def __call__(self) -> list[Path]:
        files, _ = list_inputs(self.manifest, self.manifest.retrieval.indexes[self.name])
        return [f.path.absolute() for f in files if f.path.is_file()]


def languages() -> dict:
    """File suffix -> language, as the codebase converter reads them."""
    try:
        from ..data.codebase.common import LANGUAGES
    except ImportError:  # before the data work of issue 9 split data/codebase.py
        from ..data.codebase import LANGUAGES
    return LANGUAGES


def definitions() -> dict:
    """Language -> (symbol kind, definition-line pattern) pairs of the codebase converter."""
    try:
        from ..data.codebase.comments import DEFINITIONS
    except ImportError:
        from ..data.codebase import DEFINITIONS
    return DEFINITIONS
