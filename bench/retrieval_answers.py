"""Does retrieved context help a model answer? The same questions with and without it.

    python bench/retrieval_answers.py --gguf build/specialists/hylia/post/hylia-Q8_0.gguf \\
        --specialist hylia --categories retrieval codebase

Each question of the manifest's suite in the given categories is asked of the GGUF in this
process (llama.cpp, greedy, the GGUF's chat template, as :mod:`afs_build.evaluation.local`
asks), once as it is and once with the top chunks of the specialist's index put into the user
turn exactly as the server does (:func:`afs_build.retrieval.context.augment`), and graded by
the suite's rules. The index must be built (``doit index:<name>``). Prints the means per
category and the paired difference with its bootstrap interval.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", type=Path, required=True)
    parser.add_argument("--manifest", type=Path, default=ROOT / "afs.yaml")
    parser.add_argument("--build-dir", help="the build folder (default: the manifest's)")
    parser.add_argument("--specialist", default="hylia", help="whose system prompt and retrieval settings")
    parser.add_argument("--categories", nargs="+", default=["retrieval", "codebase"])
    parser.add_argument("--top-k", type=int)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    from afs_build.llamacpp import load

    Llama = load().Llama

    from afs_build.evaluation import grading, suite
    from afs_build.evaluation.local import messages_for
    from afs_build.evaluation.stats import paired
    from afs_build.manifest import load
    from afs_build.retrieval.context import augment
    from afs_build.retrieval.search import Retriever

    manifest = load(args.manifest)
    if args.build_dir:
        manifest = dataclasses.replace(manifest, project=dataclasses.replace(manifest.project, build_dir=args.build_dir))
    spec = manifest.specialists[args.specialist]
    settings = spec.retrieval
    top_k = args.top_k or settings.top_k
    questions = [q for q in suite.load(manifest.resolve(manifest.eval.suite)) if q["category"] in args.categories]
    retriever = Retriever(manifest, settings.index)
    hits = retriever.search_many([q["question"] for q in questions], top_k)
    llm = Llama(model_path=str(args.gguf), n_ctx=spec.context_length, n_threads=2, verbose=False, seed=0)
    rows = []
    started = time.perf_counter()
    for question, found in zip(questions, hits):
        plain = messages_for(question, spec.system_prompt)
        row = {"id": question["id"], "category": question["category"], "retrieved": [h.chunk.location for h in found]}
        for label, messages in (("without", plain), ("with", augment(plain, [h.chunk for h in found], settings.context_chars))):
            reply = llm.create_chat_completion(messages, temperature=0.0, max_tokens=question["max_tokens"], seed=0)
            text = reply["choices"][0]["message"]["content"] or ""
            row[label] = {"score": grading.rule_score(question, text), "reply": text[:300]}
        rows.append(row)
    llm.close()
    out = {"gguf": str(args.gguf), "specialist": args.specialist, "index": settings.index, "top_k": top_k,
           "context_chars": settings.context_chars, "seconds": round(time.perf_counter() - started, 1),
           "load_average": [round(x, 2) for x in os.getloadavg()], "by_category": {}}
    for category in args.categories + ["all"]:
        chosen = [r for r in rows if category in ("all", r["category"])]
        if chosen:
            stats = paired([r["with"]["score"] for r in chosen], [r["without"]["score"] for r in chosen]).to_json()
            out["by_category"][category] = stats
            print(f"{category:<10} n={stats['questions']:>3}  with {stats['mean_a']:.2f}  without "
                  f"{stats['mean_b']:.2f}  difference {stats['difference']:+.2f} [{stats['low']:+.2f}, "
                  f"{stats['high']:+.2f}]  W/T/L {stats['wins']}/{stats['ties']}/{stats['losses']}")
    out["questions"] = rows
    if args.out:
        args.out.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
