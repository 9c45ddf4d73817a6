"""Chunking: definitions, sections and entries with exact line ranges and symbols."""

from __future__ import annotations

from afs_build.manifest import Chunking
from afs_build.retrieval.chunking import chunk_file

SETTINGS = Chunking(code_max_lines=8, code_overlap_lines=2, prose_max_chars=120, prose_overlap_chars=30)

PYTHON = '''"""A module."""

import os

LIMIT = 3


@decorated
def first(a):
    """First."""
    return a


class Big:
    """A class longer than eight lines."""

    size: int = 1

    def one(self):
        return 1

    def two(self):
        return 2
'''


def spans(chunks):
    return [(c.start, c.end, c.symbol, c.kind) for c in chunks]


def test_python_is_cut_by_definition_and_a_long_class_by_member():
    chunks = chunk_file("src", "pkg/mod.py", PYTHON, SETTINGS)
    assert spans(chunks) == [
        (1, 5, "", "module"),          # docstring, imports and constants, blank lines trimmed
        (8, 11, "first", "function"),  # the decorator belongs to the function
        (14, 17, "Big", "class"),      # the class header up to its first method
        (19, 20, "Big.one", "method"),
        (22, 23, "Big.two", "method"),
    ]
    assert chunks[1].text.startswith("@decorated\ndef first(a):")
    assert {c.source for c in chunks} == {"src"} and {c.file for c in chunks} == {"pkg/mod.py"}
    assert chunks[1].location == "pkg/mod.py:8-11"


def test_a_long_function_becomes_overlapping_windows():
    body = "def long():\n" + "".join(f"    x{i} = {i}\n" for i in range(15))
    chunks = chunk_file("src", "long.py", body, SETTINGS)
    assert spans(chunks) == [(1, 8, "long", "function"), (7, 14, "long", "function"),
                             (13, 16, "long", "function")]


def test_python_that_does_not_parse_falls_back_to_line_windows():
    chunks = chunk_file("src", "bad.py", "def broken(:\n    pass\n", SETTINGS)
    assert spans(chunks) == [(1, 2, "", "code")]


def test_markdown_sections_carry_their_heading_path():
    text = "Intro line.\n\n# Guide\n\nText.\n\n## Install\n\nRun it.\n\n```\n# not a heading\n```\n"
    chunks = chunk_file("docs", "guide.md", text, SETTINGS)
    assert spans(chunks) == [(1, 1, "", "text"), (3, 5, "Guide", "section"),
                             (7, 13, "Guide > Install", "section")]


def test_long_prose_is_cut_at_paragraph_breaks_with_overlap():
    text = "\n\n".join(f"Paragraph {i} " + "word " * 12 for i in range(4))
    chunks = chunk_file("docs", "notes.txt", text, SETTINGS)
    assert len(chunks) >= 3
    assert all(len(c.text) <= 2 * SETTINGS.prose_max_chars for c in chunks)
    assert chunks[0].start == 1 and chunks[-1].end == 7
    covered = set()
    for c in chunks:
        covered.update(range(c.start, c.end + 1))
    assert {1, 3, 5, 7} <= covered


def test_a_fact_table_is_cut_by_entry_named_by_its_first_naming_field():
    text = ("# Facts\n\n- topic: ppu\n  register: INIDISP\n  answer: brightness\n\n# --- next ---\n\n"
            "- topic: dma\n  register: MDMAEN\n  answer: starts DMA\n")
    chunks = chunk_file("facts", "data/facts.yaml", text, SETTINGS, facts=True)
    assert spans(chunks) == [(1, 1, "", "text"), (3, 5, "INIDISP", "entry"), (9, 11, "MDMAEN", "entry")]


def test_other_languages_are_cut_at_definition_lines_with_the_comment_above():
    text = "// helpers\n\n// Adds two numbers.\nfunction add(a, b) {\n  return a + b;\n}\n\nclass Box {\n}\n"
    chunks = chunk_file("web", "lib/util.js", text, SETTINGS)
    assert spans(chunks) == [(1, 1, "", "code"), (3, 6, "add", "function"), (8, 9, "Box", "class")]
    assert chunks[1].language == "javascript"


def test_the_embedded_text_leads_with_path_and_symbol():
    chunk = chunk_file("src", "pkg/mod.py", PYTHON, SETTINGS)[1]
    assert chunk.embed_text.startswith("pkg/mod.py first\n@decorated")
