"""Quality signals: named checks of a sample's instruction and answer, each from 0.0 to 1.0.

Each signal is a pure function of a sample's :class:`Texts` returning ``(value, reason)``:
1.0 is clean, 0.0 is as bad as that signal can tell. :mod:`afs_build.data.quality` combines
them into a score.

Everything here runs once per sample on millions of samples: patterns are compiled once, and
the costly ones run only after a cheap substring test says they could match.
"""

from __future__ import annotations

import ast
import re
import textwrap
import warnings
from functools import cached_property
from types import MappingProxyType
from typing import Callable, Mapping

import numpy as np


class Texts:
    """The instruction (user turns) and answer (assistant turns) of a sample.

    Word lists and word 3-gram sets that several signals use are computed once, on first use.
    """

    def __init__(self, instruction: str, answer: str) -> None:
        self.instruction = instruction
        self.answer = answer

    @cached_property
    def answer_words(self) -> list[str]:
        return self.answer.split()

    @cached_property
    def answer_grams(self) -> np.ndarray:
        """The distinct word 3-grams of the answer, as sorted 64-bit hashes."""
        return _gram_hashes(self.answer_words)


_GRAM_MIX = (np.int64(-7046029254386353131), np.int64(7151136286975496217))


def _gram_hashes(words: list[str]) -> np.ndarray:
    # Three times faster than a set of tuples: str hashes are cached, the rest is vectorized.
    # Python's str hash is salted per process, which changes no count (collisions aside).
    if len(words) < 3:
        return np.empty(0, dtype=np.int64)
    hashes = np.fromiter(map(hash, words), dtype=np.int64, count=len(words))
    return np.unique(hashes[:-2] * _GRAM_MIX[0] + hashes[1:-1] * _GRAM_MIX[1] + hashes[2:])


Signal = Callable[[Texts], "tuple[float, str]"]
OK = "ok"


def signal_length(texts: Texts) -> tuple[float, str]:
    """Length sanity: an empty or one-character answer, a tiny instruction, a huge turn."""
    answer, instruction = texts.answer, texts.instruction
    if not answer or answer.isspace():
        return 0.0, "empty answer"
    if not instruction or instruction.isspace():
        return 0.0, "empty instruction"
    if len(answer.strip()) < 3:
        return 0.3, f"answer too short ({len(answer.strip())} chars)"
    if len(instruction.strip()) < 8:
        return 0.5, f"instruction too short ({len(instruction.strip())} chars)"
    longest = max(len(answer), len(instruction))
    if longest > 50_000:
        return 0.5, f"{'answer' if len(answer) >= len(instruction) else 'instruction'} " \
                    f"too long ({longest} chars)"
    return 1.0, OK


def signal_ratio(texts: Texts) -> tuple[float, str]:
    """Answer/instruction length ratio: a long request with a few-word answer is suspicious."""
    ratio = len(texts.answer) / max(1, len(texts.instruction))
    if ratio < 0.01:
        return 0.3, f"answer/instruction length ratio {ratio:.3f}"
    if ratio < 0.03:
        return 0.7, f"answer/instruction length ratio {ratio:.3f}"
    if ratio > 500:
        return 0.6, f"answer/instruction length ratio {ratio:.0f}"
    return 1.0, OK


_REPEAT_OK, _REPEAT_BAD = 0.35, 0.85  # duplicate fraction at value 1.0 and at value 0.0


def signal_repetition(texts: Texts) -> tuple[float, str]:
    """Repeated word 3-grams or repeated lines in the answer (looping generations)."""
    worst, reason = 0.0, OK
    words = texts.answer_words
    if len(words) >= 12:
        worst = 1.0 - texts.answer_grams.size / (len(words) - 2)
        reason = f"{worst:.0%} repeated 3-grams"
    lines = [line for line in (raw.strip() for raw in texts.answer.splitlines()) if len(line) >= 8]
    if len(lines) >= 4:
        duplicates = 1.0 - len(set(lines)) / len(lines)
        if duplicates > worst:
            worst, reason = duplicates, f"{duplicates:.0%} duplicate lines"
    if worst <= _REPEAT_OK:
        return 1.0, OK
    return max(0.0, 1.0 - (worst - _REPEAT_OK) / (_REPEAT_BAD - _REPEAT_OK)), reason


