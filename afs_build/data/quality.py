"""Quality score of a sample from its signals, and the scorer the ``score`` stage runs.

The score is the weighted mean of the signals (:mod:`afs_build.data.signals`) that have a
positive weight (the others are not computed), rounded to 4 places, and is kept with every
signal in ``metadata["quality"]``. A sample scoring below the threshold becomes a Reject
naming its weakest signal.

A weighted mean forgives one bad signal: a refusal (boilerplate 0.0) among otherwise clean
signals still scores 0.875 with the default (equal) weights. Raise that signal's weight, or
the threshold, where one failure must be enough.

Model signals (``ifd``, :mod:`afs_build.data.ifd`) need a model's token losses: the score
stage computes them for the whole file first (cached by content) and passes them in
``model_values``; with their weight 0 (the default) nothing about them runs.

Secrets never get this far: the ``ingest`` stage's gate (:mod:`afs_build.data.secrets`)
rejects a sample carrying one before it is written.
"""

from __future__ import annotations

import difflib
import math
import os
from typing import Callable, Iterator, Mapping, Optional

from afs_build.data import ifd
from afs_build.data.jsonl import AtomicJsonlWriter, JsonlError, dumps_line, loads
from afs_build.data.records import Record, Reject
from afs_build.data.signals import DEFAULT_WEIGHTS, SIGNALS, Texts
from afs_build.data.texts import sample_texts
from afs_build.errors import StageError

DEFAULT_THRESHOLD = 0.5
# quality.workers: auto. A scoring process costs its start (imports: seconds on a busy machine)
# and the bytes sent to it; on the default family's data (under 2 MB a source) one process was
# 17 times as fast as two, and two only pay where CPUs are idle (measured on 2 shared cores:
# the README's data benchmark section).
AUTO_MIN_BYTES = 8 << 20
AUTO_MAX_WORKERS = 8
# Signals that need a model's losses (computed before scoring, by the score stage): their
# values come in `model_values`, by content key (afs_build.data.ifd).
MODEL_SIGNALS = (ifd.SIGNAL,)


class QualityError(StageError, ValueError):
    """Quality settings that cannot score (an unknown signal, a bad weight or threshold)."""


def _plan(weights: Mapping[str, float], threshold: float, model_values=None):
    known = [*SIGNALS, *MODEL_SIGNALS]
    for name in weights:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise QualityError(f"unknown quality signal {name!r}: expected one of: "
                               f"{known}{hint}")
        weight = weights[name]
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) \
                or not math.isfinite(weight) or weight < 0:
            raise QualityError(f"quality weight of {name!r} must be a number >= 0, "
                               f"got {weight!r}")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) \
            or not 0.0 <= threshold <= 1.0:
        raise QualityError(f"quality threshold must be a number in [0, 1], got {threshold!r}")
    plan = tuple((name, signal, float(weights[name]))
                 for name, signal in SIGNALS.items() if weights.get(name, 0) > 0)
    for name in MODEL_SIGNALS:
        if weights.get(name, 0) > 0:
            if model_values is None:
                raise QualityError(f"quality signal {name!r} needs a model's losses: set "
                                   f"quality.model, or give {name!r} the weight 0")
            plan += ((name, None, float(weights[name])),)
    if not plan:
        raise QualityError("quality weights are all zero: give at least one signal a weight > 0")
    return plan, sum(weight for _, _, weight in plan)


def _compare(score: float, threshold: float) -> str:
    digits = 2  # enough digits that a score just under the threshold does not print equal
    while f"{score:.{digits}f}" == f"{threshold:.{digits}f}" and digits < 6:
        digits += 1
    return f"{score:.{digits}f} < {threshold:.{digits}f}"


def _score(sample: dict, plan, total: float, threshold: float, model_values=None) -> Record:
    instruction, answer = sample_texts(sample)
    texts = Texts(instruction, answer)
    signals: dict[str, dict] = {}
    weighted = 0.0
    lowest = None
    for name, signal, weight in plan:
        if signal is None:
            value, reason, extra = _model_signal(model_values, instruction, answer)
        else:
            value, reason = signal(texts)
            extra = {}
        signals[name] = {"value": value if value == 1.0 else round(value, 4), "reason": reason,
                         **extra}
        weighted += weight * value
        if lowest is None or value < lowest[1]:
            lowest = (name, value, reason)
    score = round(weighted / total, 4)
    quality = {"score": score, "signals": signals}
    if score < threshold:
        name, value, reason = lowest
        provenance = sample.get("provenance") or {}
        return Reject(
            sample["source"],
            f"quality below threshold: {_compare(score, threshold)} "
            f"(lowest: {name} {value:.2f} '{reason}')",
            file=provenance.get("file") or provenance.get("path"), line=provenance.get("line"),
            excerpt=instruction, detail={"id": sample["id"], "quality": quality})
    return {**sample, "metadata": {**(sample.get("metadata") or {}), "quality": quality}}


def _model_signal(model_values, instruction: str, answer: str) -> tuple[float, str, dict]:
    """The ifd signal of one sample from its cached losses, with IFD and the losses beside it."""
    try:
        loss, alone, tokens = model_values[ifd.cache_key(instruction, answer)]
    except KeyError:
        raise QualityError("no model losses for a sample (computed from another file?): "
                           "compute them from the file being scored") from None
    value, reason, ratio = ifd.ifd_value(loss, alone, tokens)
    extra = {"ifd": None if ratio is None else round(ratio, 4), "loss": round(loss, 4),
             "loss_alone": round(alone, 4), "answer_tokens": tokens}
    return value, reason, extra


