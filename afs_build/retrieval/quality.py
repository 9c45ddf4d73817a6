"""Retrieval quality: recall@1/5/10 and MRR of lexical, dense and hybrid search.

Questions are JSON lines with known source locations::

    {"id": "q1", "category": "codebase", "question": "Where is the LoRA merged into each tensor?",
     "expected": [{"source": "afs-codebase", "file": "post/merge.py", "symbol": "merged_tensors"}]}

A chunk answers an expected location when its source (if given) and file match and, if given,
its symbol is the expected one or a member of it (``Box.open`` for ``Box``) and its lines overlap ``lines`` ([first, last]). Symbols rather than line
numbers keep the set true while the code around them changes. recall@k is the share of a
question's expected locations found in the top k (averaged over questions); MRR is the mean of
1/rank of the first relevant chunk in the top 10 (0 when none).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

from ..errors import AfsError, Problem
from .chunking import Chunk

KS = (1, 5, 10)
MRR_DEPTH = 10
MODES = ("lexical", "dense", "hybrid")
EXPECTED_KEYS = {"source", "file", "symbol", "lines"}


def load_questions(path: Path, shown: Optional[str] = None) -> list[dict]:
    """The questions of `path`, every malformed line reported at once (FILE:LINE:COL)."""
    shown = shown or str(path)
    problems: list[Problem] = []
    questions: list[dict] = []
    seen: set[str] = set()
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise AfsError(f"{shown}: cannot read the retrieval questions: {err.strerror or err}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as err:
            problems.append(Problem(shown, number, getattr(err, "colno", 1), "", f"not JSON: {err}"))
            continue
        why = _problem(item, seen)
        if why:
            problems.append(Problem(shown, number, 1, why[0], why[1]))
            continue
        seen.add(item["id"])
        questions.append({"category": "retrieval", **item})
    if problems:
        raise AfsError(problems=problems)
    if not questions:
        raise AfsError(f"{shown}: no retrieval questions")
    return questions


def _problem(item, seen: set) -> Optional[tuple[str, str]]:
    if not isinstance(item, dict):
        return "", "expected a JSON object with id, question and expected"
    unknown = sorted(set(item) - {"id", "category", "question", "expected"})
    if unknown:
        return unknown[0], f"unknown key {unknown[0]!r}; expected id, category, question, expected"
    for key in ("id", "question"):
        if not isinstance(item.get(key), str) or not item[key].strip():
            return key, f"expected a non-empty string {key!r}"
    if item["id"] in seen:
        return "id", f"duplicate question id {item['id']!r}"
    expected = item.get("expected")
    if not isinstance(expected, list) or not expected:
        return "expected", "expected a non-empty list of locations ({file, source?, symbol?, lines?})"
    for i, where in enumerate(expected):
        if not isinstance(where, dict) or not isinstance(where.get("file"), str) or set(where) - EXPECTED_KEYS:
            return f"expected.{i}", "expected {file, source?, symbol?, lines?: [first, last]}"
    return None


def relevant(chunk: Chunk, where: dict) -> bool:
    """Whether `chunk` is (part of) the expected location `where`."""
    if chunk.file != where["file"] or ("source" in where and chunk.source != where["source"]):
        return False
    symbol = where.get("symbol")
    if symbol is not None and chunk.symbol != symbol and not chunk.symbol.startswith(symbol + "."):
        return False
    lines = where.get("lines")
    return lines is None or (chunk.start <= lines[1] and chunk.end >= lines[0])


def score(ranked: Sequence[Chunk], expected: Sequence[dict]) -> dict:
    """recall@k for each k and the reciprocal rank of one ranking."""
    first = next((rank for rank, c in enumerate(ranked[:MRR_DEPTH], start=1)
                  if any(relevant(c, w) for w in expected)), None)
    out = {f"recall@{k}": sum(any(relevant(c, w) for c in ranked[:k]) for w in expected) / len(expected)
           for k in KS}
    out["rr"] = 1.0 / first if first else 0.0
    out["rank"] = first
    return out


def _mean(rows: list[dict]) -> dict:
    n = len(rows)
    out = {f"recall@{k}": round(sum(r[f"recall@{k}"] for r in rows) / n, 4) for k in KS}
    out["mrr"] = round(sum(r["rr"] for r in rows) / n, 4)
    out["questions"] = n
    return out


def evaluate(retriever, questions: Sequence[dict], modes: Sequence[str] = MODES) -> dict:
    """Per mode: the means overall and per category, and each question's rank."""
    depth = max(KS + (MRR_DEPTH,))
    per: dict[str, list[dict]] = {m: [] for m in modes}
    details = []
    for q in questions:
        ranked = retriever.rankings(q["question"], max(depth, retriever.index.search.candidates), modes)
        row = {"id": q["id"], "category": q["category"]}
        for mode in modes:
            hits = retriever.fuse(ranked, mode, depth)
            result = score([h.chunk for h in hits], q["expected"])
            per[mode].append({**result, "category": q["category"]})
            row[mode] = {"rank": result["rank"], "top": hits[0].chunk.location if hits else None}
        details.append(row)
    categories = sorted({q["category"] for q in questions})
    summary = {mode: {"overall": _mean(rows),
                      "by_category": {c: _mean([r for r in rows if r["category"] == c]) for c in categories}}
               for mode, rows in per.items()}
    return {"modes": summary, "questions": details}


def measure(manifest, name: str) -> dict:
    """Evaluate index `name` on its questions; write and return ``quality.json``."""
    import datetime as dt
    import time

    from ..atomic import write_json
    from ..paths import Layout
    from .search import Retriever

    index = manifest.retrieval.indexes[name]
    questions = load_questions(manifest.resolve(index.questions), index.questions)
    retriever = Retriever(manifest, name)
    started = time.perf_counter()
    try:
        report = evaluate(retriever, questions)
    finally:
        retriever.close()
    report.update(index=name, questions_file=index.questions, count=len(questions),
                  seconds=round(time.perf_counter() - started, 3), ks=list(KS),
                  search={"candidates": index.search.candidates, "rrf_k": index.search.rrf_k,
                          "lexical_weight": index.search.lexical_weight,
                          "dense_weight": index.search.dense_weight},
                  time=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    write_json(Layout.of(manifest).index(name).quality, report)
    return report
