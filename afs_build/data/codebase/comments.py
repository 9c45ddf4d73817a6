"""Other languages read by their comment structure and a few line regexes.

C-like (``//``, ``/* */``), hash (shell) and semicolon (65816 assembly) comments: the file's
leading comment block (a license block is skipped) says what the file is for, and a comment
right above a named function, class, label or section says what that symbol does.
"""

from __future__ import annotations

import re

from afs_build.data.codebase.common import FENCES, KINDS, Definition, clip, sample, split_lines
from afs_build.data.records import Record

COMMENT_STYLES = {"javascript": "c", "typescript": "c", "c": "c", "cpp": "c", "csharp": "c",
                  "go": "c", "rust": "c", "shell": "hash", "asm65816": "semicolon"}

_NAME = r"(?P<name>[A-Za-z_]\w*)"
_JS_NAME = r"(?P<name>[A-Za-z_$][\w$]*)"
_JS_EXPORT = r"^\s*(?:export\s+)?(?:default\s+)?"
_C_KEYWORDS = r"(?:return|if|else|for|while|switch|case|do|goto|typedef|sizeof|using)\b"
_CS_MODS = (r"(?:(?:public|private|protected|internal|static|virtual|override|abstract|async|sealed|"
            r"extern|unsafe|partial|readonly)\s+)")
_RUST_VIS = r"^\s*(?:pub(?:\([^)]*\))?\s+)?"

# (symbol kind, pattern with a `name` group), tried in order on each line.
DEFINITIONS: dict[str, tuple[tuple[str, re.Pattern], ...]] = {
    "javascript": (
        ("function", re.compile(rf"{_JS_EXPORT}(?:async\s+)?function\s*\*?\s*{_JS_NAME}")),
        ("class", re.compile(rf"{_JS_EXPORT}(?:abstract\s+)?class\s+{_JS_NAME}")),
        ("function", re.compile(rf"^\s*(?:export\s+)?(?:const|let|var)\s+{_JS_NAME}\s*(?::[^=]+)?=\s*(?:async\s+)?"
                                r"(?:function\b|\([^)]*\)\s*(?::[^=]+)?=>|[A-Za-z_$][\w$]*\s*=>)")),
        ("interface", re.compile(rf"^\s*(?:export\s+)?(?:declare\s+)?interface\s+{_JS_NAME}")),
        ("type", re.compile(rf"^\s*(?:export\s+)?type\s+{_JS_NAME}\s*(?:<[^>]*>)?\s*=")),
    ),
    "c": (
        ("macro", re.compile(rf"^\s*#\s*define\s+{_NAME}")),
        ("struct", re.compile(rf"^\s*(?:typedef\s+)?(?:struct|class|union|enum(?:\s+class)?)\s+{_NAME}\s*(?:[:{{]|$)")),
        # At column 0, a return type before the name, and not a statement keyword.
        ("function", re.compile(rf"^(?!{_C_KEYWORDS})[A-Za-z_][\w:<>,\*&\s]*?[\s\*&](?P<name>~?[A-Za-z_][\w:~]*)"
                                r"\s*\([^=;]*(?:\)\s*(?:const\s*)?(?:noexcept\s*)?(?:\{.*|;)?|,\s*)?$")),
    ),
    "csharp": (
        ("class", re.compile(rf"^\s*{_CS_MODS}*(?:class|struct|interface|enum|record)\s+{_NAME}")),
        ("method", re.compile(rf"^\s*{_CS_MODS}+(?:[\w<>\[\],\.\?]+\s+)?{_NAME}\s*(?:<[^>]*>)?\s*\(")),
    ),
    "go": (
        ("function", re.compile(rf"^func\s+(?:\([^)]*\)\s*)?{_NAME}")),
        ("type", re.compile(rf"^type\s+{_NAME}\b")),
    ),
    "rust": (
        ("function", re.compile(rf"{_RUST_VIS}(?:const\s+)?(?:async\s+)?(?:unsafe\s+)?(?:extern\s+\"[^\"]*\"\s+)?"
                                rf"fn\s+{_NAME}")),
        ("struct", re.compile(rf"{_RUST_VIS}(?:struct|enum|trait|union|type)\s+{_NAME}")),
        ("macro", re.compile(rf"^\s*macro_rules!\s*{_NAME}")),
    ),
    "shell": (
        ("function", re.compile(r"^\s*function\s+(?P<name>[A-Za-z_][\w:.-]*)\s*(?:\(\s*\))?\s*(?:\{.*)?$")),
        ("function", re.compile(r"^\s*(?P<name>[A-Za-z_][\w:.-]*)\s*\(\s*\)\s*(?:\{.*)?$")),
    ),
    # Global labels only: asar sublabels (.loop), ca65 cheap locals (@loop) and +/- are local.
    "asm65816": (
        ("label", re.compile(rf"^{_NAME}:")),
        ("macro", re.compile(rf"^\s*macro\s+{_NAME}\s*\(", re.IGNORECASE)),  # asar
        ("macro", re.compile(rf"^\s*\.mac(?:ro)?\s+{_NAME}", re.IGNORECASE)),  # ca65, WLA-DX
        ("proc", re.compile(rf"^\s*\.proc\s+{_NAME}", re.IGNORECASE)),
    ),
}
DEFINITIONS["typescript"] = DEFINITIONS["javascript"]
DEFINITIONS["cpp"] = DEFINITIONS["c"]

