"""What each trained specialist forgot, on general questions the suite does not hold.

    python bench/off_suite.py            # after doit: the specialists' servers are running

The general questions of ``bench/questions/off_suite.jsonl`` (written apart from the suite,
graded by a whole-word pattern) are asked of each trained specialist's server, as served (with
its retrieval), and of its base, served as ``compare:<specialist>`` serves it, with the
specialist's system prompt, greedy, 256 tokens at most (the suite's default). Prints each
specialist's score against its base's with the paired difference, its seeded 95% bootstrap
interval and wins/ties/losses (:mod:`afs_build.evaluation.stats`), and how many questions got
retrieved context. Nothing is cached or written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, default=ROOT / "afs.yaml")
    parser.add_argument("--questions", type=Path, default=ROOT / "bench" / "questions" / "off_suite.jsonl")
    parser.add_argument("--category", default="general")
    parser.add_argument("--specialists", nargs="*", help="default: every trained specialist")
    args = parser.parse_args()

    from afs_build.evaluation import benchmark
    from afs_build.evaluation.stats import paired
    from afs_build.manifest import load
    from afs_build.stages.compare import base_server, serving_base

    manifest = load(args.manifest)
    questions = []
    for line in args.questions.read_text(encoding="utf-8").splitlines():
        q = json.loads(line) if line.strip() else None
        if q and q["category"] == args.category:
            questions.append({**q, "grading": "regex", "pattern": rf"\b(?:{q['pattern']})\b",
                              "max_tokens": 256, "specialists": []})
    names = args.specialists or [s.name for s in manifest.trained]
    print(f"{len(questions)} {args.category} questions from {args.questions.name}")
    print(f"{'specialist':<10} {'specialist':>10} {'base':>6} {'difference [95%]':>22} {'W/T/L':>8} {'with context':>13}")
    for name in names:
        spec = manifest.specialists[name]
        mine = benchmark.run(benchmark.endpoint(manifest, name), questions, system_prompt=spec.system_prompt,
                             run_id="off-suite")
        with serving_base(manifest, spec, base_server(manifest, spec)) as base:
            theirs = benchmark.run(base, questions, system_prompt=spec.system_prompt, run_id="off-suite")
        failed = [r for r in mine + theirs if r["error"]]
        if failed:
            raise SystemExit(f"{name}: {len(failed)} requests failed ({failed[0]['error']}); is it served?")
        stats = paired([r["score"] for r in mine], [r["score"] for r in theirs], seed=manifest.eval.seed)
        context = sum(1 for r in mine if r.get("retrieved"))
        print(f"{spec.title:<10} {stats.mean_a:>10.2f} {stats.mean_b:>6.2f} "
              f"{stats.difference:>+8.2f} [{stats.low:+.2f}, {stats.high:+.2f}] "
              f"{stats.wins:>3}/{stats.ties}/{stats.losses} {context:>13}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
