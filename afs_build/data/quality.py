"""Quality score of a sample from named signals, behind a gate that rejects leaked secrets.

Each signal is a pure function of a sample's :class:`Texts` returning ``(value, reason)``:
1.0 is clean, 0.0 is as bad as that signal can tell. The score is the weighted mean of the
signals that have a positive weight (the others are not computed), rounded to 4 places, and
is kept with every signal in ``metadata["quality"]``. A sample scoring below the threshold
becomes a Reject naming its weakest signal.

A weighted mean forgives one bad signal: a refusal (boilerplate 0.0) among otherwise clean
signals still scores 0.875 with the default (equal) weights. Raise that signal's weight, or
the threshold, where one failure must be enough.

Secrets (API keys, private keys, personal email addresses) are never scored: the sample is
rejected outright and the reject carries no excerpt, so the secret is not copied into
``rejects.jsonl``; its file and line say where to look.

Everything here runs once per record on millions of records: patterns are compiled once, and
the costly ones run only after a cheap substring test says they could match.
"""

from __future__ import annotations

import ast
import difflib
import math
import os
import re
import textwrap
import warnings
from functools import cached_property
from types import MappingProxyType
from typing import Callable, Iterable, Iterator, Mapping

import numpy as np

from afs_build.data.jsonl import AtomicJsonlWriter, JsonlError, dumps_line, loads
from afs_build.data.records import Record, Reject, canonical_json


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


def sample_texts(sample: dict) -> tuple[str, str]:
    """The instruction (user turns) and answer (assistant turns and tool calls) of a sample.

    Turns are joined with newlines; system and tool-result turns belong to neither. A tool call
    reads as ``name(arguments)`` so an answer that only calls tools is not empty.
    """
    user: list[str] = []
    assistant: list[str] = []
    for message in sample["messages"]:
        role = message["role"]
        if role == "user":
            user.append(message["content"])
        elif role == "assistant":
            if message["content"]:
                assistant.append(message["content"])
            for call in message.get("tool_calls") or ():
                assistant.append(_call_text(call))
    return "\n".join(user), "\n".join(assistant)


def _call_text(call: dict) -> str:
    arguments = call.get("arguments")
    if not isinstance(arguments, str):
        arguments = canonical_json(arguments)
    return f"{call.get('name', '')}({arguments})"


def _all_text(sample: dict) -> str:
    parts = []
    for message in sample["messages"]:
        parts.append(message["content"])
        for call in message.get("tool_calls") or ():
            parts.append(_call_text(call))
    return "\n".join(parts)


# --- the secrets gate -----------------------------------------------------------------------

# (kind, pattern, substrings of which one must occur before the pattern is tried). A pattern
# without hints starts with a literal, which the regex engine finds about as fast as ``in``.
_SECRET_PATTERNS: tuple[tuple[str, re.Pattern, tuple[str, ...]], ...] = (
    ("private key", re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----"), ()),
    ("aws access key", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), ("AKIA", "ASIA")),
    ("github token",
     re.compile(r"gh(?:[pousr]_[A-Za-z0-9]{36,}|ithub_pat_[A-Za-z0-9_]{22,})"), ()),
    # A digit and a letter are required so that words like sk-learn-compatible-... pass.
    ("openai api key", re.compile(r"(?<![A-Za-z0-9_-])sk-(?=[A-Za-z0-9_-]*\d)"
                                  r"(?=[A-Za-z0-9_-]*[A-Za-z])[A-Za-z0-9_-]{20,}"), ("sk-",)),
)
_ASSIGNED_SECRET = re.compile(
    r"(?<![A-Za-z0-9])(?:api[_-]?key|api[_-]?secret|secret[_-]?key|client[_-]?secret"
    r"|access[_-]?token|auth[_-]?token|password|passwd)(?![A-Za-z0-9])[\"']?\s*[:=]\s*"
    r"[\"']([^\"'\s]{8,})[\"']",
    re.I,
)
_ASSIGNED_HINTS = ("api", "secret", "token", "passw")
# Values that show a placeholder rather than a real credential.
_PLACEHOLDER = re.compile(
    r"your|xxx|\*\*\*|\.\.\.|[<>{}$]|example|placeholder|changeme|dummy|fake|test|redacted"
    r"|secret|password|here|environ|getenv", re.I)
