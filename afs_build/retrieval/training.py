"""Retrieved context in training samples (``specialists.<name>.retrieval.train_context``).

Each sample's first user turn is searched in the specialist's index and the top chunks are put
in front of it in the serving format (:mod:`.context`), so the LoRA learns to answer from
context the way the server will give it. Samples whose own question finds nothing useful keep
the chunks anyway: learning to ignore an unhelpful context is part of the job. Samples whose
question finds nothing similar enough (``min_similarity``, a general question in a hardware
specialist's mix) stay without context, as the server will answer them.
"""

from __future__ import annotations

from typing import Sequence

from ..manifest import Manifest
from .context import augment, query_turn
from .search import Retriever


def add_context(manifest: Manifest, specialist: str, *splits: Sequence[dict]) -> tuple[list[list[dict]], dict]:
    """Each split with the retrieved context added, and counts of what was done."""
    settings = manifest.specialists[specialist].retrieval
    retriever = Retriever(manifest, settings.index)
    out: list[list[dict]] = []
    stats = {"index": settings.index, "top_k": settings.top_k, "context_chars": settings.context_chars,
             "min_similarity": settings.min_similarity, "samples": 0, "with_context": 0,
             "without_query": 0, "below_similarity": 0, "own_file_retrieved": 0, "with_provenance": 0}
    try:
        for split in splits:
            turns = [query_turn(s["messages"], last=False) for s in split]
            queries = [s["messages"][t]["content"] for s, t in zip(split, turns) if t is not None]
            found = iter(retriever.search_many(queries, settings.top_k, min_similarity=settings.min_similarity))
            done = []
            for sample, turn in zip(split, turns):
                stats["samples"] += 1
                if turn is None:
                    stats["without_query"] += 1
                    done.append(sample)
                    continue
                hits = next(found)
                if not hits:
                    stats["below_similarity"] += 1
                    done.append(sample)
                    continue
                chunks = [h.chunk for h in hits]
                sample = {**sample, "messages": augment(sample["messages"], chunks, settings.context_chars, last=False)}
                sample["metadata"] = {**(sample.get("metadata") or {}), "retrieved": [c.location for c in chunks]}
                stats["with_context"] += 1
                path = (sample.get("provenance") or {}).get("path")
                if path:
                    stats["with_provenance"] += 1
                    stats["own_file_retrieved"] += any(c.file == path for c in chunks)
                done.append(sample)
            out.append(done)
    finally:
        retriever.close()
    return out, stats
