"""The feedback loop: the last round's judged mistakes as training samples, and accepting them.

``judge:family`` writes ``build/reports/judge/feedback.jsonl``: one line per answer that reliable
judges agreed was wrong (``specialist``, ``question_id``, ``question``, ``bad_answer``,
``reference``, ``judges``). ``afs feedback`` merges that file into the file a ``feedback``
source names (a file of the project, not a build output: the build must not feed its own
inputs, or it would never be up to date), and the next build trains on it: each line becomes a
sample of the question answered with its reference; the bad answer stays in the sample's
metadata (for preference training later).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, Optional, Sequence

from ..data.records import RECORD, Filtered, Reject, make_sample

REQUIRED = ("question", "reference", "specialist")


def convert_feedback(path: Path, *, source: str, specialists: Sequence[str] = (),
                     system_prompt: Optional[str] = None, max_chars: int = 100_000) -> Iterator:
    """Samples from a feedback file: the question, answered with its reference."""
    from ..data.jsonl import JsonlError, read_jsonl_numbered

    try:
        lines = list(read_jsonl_numbered(path))
    except JsonlError as err:
        yield Reject(source, f"invalid JSON: {err}", file=str(path))
        return
    for number, row in lines:
        yield RECORD
        where = {"file": str(path), "line": number}
        if not isinstance(row, dict) or any(not isinstance(row.get(k), str) or not row.get(k).strip()
                                            for k in REQUIRED):
            yield Reject(source, f"missing field: a feedback line needs {', '.join(REQUIRED)} as text",
                         excerpt=json.dumps(row)[:300], **where)
            continue
        if specialists and row["specialist"] not in specialists:
            yield Filtered(f"specialist {row['specialist']} not in the source's specialists")
            continue
        if len(row["question"]) + len(row["reference"]) > max_chars:
            yield Reject(source, f"oversized: more than {max_chars} characters", **where)
            continue
        messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
            {"role": "user", "content": row["question"]}, {"role": "assistant", "content": row["reference"]}]
        yield make_sample(source, messages, provenance={"file": str(path), "line": number, "generator": "feedback"},
                          metadata={"feedback": {"specialist": row["specialist"],
                                                 "question_id": row.get("question_id"),
                                                 "bad_answer": row.get("bad_answer", ""),
                                                 "judges": row.get("judges", [])}})


def merge(latest: Path, target: Path) -> tuple[int, int]:
    """Merge the latest round's feedback into `target`, one line per (specialist, question):
    (lines added, lines in all). A mistake seen again replaces its older line."""
    from ..data.jsonl import read_jsonl, write_jsonl

    old = list(read_jsonl(target)) if target.exists() else []
    new = list(read_jsonl(latest))
    key = lambda r: (r.get("specialist"), r.get("question_id") or r.get("question"))  # noqa: E731
    merged = {key(r): r for r in old}
    added = sum(1 for r in new if key(r) not in merged)
    merged.update({key(r): r for r in new})
    write_jsonl(target, sorted(merged.values(), key=lambda r: (str(key(r)[0]), str(key(r)[1]))))
    return added, len(merged)
