"""Score every sample of a source for quality (0.0-1.0) and drop the bad ones (score:<source>)."""

from __future__ import annotations

from typing import Iterator

from .. import log
from ..atomic import write_json
from ..manifest import Manifest
from ..paths import Layout
from ..uptodate import SliceChanged
from .common import action, read_samples, write_records

NAME = "score"
SCORER_VERSION = 1


def tasks(manifest: Manifest) -> Iterator[dict]:

    layout = Layout.of(manifest)
    for source in manifest.sources:
        files, inputs = layout.score(source), layout.ingest(source)
        yield {
            "name": f"{NAME}:{source}",
            "doc": f"Score the samples of {source!r} for quality and reject the bad ones.",
            "actions": [(run, [manifest, source])],
            "file_dep": [str(inputs.samples)],
            "task_dep": [f"ingest:{source}"],
            "targets": [str(files.samples), str(files.rejects), str(files.meta)],
            "uptodate": [SliceChanged("quality", {"quality": manifest.quality, "scorer": SCORER_VERSION})],
            "clean": True,
        }


@action(NAME)
def run(manifest: Manifest, source: str) -> None:
    """Read the ingested samples, write the kept ones with their scores and the rejects."""
    from ..data.quality import score_stream

    layout = Layout.of(manifest)
    files, inputs = layout.score(source), layout.ingest(source)
    task = f"{NAME}:{source}"
    with log.step(task, "scoring samples", source=source) as summary:
        stream = score_stream(read_samples(inputs.samples), weights=dict(manifest.quality.weights),
                              threshold=manifest.quality.threshold)
        counts = write_records(stream, files, task)
        summary.update(samples=counts["samples"], rejects=counts["rejects"])
    write_json(files.meta, {"source": source, **counts, "threshold": manifest.quality.threshold})
