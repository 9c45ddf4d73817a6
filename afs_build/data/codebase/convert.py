"""Codebase converter: question/answer samples about a local repository's files and symbols.

This is the seed's "Oracle data": a specialist that knows one codebase. The walk
(:mod:`.walk`) picks the files; each is read by its language's reader: Python with
:mod:`ast` (:mod:`.python`), other languages by their comment structure and a few line
regexes (:mod:`.comments`), Markdown by its headings (:mod:`.markdown`).

"Which file defines `X`?" samples are emitted last, one per name, so that a name defined in
several files gets one answer listing them all rather than contradicting samples.
"""

from __future__ import annotations

import re
import stat
from pathlib import Path
from typing import Iterable, Iterator

from afs_build.data.codebase import walk as walker
from afs_build.data.codebase.comments import text_file
from afs_build.data.codebase.common import FENCES, KINDS, LANGUAGES, QUESTION_TYPES, Definition, sample
from afs_build.data.codebase.markdown import markdown_file
from afs_build.data.codebase.python import python_file
from afs_build.data.records import DERIVED, RECORD, Filtered, Record, Reject

_SHEBANGS = (("python", re.compile(r"python")), ("shell", re.compile(r"\b(?:ba|z|k|da)?sh\b")))


def convert_codebase(
    root,
    *,
    source: str,
    include: Iterable[str] = ("**/*",),
    exclude: Iterable[str] = (),
    max_file_bytes: int = 200_000,
    respect_gitignore: bool = True,
    questions: Iterable[str] = QUESTION_TYPES,
) -> Iterator[Record]:
    """Yield question/answer samples about the files and symbols of a local repository.

    Each file the walk meets is one input record: its samples, or one Reject saying why it
    cannot be read, or a Filtered when the patterns (``include``, ``exclude``, ``.gitignore``)
    leave it out. Files are visited in sorted order, so the output is deterministic. Only the
    samples whose question type is in ``questions`` (see QUESTION_TYPES) are kept. Raises
    FileNotFoundError or NotADirectoryError when `root` is not a folder, ValueError for an
    unknown question type.
    """
    wanted = frozenset(questions)
    unknown = sorted(wanted - set(QUESTION_TYPES))
    if unknown:
        raise ValueError(f"unknown question type(s) {', '.join(unknown)}; known: {', '.join(QUESTION_TYPES)}")
    base = walker.checked_root(root)
    definitions: list[Definition] = []
    for rel, status in walker.walk(base, tuple(include), tuple(exclude), respect_gitignore):
        if status not in (walker.FILE, walker.LINK):
            yield Filtered(status)
            continue
        yield RECORD
        if status == walker.LINK:
            yield Reject(source, "symbolic link (not followed)", file=(base / rel).as_posix())
            continue
        records, found = _convert_file(base, rel, source, max_file_bytes)
        definitions.extend(found)
        yield from (r for r in records if not isinstance(r, dict) or r["metadata"]["question_type"] in wanted)
    yield DERIVED
    if "location" in wanted:
        yield from _location_samples(source, definitions)


def _convert_file(base: Path, rel: str, source: str, max_file_bytes: int) -> tuple[list[Record], list[Definition]]:
    """Read one file, check it is usable text and hand it to its language's converter."""
    path = base / rel
    where = path.as_posix()
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):  # a pipe or a device would block or never end
            return [Reject(source, "not a regular file", file=where)], []
        size = info.st_size
        if size > max_file_bytes:
            return [Reject(source, f"file too large: {size} bytes, over max_file_bytes={max_file_bytes}", file=where)], []
        data = path.read_bytes()
    except OSError as exc:
        return [Reject(source, f"cannot read file: {exc.strerror}", file=where)], []
    if b"\0" in data:
        return [Reject(source, "binary file: contains NUL bytes", file=where)], []
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        return [Reject(source, f"not UTF-8 text: {exc.reason} at byte {exc.start}", file=where)], []
    if not text.strip():
        return [Reject(source, "empty file", file=where)], []
    language = _language(rel, text)
    if language is None:
        suffix = Path(rel).suffix
        reason = f"unsupported file type '{suffix}'" if suffix else "unsupported file type (no extension)"
        return [Reject(source, reason, file=where)], []
    if language == "python":
        records, definitions = python_file(source, rel, text, where)
    elif language == "markdown":
        records, definitions = markdown_file(source, rel, text), []
    else:
        records, definitions = text_file(source, rel, text, language)
    if not records and not definitions:
        reason = "nothing to ask about: no docstrings, comments or definitions found"
        return [Reject(source, reason, file=where)], []
    return records, definitions


def _language(rel: str, text: str) -> str | None:
    language = LANGUAGES.get(Path(rel).suffix.lower())
    if language is None and text.startswith("#!"):
        first = text.split("\n", 1)[0]
        language = next((name for name, pattern in _SHEBANGS if pattern.search(first)), None)
    return language


# --- "Which file defines X?" ---------------------------------------------------------------


def _location_samples(source: str, definitions: list[Definition]) -> Iterator[dict]:
    """One sample per defined name; a name defined in several places lists them all."""
    by_name: dict[str, dict[str, Definition]] = {}
    for definition in definitions:
        # A C prototype and its definition in one file count once: the first is kept.
        by_name.setdefault(definition.name, {}).setdefault(definition.path, definition)
    for name in sorted(by_name):
        places = sorted(by_name[name].values(), key=lambda d: (d.path, d.line))
        first = places[0]
        if len(places) == 1:
            fence = FENCES[first.language]
            answer = f"`{name}` is defined in `{first.path}` (line {first.line}):\n\n```{fence}\n{first.excerpt}\n```"
        else:
            listing = "\n".join(f"- `{d.path}` (line {d.line}): `{d.excerpt.splitlines()[-1]}`" for d in places)
            answer = f"`{name}` is defined in {len(places)} places:\n{listing}"
        yield sample(source, f"Which file defines `{name}`?", answer, path=first.path, line=first.line,
                      symbol=name, kind=KINDS.get(first.symbol_kind, "function"), language=first.language,
                      question_type="location", symbol_kind=first.symbol_kind)
