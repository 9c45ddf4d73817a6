"""The file types each source kind reads, and CodeSearchNet's languages: one table for the
converters and for ``afs validate`` (so it stays free of heavy imports)."""

from __future__ import annotations

import os

# custom: the reader is chosen by the file's extension
TABLE_SUFFIXES = (".csv", ".json", ".jsonl", ".jsonl.gz", ".ndjson", ".parquet")
# synthetic: facts as a YAML (or JSON) list or a CSV table; templates in YAML (JSON is YAML)
FACTS_SUFFIXES = (".yaml", ".yml", ".json", ".csv")
TEMPLATES_SUFFIXES = (".yaml", ".yml", ".json")
# toolbench: one JSON list of instances; codesearchnet: JSON lines, gzipped or not
TOOLBENCH_SUFFIXES = (".json",)
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz")

# (source kind, manifest key) -> the extensions a file named there may have
FILE_TYPES = {
    ("custom", "path"): TABLE_SUFFIXES,
    ("replay", "path"): TABLE_SUFFIXES,
    ("synthetic", "facts"): FACTS_SUFFIXES,
    ("synthetic", "templates"): TEMPLATES_SUFFIXES,
    ("toolbench", "path"): TOOLBENCH_SUFFIXES,
    ("codesearchnet", "paths"): JSONL_SUFFIXES,
}

CSN_LANGUAGES = ("go", "java", "javascript", "php", "python", "ruby")


def has_type(path, suffixes: tuple[str, ...]) -> bool:
    """Whether the file name ends in one of `suffixes` (case does not matter)."""
    return os.fspath(path).lower().endswith(suffixes)


def extension(path) -> str:
    """The extension as people read it: ``.jsonl.gz``, ``.txt``, or ``no extension``."""
    name = os.path.basename(os.fspath(path)).lower()
    stem, suffix = os.path.splitext(name)
    if suffix == ".gz" and os.path.splitext(stem)[1]:
        suffix = os.path.splitext(stem)[1] + suffix
    return suffix or "no extension"
