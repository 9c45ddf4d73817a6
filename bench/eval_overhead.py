"""What the evaluation harness costs on top of the requests it sends, on the same server, in one run.

The server is afs's own (``python -m afs_build.serve``) on a free loopback port, serving the
embedded SmolLM2-135M GGUF (or ``--gguf``). Baseline: the same streaming chat requests (same
bodies, one at a time) sent with ``http.client`` and read to the end, nothing else. Harness:
``afs_build.evaluation.benchmark.run`` on the same questions, cache off, concurrency 1: request
building, streaming with time to first token, retries armed, rule grading, result records.
Rounds alternate (baseline, harness, baseline, ...) so drift on a shared machine hits both; the
medians of the rounds are compared. Target: overhead under 10%.

    python bench/eval_overhead.py [--rounds 5] [--questions 12] [--max-tokens 32] [--gguf FILE]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def embedded_gguf() -> Path:
    from afs_build.training.embedded import locate_embedded

    return locate_embedded("smollm2-135m-instruct")


def raw_round(port: int, bodies: list[bytes]) -> float:
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    for body in bodies:
        conn.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
        conn.getresponse().read()
    conn.close()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--questions", type=int, default=12)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--gguf", type=Path, default=None)
    args = parser.parse_args()

    from afs_build.deploy import processes
    from afs_build.deploy.server import GRACE_SECONDS, start
    from afs_build.evaluation import benchmark, suite
    from afs_build.evaluation.client import Endpoint, body
    from afs_build.evaluation.local import messages_for
    from afs_build.evaluation.runner import sampling
    from afs_build.stages.compare import free_port

    questions = [q for q in suite.load(REPO / "data/eval/suite.jsonl", judges=["x"])
                 if q["grading"] not in ("judge", "code")][:args.questions]
    questions = [{**q, "max_tokens": args.max_tokens} for q in questions]
    system = "You are a helpful assistant."
    gguf = args.gguf or embedded_gguf()
    with tempfile.TemporaryDirectory(prefix="afs-bench-") as tmp:
        port = free_port()
        record = start("bench", gguf, host="127.0.0.1", port=port, n_ctx=2048, pid_file=Path(tmp) / "pid",
                       log_file=Path(tmp) / "log")
        try:
            endpoint = Endpoint("bench", f"http://127.0.0.1:{port}/v1")
            bodies = [json.dumps(body(endpoint, messages_for(q, system), sampling(q["max_tokens"]))).encode()
                      for q in questions]
            raw_round(port, bodies[:2])  # warm up: the first requests load caches
            raw, harness, tokens = [], [], 0
            for _ in range(args.rounds):
                raw.append(raw_round(port, bodies))
                started = time.perf_counter()
                results = benchmark.run(endpoint, questions, system_prompt=system, run_id="bench")
                harness.append(time.perf_counter() - started)
                tokens = sum(r["completion_tokens"] or 0 for r in results)
                assert not any(r["error"] for r in results), [r["error"] for r in results if r["error"]]
        finally:
            processes.terminate(record["pid"], GRACE_SECONDS)
    raw_s, harness_s = statistics.median(raw), statistics.median(harness)
    overhead = harness_s / raw_s - 1
    print(json.dumps({"model": gguf.name, "questions": len(questions), "max_tokens": args.max_tokens,
                      "rounds": args.rounds, "completion_tokens_per_round": tokens,
                      "raw_s": [round(x, 3) for x in raw], "harness_s": [round(x, 3) for x in harness],
                      "raw_median_s": round(raw_s, 3), "harness_median_s": round(harness_s, 3),
                      "overhead": round(overhead, 4), "per_question_ms": round(1000 * (harness_s - raw_s) / len(questions), 2),
                      "load": os.getloadavg(), "target": "< 0.10", "ok": overhead < 0.10}, indent=2))


if __name__ == "__main__":
    main()
