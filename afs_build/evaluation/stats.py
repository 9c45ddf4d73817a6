"""Paired comparison statistics: a specialist's scores against its base's on the same questions.

Every question is asked of both models, so the comparison is paired: the difference of the two
scores per question. Its mean gets a percentile bootstrap interval (resampling questions, with a
seeded generator so a rebuild reports the same interval), and the signs of the differences a
two-sided exact sign test (ties left out, as the test prescribes).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

BOOTSTRAP_SAMPLES = 10_000
CONFIDENCE = 0.95
TIE = 1e-9  # score differences smaller than this are ties


@dataclass(frozen=True)
class Paired:
    """The paired comparison of two models over the same questions."""

    questions: int
    mean_a: float  # the specialist
    mean_b: float  # the base
    difference: float  # mean of a - b
    low: float  # bootstrap interval of the difference
    high: float
    wins: int
    ties: int
    losses: int
    sign_p: float  # two-sided exact sign test

    @property
    def better(self) -> bool:
        """True when the whole interval lies above zero."""
        return self.questions > 0 and self.low > 0

    @property
    def worse(self) -> bool:
        return self.questions > 0 and self.high < 0

    def to_json(self) -> dict:
        out = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}
        out["better"] = self.better
        out["worse"] = self.worse
        return out


def paired(a: Sequence[float], b: Sequence[float], *, seed: int = 0,
           samples: int = BOOTSTRAP_SAMPLES, confidence: float = CONFIDENCE) -> Paired:
    """Compare scores `a` (one model) with `b` (the other), question by question."""
    if len(a) != len(b):
        raise ValueError(f"paired scores need equal lengths, got {len(a)} and {len(b)}")
    n = len(a)
    if n == 0:
        return Paired(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0, 0, 1.0)
    diffs = [x - y for x, y in zip(a, b)]
    wins = sum(1 for d in diffs if d > TIE)
    losses = sum(1 for d in diffs if d < -TIE)
    low, high = bootstrap_interval(diffs, seed=seed, samples=samples, confidence=confidence)
    return Paired(n, sum(a) / n, sum(b) / n, sum(diffs) / n, low, high, wins, n - wins - losses,
                  losses, sign_test(wins, losses))


def bootstrap_interval(values: Sequence[float], *, seed: int = 0, samples: int = BOOTSTRAP_SAMPLES,
                       confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (seeded: the same input, the same
    interval)."""
    import numpy as np

    if len(values) == 0:
        return 0.0, 0.0
    data = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, len(data), size=(samples, len(data)))].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact binomial sign test of `wins` against `losses` (ties excluded)."""
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)