_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])([A-Za-z0-9._%+-]{1,64})@"
    r"((?:[A-Za-z0-9-]{1,63}\.)+[A-Za-z]{2,24})(?![A-Za-z0-9-])")
_RESERVED_DOMAINS = ("example.com", "example.org", "example.net")
_RESERVED_TLDS = ("example", "test", "invalid", "localhost", "local")
# Look like an address but are not: image@2x.png, x@self.weight (matrix product), git@host.
_FILE_TLDS = frozenset(("png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "bmp", "pdf"))
_CODE_HEADS = frozenset(("self", "cls", "this", "np", "torch"))
_ROBOT_USERS = frozenset(("git", "noreply", "no-reply", "donotreply", "do-not-reply"))


def find_secret(text: str) -> str | None:
    """The kind of the first secret found in ``text`` (``"aws access key"``...), or None."""
    for kind, pattern, hints in _SECRET_PATTERNS:
        if (not hints or any(hint in text for hint in hints)) and pattern.search(text):
            return kind
    lowered = text.lower()
    if any(hint in lowered for hint in _ASSIGNED_HINTS):
        for match in _ASSIGNED_SECRET.finditer(text):
            if not _PLACEHOLDER.search(match.group(1)):
                return "api key assignment"
    if "@" in text:
        for match in _EMAIL.finditer(text):
            if _personal_email(match.group(1), match.group(2).lower()):
                return "email address"
    return None


def _personal_email(user: str, domain: str) -> bool:
    labels = domain.split(".")
    if labels[-1] in _FILE_TLDS or labels[0] in _CODE_HEADS or user.lower() in _ROBOT_USERS:
        return False
    if domain.endswith(_RESERVED_DOMAINS) or labels[-1] in _RESERVED_TLDS:
        return False
    return not domain.endswith("noreply.github.com")


# --- signals --------------------------------------------------------------------------------

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
DEFAULT_THRESHOLD = 0.5


# --- scoring --------------------------------------------------------------------------------


def _plan(weights: Mapping[str, float], threshold: float):
    for name in weights:
        if name not in SIGNALS:
            close = difflib.get_close_matches(name, SIGNALS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown quality signal {name!r}: expected one of: "
                             f"{list(SIGNALS)}{hint}")
        weight = weights[name]
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) \
                or not math.isfinite(weight) or weight < 0:
            raise ValueError(f"quality weight of {name!r} must be a number >= 0, "
                             f"got {weight!r}")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) \
            or not 0.0 <= threshold <= 1.0:
        raise ValueError(f"quality threshold must be a number in [0, 1], got {threshold!r}")
    plan = tuple((name, signal, float(weights[name]))
                 for name, signal in SIGNALS.items() if weights.get(name, 0) > 0)
    if not plan:
        raise ValueError("quality weights are all zero: give at least one signal a weight > 0")
    return plan, sum(weight for _, _, weight in plan)


def _compare(score: float, threshold: float) -> str:
    digits = 2  # enough digits that a score just under the threshold does not print equal
    while f"{score:.{digits}f}" == f"{threshold:.{digits}f}" and digits < 6:
        digits += 1
    return f"{score:.{digits}f} < {threshold:.{digits}f}"


def _score(sample: dict, plan, total: float, threshold: float) -> Record:
    kind = find_secret(_all_text(sample))
    if kind:
        return Reject(sample["source"], f"secret: {kind}", **_where(sample),
                      detail={"id": sample["id"]})
    instruction, answer = sample_texts(sample)
    texts = Texts(instruction, answer)
    signals: dict[str, dict] = {}
    weighted = 0.0
    lowest = None
    for name, signal, weight in plan:
        value, reason = signal(texts)
        signals[name] = {"value": value if value == 1.0 else round(value, 4), "reason": reason}
        weighted += weight * value
        if lowest is None or value < lowest[1]:
            lowest = (name, value, reason)
    score = round(weighted / total, 4)
    quality = {"score": score, "signals": signals}
    if score < threshold:
        name, value, reason = lowest
        return Reject(
            sample["source"],
            f"quality below threshold: {_compare(score, threshold)} "
            f"(lowest: {name} {value:.2f} '{reason}')",
            **_where(sample), excerpt=instruction,
            detail={"id": sample["id"], "quality": quality})
    return {**sample, "metadata": {**(sample.get("metadata") or {}), "quality": quality}}


