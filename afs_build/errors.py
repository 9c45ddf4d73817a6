"""The one error type users see, and the one format its problems print in.

Every user mistake becomes an :class:`AfsError` holding one or more :class:`Problem`s, each
printed as ``FILE:LINE:COL: key.path: what is wrong; what was expected (did you mean ...?)``.
The CLI and ``dodo.py`` print them and exit non-zero; no traceback reaches the user.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Iterable, Sequence


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with an input file, at a position."""

    file: str
    line: int
    col: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.col}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class AfsError(Exception):
    """A user-facing error: a message, or a list of problems with positions."""

    def __init__(self, message: str = "", problems: Sequence[Problem] = ()):
        self.problems = tuple(sorted(set(problems)))
        self.message = message
        super().__init__(self.render())

    def render(self) -> str:
        lines = [str(p) for p in self.problems]
        if self.message:
            lines.insert(0, self.message)
        return "\n".join(lines)


class ManifestError(AfsError):
    """The manifest (or a file it names) is invalid."""


class StageError(AfsError):
    """A build stage met input it cannot use (names the source, the file and the fix)."""


def suggest(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(str(word), sorted(map(str, choices)), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def one_of(choices: Iterable[str]) -> str:
    """``'a', 'b', 'c'`` for an expected-values list."""
    return ", ".join(repr(c) for c in sorted(map(str, choices)))
