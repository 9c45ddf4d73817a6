"""Build an index (``index:<name>``): list, read, chunk, embed what is new, write.

Only chunks whose text the embedding cache has not seen are embedded (the model is not even
loaded when there are none), so editing one function re-embeds that function's chunk. The
chunk table, the FTS5 index and the HNSW graph are rewritten whole: at 100k chunks that takes
seconds, where embedding them takes an hour on two cores. The sidecar ``index.json`` records
the settings' digest, the model and every input file's size, time and content digest, so a
query can tell that the index no longer matches the sources (:mod:`.search`).
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Optional

from .. import log
from ..atomic import write_json
from ..manifest import Manifest, RetrievalIndex, plain
from ..paths import Layout
from ..uptodate import file_digest, slice_digest
from .chunking import Chunk, chunk_file
from .files import Skip, list_inputs, read_text

# Bump when chunking or the stored layout changes for the same input: every index rebuilds.
FORMAT_VERSION = 1


def build_slice(manifest: Manifest, name: str) -> dict:
    """What the built index depends on in the manifest (search-time settings left out)."""
    index = manifest.retrieval.indexes[name]
    sources = {s: plain(manifest.sources[s].settings) | {"kind": manifest.sources[s].kind}
               for s in index.sources if s in manifest.sources}
    s = index.search
    return {"format": FORMAT_VERSION, "sources": sources, "paths": list(index.paths),
            "include": list(index.include), "exclude": list(index.exclude),
            "respect_gitignore": index.respect_gitignore, "max_file_kb": index.max_file_kb,
            "chunking": plain(index.chunking), "embedding": plain(index.embedding),
            "hnsw": {"connectivity": s.connectivity, "expansion_add": s.expansion_add}}


def collect(manifest: Manifest, index: RetrievalIndex) -> tuple[list[Chunk], list[Skip], dict]:
    """Every chunk of the index's files, the files skipped, and each input's [size, mtime, digest]."""
    files, skips = list_inputs(manifest, index)
    chunks: list[Chunk] = []
    inputs: dict[str, list] = {}
    limit = index.max_file_kb * 1024
    for item in files:
        text, why = read_text(item, limit)
        if item.path.is_file():
            stat = item.path.stat()
            inputs[str(item.path.absolute())] = [stat.st_size, stat.st_mtime_ns, file_digest(item.path)]
        if why is not None:
            skips.append(Skip(item.source, item.rel, why))
            continue
        chunks.extend(chunk_file(item.source, item.rel, text, index.chunking, facts=item.facts))
    return chunks, skips, inputs


def embed_chunks(manifest: Manifest, index: RetrievalIndex, chunks: list[Chunk], task: str):
    """(vectors, model identity, counts): cached embeddings, and the new ones computed."""
    import numpy as np

    from .embedding import EmbeddingCache, load_embedder, model_identity

    settings = index.embedding
    identity = model_identity(manifest, settings)
    cache = EmbeddingCache(Layout.of(manifest).embedding_cache(identity["digest"]))
    try:
        keys = [cache.key(settings, c.embed_text) for c in chunks]
        unique = list(dict.fromkeys(keys))
        found = cache.get(unique)
        missing = [k for k in unique if k not in found]
        dims: Optional[int] = len(next(iter(found.values()))) if found else None
        if missing or dims is None:
            embedder = load_embedder(manifest, settings)
            dims = embedder.dims
            if missing:
                text_of = {k: c.embed_text for k, c in zip(keys, chunks)}
                with log.step(task, f"embedding {len(missing)} new chunks", index=index.name) as extra:
                    started = time.perf_counter()
                    vectors = embedder.embed([settings.document_prefix + text_of[k] for k in missing],
                                             settings.batch_size)
                    cache.put(missing, vectors)
                    found.update(zip(missing, vectors))
                    seconds = time.perf_counter() - started
                    extra.update(chunks_per_second=round(len(missing) / seconds, 1))
        matrix = np.stack([found[k] for k in keys]) if keys else np.zeros((0, dims), dtype=np.float32)
    finally:
        cache.close()
    return matrix, {**identity, "dims": dims}, {"embedded": len(missing), "reused": len(unique) - len(missing)}


def build(manifest: Manifest, name: str, task: str) -> dict:
    """Build index `name`; return its report (also written as the sidecar)."""
    from ..data.jsonl import write_jsonl
    from .store import write_chunks, write_vectors

    index = manifest.retrieval.indexes[name]
    files = Layout.of(manifest).index(name)
    started = time.perf_counter()
    with log.step(task, "reading and chunking", index=name) as extra:
        chunks, skips, inputs = collect(manifest, index)
        extra.update(chunks=len(chunks), skipped=len(skips))
    vectors, model, counts = embed_chunks(manifest, index, chunks, task)
    with log.step(task, "writing the index", index=name):
        write_chunks(files.chunks, chunks)
        write_vectors(files.vectors, vectors, index.search)
    reasons: dict[str, int] = {}
    for skip in skips:
        key = skip.reason.split(":")[0]
        reasons[key] = reasons.get(key, 0) + 1
    write_jsonl(files.skipped, [s.to_json() for s in skips])
    report = {"index": name, "chunks": len(chunks), "files": len({(c.source, c.file) for c in chunks}),
              "skipped": len(skips), "skip_reasons": dict(sorted(reasons.items())), **counts,
              "model": model, "settings": slice_digest(build_slice(manifest, name)),
              "seconds": round(time.perf_counter() - started, 3),
              "built": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "inputs": inputs}
    write_json(files.report, report)
    return report
