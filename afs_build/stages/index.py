"""Build each retrieval index: chunks with provenance, BM25 and embeddings (index:<name>).

Planning stats files only: the index's inputs are an up-to-date check (sizes and times, and
content digests only of files whose size or time moved), its settings a manifest slice, and
its embedding model a digest of the model's small files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from ..manifest import Manifest
from ..paths import Layout
from ..uptodate import DigestChanged, SliceChanged, TreeChanged, code_files
from .common import action, task

NAME = "index"
CODE = ("stages/index.py", "retrieval/build.py", "retrieval/chunking.py", "retrieval/files.py",
        "retrieval/store.py", "retrieval/embedding.py")


class _ModelDigest:
    """A picklable digest of an index's embedding model (for DigestChanged)."""

    def __init__(self, manifest: Manifest, name: str):
        self.manifest, self.name = manifest, name

    def __call__(self) -> str:
        from ..errors import AfsError
        from ..retrieval.embedding import model_identity

        try:
            return model_identity(self.manifest, self.manifest.retrieval.indexes[self.name].embedding)["digest"]
        except AfsError as err:  # the task itself reports it; planning must not fail on it
            return f"unavailable: {err}"


def tasks(manifest: Manifest) -> Iterator[dict]:
    from ..retrieval.build import build_slice
    from ..retrieval.files import InputLister

    layout = Layout.of(manifest)
    for name, index in manifest.retrieval.indexes.items():
        files = layout.index(name)
        what = ", ".join(list(index.sources) + list(index.paths)) or "nothing"
        yield task(f"{NAME}:{name}", f"Index {what} for retrieval ({name}).", run, manifest, name,
                   file_dep=code_files(*CODE),
                   targets=[files.report, files.chunks, files.vectors, files.skipped],
                   uptodate=[SliceChanged(f"retrieval.indexes.{name}", build_slice(manifest, name)),
                             TreeChanged(f"index {name} inputs", InputLister(manifest, name), Path("/")),
                             DigestChanged(f"index {name} embedding model", _ModelDigest(manifest, name))])


@action(NAME)
def run(manifest: Manifest, name: str) -> None:
    from .. import log
    from ..retrieval.build import build

    task_name = f"{NAME}:{name}"
    report = build(manifest, name, task_name)
    reasons = ", ".join(f"{count} {reason}" for reason, count in report["skip_reasons"].items())
    log.event(f"index {name}: {report['chunks']} chunks from {report['files']} files "
              f"({report['embedded']} embedded, {report['reused']} from the cache)"
              + (f"; skipped {report['skipped']}: {reasons}" if report["skipped"] else ""),
              task=task_name, index=name)
