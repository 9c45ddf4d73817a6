"""Drop training samples that contain an evaluation question, exactly or nearly.

Texts are compared as words: NFKC, case-folded, split into ``\\w+`` runs, so punctuation and
spacing do not matter. A sample is contaminated by an eval question when

- exact: its instruction (user turns) has the same words as the question; or
- n-gram: its user and assistant turns together contain at least ``min_overlap`` of the
  question's distinct word ``ngram``-grams (8 by default). This is the containment test of
  GPT-3 (13-grams) and the Llama 2 report, with a share instead of "any one n-gram" so that
  stock phrases shared with a question ("write a python function that takes a list") do not
  condemn a sample on their own. A question shorter than ``ngram`` words counts as one
  n-gram of its own length when it has at least ``MIN_SHORT_WORDS`` words; shorter ones are
  only matched exactly.

Each sample costs one tokenization and one set of n-gram tuples; the index of the eval
n-grams is built once.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Iterable, Iterator, Sequence

from afs_build.data.quality import sample_texts
from afs_build.data.records import Record, Reject

MIN_SHORT_WORDS = 4
_WORD = re.compile(r"\w+")
_QUOTE_CHARS = 60


def words(text: str) -> list[str]:
    """The normalized words of ``text``: NFKC, case-folded ``\\w+`` runs."""
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    return _WORD.findall(text.casefold())


def _grams(tokens: list[str], size: int) -> set[tuple[str, ...]]:
    return set(zip(*(tokens[offset:] for offset in range(size))))


class Decontaminator:
    """An index of evaluation questions that checks training samples against them.

    ``stats`` counts what :meth:`apply` has seen so far. Raises ValueError for ``ngram`` < 1
    or ``min_overlap`` outside (0, 1].
    """

    def __init__(self, questions: Sequence[str], *, ngram: int = 8,
                 min_overlap: float = 0.5) -> None:
        if ngram < 1:
            raise ValueError(f"ngram must be at least 1, got {ngram!r}")
        if not 0.0 < min_overlap <= 1.0:
            raise ValueError(f"min_overlap must be in (0, 1], got {min_overlap!r}")
        self.questions = list(questions)
        self.ngram, self.min_overlap = ngram, min_overlap
        self._exact: dict[str, int] = {}
        self._index: dict[int, dict[tuple[str, ...], list[int]]] = {}
        self._sizes: list[int] = []  # per question: its number of distinct n-grams
        self._needed: list[int] = []  # per question: how many of them make a match
        for number, question in enumerate(self.questions):
            tokens = words(question)
            if tokens:
                self._exact.setdefault(" ".join(tokens), number)
            size = ngram if len(tokens) >= ngram else len(tokens)
            grams = _grams(tokens, size) if size >= min(ngram, MIN_SHORT_WORDS) else set()
            for gram in grams:
                self._index.setdefault(size, {}).setdefault(gram, []).append(number)
            self._sizes.append(len(grams))
            self._needed.append(max(1, _ceil(min_overlap * len(grams))) if grams else 0)
        self._all_grams = {size: set(index) for size, index in self._index.items()}
        self._matched: set[int] = set()
        self.stats = {"questions": len(self.questions), "checked": 0, "contaminated": 0,
                      "exact": 0, "ngram": 0, "questions_matched": 0,
                      "ngram_size": ngram, "min_overlap": min_overlap}

    def match(self, sample: dict) -> tuple[int, str, float] | None:
        """``(question index, "exact" or "ngram", overlap)`` of the first match, or None."""
        instruction, answer = sample_texts(sample)
        asked = words(instruction)
        number = self._exact.get(" ".join(asked))
        if number is not None:
            return number, "exact", 1.0
        said = words(answer)
        for size, index in self._index.items():
            grams = _grams(asked, size) | _grams(said, size)
            if grams.isdisjoint(self._all_grams[size]):
                continue
            counts: dict[int, int] = {}
            for gram in grams & self._all_grams[size]:
                for question in index[gram]:
                    counts[question] = counts.get(question, 0) + 1
            best = max(counts, key=lambda q: (counts[q] / self._needed[q], -q))
            if counts[best] >= self._needed[best]:
                return best, "ngram", counts[best] / self._sizes[best]
        return None

    def check(self, sample: dict) -> Record:
        """The sample, or a Reject naming the eval question it matches."""
        self.stats["checked"] += 1
        found = self.match(sample)
        if found is None:
            return sample
        number, kind, overlap = found
        self.stats["contaminated"] += 1
        self.stats[kind] += 1
        self._matched.add(number)
        self.stats["questions_matched"] = len(self._matched)
        provenance = sample.get("provenance") or {}
        return Reject(
            sample["source"], f"contaminated: matches eval question '{self.quote(number)}'",
            file=provenance.get("file"), line=provenance.get("line"),
            excerpt=sample_texts(sample)[0],
            detail={"id": sample["id"], "question": number, "match": kind,
                    "overlap": round(overlap, 4)})

    def quote(self, number: int) -> str:
        """The question, whitespace collapsed and cut to 60 characters for a reason line."""
        text = " ".join(self.questions[number].split())
        return text if len(text) <= _QUOTE_CHARS else text[:_QUOTE_CHARS - 3] + "..."

    def apply(self, samples: Iterable[Record]) -> Iterator[Record]:
        """Check each sample in turn; Rejects in the input pass through."""
        for sample in samples:
            yield sample if isinstance(sample, Reject) else self.check(sample)


def _ceil(value: float) -> int:
    whole = int(value)
    return whole if whole >= value - 1e-9 else whole + 1


def decontaminate(samples: Iterable[Record], questions: Sequence[str], *, ngram: int = 8,
                  min_overlap: float = 0.5) -> tuple[list[dict], list[Reject], dict]:
    """Drop samples that match an eval question: (kept, rejects, stats)."""
    checker = Decontaminator(questions, ngram=ngram, min_overlap=min_overlap)
    kept: list[dict] = []
    rejects: list[Reject] = []
    for record in checker.apply(samples):
        (rejects if isinstance(record, Reject) else kept).append(record)
    return kept, rejects, dict(checker.stats)
