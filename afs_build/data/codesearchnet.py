"""CodeSearchNet records into instruction pairs: docstring to code, and code to explanation.

CodeSearchNet (github/CodeSearchNet) ships JSONL files, gzipped, one function per line with
``repo, path, func_name, original_string, language, code, code_tokens, docstring,
docstring_tokens, url, partition``. Each kept record becomes up to two samples:

- ``doc2code``: the docstring as the request, the function as the answer;
- ``code2doc``: the function without its docstring as the question, the docstring as answer.

Python docstrings sit inside ``code``; the other languages' comments precede the function and
are mostly outside it. Either way the code shown for ``code2doc`` must not contain the answer,
so an embedded docstring is cut out, and a record whose docstring cannot be cut cleanly gets a
Reject for that direction only. The instruction wording is chosen from a few phrasings by a
hash of the record, so the same record always reads the same.
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import Iterable, Iterator

from afs_build.data.formats import CSN_LANGUAGES
from afs_build.data.readers import (
    MAX_CHARS,
    RECORD_ERRORS,
    InputError,
    Unusable,
    excerpt,
    expected_one_of,
    json_type,
    read_jsonl_rows,
    require_files,
    unconvertible,
)
from afs_build.data.records import RECORD, Filtered, Record, Reject, make_sample

LANGUAGES = CSN_LANGUAGES
PARTITIONS = ("train", "valid", "test")
DIRECTIONS = ("doc2code", "code2doc")
REQUIRED = ("func_name", "code", "docstring", "language", "partition")

DISPLAY = {"go": "Go", "java": "Java", "javascript": "JavaScript", "php": "PHP",
           "python": "Python", "ruby": "Ruby"}

PHRASINGS = {
    "doc2code": (
        "Write a {language} {kind} `{name}` that does the following:\n\n{doc}",
        "Implement the {language} {kind} `{name}`. Its documentation says:\n\n{doc}",
        "Here is the docstring of a {language} {kind} named `{name}`:\n\n{doc}\n\n"
        "Write the code.",
    ),
    "code2doc": (
        "Explain what this {language} {kind} does:\n\n```{fence}\n{code}\n```",
        "What does the following {language} {kind} do?\n\n```{fence}\n{code}\n```",
        "Write a short docstring for this {language} {kind}:\n\n```{fence}\n{code}\n```",
    ),
}

# Comment and string spans a docstring can live in: Python triple-quoted strings, block
# comments, and runs of line comments.
_DOC_SPANS = re.compile(
    r"[rRuU]?(?:\"\"\"(?:\\.|[^\\])*?\"\"\"|'''(?:\\.|[^\\])*?''')"
    r"|/\*.*?\*/"
    r"|(?:^[ \t]*(?://|#)[^\n]*(?:\n|\Z))+",
    re.S | re.M,
)
# The first docstring line must be this long before its presence in code counts as a leak.
_MIN_KEY = 16


def convert_codesearchnet(
    paths,
    *,
    source: str,
    languages: Iterable[str] = LANGUAGES,
    partitions: Iterable[str] = ("train",),
    directions: Iterable[str] = DIRECTIONS,
    max_chars: int = MAX_CHARS,
) -> Iterator[Record]:
    """Convert CodeSearchNet JSONL (or ``.jsonl.gz``) files into doc2code and code2doc pairs.

    Records outside ``languages`` and ``partitions`` are filtered, not broken: each gives a
    :class:`~afs_build.data.records.Filtered` naming its language or partition, so they are
    counted. ``valid`` and ``test`` are left out by default because benchmarks are drawn from
    them. Raises InputError (a ValueError) for an unknown language, partition or direction
    and FileNotFoundError for a missing file, before any record is read.
    """
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    languages = _choices("language", languages, LANGUAGES)
    partitions = _choices("partition", partitions, PARTITIONS)
    directions = _choices("direction", directions, DIRECTIONS)
    require_files(paths)
    return _convert(paths, source, languages, partitions, directions, max_chars)


def _choices(what: str, values: Iterable[str], known: tuple[str, ...]) -> tuple[str, ...]:
    values = (values,) if isinstance(values, str) else tuple(values)
    for value in values:
        if value not in known:
            raise InputError(expected_one_of(what, known, value))
    return values


def _convert(paths, source, languages, partitions, directions, max_chars) -> Iterator[Record]:
    for path in paths:
        file = os.fspath(path)
        for item in read_jsonl_rows(path, source=source, max_chars=max_chars):
            yield RECORD
            if isinstance(item, Reject):
                yield item
                continue
            line, record = item
            try:
                fields = _fields(record)
                if fields["language"] not in languages:
                    yield Filtered(f"language {fields['language'][:40]!r} not in languages")
                    continue
                if fields["partition"] not in partitions:
                    yield Filtered(f"partition {fields['partition'][:40]!r} not in partitions")
                    continue
                if not fields["docstring"].strip():
                    raise Unusable("empty docstring")
                if not fields["code"].strip():
                    raise Unusable("empty code")
            except Unusable as exc:
                yield Reject(source, str(exc), file=file, line=line, excerpt=excerpt(record))
                continue
            for direction in directions:
                try:
                    messages = pair(fields, direction)
                except Unusable as exc:
                    yield Reject(source, str(exc), file=file, line=line, excerpt=excerpt(record),
                                 detail={"direction": direction})
                    continue
                except RECORD_ERRORS as exc:
                    yield unconvertible(source, file, line, exc, record)
                    continue
                yield make_sample(
                    source,
                    messages,
                    provenance=_provenance(record, file, line),
                    metadata={"language": fields["language"], "direction": direction,
                              "partition": fields["partition"],
                              **({"repo": record["repo"]} if isinstance(record.get("repo"), str)
                                 else {})},
                )


def _fields(record) -> dict[str, str]:
    if not isinstance(record, dict):
        raise Unusable(f"expected a JSON object, got {json_type(record)}")
    missing = [name for name in REQUIRED if record.get(name) is None]
    if missing:
        raise Unusable(f"missing field{'s' if len(missing) > 1 else ''} "
                       + ", ".join(repr(name) for name in missing))
    for name in REQUIRED:
        if not isinstance(record[name], str):
            raise Unusable(f"field {name!r}: expected text, got {json_type(record[name])}")
    return {name: record[name] for name in REQUIRED}


def _provenance(record: dict, file: str, line: int) -> dict:
    provenance = {"file": file, "line": line, "symbol": record["func_name"]}
    for key in ("url", "path"):
        if isinstance(record.get(key), str) and record[key]:
            provenance[key] = record[key]
    return provenance


def pair(fields: dict[str, str], direction: str) -> list[dict]:
    """The user and assistant turns of one record in one direction; raises Unusable."""
    language = fields["language"]
    code, doc, name = fields["code"].strip("\n"), fields["docstring"].strip(), fields["func_name"]
    values = {"language": DISPLAY.get(language, language), "name": name, "doc": doc,
              "kind": "method" if "." in name else "function", "fence": language}
    phrasing = _phrasing(direction, fields)
    if direction == "doc2code":
        answer = f"```{language}\n{code}\n```"
        return [{"role": "user", "content": phrasing.format(**values)},
                {"role": "assistant", "content": answer}]
    values["code"] = without_docstring(code, doc)
    return [{"role": "user", "content": phrasing.format(**values)},
            {"role": "assistant", "content": doc}]


def _phrasing(direction: str, fields: dict[str, str]) -> str:
    key = "\0".join((direction, fields["language"], fields["func_name"], fields["code"]))
    digest = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)
    choices = PHRASINGS[direction]
    return choices[digest % len(choices)]


def _collapsed(text: str) -> str:
    return " ".join(text.split())


def without_docstring(code: str, docstring: str) -> str:
    """The code with its embedded docstring (or doc comment) cut out; raises Unusable.

    The span cut is the first string or comment holding the docstring's first line, and only
    whole lines are cut. Code that holds no copy of the docstring is returned unchanged.
    """
    lines = [line for line in docstring.splitlines() if line.strip()]
    key = _collapsed(lines[0]) if lines else ""
    for match in _DOC_SPANS.finditer(code):
        if key not in _collapsed(match.group()):
            continue
        start = code.rfind("\n", 0, match.start()) + 1
        end = code.find("\n", match.end() - 1 if match.group().endswith("\n") else match.end())
        end = len(code) if end < 0 else end + 1
        before, after = code[start:match.start()], code[match.end():end]
        if before.strip() or after.strip():
            break  # shares its line with code: cutting it would break the function
        return (code[:start] + code[end:]).rstrip("\n")
    if len(key) >= _MIN_KEY and key in _collapsed(code):
        raise Unusable("docstring could not be cut from the code (code2doc skipped)")
    return code