def score_sample(sample: dict, *, weights: Mapping[str, float] = DEFAULT_WEIGHTS,
                 threshold: float = DEFAULT_THRESHOLD, model_values=None) -> Record:
    """Score one sample: a copy with ``metadata["quality"]`` set, or a Reject.

    Raises QualityError (a ValueError) for an unknown signal name, a negative weight or a
    threshold outside [0, 1], or a model signal with a weight but no `model_values` (losses by
    :func:`afs_build.data.ifd.cache_key`). Files are scored with :func:`score_file`.
    """
    plan, total = _plan(weights, threshold, model_values)
    return _score(sample, plan, total, threshold, model_values)


def workers_for(setting, size: int) -> int:
    """How many scoring processes to start for an input of `size` bytes (``quality.workers``).

    ``auto`` is one process below :data:`AUTO_MIN_BYTES`, else one per idle CPU this process may
    use (at most :data:`AUTO_MAX_WORKERS`): the load average, less the build's own process,
    says how many are busy, since on CPUs other jobs hold a second worker only adds its cost.
    A process that is itself a daemon cannot start any.
    """
    import multiprocessing

    if multiprocessing.current_process().daemon:
        return 1
    if setting != "auto":
        return max(1, int(setting))
    if size < AUTO_MIN_BYTES:
        return 1
    from ..cores import usable

    cpus = usable()
    try:
        busy = max(0.0, os.getloadavg()[0] - 1.0)
    except (AttributeError, OSError):  # no load average on this system
        busy = 0.0
    return max(1, min(cpus or 1, AUTO_MAX_WORKERS, int((cpus or 1) - busy + 0.5)))


def score_file(source, samples_path, rejects_path, *,
               weights: Mapping[str, float] = DEFAULT_WEIGHTS,
               threshold: float = DEFAULT_THRESHOLD, workers: int = 1,
               progress: Optional[Callable[[int], None]] = None, model_values=None) -> dict:
    """Score a JSONL file of samples into a samples file and a rejects file, in input order.

    This is the scorer of the ``score`` stage. Both outputs are written atomically. With
    ``workers`` > 1, chunks of raw lines go to that many processes, which parse, score and
    serialize them: the parent only moves bytes, so two workers come close to twice the
    speed (parsing Python answers with ``ast`` is most of the work). `progress` is called
    with the number of lines of each chunk done. Returns the counts: ``{"samples": kept,
    "rejects": rejected, "reject_reasons": {reason: count}}``. A line that is not JSON raises
    :class:`~afs_build.data.jsonl.JsonlError` naming ``file:line``. `model_values` holds
    the model signals' losses by content key (:func:`afs_build.data.ifd.compute_losses`).
    """
    _plan(weights, threshold, model_values)  # fail before reading or starting anything
    chunks = _line_chunks(os.fspath(source))
    setup = (dict(weights), threshold, model_values)
    reasons: dict[str, int] = {}
    with AtomicJsonlWriter(samples_path) as kept, AtomicJsonlWriter(rejects_path) as rejected:
        if workers > 1:
            import multiprocessing

            # spawn, not fork: the caller may hold threads or locks a child would inherit
            context = multiprocessing.get_context("spawn")
            with context.Pool(workers, initializer=_start_worker, initargs=setup) as pool:
                results = pool.imap(_score_lines, chunks)
                _collect(results, kept, rejected, reasons, progress)
        else:
            state = (*_plan(*setup), threshold, model_values)
            _collect((_score_lines(chunk, state) for chunk in chunks), kept, rejected, reasons,
                     progress)
    return {"samples": kept.count, "rejects": rejected.count, "reject_reasons": reasons}


def _collect(results, kept: AtomicJsonlWriter, rejected: AtomicJsonlWriter,
             reasons: dict[str, int], progress) -> None:
    for good, bad, why, lines in results:
        kept.write_lines(*good)
        rejected.write_lines(*bad)
        for reason, count in why.items():
            reasons[reason] = reasons.get(reason, 0) + count
        if progress is not None:
            progress(lines)


_CHUNK_LINES = 256
_worker: tuple = ()


def _line_chunks(path: str) -> Iterator[tuple[str, int, list[bytes]]]:
    with open(path, "rb", buffering=1 << 20) as handle:
        start, lines = 1, []
        for number, raw in enumerate(handle, start=1):
            if not lines:
                start = number
            lines.append(raw)
            if len(lines) == _CHUNK_LINES:
                yield path, start, lines
                lines = []
        if lines:
            yield path, start, lines


def _start_worker(weights: dict, threshold: float, model_values=None) -> None:
    global _worker  # one scoring plan per process, made once when it starts
    _worker = (*_plan(weights, threshold, model_values), threshold, model_values)


def _score_lines(chunk: tuple[str, int, list[bytes]], state: tuple = ()):
    """Score raw JSONL lines: (sample lines, count), (reject lines, count), reasons, lines."""
    path, start, lines = chunk
    plan, total, threshold, model_values = state or _worker
    good: list[bytes] = []
    bad: list[bytes] = []
    reasons: dict[str, int] = {}
    for number, raw in enumerate(lines, start=start):
        if raw.isspace():
            continue
        try:
            sample = loads(raw)
        except ValueError as exc:
            raise JsonlError(f"{path}:{number}: invalid JSON: {exc}") from exc
        record = _score(sample, plan, total, threshold, model_values)
        if isinstance(record, Reject):
            bad.append(dumps_line(record.to_json()))
            key = record.reason.split(":")[0]
            reasons[key] = reasons.get(key, 0) + 1
        else:
            good.append(dumps_line(record))
    return (b"".join(good), len(good)), (b"".join(bad), len(bad)), reasons, len(lines)
