"""Canonical training samples and rejects: the one record shape every data stage speaks.

A sample is a plain dict (JSON-ready, see ``specs/sample.schema.json``)::

    {"id": "c0ffee...", "source": "snes-facts",
     "messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}],
     "tools": [...],                      # optional tool definitions
     "provenance": {"file": "data/x.jsonl", "line": 12},
     "metadata": {...}}

A :class:`Reject` records input that could not become a sample, with where it came from and
why, and a :class:`Filtered` one that a setting leaves out, so that nothing is lost silently.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Union

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


@dataclass(frozen=True)
class Filtered:
    """An input record a converter left out because a setting asks it to (not an error).

    Converters yield one per record so that every record read is accounted for: the stage
    counts them by reason and writes them nowhere.
    """

    reason: str


class Marker:
    """A boundary in a converter's stream: which input record the outputs that follow are of."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


# Converters yield RECORD before the outcomes (samples, rejects, or one Filtered) of each input
# record they read, and DERIVED before samples made from records already counted (the
# codebase's "Which file defines X?"). Outputs with no marker count as a record each.
RECORD = Marker("RECORD")
DERIVED = Marker("DERIVED")
MAX_REASONS = 50  # distinct filter reasons kept by name; the rest count as "other"


class Tally:
    """Input records read, kept (at least one sample), rejected (rejects only) and filtered.

    ``read == kept + rejected + filtered`` always holds. A record that gave nothing at all
    counts as filtered, reason "no output", so no record goes missing.
    """

    _EMPTY, _REJECTED, _KEPT = "empty", "rejected", "kept"

    def __init__(self) -> None:
        self.read = self.kept = self.rejected = self.filtered = 0
        self.reasons: dict[str, int] = {}
        self._open: str | None = None  # the state of the record being read, or DERIVED

    def count(self, stream: Iterable) -> Iterator[Record]:
        """Pass the samples and rejects of `stream` through, counting its records."""
        for item in stream:
            if item is RECORD or item is DERIVED:
                self._close()
                self._open = self._EMPTY if item is RECORD else "derived"
                continue
            if isinstance(item, Filtered):  # the outcome of the record just opened, or its own
                if self._open == self._EMPTY:
                    self._open = None
                self._close()
                self._filter(item.reason)
                continue
            sample = not isinstance(item, Reject)
            if self._open is None:  # an output with no marker is a record of its own
                self.read += 1
                if sample:
                    self.kept += 1
                else:
                    self.rejected += 1
            elif self._open != "derived" and (sample or self._open == self._EMPTY):
                self._open = self._KEPT if sample else self._REJECTED
            yield item
        self._close()

    def _filter(self, reason: str) -> None:
        self.read += 1
        self.filtered += 1
        if reason not in self.reasons and len(self.reasons) >= MAX_REASONS:
            reason = "other"
        self.reasons[reason] = self.reasons.get(reason, 0) + 1

    def _close(self) -> None:
        state, self._open = self._open, None
        if state == self._KEPT:
            self.read += 1
            self.kept += 1
        elif state == self._REJECTED:
            self.read += 1
            self.rejected += 1
        elif state == self._EMPTY:
            self._filter("no output")

    def summary(self) -> dict[str, int]:
        return {"read": self.read, "kept": self.kept, "rejected": self.rejected,
                "filtered": self.filtered}


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
    """Separate samples from rejects, dropping markers (for tests and small inputs)."""
    samples: list[dict] = []
    rejects: list[Reject] = []
    for record in records:
        if isinstance(record, Reject):
            rejects.append(record)
        elif isinstance(record, dict):
            samples.append(record)
    return samples, rejects
