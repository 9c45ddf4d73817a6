"""Fusing rankings: weighted reciprocal rank fusion.

BM25 scores and cosine similarities are on scales that have nothing to do with each other
(BM25 grows with query length and term rarity), so adding them needs a calibration per index
and per query. Reciprocal rank fusion (Cormack, Clarke and Buettcher, SIGIR 2009) uses only
the ranks: a chunk scores the sum of ``weight / (k + rank)`` over the rankings it appears in.
A chunk that one ranking puts first keeps a high score even when the other misses it (a
symbol only BM25 finds exactly), and one that both rank well wins. k = 60 is the paper's value.
"""

from __future__ import annotations

from typing import Sequence


def rrf(rankings: Sequence[Sequence[int]], *, k: float = 60.0,
        weights: Sequence[float] | None = None) -> list[tuple[int, float]]:
    """(id, fused score), best first; ties go to the id ranked first by an earlier ranking."""
    weights = list(weights) if weights is not None else [1.0] * len(rankings)
    scores: dict[int, float] = {}
    first_seen: dict[int, tuple[int, int]] = {}
    for which, (ranking, weight) in enumerate(zip(rankings, weights)):
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + weight / (k + rank)
            first_seen.setdefault(item, (rank, which))
    return sorted(scores.items(), key=lambda pair: (-pair[1], first_seen[pair[0]]))
