"""Score every sample of a source for quality (0.0-1.0) and drop the bad ones (score:<source>)."""

from __future__ import annotations

import json
from typing import Iterator

from .. import log
from ..atomic import write_json
from ..errors import StageError
from ..manifest import Manifest
from ..paths import Layout
from ..uptodate import SliceChanged
from .common import action

NAME = "score"
SCORER_VERSION = 2


def _reads(manifest: Manifest) -> dict:
    """The manifest slice the score tasks read.

    With the model signal off (quality.model null or weights.ifd 0, the default) the slice is
    exactly what it was before that signal existed, so existing builds do not re-score.
    """
    from ..data import ifd

    quality = manifest.quality
    model = quality.model_signal
    weights = {k: v for k, v in quality.weights.items() if k != ifd.SIGNAL or model}
    reads = {"threshold": quality.threshold, "weights": weights, "scorer": SCORER_VERSION}
    if model:
        reads["model"] = {"name": model, "ifd": ifd.VERSION, "question_tokens":
                          ifd.MAX_QUESTION_TOKENS, "answer_tokens": ifd.MAX_ANSWER_TOKENS,
                          "mapping": [ifd.IFD_OK, ifd.IFD_BAD, ifd.IFD_COPY,
                                      ifd.MIN_ANSWER_TOKENS]}
    return reads


def tasks(manifest: Manifest) -> Iterator[dict]:

    layout = Layout.of(manifest)
    # How many processes score (quality.workers) changes no output: it is not in the slice.
    reads = _reads(manifest)
    model = manifest.quality.model_signal
    for source in manifest.sources:
        files, inputs = layout.score(source), layout.ingest(source)
        file_dep, task_dep = [str(inputs.samples)], [f"ingest:{source}"]
        if model:  # the GGUF's report holds its digest: a new GGUF re-scores
            file_dep.append(str(layout.baseline(model).report))
            task_dep.append(f"baseline:{model}")
        yield {
            "name": f"{NAME}:{source}",
            "doc": f"Score the samples of {source!r} for quality and reject the bad ones.",
            "actions": [(run, [manifest, source])],
            "file_dep": file_dep,
            "task_dep": task_dep,
            "targets": [str(files.samples), str(files.rejects), str(files.meta)],
            "uptodate": [SliceChanged("quality", reads)],
            "clean": True,
        }


def _model_losses(manifest: Manifest, source: str, task: str) -> tuple[dict, dict]:
    """The ifd signal's losses for every sample of the source (from the cache where known)."""
    from ..data import ifd

    layout = Layout.of(manifest)
    model = manifest.quality.model_signal
    files, inputs = layout.baseline(model), layout.ingest(source)
    gguf = files.gguf("F16")
    try:
        record = json.loads(files.report.read_text())["files"][gguf.name]
    except (OSError, ValueError, KeyError, TypeError):
        raise StageError(f"{files.report}: no record of {gguf.name}; rebuild it with "
                         f"`doit forget baseline:{model}` and `doit`") from None
    pairs = ifd.file_pairs(inputs.samples)
    with log.step(task, "model losses for the ifd signal", source=source, model=model,
                  samples=len(pairs)) as summary, \
            log.progress(f"{task}: model losses", len(pairs)) as advance:
        values, counts = ifd.compute_losses(pairs, gguf,
                                            layout.quality_cache(record["digest"]),
                                            progress=advance)
        summary.update(**counts)
    return values, {"model": model, "digest": record["digest"], **counts}


@action(NAME)
def run(manifest: Manifest, source: str) -> None:
    """Read the ingested samples, write the kept ones with their scores and the rejects."""
    from ..data.jsonl import JsonlError
    from ..data.quality import score_file, workers_for

    layout = Layout.of(manifest)
    files, inputs = layout.score(source), layout.ingest(source)
    task = f"{NAME}:{source}"
    quality = manifest.quality
    model_values, model_meta = None, None
    if quality.model_signal:
        model_values, model_meta = _model_losses(manifest, source, task)
    workers = workers_for(quality.workers, inputs.samples.stat().st_size)
    with log.step(task, "scoring samples", source=source, workers=workers) as summary, \
            log.progress(task) as advance:
        try:
            counts = score_file(inputs.samples, files.samples, files.rejects,
                                weights=dict(_reads(manifest)["weights"]),
                                threshold=quality.threshold, workers=workers, progress=advance,
                                model_values=model_values)
        except JsonlError as err:  # ingest wrote it: damaged since, by hand or a full disk
            raise StageError(f"{err}; ingest:{source} wrote this file: rebuild it with "
                             f"`doit forget ingest:{source}` and `doit`") from None
        summary.update(samples=counts["samples"], rejects=counts["rejects"])
    meta = {"source": source, **counts, "threshold": quality.threshold, "workers": workers}
    if model_meta:
        meta["model_signal"] = model_meta
    write_json(files.meta, meta)
