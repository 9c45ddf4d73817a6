"""What more threads buy a served specialist: generation speed with one thread (the
llama-cpp-python server's own default on a 2-core machine, half the cores, which afs keeps)
against every usable core, same model, same prompts, in one run.

Each round times greedy chat completions of the same questions with a context block in front
(the shape a retrieving specialist's prompt has), once per thread count, alternating so drift on
a shared machine hits both; medians of the rounds are compared.

    python bench/serve_threads.py [--rounds 3] [--questions 6] [--max-tokens 64] [--gguf FILE]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

QUESTIONS = ["What does the register at $2100 do?", "Why use DMA to copy tiles into VRAM?",
             "What does the 65816 instruction XBA do?", "How do I find which code overwrites a variable?",
             "Why is a Python list slow for membership tests?", "What is Mode 7 on the SNES?",
             "What does REP #$30 do?", "How can a loop avoid a compare on every pass?"]
ENTRY = ('- topic: ppu\n  register: INIDISP\n  address: "$2100"\n  answer: >-\n'
         '    Bit 7 turns forced blanking on; bits 0-3 set the master brightness from 0 to 15.')


def embedded_gguf() -> Path:
    from afs_build.training.embedded import locate_embedded

    return locate_embedded("smollm2-135m-instruct")


def one_round(llm, questions: list[str], max_tokens: int) -> tuple[float, int]:
    from afs_build.retrieval.chunking import Chunk
    from afs_build.retrieval.context import with_context

    entry = Chunk("snes-hardware", "data/synthetic/snes-hardware.yaml", 7, 11, "INIDISP", "entry", "yaml", ENTRY)
    started, tokens = time.perf_counter(), 0
    for q in questions:
        out = llm.create_chat_completion([{"role": "user", "content": with_context(q, [entry], 300)}],
                                         temperature=0.0, max_tokens=max_tokens, seed=0)
        tokens += out["usage"]["completion_tokens"]
    return time.perf_counter() - started, tokens


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--questions", type=int, default=6)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--gguf", type=Path, default=None)
    args = parser.parse_args()
    from afs_build.llamacpp import load

    Llama = load().Llama

    gguf = args.gguf or embedded_gguf()
    counts = sorted({1, len(os.sched_getaffinity(0))})
    models = {n: Llama(model_path=str(gguf), n_ctx=2048, n_threads=n, verbose=False, seed=0) for n in counts}
    questions = (QUESTIONS * 4)[:args.questions]
    times: dict[int, list[float]] = {n: [] for n in counts}
    for _ in range(args.rounds):
        for n in counts:
            seconds, tokens = one_round(models[n], questions, args.max_tokens)
            times[n].append(tokens / seconds)
    print(f"{gguf.name}: {args.questions} questions x {args.rounds} rounds, up to {args.max_tokens} tokens each")
    for n in counts:
        print(f"  n_threads={n}: {statistics.median(times[n]):6.1f} completion tokens/s (median)")
    if len(counts) == 2:
        print(f"  ratio {counts[1]} threads / 1 thread: {statistics.median(times[counts[1]]) / statistics.median(times[1]):.2f}x")
    else:
        print("  one usable core: nothing to compare")
    print(f"  load: {os.getloadavg()[0]:.1f} (what shared the cores)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
