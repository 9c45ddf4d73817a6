"""An index on disk: chunks and BM25 in SQLite, embeddings in a usearch HNSW file.

``chunks.sqlite`` holds one row per chunk (its provenance and text) and an FTS5 table over the
file path, the symbol and the text (external content, so the text is stored once); BM25 weighs
a match in the symbol 5 times and in the path 3 times one in the text, because code questions
name symbols and files. ``vectors.usearch`` is an HNSW graph (cosine, f16 storage) keyed by
chunk id; searching memory-maps it (``view=True``), so opening an index costs no read of its
vectors. Every file is written under a temporary name and renamed into place: a server that
has the old files open keeps reading them until it reopens.

The same chunks give the same answers, build after build. An HNSW graph built on several
threads depends on their timing, and the approximate search then finds other neighbours: two
builds of the default ``facts`` index from identical vectors answered 5 of its 326 chunks (and
6 of 500 random questions) with other top-5 chunks, so two builds trained on different
contexts. So the graph is built on one thread (a fixed graph), and an index of at most
``EXACT_UP_TO`` vectors is searched exactly (brute force: every similarity is the true one,
which ``min_similarity`` compares against, at well under a millisecond for a few thousand).
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Iterable, Sequence

from ..atomic import atomic_path
from ..manifest import Search
from ..paths import IndexFiles
from .chunking import Chunk

# Column weights of bm25(): file path, symbol, text.
BM25_WEIGHTS = (3.0, 5.0, 1.0)
VECTOR_DTYPE = "f16"
# Indexes up to this many vectors are searched exactly, not through the HNSW graph.
EXACT_UP_TO = 50_000
STOPWORDS = frozenset("""a an and are as at be by can do does file files find for from has have how i
in is it its me module of on or point show that the this to under use used uses what when where
which who why with written you defined defines define implemented lives live code""".split())
_WORD = re.compile(r"[A-Za-z0-9]+")


def usearch_index():
    """usearch's ``Index`` class, imported so that llama.cpp still loads models afterwards.

    usearch's wheel links libstdc++ statically, and libstdc++'s locale facet ids are GNU-unique
    symbols: imported first, its copies win, and llama.cpp (on the shared libstdc++) then fails
    to load any model ("error loading model vocabulary: std::bad_cast"; measured with usearch
    2.26.6 and llama-cpp-python 0.3.36). Loading the shared libstdc++ first makes both use its
    ids. Where there is none (macOS builds use libc++), there is nothing to do.
    """
    import ctypes
    import ctypes.util

    for name in ("libstdc++.so.6", ctypes.util.find_library("stdc++")):
        if name:
            try:
                ctypes.CDLL(name, mode=ctypes.RTLD_GLOBAL)
                break
            except OSError:
                continue
    from usearch.index import Index

    return Index


def write_chunks(target: Path, chunks: Sequence[Chunk]) -> None:
    """Write the chunk table and its FTS5 index (ids 1..n in order), atomically."""
    with atomic_path(target) as temp:
        db = sqlite3.connect(str(temp))
        with db:
            db.execute("CREATE TABLE chunks (id INTEGER PRIMARY KEY, source TEXT, file TEXT, "
                       "start_line INTEGER, end_line INTEGER, symbol TEXT, kind TEXT, language TEXT, "
                       "text TEXT, digest TEXT)")
            db.executemany("INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           [(i, c.source, c.file, c.start, c.end, c.symbol, c.kind, c.language, c.text,
                             c.digest) for i, c in enumerate(chunks, start=1)])
            db.execute("CREATE VIRTUAL TABLE fts USING fts5(file, symbol, text, content='chunks', "
                       "content_rowid='id')")
            db.execute("INSERT INTO fts(fts) VALUES ('rebuild')")
        db.close()


def write_vectors(target: Path, vectors, search: Search) -> None:
    """Build the HNSW index of `vectors` (row i is chunk i + 1) and save it atomically."""
    import numpy as np

    Index = usearch_index()
    index = Index(ndim=int(vectors.shape[1]), metric="cos", dtype=VECTOR_DTYPE,
                  connectivity=search.connectivity, expansion_add=search.expansion_add,
                  expansion_search=search.expansion_search)
    if len(vectors):
        # one thread: the graph, and so every approximate search, is the same in every build
        index.add(np.arange(1, len(vectors) + 1, dtype=np.uint64), np.asarray(vectors, dtype=np.float32),
                  threads=1)
    with atomic_path(target) as temp:
        index.save(str(temp))


def fts_query(text: str) -> str:
    """An FTS5 query matching any of the question's words (stop words left out), each quoted."""
    words = [w.lower() for w in _WORD.findall(text.replace("_", " "))]
    kept = list(dict.fromkeys(w for w in words if w not in STOPWORDS))
    return " OR ".join(f'"{w}"' for w in kept)


class IndexReader:
    """An opened index: lexical and dense rankings, and chunks by id."""

    def __init__(self, files: IndexFiles, dims: int, expansion_search: int):
        Index = usearch_index()
        self.db = sqlite3.connect(f"file:{files.chunks}?mode=ro", uri=True, check_same_thread=False)
        self.vectors = Index.restore(str(files.vectors), view=True)
        if self.vectors is None or (len(self.vectors) and self.vectors.ndim != dims):
            raise ValueError(f"{files.vectors} is not an index of {dims}-dimensional vectors")
        self.vectors.expansion_search = expansion_search
        self.size = self.db.execute("SELECT count(*) FROM chunks").fetchone()[0]

    def lexical(self, query: str, k: int) -> list[tuple[int, float]]:
        """(chunk id, BM25 score, higher is better), best first."""
        match = fts_query(query)
        if not match:
            return []
        rows = self.db.execute(f"SELECT rowid, bm25(fts, {', '.join(map(str, BM25_WEIGHTS))}) AS s "
                               f"FROM fts WHERE fts MATCH ? ORDER BY s LIMIT ?", (match, k))
        return [(int(i), -float(s)) for i, s in rows]

    def dense(self, vector, k: int) -> list[tuple[int, float]]:
        """(chunk id, cosine similarity), best first: exact up to EXACT_UP_TO vectors, else
        approximate (HNSW)."""
        if not len(self.vectors):
            return []
        found = self.vectors.search(vector, min(k, len(self.vectors)), exact=len(self.vectors) <= EXACT_UP_TO)
        return [(int(key), 1.0 - float(d)) for key, d in zip(found.keys, found.distances)]

    def chunks(self, ids: Iterable[int]) -> dict[int, Chunk]:
        ids = list(ids)
        if not ids:
            return {}
        rows = self.db.execute("SELECT id, source, file, start_line, end_line, symbol, kind, language, text "
                               f"FROM chunks WHERE id IN ({','.join('?' * len(ids))})", ids)
        return {row[0]: Chunk(*row[1:]) for row in rows}

    def close(self) -> None:
        self.db.close()
