"""How similar questions on and off an index's subjects are to its best chunk: where to put
``min_similarity``.

    python bench/retrieval_gap.py --index facts

Every question of the manifest's suite and of ``bench/questions/off_suite.jsonl`` (general
questions and questions on the fact tables' subjects, written apart from the suite) is
embedded as a query, and the cosine similarity of the index's nearest chunk is read. Prints,
per category, the lowest, median and highest top similarity, then the highest over the general
questions against the lowest over the others: a ``min_similarity`` between the two gives the
general questions no context and every other question its context. The index must be built
(``doit index:<name>``). Nothing is asked of a model.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, default=ROOT / "afs.yaml")
    parser.add_argument("--index", default="facts")
    parser.add_argument("--questions", type=Path, nargs="*",
                        default=[ROOT / "bench" / "questions" / "off_suite.jsonl"])
    parser.add_argument("--general", default="general", help="the category of the off-subject questions")
    parser.add_argument("--skip", nargs="*", default=["codebase", "retrieval"],
                        help="categories the index is not meant for (questions about afs's code)")
    args = parser.parse_args()

    from afs_build.manifest import load
    from afs_build.retrieval.search import Retriever

    manifest = load(args.manifest)
    questions = []
    if manifest.eval.suite:
        questions += [("suite", json.loads(line)) for line in
                      manifest.resolve(manifest.eval.suite).read_text(encoding="utf-8").splitlines() if line.strip()]
    for path in args.questions:
        questions += [(path.stem, json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines()
                      if line.strip()]
    questions = [(origin, q) for origin, q in questions if q["category"] not in args.skip]
    retriever = Retriever(manifest, args.index, check_inputs=False)
    hits = retriever.search_many([q["question"] for _, q in questions], top_k=1, mode="dense")
    top: dict[tuple[str, str], list[float]] = {}
    for (origin, q), found in zip(questions, hits):
        top.setdefault((origin, q["category"]), []).append(round(found[0].score, 3) if found else 0.0)
    print(f"index {args.index}: the nearest chunk's cosine similarity to each question")
    print(f"{'questions':<12} {'category':<16} {'n':>3} {'lowest':>7} {'median':>7} {'highest':>8}")
    for (origin, category), values in sorted(top.items()):
        print(f"{origin:<12} {category:<16} {len(values):>3} {min(values):>7.3f} "
              f"{statistics.median(values):>7.3f} {max(values):>8.3f}")
    general = [v for (_, c), values in top.items() if c == args.general for v in values]
    others = [v for (_, c), values in top.items() if c != args.general for v in values]
    if general and others:
        print(f"\ngeneral questions ({len(general)}): at most {max(general):.3f}; "
              f"the others ({len(others)}): at least {min(others):.3f}")
        if max(general) < min(others):
            print(f"a min_similarity in ({max(general):.3f}, {min(others):.3f}) separates them")
        else:
            print("no min_similarity separates them on this index")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