_BOILERPLATE = (
    "as an ai language model", "as a language model", "as an ai assistant", "as an ai,",
    "i'm an ai", "i am an ai", "i cannot help with", "i can't help with", "i cannot assist",
    "i can't assist", "i cannot provide", "i can't provide", "i'm sorry, but i can",
    "i am sorry, but i can", "i'm unable to", "i am unable to", "i'm not able to",
    "my knowledge cutoff", "as of my last update", "as of my last training",
    "i don't have access to real-time", "i do not have access to real-time",
    "i cannot browse", "i can't browse",
)
# Every phrase starts with one of these: a cheap test before the phrase-by-phrase search.
_BOILERPLATE_HINTS = tuple(sorted({phrase[:4] for phrase in _BOILERPLATE}))
_BOILERPLATE_LEAD = 200  # a refusal this close to the start is the whole answer


def signal_boilerplate(texts: Texts) -> tuple[float, str]:
    """Refusals and assistant boilerplate ("As an AI language model", "I cannot help with")."""
    lowered = texts.answer.lower()
    if "\u2019" in lowered:
        lowered = lowered.replace("\u2019", "'")
    if not any(hint in lowered for hint in _BOILERPLATE_HINTS):
        return 1.0, OK
    for phrase in _BOILERPLATE:
        at = lowered.find(phrase)
        if at >= 0:
            return (0.0 if at < _BOILERPLATE_LEAD else 0.3), f'boilerplate: "{phrase}"'
    return 1.0, OK


_ECHO_OK = 0.8  # share of the answer's 3-grams found in the instruction before it counts


def signal_echo(texts: Texts) -> tuple[float, str]:
    """The answer repeats the question instead of answering it."""
    said = texts.answer_words
    asked = texts.instruction.split()
    if said and len(said) == len(asked) and " ".join(said).lower() == " ".join(asked).lower():
        return 0.0, "answer repeats the instruction"
    if len(said) < 10:
        if len(texts.instruction) > 20 and len(asked) < len(said) and \
                " ".join(said).lower().startswith(" ".join(asked).lower()):
            return 0.5, "answer starts by repeating the instruction"
        return 1.0, OK
    grams = texts.answer_grams
    # The instruction cannot hold more distinct 3-grams than it has words: often that settles it.
    if not grams.size or len(asked) - 2 <= _ECHO_OK * grams.size:
        return 1.0, OK
    shared = np.intersect1d(grams, _gram_hashes(asked), assume_unique=True).size
    overlap = shared / grams.size
    if overlap <= _ECHO_OK:
        return 1.0, OK
    value = 1.0 - 0.8 * (overlap - _ECHO_OK) / (1.0 - _ECHO_OK)
    return value, f"{overlap:.0%} of the answer's 3-grams repeat the instruction"


_FENCE = "```"
_CODE_BLOCK = re.compile(r"^([ \t]*)```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)^[ \t]*```", re.M | re.S)
_PYTHON = frozenset(("python", "py", "python3", "py3"))


def signal_code(texts: Texts) -> tuple[float, str]:
    """Fenced Python blocks that do not parse (``ast``), and unbalanced ``` fences."""
    answer = texts.answer
    if _FENCE not in answer:
        return 1.0, OK
    if answer.count(_FENCE) % 2:
        return 0.2, "unbalanced ``` fence"
    for number, match in enumerate(_CODE_BLOCK.finditer(answer), start=1):
        if match.group(2).lower() not in _PYTHON:
            continue
        body = match.group(3)
        if match.group(1):
            body = textwrap.dedent(body)
        problem = _python_problem(body)
        if problem:
            return 0.3, f"python block {number} does not parse: {problem}"
    return 1.0, OK