# Symbol kinds asked about with "What does ... do?"; the rest get "What is ... for?".
ACTIONS = {"function", "method", "macro", "label", "proc"}

_ATTRIBUTE = re.compile(r"^\s*#!?\[|^\s*\[[A-Za-z]")  # Rust #[..] and C# [..] between doc and item
_DECORATION = re.compile(r"^[-=*#;/_~+.]{3,}$")
_LICENSE = re.compile(r"copyright|spdx-license|licensed under|permission is hereby granted", re.I)


def _comment_lines(lines: list[str], style: str) -> list[str | None]:
    """For each line, the text of the comment it consists of, or None for a code or blank line."""
    out: list[str | None] = []
    in_block = False
    for number, line in enumerate(lines):
        text = line.strip()
        content: str | None = None
        if style == "c":
            if in_block:
                end = text.find("*/")
                body = text if end < 0 else text[:end]
                in_block = end < 0
                content = body.lstrip("*").strip() if end < 0 or not text[end + 2:].strip() else None
            elif text.startswith("//"):
                content = text[2:].removeprefix("/").removeprefix("!").strip()
            elif text.startswith("/*"):
                body = text[2:]
                end = body.find("*/")
                in_block = end < 0
                if end < 0 or not body[end + 2:].strip():
                    content = (body if end < 0 else body[:end]).lstrip("*!").strip()
        elif style == "hash":
            if text.startswith("#") and not (number == 0 and text.startswith("#!")):
                content = text.lstrip("#").strip()
        elif text.startswith(";"):
            content = text.lstrip(";").strip()
        out.append(content)
    return out


def _join_comment(parts: list[str]) -> str:
    """Comment lines as text: decoration rules dropped, C# XML doc tags turned into prose."""
    kept = [part for part in parts if not _DECORATION.match(part)]
    text = "\n".join(kept).strip()
    text = re.sub(r"</?(?:summary|remarks)>", "", text)
    text = re.sub(r'<param name="(\w+)">(.*?)</param>', r"Parameter `\1`: \2", text)
    text = re.sub(r"<returns>(.*?)</returns>", r"Returns: \1", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _leading_comment(lines: list[str], comments: list[str | None]) -> tuple[str, int] | None:
    """The file's opening comment block (a license block is skipped) and its first line."""
    index = 0
    while index < len(lines):
        if comments[index] is None:
            if lines[index].strip() and not (index == 0 and lines[index].startswith("#!")):
                return None  # code before any usable comment
            index += 1
            continue
        start = index
        block = []
        while index < len(lines) and comments[index] is not None:
            block.append(comments[index])
            index += 1
        text = _join_comment(block)
        if text and not _LICENSE.search(text):
            return text, start + 1
    return None


def _comment_above(lines: list[str], comments: list[str | None], index: int) -> str:
    """The comment block directly above line ``index`` (attributes in between are allowed)."""
    above = index - 1
    while above >= 0 and comments[above] is None and _ATTRIBUTE.match(lines[above]):
        above -= 1
    block = []
    while above >= 0 and comments[above] is not None:
        block.append(comments[above])
        above -= 1
    return _join_comment(block[::-1])


def text_file(source: str, rel: str, text: str, language: str) -> tuple[list[Record], list[Definition]]:
    """The samples about one file in a comment-structured language, and the names it defines."""
    lines = split_lines(text)
    comments = _comment_lines(lines, COMMENT_STYLES[language])
    fence = FENCES[language]
    records: list[Record] = []
    definitions: list[Definition] = []
    common = {"path": rel, "language": language}
    leading = _leading_comment(lines, comments)
    if leading:
        records.append(sample(source, f"What is `{rel}` for?", clip(leading[0]), line=leading[1],
                               symbol=None, kind="file", question_type="purpose", **common))
    for index, line in enumerate(lines):
        if comments[index] is not None:
            continue
        found = _match_definition(language, line)
        if found is None:
            continue
        symbol_kind, name = found
        excerpt = line.strip()
        definitions.append(Definition(name, rel, index + 1, language, symbol_kind, excerpt))
        comment = _comment_above(lines, comments, index)
        if comment:
            verb = "What does the {} `{}` in `{}` do?" if symbol_kind in ACTIONS else "What is the {} `{}` in `{}` for?"
            records.append(sample(source, verb.format(symbol_kind, name, rel),
                                   f"```{fence}\n{excerpt}\n```\n\n{clip(comment)}", line=index + 1,
                                   symbol=name, kind=KINDS[symbol_kind], question_type="purpose",
                                   symbol_kind=symbol_kind, **common))
    if definitions:
        listing = "\n".join(f"- {d.symbol_kind} `{d.name}` (line {d.line})" for d in definitions)
        records.append(sample(source, f"What does `{rel}` define?", f"`{rel}` defines:\n{listing}",
                               line=None, symbol=None, kind="file", question_type="contents", **common))
    return records, definitions


def _match_definition(language: str, line: str) -> tuple[str, str] | None:
    for symbol_kind, pattern in DEFINITIONS[language]:
        match = pattern.match(line)
        if match:
            return symbol_kind, match["name"]
    return None
