"""What the data stages share: streaming records into a samples file and a rejects file."""

from __future__ import annotations

import functools
from typing import Callable, Iterable, Iterator, Optional

from .. import log
from ..paths import StageFiles


def user_errors(action: Callable) -> Callable:
    """Wrap a task action so that a user mistake fails the task with its message, no traceback."""

    @functools.wraps(action)
    def run(*args, **kwargs):
        from doit.exceptions import TaskFailed

        from ..errors import AfsError

        try:
            return action(*args, **kwargs)
        except AfsError as err:
            return TaskFailed(err.render())

    return run


def write_records(records: Iterable, files: StageFiles, task: str,
                  fix: Optional[Callable[[dict], dict]] = None) -> dict:
    """Stream samples and rejects into `files` atomically; return the counts by outcome and reason.

    `fix` may adjust each JSON object (a sample, or a reject's JSON) before it is written.
    """
    from ..data.jsonl import AtomicJsonlWriter
    from ..data.records import Reject

    reasons: dict[str, int] = {}
    with AtomicJsonlWriter(files.samples) as samples, AtomicJsonlWriter(files.rejects) as rejects, \
            log.progress(task) as advance:
        for record in records:
            if isinstance(record, Reject):
                key = record.reason.split(":")[0]
                reasons[key] = reasons.get(key, 0) + 1
                item, out = record.to_json(), rejects
            else:
                item, out = record, samples
            out.write(fix(item) if fix else item)
            advance()
    return {"samples": samples.count, "rejects": rejects.count, "reject_reasons": reasons}


def read_samples(path) -> Iterator[dict]:
    """Stream the samples of a JSONL file written by a stage."""
    from ..data.jsonl import read_jsonl

    return read_jsonl(path)
