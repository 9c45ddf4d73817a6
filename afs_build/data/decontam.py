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

Each sample costs one tokenization and a vectorized pass over its n-grams: an n-gram is a
64-bit hash of its words' hashes, looked up by binary search in the sorted eval n-grams (a
false match needs a 64-bit hash collision).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Iterable, Iterator, Sequence

import numpy as np

from afs_build.data.texts import sample_texts
from afs_build.data.records import Record, Reject

MIN_SHORT_WORDS = 4
_WORD = re.compile(r"\w+")
_QUOTE_CHARS = 60


def words(text: str) -> list[str]:
    """The normalized words of ``text``: NFKC, case-folded ``\\w+`` runs."""
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    return _WORD.findall(text.casefold())


_MIX = np.random.default_rng(0x5EED).integers(1, 1 << 62, size=64, dtype=np.int64) * 2 + 1


def _grams(tokens: list[str], size: int) -> np.ndarray:
    """Hashes of the word ``size``-grams of ``tokens``, in order (repeats kept)."""
    count = len(tokens) - size + 1
    if count <= 0:
        return np.empty(0, dtype=np.int64)
    # str hashes are salted per process; the index is built in the same process
    hashes = np.fromiter(map(hash, tokens), dtype=np.int64, count=len(tokens))
    grams = hashes[:count] * _MIX[0]
    for offset in range(1, size):
        grams += hashes[offset:offset + count] * _MIX[offset]
    return grams


class Decontaminator:
    """An index of evaluation questions that checks training samples against them.

    ``stats`` counts what :meth:`apply` has seen so far. Raises ValueError for ``ngram``
    outside 1..64 or ``min_overlap`` outside (0, 1].
    """

    def __init__(self, questions: Sequence[str], *, ngram: int = 8,
                 min_overlap: float = 0.5) -> None:
        if not 1 <= ngram <= len(_MIX):
            raise ValueError(f"ngram must be between 1 and {len(_MIX)}, got {ngram!r}")
        if not 0.0 < min_overlap <= 1.0:
            raise ValueError(f"min_overlap must be in (0, 1], got {min_overlap!r}")
        self.questions = list(questions)
        self.ngram, self.min_overlap = ngram, min_overlap
        self._exact: dict[str, int] = {}
        self._sizes: list[int] = []  # per question: its number of distinct n-grams
        self._needed: list[int] = []  # per question: how many of them make a match
        index: dict[int, dict[int, list[int]]] = {}  # size -> n-gram hash -> questions
        for number, question in enumerate(self.questions):
            tokens = words(question)
            if tokens:
                self._exact.setdefault(" ".join(tokens), number)
            size = ngram if len(tokens) >= ngram else len(tokens)
            grams = np.unique(_grams(tokens, size)).tolist() \
                if size >= min(ngram, MIN_SHORT_WORDS) else []
            for gram in grams:
                index.setdefault(size, {}).setdefault(gram, []).append(number)
            self._sizes.append(len(grams))
            self._needed.append(max(1, _ceil(min_overlap * len(grams))) if grams else 0)
        # per n-gram size, CSR form: sorted n-gram hashes, and for each the questions holding it
        self._tables = {size: _table(grams) for size, grams in index.items()}
        self._needed_array = np.array(self._needed, dtype=np.float64)
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
        for size, (keys, starts, questions) in self._tables.items():
            grams = np.concatenate([_grams(asked, size), _grams(said, size)])
            slots = np.minimum(np.searchsorted(keys, grams), len(keys) - 1)
            slots = np.unique(slots[keys[slots] == grams])  # each distinct n-gram once
            if not slots.size:
                continue
            lengths = starts[slots + 1] - starts[slots]
            offsets = np.repeat(starts[slots] - np.cumsum(lengths) + lengths, lengths)
            hit, counts = np.unique(questions[offsets + np.arange(offsets.size)],
                                    return_counts=True)
            ratio = counts / self._needed_array[hit]
            best = int(np.argmax(ratio))  # the first of equals: the smallest question number
            if ratio[best] >= 1.0:
                number = int(hit[best])
                return number, "ngram", int(counts[best]) / self._sizes[number]
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


def _table(grams: dict[int, list[int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    keys = sorted(grams)
    lists = [grams[key] for key in keys]
    starts = np.zeros(len(keys) + 1, dtype=np.int64)
    np.cumsum([len(questions) for questions in lists], out=starts[1:])
    flat = np.fromiter((q for questions in lists for q in questions), dtype=np.int64,
                       count=int(starts[-1]))
    return np.array(keys, dtype=np.int64), starts, flat


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
