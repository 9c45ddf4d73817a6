"""Search an index: lexical (BM25), dense (HNSW) or both fused, refusing a missing or stale one.

An index is stale when the manifest's settings for it, its embedding model or any of its
input files differ from what it was built from (files are compared by size and time first,
and by content only when those moved, as the build's up-to-date check does). The error names
the task that rebuilds it. A long-running reader (a server) checks again at most every
``CHECK_SECONDS`` and reopens the index when ``index:<name>`` has rewritten it.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..errors import StageError
from ..manifest import Manifest
from ..paths import Layout
from ..uptodate import file_digest, slice_digest
from .chunking import Chunk
from .fusion import rrf

CHECK_SECONDS = 2.0
MODES = ("hybrid", "lexical", "dense")


class RetrievalError(StageError):
    """A query that cannot be answered: the index is missing or stale (`code` says which)."""

    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Hit:
    """A chunk found for a query: its fused score and its rank and score in each ranking."""

    id: int
    chunk: Chunk
    score: float
    lexical: Optional[tuple[int, float]]
    dense: Optional[tuple[int, float]]

    def to_json(self) -> dict:
        c = self.chunk
        return {"id": self.id, "source": c.source, "file": c.file, "start_line": c.start,
                "end_line": c.end, "symbol": c.symbol, "kind": c.kind, "language": c.language,
                "score": round(self.score, 6), "text": c.text,
                "lexical": None if self.lexical is None else {"rank": self.lexical[0], "score": round(self.lexical[1], 4)},
                "dense": None if self.dense is None else {"rank": self.dense[0], "score": round(self.dense[1], 4)}}


def rebuild_hint(name: str) -> str:
    return f"rebuild it with: doit index:{name} (or afs build -- index:{name})"


class Retriever:
    """Queries on one built index of a manifest (thread-safe; the embedder loads on first use)."""

    def __init__(self, manifest: Manifest, name: str, *, check_inputs: bool = True, embedder=None):
        if name not in manifest.retrieval.indexes:
            raise StageError(f"{manifest.file}: no index {name!r} in retrieval.indexes")
        self.manifest, self.name = manifest, name
        self.index = manifest.retrieval.indexes[name]
        self.files = Layout.of(manifest).index(name)
        self.check_inputs = check_inputs
        self._embedder = embedder
        self._lock = threading.RLock()
        self._reader = None
        self._report_stamp = None
        self._checked = 0.0
        self.refresh(force=True)

    # --- freshness -----------------------------------------------------------------------

    def refresh(self, force: bool = False) -> None:
        """Reopen the index if it was rebuilt and check it is not stale (at most every few seconds)."""
        with self._lock:
            now = time.monotonic()
            if not force and now - self._checked < CHECK_SECONDS:
                return
            try:
                stat = self.files.report.stat()
            except FileNotFoundError:
                raise RetrievalError(f"index {self.name!r} has not been built ({self.files.report} "
                                     f"is missing); {rebuild_hint(self.name).replace('rebuild', 'build')}",
                                     "index_missing") from None
            stamp = (stat.st_size, stat.st_mtime_ns)
            if stamp != self._report_stamp:
                self._open()
                self._report_stamp = stamp
            self._check()
            self._checked = now

    def _open(self) -> None:
        from .build import build_slice
        from .embedding import model_identity
        from .store import IndexReader

        report = json.loads(self.files.report.read_text(encoding="utf-8"))
        if report.get("settings") != slice_digest(build_slice(self.manifest, self.name)):
            raise RetrievalError(f"index {self.name!r} is stale: it was built with other settings than "
                                 f"retrieval.indexes.{self.name} (or its sources) in {self.manifest.file.name} "
                                 f"now; {rebuild_hint(self.name)}", "index_stale")
        identity = model_identity(self.manifest, self.index.embedding)
        if report["model"]["digest"] != identity["digest"]:
            raise RetrievalError(f"index {self.name!r} is stale: it was embedded with another model "
                                 f"({report['model']['name']}); {rebuild_hint(self.name)}", "index_stale")
        try:
            reader = IndexReader(self.files, report["model"]["dims"], self.index.search.expansion_search)
        except (OSError, ValueError, RuntimeError) as err:
            raise RetrievalError(f"index {self.name!r} cannot be read ({err}); {rebuild_hint(self.name)}",
                                 "index_missing") from None
        if self._reader is not None:
            self._reader.close()
        self._reader, self.report = reader, report

    def _check(self) -> None:
        if not self.check_inputs:
            return
        from .files import list_inputs

        recorded = self.report.get("inputs", {})
        listed, _ = list_inputs(self.manifest, self.index)
        now = {str(f.path.absolute()) for f in listed if f.path.is_file()}
        changed = sorted(now - set(recorded)) + sorted(set(recorded) - now)
        for path in sorted(now & set(recorded)):
            size, mtime, digest = recorded[path]
            stat = Path(path).stat()
            if (stat.st_size, stat.st_mtime_ns) != (size, mtime) and file_digest(Path(path)) != digest:
                changed.append(path)
        if changed:
            changed.sort()
            shown = _relative(self.manifest.root, changed[0])
            more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
            raise RetrievalError(f"index {self.name!r} is stale: {shown}{more} changed since it was "
                                 f"built; {rebuild_hint(self.name)}", "index_stale")

    # --- queries -------------------------------------------------------------------------

    @property
    def embedder(self):
        with self._lock:
            if self._embedder is None:
                from .embedding import load_embedder

                self._embedder = load_embedder(self.manifest, self.index.embedding)
            return self._embedder

    def embed_queries(self, texts: list[str]):
        prefix = self.index.embedding.query_prefix
        return self.embedder.embed([prefix + t for t in texts], self.index.embedding.batch_size)

    def rankings(self, query: str, candidates: Optional[int] = None, modes=MODES) -> dict:
        """{"lexical": [(id, score)], "dense": [(id, score)]} for the rankings `modes` need."""
        k = candidates or self.index.search.candidates
        self.refresh()
        out = {"lexical": [], "dense": []}
        with self._lock:
            if {"hybrid", "lexical"} & set(modes):
                out["lexical"] = self._reader.lexical(query, k)
            if {"hybrid", "dense"} & set(modes):
                out["dense"] = self._reader.dense(self.embed_queries([query])[0], k)
        return out

    def fuse(self, ranked: dict, mode: str, top_k: int, min_similarity: Optional[float] = None) -> list[Hit]:
        """The top `top_k` hits of one mode from :meth:`rankings`' output; with `min_similarity`,
        only chunks whose embedding is at least that similar to the query's (cosine), so an
        off-subject question gets none. Lexical search has no similarity and keeps every hit."""
        s = self.index.search
        lexical = {i: (r, v) for r, (i, v) in enumerate(ranked["lexical"], start=1)}
        dense = {i: (r, v) for r, (i, v) in enumerate(ranked["dense"], start=1)}
        if mode == "lexical":
            order = [(i, v) for i, v in ranked["lexical"]]
        elif mode == "dense":
            order = [(i, v) for i, v in ranked["dense"]]
        else:
            order = rrf([[i for i, _ in ranked["lexical"]], [i for i, _ in ranked["dense"]]],
                        k=s.rrf_k, weights=[s.lexical_weight, s.dense_weight])
        if min_similarity is not None and mode != "lexical":
            order = [(i, v) for i, v in order if i in dense and dense[i][1] >= min_similarity]
        order = order[:top_k]
        with self._lock:
            chunks = self._reader.chunks(i for i, _ in order)
        return [Hit(i, chunks[i], v, lexical.get(i), dense.get(i)) for i, v in order if i in chunks]

    def search(self, query: str, top_k: int = 5, mode: Optional[str] = None,
               min_similarity: Optional[float] = None) -> list[Hit]:
        """The best `top_k` chunks for `query` (mode: the index's own unless given; see
        :meth:`fuse` for `min_similarity`)."""
        mode = mode or self.index.search.mode
        if mode not in MODES:
            raise StageError(f"unknown search mode {mode!r}; expected one of: {', '.join(MODES)}")
        return self.fuse(self.rankings(query, max(top_k, self.index.search.candidates), (mode,)), mode, top_k,
                         min_similarity)

    def serve(self, messages: list, settings, top_k: Optional[int] = None) -> tuple[list, list[Hit]]:
        """(`messages` as a retrieving server sends them on to the model, the hits): its last
        user turn searched with the specialist's retrieval `settings` (top_k, min_similarity)
        and the chunks put in front of it (context_chars); unchanged when nothing is found.
        The one path of the servers (``RetrievalApp``) and of the quantized files' questions."""
        from .context import augment, query_turn

        at = query_turn(messages)
        hits = [] if at is None else self.search(messages[at]["content"], top_k or settings.top_k, None,
                                                 settings.min_similarity)
        return (augment(messages, [h.chunk for h in hits], settings.context_chars) if hits else messages), hits

    def search_many(self, queries: list[str], top_k: int, mode: Optional[str] = None,
                    min_similarity: Optional[float] = None) -> list[list[Hit]]:
        """:meth:`search` for many queries, their embeddings computed in batches."""
        mode = mode or self.index.search.mode
        k = max(top_k, self.index.search.candidates)
        self.refresh()
        vectors = self.embed_queries(queries) if mode != "lexical" and queries else [None] * len(queries)
        out = []
        for query, vector in zip(queries, vectors):
            with self._lock:
                ranked = {"lexical": self._reader.lexical(query, k) if mode != "dense" else [],
                          "dense": self._reader.dense(vector, k) if mode != "lexical" else []}
            out.append(self.fuse(ranked, mode, top_k, min_similarity))
        return out

    def close(self) -> None:
        with self._lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None


def _relative(root: Path, path: str) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return path
