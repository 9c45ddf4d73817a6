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


def clip(text: str, limit: int) -> str:
    """The first lines of `text` that fit in `limit` characters (at least part of the first)."""
    if len(text) <= limit:
        return text
    kept, size = [], 0
    for line in text.split("\n"):
        if size + len(line) + 1 > limit:
            break
        kept.append(line)
        size += len(line) + 1
    return "\n".join(kept).rstrip() if kept else text[:limit]


def heading(number: int, chunk: Chunk) -> str:
    return f"[{number}] {chunk.location}" + (f" {chunk.symbol}" if chunk.symbol else "")


def format_context(chunks: Sequence[Chunk], context_chars: int) -> str:
    """The context block of `chunks`, in rank order."""
    parts = [f"{heading(i, c)}\n{clip(c.text, context_chars)}" for i, c in enumerate(chunks, start=1)]
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
