"""How fast afs plans: `doit list` and a no-op `doit` on the default manifest.

Baseline, measured in the same run: the same doit commands on a dodo file with one trivial
task, so the ratio shows what loading and planning afs.yaml adds to doit's own start-up.
Target: each well under a second on the 2-core CI machine.

    python bench/plan_speed.py [--runs 7] [--manifest afs.yaml]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TRIVIAL = '''
def task_hello():
    """One trivial task."""
    return {"actions": ["true"], "file_dep": [__file__], "targets": []}
'''


def median_seconds(cmd: list[str], cwd: Path, env: dict, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--manifest", default=str(REPO / "afs.yaml"))
    args = parser.parse_args()

    doit = [sys.executable, "-m", "doit"]
    env = {**os.environ, "AFS_MANIFEST": str(Path(args.manifest).resolve())}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        (base / "dodo.py").write_text(TRIVIAL)
        subprocess.run(doit + ["-f", str(base / "dodo.py")], cwd=base, check=True,
                       stdout=subprocess.DEVNULL)
        print("building the default data stages once (for the no-op run) ...", flush=True)
        subprocess.run(doit + ["-f", str(REPO / "dodo.py"), "ingest", "score", "mix"], cwd=REPO,
                       env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        rows = []
        for label, ours_args, base_args in (("doit list", ["list"], ["list"]),
                                            ("no-op doit", ["ingest", "score", "mix"], [])):
            ours = median_seconds(doit + ["-f", str(REPO / "dodo.py"), *ours_args], REPO, env, args.runs)
            baseline = median_seconds(doit + ["-f", str(base / "dodo.py"), *base_args], base, env, args.runs)
            rows.append((label, ours, baseline))
    print(f"\nmedian of {args.runs} runs, {os.cpu_count()} cores")
    print(f"{'command':<12} {'afs (s)':>9} {'trivial dodo (s)':>17} {'ratio':>7}")
    for label, ours, baseline in rows:
        print(f"{label:<12} {ours:>9.3f} {baseline:>17.3f} {ours / baseline:>7.2f}")


if __name__ == "__main__":
    main()
