"""Which files of a repository the codebase converter reads: globs, ``.gitignore``, ``.git``.

``include`` and ``exclude`` are gitignore-style patterns relative to the root; ``.gitignore``
files are honoured at every level (and those above the root, up to its repository's top) and
``.git`` is always skipped. Folders are visited in sorted order, so the walk is deterministic.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator

import pathspec

# What the walk says of each entry it meets.
FILE, LINK = "file", "link"
NOT_INCLUDED = "not matched by include"
EXCLUDED = "matched by exclude"
GITIGNORED = "ignored by .gitignore"


def iter_files(root, *, include: Iterable[str] = ("**/*",), exclude: Iterable[str] = (),
               respect_gitignore: bool = True) -> Iterator[Path]:
    """The files the codebase converter reads, in walk order (for content-based staleness)."""
    base = checked_root(root)
    for rel, status in walk(base, tuple(include), tuple(exclude), respect_gitignore):
        if status == FILE:
            yield base / rel


def checked_root(root) -> Path:
    """`root` as a Path; raises FileNotFoundError or NotADirectoryError naming it."""
    base = Path(root)
    if not base.exists():
        raise FileNotFoundError(f"codebase root not found: {root}")
    if not base.is_dir():
        raise NotADirectoryError(f"codebase root is not a folder: {root}")
    return base


def walk(base: Path, include: tuple, exclude: tuple, respect_gitignore: bool) -> Iterator[tuple[str, str]]:
    """Yield (path relative to `base`, status) for each file and link in the folders walked.

    The status is FILE or LINK for a selected entry, else why the patterns leave it out
    (NOT_INCLUDED, EXCLUDED, GITIGNORED). Folders that are ignored or excluded (and ``.git``)
    are not entered, so their files are not listed.
    """
    wanted = pathspec.GitIgnoreSpec.from_lines(include)
    unwanted = pathspec.GitIgnoreSpec.from_lines(exclude)
    ignores: dict[str, pathspec.GitIgnoreSpec] = {}
    outer = _outer_ignores(base) if respect_gitignore else []
    for folder, dirnames, filenames in os.walk(base):
        here = Path(folder).relative_to(base).as_posix()
        here = "" if here == "." else here
        if respect_gitignore and ".gitignore" in filenames:
            ignores[here] = _spec(Path(folder) / ".gitignore")
        kept = []
        for name in sorted(dirnames):
            rel = f"{here}/{name}" if here else name
            if name == ".git" or _ignored(rel + "/", ignores, outer) or unwanted.match_file(rel + "/"):
                continue
            if os.path.islink(os.path.join(folder, name)):
                yield rel, LINK  # os.walk would not enter it; say so rather than drop it silently
                continue
            kept.append(name)
        dirnames[:] = kept
        for name in sorted(filenames):
            rel = f"{here}/{name}" if here else name
            if _ignored(rel, ignores, outer):
                yield rel, GITIGNORED
            elif unwanted.match_file(rel):
                yield rel, EXCLUDED
            elif not wanted.match_file(rel):
                yield rel, NOT_INCLUDED
            else:
                yield rel, LINK if os.path.islink(os.path.join(folder, name)) else FILE


def _spec(path: Path) -> pathspec.GitIgnoreSpec:
    # An unreadable .gitignore is an error to show, not a reason to read what it hides.
    text = path.read_text(encoding="utf-8", errors="replace")
    return pathspec.GitIgnoreSpec.from_lines(text.splitlines())


def _outer_ignores(base: Path) -> list[tuple[str, pathspec.GitIgnoreSpec]]:
    """The .gitignore files above ``base`` in its git repository, outermost first.

    Each comes with ``base``'s path relative to the file's folder, to prefix paths with. When
    ``base`` is not inside a repository (no ``.git`` above it), nothing above it applies.
    """
    here = base.resolve()
    if (here / ".git").exists():
        return []
    found = []
    for folder in here.parents:
        if (folder / ".gitignore").is_file():
            found.append((here.relative_to(folder).as_posix(), _spec(folder / ".gitignore")))
        if (folder / ".git").exists():
            return found[::-1]
    return []


def _ignored(rel: str, ignores: dict[str, pathspec.GitIgnoreSpec],
             outer: list[tuple[str, pathspec.GitIgnoreSpec]]) -> bool:
    """Whether the .gitignore files above ``rel`` ignore it; the deepest matching one wins."""
    verdict = False
    for prefix, spec in outer:
        result = spec.check_file(f"{prefix}/{rel}")
        if result.include is not None:
            verdict = result.include
    parts = rel.rstrip("/").split("/")
    for depth in range(len(parts)):
        folder = "/".join(parts[:depth])
        spec = ignores.get(folder)
        if spec is not None:
            result = spec.check_file(rel[len(folder) + 1:] if folder else rel)
            if result.include is not None:
                verdict = result.include
    return verdict
