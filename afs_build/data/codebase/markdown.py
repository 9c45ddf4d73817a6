"""Markdown files read by their headings: the opening paragraph, each section, the outline."""

from __future__ import annotations

import re

from afs_build.data.codebase.common import clip, sample, split_lines
from afs_build.data.records import Record

_HEADING = re.compile(r"^(?P<marks>#{1,6})\s+(?P<title>.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")


def markdown_file(source: str, rel: str, text: str) -> list[Record]:
    """Samples from a Markdown file: its opening paragraph, each section, and its outline."""
    sections: list[tuple[int, str, int, list[str]]] = []  # (level, title, line, body lines)
    preamble: list[str] = []
    in_fence = False
    for number, line in enumerate(split_lines(text), start=1):
        if _FENCE.match(line):
            in_fence = not in_fence
        heading = None if in_fence else _HEADING.match(line)
        if heading:
            sections.append((len(heading["marks"]), heading["title"], number, []))
        else:
            (sections[-1][3] if sections else preamble).append(line)
    common = {"path": rel, "language": "markdown"}
    records: list[Record] = []
    title = sections[0][1] if sections and sections[0][0] == 1 else None
    opening = _first_paragraph(preamble) or (_first_paragraph(sections[0][3]) if title else "")
    if opening:
        answer = f"{title}\n\n{opening}" if title else opening
        records.append(sample(source, f"What is `{rel}` for?", clip(answer), line=1, symbol=None,
                               kind="file", question_type="purpose", **common))
    for level, heading, line, body in sections:
        content = "\n".join(body).strip()
        if content and not (title and heading == title and level == 1):
            records.append(sample(source, f'What does the section "{heading}" of `{rel}` say?',
                                   clip(content), line=line, symbol=heading, kind="section",
                                   question_type="section", symbol_kind="heading", **common))
    if len(sections) > 1:
        outline = "\n".join(f"{'  ' * (level - 1)}- {heading}" for level, heading, _, _ in sections)
        records.append(sample(source, f"What sections does `{rel}` have?", outline, line=None,
                               symbol=None, kind="file", question_type="contents", **common))
    return records


def _first_paragraph(lines: list[str]) -> str:
    paragraph: list[str] = []
    for line in lines:
        if line.strip():
            paragraph.append(line.rstrip())
        elif paragraph:
            break
    return "\n".join(paragraph).strip()
