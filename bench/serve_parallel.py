"""What a second model instance buys when questions are answered in bulk (the benchmark, the
comparison): the same questions answered by one one-thread instance in turn, against two
one-thread instances answering half each at the same time, same model, same prompts, one run.

llama.cpp generates one token at a time; at 135M parameters one thread is as fast as two
(bench/serve_threads.py), so the second core idles while a single instance answers. Each round
times both ways, alternating so drift on a shared machine hits both; medians are compared in
completion tokens per second of wall time. The answers must be the same both ways (greedy).

    python bench/serve_parallel.py [--rounds 3] [--questions 8] [--max-tokens 96] [--gguf FILE]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from afs_build.cores import usable  # noqa: E402
from serve_threads import ENTRY, QUESTIONS, embedded_gguf  # noqa: E402


def answer(llm, question: str, max_tokens: int) -> tuple[str, int]:
    from afs_build.retrieval.chunking import Chunk
    from afs_build.retrieval.context import with_context

    entry = Chunk("snes-hardware", "data/synthetic/snes-hardware.yaml", 7, 11, "INIDISP", "entry", "yaml", ENTRY)
    out = llm.create_chat_completion([{"role": "user", "content": with_context(question, [entry], 300)}],
                                     temperature=0.0, max_tokens=max_tokens, seed=0)
    return out["choices"][0]["message"]["content"], out["usage"]["completion_tokens"]


def serial(llm, questions, max_tokens):
    return [answer(llm, q, max_tokens) for q in questions]


def parallel(models, questions, max_tokens):
    results: list = [None] * len(questions)

    def work(k):
        for i in range(k, len(questions), len(models)):
            results[i] = answer(models[k], questions[i], max_tokens)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(models))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--questions", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--gguf", type=Path, default=None)
    args = parser.parse_args()
    from afs_build.llamacpp import load

    Llama = load().Llama

    gguf = args.gguf or embedded_gguf()
    width = min(2, usable())
    models = [Llama(model_path=str(gguf), n_ctx=2048, n_threads=1, verbose=False, seed=0) for _ in range(width)]
    questions = (QUESTIONS * 4)[:args.questions]
    rates: dict[str, list[float]] = {"one instance": [], f"{width} instances": []}
    same = True
    for _ in range(args.rounds):
        for label, run in (("one instance", lambda: serial(models[0], questions, args.max_tokens)),
                           (f"{width} instances", lambda: parallel(models, questions, args.max_tokens))):
            started = time.perf_counter()
            out = run()
            rates[label].append(sum(n for _, n in out) / (time.perf_counter() - started))
            if label == "one instance":
                reference = [text for text, _ in out]
            else:
                same = same and [text for text, _ in out] == reference
    print(f"{gguf.name}: {args.questions} questions x {args.rounds} rounds, up to {args.max_tokens} tokens each, "
          f"n_threads=1 per instance")
    for label, values in rates.items():
        print(f"  {label:12}: {statistics.median(values):6.1f} completion tokens/s of wall time (median)")
    if width == 2:
        print(f"  ratio 2 instances / 1: {statistics.median(rates['2 instances']) / statistics.median(rates['one instance']):.2f}x")
    else:
        print("  one usable core: nothing to compare")
    print(f"  same answers both ways: {same}")
    print(f"  load: {os.getloadavg()[0]:.1f} (what shared the cores)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
