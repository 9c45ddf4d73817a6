"""Cut a file into chunks that each answer one kind of question, with their provenance.

- Python by definition (:mod:`ast`): each top-level function, each class (a long class as its
  header and one chunk per method, ``Class.method``), and the module-level code between them;
- other code languages by the definition lines the codebase converter recognises;
- Markdown by heading (the heading path is the symbol), long sections by paragraph;
- a fact table (YAML list) by entry, its first naming field as the symbol;
- anything else by paragraph.

A definition longer than ``code_max_lines`` is cut into windows that overlap by
``code_overlap_lines``; prose longer than ``prose_max_chars`` is cut at paragraph (else line)
breaks, repeating about ``prose_overlap_chars`` of whole lines. Line numbers are 1-based and
inclusive, counted as editors count them.
"""

from __future__ import annotations

import ast
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from ..manifest import Chunking

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_HEADING = re.compile(r"^(?P<marks>#{1,6})\s+(?P<title>.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_ITEM = re.compile(r"^- ")
# Fields of a fact table that classify an entry rather than name it.
_NOT_NAMES = {"topic", "category", "kind", "type", "answer", "description", "example", "tags"}
MARKDOWN = {".md", ".markdown"}
YAML = {".yaml", ".yml"}


@dataclass(frozen=True)
class Chunk:
    """A piece of a file and where it comes from."""

    source: str
    file: str
    start: int
    end: int
    symbol: str
    kind: str
    language: str
    text: str

    @property
    def embed_text(self) -> str:
        """What is embedded: the path and symbol first (a question often names one), then the text."""
        head = f"{self.file} {self.symbol}".strip()
        return f"{head}\n{self.text}"

    @property
    def digest(self) -> str:
        """Content digest of what is embedded (the embedding cache's key part)."""
        return hashlib.sha256(self.embed_text.encode("utf-8")).hexdigest()

    @property
    def location(self) -> str:
        """``file:start-end`` as cited."""
        return f"{self.file}:{self.start}-{self.end}" if self.end != self.start else f"{self.file}:{self.start}"


def split_lines(text: str) -> list[str]:
    return _LINE_BREAK.split(text)


def chunk_file(source: str, rel: str, text: str, settings: Chunking, *, facts: bool = False) -> list[Chunk]:
    """Every chunk of one file, in file order."""
    lines = split_lines(text)
    suffix = Path(rel).suffix.lower()
    language = _language(rel, text)
    pieces: list[tuple[int, int, str, str]]  # (start, end, symbol, kind), 1-based inclusive
    if language == "python":
        pieces = _python(text, lines, settings)
    elif language == "markdown":
        return _prose_chunks(source, rel, lines, _markdown_sections(lines), settings, "markdown")
    elif facts or (suffix in YAML and any(_ITEM.match(line) for line in lines)):
        return _prose_chunks(source, rel, lines, _yaml_items(lines), settings, "yaml")
    elif language is not None:
        pieces = _code(lines, language, settings)
    else:
        return _prose_chunks(source, rel, lines, [(1, len(lines), "", "text")], settings, "text")
    out = []
    for start, end, symbol, kind in pieces:
        start, end = _trim(lines, start, end)
        if start > end:
            continue
        body = "\n".join(lines[start - 1:end])
        out.append(Chunk(source, rel, start, end, symbol, kind, language or "text", body))
    return out


def _language(rel: str, text: str) -> Optional[str]:
    from .files import languages

    found = languages().get(Path(rel).suffix.lower())
    if found is None and text.startswith("#!") and "python" in text.split("\n", 1)[0]:
        found = "python"
    return found


def _trim(lines: list[str], start: int, end: int) -> tuple[int, int]:
    """Drop blank lines at both ends."""
    while start <= end and not lines[start - 1].strip():
        start += 1
    while end >= start and not lines[end - 1].strip():
        end -= 1
    return start, end


def _windows(start: int, end: int, size: int, overlap: int) -> Iterator[tuple[int, int]]:
    """Line windows of at most `size` lines covering start..end, overlapping by `overlap`."""
    if end - start + 1 <= size:
        yield start, end
        return
    step = max(1, size - min(overlap, size - 1))
    at = start
    while True:
        stop = min(end, at + size - 1)
        yield at, stop
        if stop >= end:
            return
        at += step


# --- code ------------------------------------------------------------------------------------


def _python(text: str, lines: list[str], settings: Chunking) -> list[tuple[int, int, str, str]]:
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return [(a, b, "", "code") for a, b in _windows(1, len(lines), settings.code_max_lines,
                                                         settings.code_overlap_lines)]
    size, overlap = settings.code_max_lines, settings.code_overlap_lines
    out: list[tuple[int, int, str, str]] = []
    loose: list[int] = []  # module-level lines outside definitions, gathered into runs

    def flush():
        if loose:
            for a, b in _windows(loose[0], loose[-1], size, overlap):
                out.append((a, b, "", "module"))
            loose.clear()

    for node in tree.body:
        first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        last = node.end_lineno or node.lineno
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            flush()
            out.extend(_definition(node, first, last, node.name, size, overlap))
        else:
            if loose and first > loose[-1] + 1 and not all(not lines[i - 1].strip()
                                                           for i in range(loose[-1] + 1, first)):
                flush()
            loose.extend(range(first, last + 1))
    flush()
    return sorted(out)


def _definition(node, first: int, last: int, name: str, size: int, overlap: int):
    kind = "class" if isinstance(node, ast.ClassDef) else "function"
    if last - first + 1 <= size or kind == "function":
        return [(a, b, name, kind) for a, b in _windows(first, last, size, overlap)]
    # A long class: its header (docstring, fields) up to the first method, then each member.
    members = [n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    out = []
    head_end = last
    if members:
        head_end = min([members[0].lineno] + [d.lineno for d in members[0].decorator_list]) - 1
    for a, b in _windows(first, head_end, size, overlap):
        out.append((a, b, name, "class"))
    for member in members:
        start = min([member.lineno] + [d.lineno for d in member.decorator_list])
        sub = "class" if isinstance(member, ast.ClassDef) else "method"
        for a, b in _windows(start, member.end_lineno or member.lineno, size, overlap):
            out.append((a, b, f"{name}.{member.name}", sub))
    return out


def _code(lines: list[str], language: str, settings: Chunking) -> list[tuple[int, int, str, str]]:
    """Chunks that start at each definition line (the comment right above goes with it)."""
    from .files import definitions

    patterns = definitions().get(language, ())
    starts: list[tuple[int, str, str]] = []
    for number, line in enumerate(lines, start=1):
        for kind, pattern in patterns:
            match = pattern.match(line)
            if match:
                starts.append((number, match["name"], kind))
                break
    size, overlap = settings.code_max_lines, settings.code_overlap_lines
    bounds: list[tuple[int, str, str]] = []
    for number, name, kind in starts:
        first = number
        while first > 1 and _is_comment(lines[first - 2]):
            first -= 1
        bounds.append((first, name, kind))
    out = []
    if not bounds or bounds[0][0] > 1:
        end = (bounds[0][0] - 1) if bounds else len(lines)
        out += [(a, b, "", "code") for a, b in _windows(1, end, size, overlap)]
    for i, (first, name, kind) in enumerate(bounds):
        end = bounds[i + 1][0] - 1 if i + 1 < len(bounds) else len(lines)
        out += [(a, b, name, kind) for a, b in _windows(first, end, size, overlap)]
    return out


def _is_comment(line: str) -> bool:
    text = line.strip()
    return text.startswith(("//", "/*", "*", "#", ";", "--")) and not text.startswith("#[")


# --- prose -----------------------------------------------------------------------------------


def _markdown_sections(lines: list[str]) -> list[tuple[int, int, str, str]]:
    """(start, end, heading path, kind) for the text before the first heading and each section."""
    heads: list[tuple[int, int, str]] = []  # (line, level, title)
    fenced = False
    for number, line in enumerate(lines, start=1):
        if _FENCE.match(line):
            fenced = not fenced
        match = None if fenced else _HEADING.match(line)
        if match:
            heads.append((number, len(match["marks"]), match["title"]))
    out = []
    if not heads or heads[0][0] > 1:
        out.append((1, (heads[0][0] - 1) if heads else len(lines), "", "text"))
    trail: list[tuple[int, str]] = []
    for i, (number, level, title) in enumerate(heads):
        trail = [(lv, t) for lv, t in trail if lv < level] + [(level, title)]
        end = heads[i + 1][0] - 1 if i + 1 < len(heads) else len(lines)
        out.append((number, end, " > ".join(t for _, t in trail), "section"))
    return out


def _yaml_items(lines: list[str]) -> list[tuple[int, int, str, str]]:
    """(start, end, symbol, "entry") for each top-level list item; comments between go with none."""
    import yaml

    starts = [i for i, line in enumerate(lines, start=1) if _ITEM.match(line)]
    out = []
    if starts and starts[0] > 1:
        out.append((1, starts[0] - 1, "", "text"))
    for i, start in enumerate(starts):
        end = starts[i + 1] - 1 if i + 1 < len(starts) else len(lines)
        while end > start and (not lines[end - 1].strip() or lines[end - 1].startswith("#")):
            end -= 1
        symbol = ""
        try:
            item = yaml.safe_load("\n".join(lines[start - 1:end]))
        except yaml.YAMLError:
            item = None
        if isinstance(item, list) and item and isinstance(item[0], dict):
            for key, value in item[0].items():
                if key not in _NOT_NAMES and isinstance(value, (str, int, float)) and len(str(value)) <= 120:
                    symbol = str(value)
                    break
        out.append((start, end, symbol, "entry"))
    return out


def _prose_chunks(source: str, rel: str, lines: list[str], sections, settings: Chunking,
                  language: str) -> list[Chunk]:
    out = []
    for start, end, symbol, kind in sections:
        start, end = _trim(lines, start, end)
        if start > end:
            continue
        for a, b in _prose_pieces(lines, start, end, settings.prose_max_chars, settings.prose_overlap_chars):
            out.append(Chunk(source, rel, a, b, symbol, kind, language, "\n".join(lines[a - 1:b])))
    return out


def _prose_pieces(lines: list[str], start: int, end: int, limit: int, overlap: int) -> Iterator[tuple[int, int]]:
    """Pieces of at most about `limit` characters, cut after blank lines where possible."""
    at = start
    while at <= end:
        size, stop, cut = 0, at, None
        while stop <= end and (stop == at or size + len(lines[stop - 1]) + 1 <= limit):
            size += len(lines[stop - 1]) + 1
            if not lines[stop - 1].strip():
                cut = stop
            stop += 1
        last = stop - 1
        if stop <= end and cut is not None and cut > at and (cut - at) * 2 >= (last - at):
            last = cut
        a, b = _trim(lines, at, last)
        if a <= b:
            yield a, b
        if last >= end:
            return
        back, kept = last, 0  # repeat whole lines, up to `overlap` characters
        while back > at + 1 and kept + len(lines[back - 1]) + 1 <= overlap:
            kept += len(lines[back - 1]) + 1
            back -= 1
        at = max(back + 1 if kept else last + 1, at + 1)
