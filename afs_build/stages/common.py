"""What the data stages share: streaming records into a samples file and a rejects file."""

from __future__ import annotations

import json
from typing import Callable, Iterable, Optional

from .. import log
from ..atomic import atomic_path
from ..paths import StageFiles


def write_records(records: Iterable, files: StageFiles, task: str,
                  fix: Optional[Callable[[dict], dict]] = None) -> dict:
    """Stream samples and rejects into `files` atomically; return the counts by outcome and reason.

    `fix` may adjust each JSON object (a sample, or a reject's JSON) before it is written.
    """
    from ..data.records import Reject

    counts = {"samples": 0, "rejects": 0}
    reasons: dict[str, int] = {}
    with atomic_path(files.samples) as samples_tmp, atomic_path(files.rejects) as rejects_tmp, \
            open(samples_tmp, "w", encoding="utf-8") as samples, \
            open(rejects_tmp, "w", encoding="utf-8") as rejects, log.progress(task) as advance:
        for record in records:
            if isinstance(record, Reject):
                item, out = record.to_json(), rejects
                counts["rejects"] += 1
                key = record.reason.split(":")[0]
                reasons[key] = reasons.get(key, 0) + 1
            else:
                item, out = record, samples
                counts["samples"] += 1
            out.write(json.dumps(fix(item) if fix else item, ensure_ascii=False) + "\n")
            advance()
    return {**counts, "reject_reasons": reasons}


def read_samples(path) -> Iterable[dict]:
    """Stream the samples of a JSONL file written by a stage."""
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            yield json.loads(line)