def _where(sample: dict) -> dict:
    provenance = sample.get("provenance") or {}
    return {"file": provenance.get("file"), "line": provenance.get("line")}


def score_sample(sample: dict, *, weights: Mapping[str, float] = DEFAULT_WEIGHTS,
                 threshold: float = DEFAULT_THRESHOLD) -> Record:
    """Score one sample: a copy with ``metadata["quality"]`` set, or a Reject.

    Raises ValueError for an unknown signal name, a negative weight or a threshold outside
    [0, 1]. For many samples use :func:`score_stream`, which checks the weights once.
    """
    plan, total = _plan(weights, threshold)
    return _score(sample, plan, total, threshold)


def score_stream(samples: Iterable[Record], *, weights: Mapping[str, float] = DEFAULT_WEIGHTS,
                 threshold: float = DEFAULT_THRESHOLD) -> Iterator[Record]:
    """Score each sample in turn; Rejects from earlier stages pass through unchanged.

    The weights are checked here, before the first sample is read.
    """
    plan, total = _plan(weights, threshold)
    return (sample if isinstance(sample, Reject) else _score(sample, plan, total, threshold)
            for sample in samples)


def score_file(source, samples_path, rejects_path, *,
               weights: Mapping[str, float] = DEFAULT_WEIGHTS,
               threshold: float = DEFAULT_THRESHOLD, workers: int = 1) -> dict[str, int]:
    """Score a JSONL file of samples into a samples file and a rejects file, in input order.

    Both outputs are written atomically. With ``workers`` > 1, chunks of raw lines go to that
    many processes, which parse, score and serialize them: the parent only moves bytes, so
    two workers come close to twice the speed (parsing Python answers with ``ast`` is most
    of the work). Returns ``{"samples": kept, "rejects": rejected}``.
    """
    _plan(weights, threshold)  # fail before reading or starting anything
    chunks = _line_chunks(os.fspath(source))
    setup = (dict(weights), threshold)
    with AtomicJsonlWriter(samples_path) as kept, AtomicJsonlWriter(rejects_path) as rejected:
        if workers > 1:
            import multiprocessing

            # spawn, not fork: the caller may hold threads or locks a child would inherit
            context = multiprocessing.get_context("spawn")
            with context.Pool(workers, initializer=_start_worker, initargs=setup) as pool:
                for good, bad in pool.imap(_score_lines, chunks):
                    kept.write_lines(*good)
                    rejected.write_lines(*bad)
        else:
            state = (*_plan(*setup), threshold)
            for good, bad in (_score_lines(chunk, state) for chunk in chunks):
                kept.write_lines(*good)
                rejected.write_lines(*bad)
    return {"samples": kept.count, "rejects": rejected.count}


_CHUNK_LINES = 256
_worker: tuple = ()


def _line_chunks(path: str) -> Iterator[tuple[str, int, list[bytes]]]:
    with open(path, "rb", buffering=1 << 20) as handle:
        start, lines = 1, []
        for number, raw in enumerate(handle, start=1):
            if not lines:
                start = number
            lines.append(raw)
            if len(lines) == _CHUNK_LINES:
                yield path, start, lines
                lines = []
        if lines:
            yield path, start, lines


def _start_worker(weights: dict, threshold: float) -> None:
    global _worker  # one scoring plan per process, made once when it starts
    _worker = (*_plan(weights, threshold), threshold)


def _score_lines(chunk: tuple[str, int, list[bytes]],
                 state: tuple = ()) -> tuple[tuple[bytes, int], ...]:
    """Score raw JSONL lines: (sample lines, count), (reject lines, count)."""
    path, start, lines = chunk
    plan, total, threshold = state or _worker
    good: list[bytes] = []
    bad: list[bytes] = []
    for number, raw in enumerate(lines, start=start):
        if raw.isspace():
            continue
        try:
            sample = loads(raw)
        except ValueError as exc:
            raise JsonlError(f"{path}:{number}: invalid JSON: {exc}") from exc
        record = _score(sample, plan, total, threshold)
        if isinstance(record, Reject):
            bad.append(dumps_line(record.to_json()))
        else:
            good.append(dumps_line(record))
    return (b"".join(good), len(good)), (b"".join(bad), len(bad))
