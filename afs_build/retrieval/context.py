"""The one format retrieved chunks take in a prompt, for serving and for training alike.

The default specialists are 135M-parameter models, so the format is short and regular: each
chunk starts with a bracketed number, its ``file:first-last`` and its symbol on one line (what
a "where is X" question asks for, in the first tokens the model reads), then the first lines
of its text, clipped to ``context_chars``; the question comes last, after ``Question:``, so the
model answers right after reading it::

    Context:
    [1] post/merge.py:100-135 merged_tensors
    def merged_tensors(base_folder: Path, adapter_folder: Path) -> Iterator[...]:
        \"\"\"Yield every tensor of the base with the LoRA merged in.\"\"\"

    Question: Where is the LoRA merged into each tensor?

A training sample of a specialist with ``train_context`` gets the chunks retrieved for its own
question put into its first user turn in exactly this format, so the LoRA learns to read it.
"""

from __future__ import annotations

import copy
from typing import Optional, Sequence

from .chunking import Chunk

CONTEXT_HEADER = "Context:"
QUESTION_HEADER = "Question:"
# Part of the eval cache's key for retrieving servers: a change to what a prompt's context looks
# like changes the replies, as a change to the index does.
CONTEXT_FORMAT = 2
# Fields of a fact-table entry that say what kind of entry it is, not what it says.
_KIND_FIELDS = {"topic", "category", "kind", "type", "tags"}


def clip(text: str, limit: int) -> str:
    """The first lines of `text` that fit in `limit` characters (at least part of the first); a
    line that does not fit whole, with 40 or more characters of room left, is cut after its last
    word that fits (a fact's answer is one long line: dropping it would leave only its name)."""
    if len(text) <= limit:
        return text
    kept, size = [], 0
    for line in text.split("\n"):
        if size + len(line) + 1 > limit:
            room = limit - size
            if kept and room >= 40:
                cut = line[:room].rsplit(" ", 1)[0].rstrip()
                if cut:
                    kept.append(cut)
            break
        kept.append(line)
        size += len(line) + 1
    return "\n".join(kept).rstrip() if kept else text[:limit]


def prompt_text(chunk: Chunk) -> str:
    """What of a chunk a prompt shows: its text, but a fact-table entry (a YAML list item) as its
    fields on one line and its answer after them, without the YAML's keys, folding and
    indentation: the same facts in about 60% of the characters, so `context_chars` holds the
    answer of an entry rather than its first fields."""
    if chunk.kind != "entry":
        return chunk.text
    import yaml

    try:
        item = yaml.safe_load(chunk.text)
    except yaml.YAMLError:
        return chunk.text
    if not (isinstance(item, list) and len(item) == 1 and isinstance(item[0], dict)):
        return chunk.text
    fields, body = [], []  # short values named on one line; long ones (answers) as text
    for key, value in item[0].items():
        if key in _KIND_FIELDS or value is None or isinstance(value, (dict, list)):
            continue
        text = " ".join(str(value).split())
        if len(text) > 120:
            body.append(text)
        else:
            fields.append(f"{key}: {text}")
    lines = (["; ".join(fields)] if fields else []) + body
    return "\n".join(lines) or chunk.text


def heading(number: int, chunk: Chunk) -> str:
    return f"[{number}] {chunk.location}" + (f" {chunk.symbol}" if chunk.symbol else "")


def format_context(chunks: Sequence[Chunk], context_chars: int) -> str:
    """The context block of `chunks`, in rank order."""
    parts = [f"{heading(i, c)}\n{clip(prompt_text(c), context_chars)}" for i, c in enumerate(chunks, start=1)]
    return CONTEXT_HEADER + "\n" + "\n\n".join(parts)


def with_context(question: str, chunks: Sequence[Chunk], context_chars: int) -> str:
    """A user turn: the context block, then the question."""
    if not chunks:
        return question
    return f"{format_context(chunks, context_chars)}\n\n{QUESTION_HEADER} {question}"


def query_turn(messages: Sequence[dict], *, last: bool = True) -> Optional[int]:
    """Index of the user turn retrieval is for (the last one; the first with ``last=False``)
    when its content is text; None otherwise."""
    order = range(len(messages) - 1, -1, -1) if last else range(len(messages))
    for i in order:
        message = messages[i]
        if isinstance(message, dict) and message.get("role") == "user":
            return i if isinstance(message.get("content"), str) and message["content"].strip() else None
    return None


def augment(messages: Sequence[dict], chunks: Sequence[Chunk], context_chars: int, *, last: bool = True) -> list[dict]:
    """A copy of `messages` whose query turn carries the context."""
    out = copy.deepcopy(list(messages))
    at = query_turn(out, last=last)
    if at is not None and chunks:
        out[at]["content"] = with_context(out[at]["content"], chunks, context_chars)
    return out


def sources_line(chunks: Sequence[Chunk]) -> str:
    """``Sources: [1] file:lines (symbol); ...`` for a reply's end."""
    parts = [f"[{i}] {c.location}" + (f" ({c.symbol})" if c.symbol else "") for i, c in enumerate(chunks, start=1)]
    return "Sources: " + "; ".join(parts)
