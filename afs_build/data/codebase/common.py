"""What the codebase readers share: file types, the sample shape, quoting helpers.

Every answer quotes the file (a docstring, a comment, a signature or a definition line);
nothing is paraphrased or invented.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from afs_build.data.records import make_sample

LANGUAGES = {
    ".py": "python", ".pyi": "python",
    ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript", ".jsx": "javascript",
    ".ts": "typescript", ".tsx": "typescript", ".mts": "typescript", ".cts": "typescript",
    ".c": "c", ".h": "c",
    ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".hh": "cpp", ".hpp": "cpp", ".hxx": "cpp",
    ".cs": "csharp", ".go": "go", ".rs": "rust",
    ".sh": "shell", ".bash": "shell", ".zsh": "shell",
    ".asm": "asm65816", ".s": "asm65816",
    ".md": "markdown", ".markdown": "markdown",
}

# Code-fence tag used when an answer quotes a line of the file.
FENCES = {"python": "python", "javascript": "js", "typescript": "ts", "c": "c", "cpp": "cpp",
          "csharp": "csharp", "go": "go", "rust": "rust", "shell": "sh", "asm65816": "asm"}

# What a codebase source can ask, by the `question_type` its samples carry (source setting
# `questions`): what a module, class or function is for, how a function works, its signature
# and parameters, what a module or class defines, a class's fields, what a Markdown section
# says, and which file defines a name.
QUESTION_TYPES = ("purpose", "behaviour", "signature", "parameters", "contents", "fields", "section", "location")

# The sample `kind` (metadata) each symbol kind belongs to.
KINDS = {"function": "function", "method": "function", "macro": "function", "proc": "function",
         "class": "class", "struct": "class", "interface": "class", "type": "class",
         "label": "section"}

_LINE_BREAK = re.compile(r"\r\n|\r|\n")

# Long quotes (Markdown sections, huge comments) are cut at a paragraph break near this size.
MAX_QUOTE_CHARS = 2000


class Definition(NamedTuple):
    """A named symbol and where it is, for the "Which file defines X?" samples."""

    name: str
    path: str
    line: int
    language: str
    symbol_kind: str
    excerpt: str


def sample(source: str, question: str, answer: str, *, path: str, line: int | None,
           symbol: str | None, kind: str, language: str, question_type: str,
           symbol_kind: str | None = None) -> dict:
    """One question/answer sample about `path` (relative to the codebase root)."""
    provenance: dict = {"path": path}
    if line is not None:
        provenance["line"] = line
    if symbol is not None:
        provenance["symbol"] = symbol
    metadata = {"kind": kind, "language": language, "question_type": question_type}
    if symbol_kind is not None:
        metadata["symbol_kind"] = symbol_kind
    messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return make_sample(source, messages, provenance=provenance, metadata=metadata)


def split_lines(text: str) -> list[str]:
    """Lines as compilers and editors number them (str.splitlines also splits on form feeds)."""
    return _LINE_BREAK.split(text)


def clip(text: str, limit: int = MAX_QUOTE_CHARS) -> str:
    """Cut a long quote at the last paragraph (else line) break before ``limit``."""
    if len(text) <= limit:
        return text
    head = text[:limit]
    cut = head.rfind("\n\n")
    if cut < limit // 2:
        cut = head.rfind("\n")
    return head[:cut].rstrip() if cut > 0 else head.rstrip()