def _python_problem(code: str) -> str | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escapes and the like are not our concern
            ast.parse(code)
    except SyntaxError as exc:
        return f"{exc.msg} (line {exc.lineno})"
    except (ValueError, RecursionError, MemoryError) as exc:
        return type(exc).__name__
    return None


# Control characters other than tab and newlines, the replacement character, and UTF-8 read
# as Latin-1 / cp1252 (mojibake): 'Ã©' for 'é', 'â€™' for '’', 'Â ' for a no-break space.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_GARBAGE = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffd]"
    "|\u00c3[\u0080-\u00bf\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6\u02dc"
    "\u2013\u2014\u2018-\u201e\u2020-\u2022\u2026\u2030\u2039\u203a\u20ac\u2122]"
    "|\u00c2[\u0080-\u00bf]|\u00e2\u20ac")


def signal_garbage(texts: Texts) -> tuple[float, str]:
    """Mojibake, control characters and U+FFFD replacement characters in either turn."""
    found: list[str] = []
    total = 0
    for text in (texts.instruction, texts.answer):
        total += len(text)
        # ASCII text cannot hold mojibake; str.isascii() is a constant-time flag check.
        pattern = _CONTROL if text.isascii() else _GARBAGE
        if pattern.search(text):
            found.extend(pattern.findall(text))
    if not found:
        return 1.0, OK
    share = len(found) / max(1, total)
    examples = ", ".join(f'"{_visible(item)}"' for item in list(dict.fromkeys(found))[:3])
    return max(0.0, 0.7 - 10 * share), f"{len(found)} garbage characters ({examples})"


def _visible(text: str) -> str:
    return "".join(char if char.isprintable() else f"\\x{ord(char):02x}" for char in text)


_SENTENCE_END = frozenset(".!?:;\"')]}>`*|\u2026\u201d\u2019\u00bb")
_STRUCTURE = frozenset("=(){}[]<>;:#|`\\/")
_CONNECTORS = frozenset((
    "the", "a", "an", "and", "or", "but", "of", "to", "with", "for", "in", "on", "at", "by",
    "from", "that", "which", "is", "are", "was", "were", "be", "as", "if", "because", "than"))


def signal_truncated(texts: Texts) -> tuple[float, str]:
    """An answer cut off mid-sentence or inside a code block (a max-token stop)."""
    answer = texts.answer.rstrip()
    if not answer:
        return 1.0, OK
    if answer.count(_FENCE) % 2:
        return 0.2, "answer ends inside a code block"
    last = answer[answer.rfind("\n") + 1:].strip()
    if answer.endswith(_FENCE) or not last or last[-1] in _SENTENCE_END or last[-1].isdigit():
        return 1.0, OK
    if any(char in _STRUCTURE for char in last):
        return 1.0, OK  # code, a table or markup: punctuation rules do not apply
    words = last.split()
    if last[-1] == ",":
        return 0.4, "answer ends with a comma"
    if len(words) >= 3 and words[-1].lower() in _CONNECTORS:
        return 0.3, f'answer ends mid-sentence on "{words[-1]}"'
    if len(words) >= 8 and answer.count(". ") >= 2:
        return 0.6, "answer ends without final punctuation"
    return 1.0, OK


SIGNALS: Mapping[str, Signal] = MappingProxyType({
    "length": signal_length,
    "ratio": signal_ratio,
    "repetition": signal_repetition,
    "boilerplate": signal_boilerplate,
    "echo": signal_echo,
    "code": signal_code,
    "garbage": signal_garbage,
    "truncated": signal_truncated,
})

# The manifest schema's defaults (quality.weights): every signal counts the same.
DEFAULT_WEIGHTS: Mapping[str, float] = MappingProxyType({name: 1.0 for name in SIGNALS})
