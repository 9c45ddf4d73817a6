"""Score every sample of a source for quality (0.0-1.0) and drop the bad ones (score:<source>)."""

from __future__ import annotations

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


def tasks(manifest: Manifest) -> Iterator[dict]:

    layout = Layout.of(manifest)
    # How many processes score (quality.workers) changes no output: it is not in the slice.
    reads = {"threshold": manifest.quality.threshold, "weights": manifest.quality.weights,
             "scorer": SCORER_VERSION}
    for source in manifest.sources:
        files, inputs = layout.score(source), layout.ingest(source)
        yield {
            "name": f"{NAME}:{source}",
            "doc": f"Score the samples of {source!r} for quality and reject the bad ones.",
            "actions": [(run, [manifest, source])],
            "file_dep": [str(inputs.samples)],
            "task_dep": [f"ingest:{source}"],
            "targets": [str(files.samples), str(files.rejects), str(files.meta)],
            "uptodate": [SliceChanged("quality", reads)],
            "clean": True,
        }


@action(NAME)
def run(manifest: Manifest, source: str) -> None:
    """Read the ingested samples, write the kept ones with their scores and the rejects."""
    from ..data.jsonl import JsonlError
    from ..data.quality import score_file, workers_for

    layout = Layout.of(manifest)
    files, inputs = layout.score(source), layout.ingest(source)
    task = f"{NAME}:{source}"
    quality = manifest.quality
    workers = workers_for(quality.workers, inputs.samples.stat().st_size)
    with log.step(task, "scoring samples", source=source, workers=workers) as summary, \
            log.progress(task) as advance:
        try:
            counts = score_file(inputs.samples, files.samples, files.rejects,
                                weights=dict(quality.weights), threshold=quality.threshold,
                                workers=workers, progress=advance)
        except JsonlError as err:  # ingest wrote it: damaged since, by hand or a full disk
            raise StageError(f"{err}; ingest:{source} wrote this file: rebuild it with "
                             f"`doit forget ingest:{source}` and `doit`") from None
        summary.update(samples=counts["samples"], rejects=counts["rejects"])
    write_json(files.meta, {"source": source, **counts, "threshold": quality.threshold,
                            "workers": workers})
