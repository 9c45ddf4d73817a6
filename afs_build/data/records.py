"""Canonical training samples and rejects: the one record shape every data stage speaks.

A sample is a plain dict (JSON-ready, see ``specs/sample.schema.json``)::

    {"id": "c0ffee...", "source": "snes-facts",
     "messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}],
     "tools": [...],                      # optional tool definitions
     "provenance": {"file": "data/x.jsonl", "line": 12},
     "metadata": {...}}

A :class:`Reject` records input that could not become a sample, with where it came from and
why, so that nothing is lost silently.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Union

ROLES = ("system", "user", "assistant", "tool")

# The excerpt of a rejected record kept in rejects.jsonl: enough to find and fix it.
EXCERPT_CHARS = 300


@dataclass(frozen=True)
class Reject:
    """Input that could not become a sample: where it was and why."""

    source: str
    reason: str
    file: str | None = None
    line: int | None = None
    excerpt: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source, "reason": self.reason}
        if self.file is not None:
            out["file"] = self.file
        if self.line is not None:
            out["line"] = self.line
        if self.excerpt:
            out["excerpt"] = self.excerpt[:EXCERPT_CHARS]
        if self.detail:
            out["detail"] = self.detail
        return out


Record = Union[dict, Reject]


def canonical_json(value: Any) -> str:
    """Compact JSON with sorted keys: the form that ids and digests are computed on."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def sample_id(source: str, messages: list[dict], tools: list[dict] | None = None) -> str:
    """A stable id from the content: the same conversation always gets the same id."""
    digest = hashlib.sha256()
    digest.update(source.encode())
    digest.update(b"\0")
    digest.update(canonical_json(messages).encode())
    if tools:
        digest.update(b"\0")
        digest.update(canonical_json(tools).encode())
    return digest.hexdigest()[:20]


def make_sample(
    source: str,
    messages: list[dict],
    *,
    provenance: dict[str, Any],
    tools: list[dict] | None = None,
    metadata: dict[str, Any] | None = None,
) -> dict:
    """Build a canonical sample; raises ValueError on a message with an unknown role."""
    for message in messages:
        if message.get("role") not in ROLES:
            raise ValueError(f"unknown role {message.get('role')!r}; expected one of {ROLES}")
    sample: dict[str, Any] = {
        "id": sample_id(source, messages, tools),
        "source": source,
        "messages": messages,
        "provenance": provenance,
        "metadata": dict(metadata or {}),
    }
    if tools:
        sample["tools"] = tools
    return sample


def split_records(records: Iterable[Record]) -> tuple[list[dict], list[Reject]]:
    """Separate samples from rejects (for tests and small inputs; stages stream instead)."""
    samples: list[dict] = []
    rejects: list[Reject] = []
    for record in records:
        (rejects if isinstance(record, Reject) else samples).append(record)
    return samples, rejects
