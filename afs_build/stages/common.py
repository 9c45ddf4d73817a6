"""What the data stages share: streaming records into a samples file and a rejects file."""

from __future__ import annotations

import functools
from typing import Callable, Iterable, Iterator, Optional

from .. import log
from ..paths import StageFiles


def action(stage: str) -> Callable:
    """Decorate a task action ``run(manifest, name)``: the preamble every stage shares.

    It opens the build's JSON log, turns a user mistake (:class:`AfsError`) into a failed task
    with its message and no traceback, and anything else into "internal error in <task>" with
    the traceback in the log, never on the console.
    """

    def wrap(run: Callable) -> Callable:
        @functools.wraps(run)
        def task_action(manifest, name, *args, **kwargs):
            from doit.exceptions import TaskFailed

            from ..errors import AfsError
            from ..paths import Layout

            layout = Layout.of(manifest)
            log.setup(layout.log_file)
            task = f"{stage}:{name}"
            try:
                return run(manifest, name, *args, **kwargs)
            except AfsError as err:
                return TaskFailed(err.render())
            except KeyboardInterrupt:
                raise
            except Exception as err:  # a bug: say so, keep the traceback in the log
                log.internal_error(task, err)
                return TaskFailed(f"internal error in {task}: {type(err).__name__}: "
                                  f"{log.redact(str(err))[:300]}\nThis is a bug in afs; please "
                                  f"report it with the log: {layout.log_file}")

        return task_action

    return wrap


def task(name: str, doc: str, run: Callable, *args, file_dep=(), task_dep=(), targets=(),
         uptodate=(), clean: bool = True) -> dict:
    """One doit task dict: `run(*args)` as its action, paths as strings, lists throughout."""
    return {"name": name, "doc": doc, "actions": [(run, list(args))],
            "file_dep": [str(p) for p in file_dep], "task_dep": list(task_dep),
            "targets": [str(p) for p in targets], "uptodate": list(uptodate), "clean": clean}


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
