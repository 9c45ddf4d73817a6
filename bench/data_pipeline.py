"""Benchmark the data stages (ingest, score, mix) against a `datasets` baseline.

    pip install -e ".[bench]"                          # the baseline needs datasketch
    python bench/data_pipeline.py                      # 1,000,000 records
    python bench/data_pipeline.py --records 100000 --baseline-records 100000

Generates synthetic CodeSearchNet JSONL (varied Python functions and docstrings; about 10%
exact copies and 10% near copies of earlier records under other repositories, plus a few
broken, leaky and low-quality records) in a temporary folder, then runs the same steps two
ways, each in its own process so that their memory peaks do not mix:

- afs: the actions `doit` runs, on a manifest with one codesearchnet source and one mix:
  ``ingest`` (convert, and the secrets gate), ``score`` (with ``quality.workers`` from
  ``--workers``, ``auto`` by default: what the build would pick) and ``mix`` (exact and near
  dedup, then the draw of a train/eval split), each writing its files as in a build;
- baseline: the straightforward `datasets` version: load_dataset("json"), map to convert and
  drop secrets, map to score and filter, sort by score and filter exact duplicates through a
  set, near duplicates through datasketch MinHashLSH, then shuffle/select/train_test_split.

Both use the same conversion, secret rules and scoring functions, so the comparison is of the
pipeline machinery. Throughput is CodeSearchNet records per second (each record gives two
samples). Peak memory per step is the highest RSS of the step's process sampled every 10 ms;
scoring workers come on top (their peak is reported apart). Decontamination is off on both
sides (no suite).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

THRESHOLD = 0.5
SOURCE = "codesearchnet"

# --- synthetic CodeSearchNet ----------------------------------------------------------------

VERBS = ("get", "set", "load", "parse", "compute", "build", "update", "find", "validate",
         "convert", "read", "write", "fetch", "create", "delete", "merge", "split", "normalize",
         "filter", "sort", "format", "render", "encode", "decode", "check", "apply", "resolve",
         "extract", "collect", "register", "flush", "scan", "index", "match", "score")
NOUNS = ("config", "user", "item", "record", "path", "token", "value", "node", "edge", "graph",
         "file", "buffer", "cache", "entry", "session", "request", "response", "header",
         "matrix", "vector", "key", "batch", "frame", "row", "column", "schema", "event",
         "message", "payload", "image", "account", "order", "invoice", "metric", "channel")
ARGS = ("data", "items", "path", "name", "value", "key", "options", "timeout", "limit", "mode",
        "source", "target", "encoding", "callback", "verbose", "retries", "size", "offset")
LOCALS = ("result", "out", "acc", "parts", "buf", "tmp", "found", "total", "seen", "rows")
CALLS = ("len", "str", "int", "sorted", "list", "set", "tuple", "repr", "abs", "float")
ADJ = ("given", "current", "next", "previous", "default", "cached", "remote", "local",
       "pending", "active", "raw", "parsed", "normalized", "optional")
PREP = ("from", "for", "in", "with", "into", "of")


def _statement(rng: random.Random, args: list[str], var: str) -> str:
    a = rng.choice(args)
    kind = rng.randrange(9)
    if kind == 0:
        return f"if {a} is None:\n        {a} = {rng.choice(('[]', '{}', '0', 'None', repr(''))) }"
    if kind == 1:
        return (f"for {var[0]} in {a}:\n        if {var[0]}:\n"
                f"            {var}.append({rng.choice(CALLS)}({var[0]}))")
    if kind == 2:
        return f"{var} = {a}.get({rng.choice(ARGS)!r}, {rng.randint(0, 99)})"
    if kind == 3:
        return (f"try:\n        {var} = {rng.choice(CALLS)}({a})\n"
                f"    except (TypeError, ValueError) as exc:\n"
                f"        raise RuntimeError('bad {a}: %s' % exc)")
    if kind == 4:
        return (f"with open({a}, {rng.choice(('r', 'rb', 'w'))!r}) as handle:\n"
                f"        {var} = handle.read({rng.randint(1, 8) * 1024})")
    if kind == 5:
        return f"{var} = [{rng.choice(CALLS)}(x) for x in {a} if x is not None]"
    if kind == 6:
        return f"logger.debug('%s %s', {a!r}, {a})"
    if kind == 7:
        return (f"while {rng.choice(args)} > {rng.randint(0, 9)}:\n"
                f"        {rng.choice(args)} -= {rng.randint(1, 3)}")
    return f"{var} = self._{rng.choice(NOUNS)}_{rng.choice(NOUNS)}({a}, {rng.choice(args)})"


def synthetic_record(rng: random.Random, number: int) -> dict:
    verb, noun = rng.choice(VERBS), rng.choice(NOUNS)
    name = f"{verb}_{noun}" + (f"_{rng.choice(ADJ)}" if rng.random() < 0.5 else "")
    method = rng.random() < 0.5
    args = rng.sample(ARGS, rng.randint(1, 4))
    params = (["self"] if method else []) + args
    var = rng.choice(LOCALS)
    doc_lines = [f"{verb.capitalize()} the {rng.choice(ADJ)} {noun} {rng.choice(PREP)} "
                 f"the {rng.choice(ADJ)} {args[0]}."]
    if rng.random() < 0.6:
        doc_lines.append("")
        doc_lines.append(f"Returns the {rng.choice(ADJ)} {rng.choice(NOUNS)} or None when "
                         f"the {rng.choice(NOUNS)} is {rng.choice(ADJ)}.")
    if rng.random() < 0.4:
        doc_lines += ["", "Args:"] + [f"    {a}: the {rng.choice(ADJ)} {rng.choice(NOUNS)}."
                                       for a in args]
    docstring = "\n".join(doc_lines)
    body = [_statement(rng, args, var) for _ in range(rng.randint(2, 12))]
    indented_doc = "\n    ".join(docstring.split("\n"))
    code = (f"def {name}({', '.join(params)}):\n    \"\"\"{indented_doc}\n    \"\"\"\n    "
            f"{var} = []\n    " + "\n    ".join(body) + f"\n    return {var}")
    repo = f"user{rng.randint(0, 50_000)}/{rng.choice(NOUNS)}-{rng.choice(VERBS)}"
    path = f"{rng.choice(NOUNS)}/{rng.choice(VERBS)}.py"
    return {"repo": repo, "path": path, "func_name": f"{noun.capitalize()}.{name}" if method
            else name, "original_string": code, "language": "python", "code": code,
            "code_tokens": code.split(), "docstring": docstring,
            "docstring_tokens": docstring.split(), "sha": f"{number:040x}",
            "url": f"https://github.com/{repo}/blob/{number:07x}/{path}#L{rng.randint(1, 900)}",
            "partition": "train"}


def _near_copy(rng: random.Random, record: dict) -> dict:
    copy = dict(record)
    code = copy["code"]
    edit = rng.randrange(3)
    if edit == 0:
        code = code.replace("result", "res") if "result" in code else code + "\n    # done"
    elif edit == 1:
        code = code.replace("    return", "    # keep the order\n    return", 1)
    else:
        code = code.replace(" = ", " =  ", 1)
    copy["code"] = copy["original_string"] = code
    copy["repo"] = f"fork{rng.randint(0, 9999)}/{copy['repo'].split('/', 1)[1]}"
    return copy


def generate(path: Path, records: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    recent: list[dict] = []
    with open(path, "w", encoding="utf-8") as handle:
        for number in range(records):
            roll = rng.random()
            if recent and roll < 0.10:  # exact copy under another repository
                record = dict(rng.choice(recent))
                record["repo"] = f"mirror{rng.randint(0, 9999)}/" + record["repo"].split("/")[1]
            elif recent and roll < 0.20:
                record = _near_copy(rng, rng.choice(recent))
            else:
                record = synthetic_record(rng, number)
                if roll < 0.22:  # Python 2 code: does not parse
                    record["code"] = record["code"].replace("    return", "    print 'x'\n"
                                                            "    return", 1)
                elif roll < 0.225:
                    record["code"] = record["code"].replace(
                        "    return", "    key = 'AKIA" + "".join(
                            rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for _ in range(16))
                        + "'\n    return", 1)
                elif roll < 0.23:
                    record["docstring"] = ""
                recent.append(record)
                if len(recent) > 5000:
                    recent.pop(rng.randrange(len(recent)))
            handle.write(json.dumps(record) + "\n")


# --- measuring ------------------------------------------------------------------------------


class Peak:
    """Highest RSS seen while the block runs, sampled every 10 ms from /proc."""

    def __enter__(self):
        self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self):
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())


def _rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (scoring workers), user + system."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(results: dict, step: str, function, *args):
    # Wall time is what a user waits; CPU time is the work done, and is what to compare when
    # other jobs share the cores (waiting for a CPU adds to the one, not the other).
    with Peak() as peak:
        start, cpu = time.perf_counter(), _cpu_seconds()
        value = function(*args)
        seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    results[step] = {"seconds": seconds, "cpu_seconds": cpu, "peak_mb": peak.peak / 2**20,
                     "load": load}
    print(f"  {step:<10} {seconds:8.1f} s  cpu {cpu:8.1f} s  peak {peak.peak / 2**20:7.0f} MB  "
          f"load {load:.1f}", file=sys.stderr)
    return value


# --- the afs pipeline -----------------------------------------------------------------------

MANIFEST = """\
project: {{name: bench, seed: {seed}, build_dir: build}}
models: {{base: {{embedded: smollm2-135m-instruct}}}}
hardware: {{cpu: {{vram_gb: 16}}}}
sources:
  {source}: {{kind: codesearchnet, paths: [{csn}]}}
quality: {{threshold: {threshold}, workers: {workers}}}
dedup: {{exact: true, near: true, threshold: 0.85, num_perm: 128, shingle: 5, decontaminate: false}}
mixes:
  bench: {{samples: {target}, eval_fraction: 0.01, groups: {{all: {{share: 1.0, sources: [{source}]}}}}}}
specialists:
  bench: {{role: Benchmark, base: base, mix: bench, hardware: cpu, port: 6100}}
eval: {{suite: null}}
"""


def run_afs(csn: Path, work: Path, seed: int, workers: str, records: int) -> dict:
    from afs_build.manifest import load
    from afs_build.paths import Layout
    from afs_build.stages import ingest, mix, score

    path = work / "afs.yaml"
    path.write_text(MANIFEST.format(seed=seed, source=SOURCE, csn=json.dumps(str(csn)),
                                    threshold=THRESHOLD, workers=workers, target=records))
    manifest = load(path)
    results: dict = {}
    for step, stage, name in (("convert", ingest, SOURCE), ("score", score, SOURCE),
                              ("dedup+mix", mix, "bench")):
        failed = timed(results, step, stage.run, manifest, name)
        if failed is not None:
            raise SystemExit(f"{stage.NAME}:{name} failed: {failed.message}")
    layout = Layout.of(manifest)
    ingested = json.loads(layout.ingest(SOURCE).meta.read_text())
    scored = json.loads(layout.score(SOURCE).meta.read_text())
    stats = json.loads(layout.mix("bench").stats.read_text())
    counts = {"records": ingested["records"], "converted": ingested["samples"],
              "convert_rejects": ingested["reject_reasons"], "scored": scored["samples"],
              "quality_rejects": scored["rejects"], "score_workers": scored["workers"],
              "dedup": stats["dedup"], "train": stats["train"]["samples"],
              "eval": stats["eval"]["samples"]}
    return {"steps": results, "counts": counts}


def _pairs(record):
    from afs_build.data.codesearchnet import DIRECTIONS, REQUIRED, pair
    from afs_build.data.readers import Unusable

    if not record["docstring"].strip() or not record["code"].strip():
        return []
    out = []
    for direction in DIRECTIONS:
        try:
            out.append((direction, pair({k: record[k] for k in REQUIRED}, direction)))
        except Unusable:
            pass
    return out


# --- the datasets baseline ------------------------------------------------------------------


def run_baseline(csn: Path, work: Path, seed: int) -> dict:
    import datasets
    from datasketch import MinHash, MinHashLSH

    from afs_build.data.dedup import instruction_key
    from afs_build.data.quality import score_sample
    from afs_build.data.records import Reject, make_sample
    from afs_build.data.secrets import first_in_fields
    from afs_build.data.signals import DEFAULT_WEIGHTS
    from afs_build.data.texts import sample_fields

    datasets.disable_progress_bars()
    warnings.filterwarnings("ignore", category=FutureWarning)  # pyarrow sort options

    cache = str(work / "hf")
    results: dict = {}
    counts: dict = {}
    state: dict = {}

    def convert():
        ds = datasets.load_dataset("json", data_files=str(csn), split="train", cache_dir=cache)

        def batch_convert(batch):
            out = {"id": [], "source": [], "messages": [], "provenance": [], "metadata": []}
            for i in range(len(batch["code"])):
                record = {key: batch[key][i] for key in batch}
                for direction, messages in _pairs(record):
                    sample = make_sample(SOURCE, messages,
                                         provenance={"file": str(csn), "line": i + 1},
                                         metadata={"direction": direction})
                    if first_in_fields(sample_fields(sample)) is not None:
                        continue  # the secrets gate, as afs's ingest has it
                    for key in out:
                        out[key].append(sample[key])
            return out

        counts["records"] = len(ds)
        state["ds"] = ds.map(batch_convert, batched=True, remove_columns=ds.column_names)
        counts["converted"] = len(state["ds"])

    def score():
        def score_one(example):
            result = score_sample(example, weights=DEFAULT_WEIGHTS, threshold=THRESHOLD)
            if isinstance(result, Reject):
                return {"score": -1.0}
            return {"score": result["metadata"]["quality"]["score"],
                    "metadata": result["metadata"]}

        ds = state["ds"].map(score_one)
        state["ds"] = ds.filter(lambda s: [v >= 0 for v in s], input_columns=["score"],
                                batched=True)
        counts["scored"] = len(state["ds"])

    def dedup():
        ds = state["ds"].sort("score", reverse=True)  # keep the best of each group
        seen: set[str] = set()

        def first(example):
            key = instruction_key(example)
            if key in seen:
                return False
            seen.add(key)
            return True

        ds = ds.filter(first)
        lsh = MinHashLSH(threshold=0.85, num_perm=128)
        keep = []
        for number, example in enumerate(ds):
            text = instruction_key(example)
            minhash = MinHash(num_perm=128, seed=seed)
            minhash.update_batch([text[i:i + 5].encode() for i in range(max(1, len(text) - 4))])
            if lsh.query(minhash):
                continue
            lsh.insert(number, minhash)
            keep.append(number)
        state["ds"] = ds.select(keep)
        counts["deduped"] = len(keep)

    def mix_step():
        ds = state["ds"].shuffle(seed=seed)
        need = counts["records"]  # the afs mix's target: one training sample per record
        held = max(1, int(0.01 * min(need, len(ds))))
        split_ = ds.train_test_split(test_size=held, seed=seed)
        train = split_["train"]
        while len(train) < need:  # upsample by repeating, like the afs policy
            train = datasets.concatenate_datasets([train, split_["train"]])
        train.select(range(need)).shuffle(seed=seed).to_json(str(work / "baseline.train.jsonl"))
        split_["test"].to_json(str(work / "baseline.eval.jsonl"))

    for step, function in (("convert", convert), ("score", score), ("dedup", dedup),
                           ("mix", mix_step)):
        timed(results, step, function)
    return {"steps": results, "counts": counts}


# --- driver ---------------------------------------------------------------------------------


def child(args) -> None:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    print(f"{args.child}: {args.csn}", file=sys.stderr)
    if args.child == "afs":
        result = run_afs(Path(args.csn), work, args.seed, args.workers, args.records)
    else:
        result = run_baseline(Path(args.csn), work, args.seed)
        steps = result["steps"]  # the afs mix stage dedups and draws: compare with both
        steps["dedup+mix"] = {key: steps["dedup"][key] + steps["mix"][key]
                              for key in ("seconds", "cpu_seconds")}
        steps["dedup+mix"].update(peak_mb=max(steps["dedup"]["peak_mb"], steps["mix"]["peak_mb"]),
                                  load=steps["mix"]["load"])
    result["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["worker_max_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps(result))


def _spawn(kind: str, csn: Path, work: Path, seed: int, records: int, workers: str = "auto") -> dict:
    output = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--csn", str(csn), "--work", str(work),
         "--seed", str(seed), "--workers", str(workers), "--records", str(records)],
        check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(output.stdout.strip().splitlines()[-1])


ROWS = ("convert", "score", "dedup+mix")


def report(records: int, afs: dict, baseline: dict | None, baseline_records: int) -> None:
    print(f"\nafs: {records:,} CodeSearchNet records"
          + (f"; baseline: {baseline_records:,}" if baseline else ""))
    for measure, label in (("seconds", "wall"), ("cpu_seconds", "CPU")):
        header = f"{label:<10} {'afs s':>8} {'afs rec/s':>10} {'afs MB':>7}"
        if baseline:
            header += f" {'base s':>8} {'base rec/s':>10} {'base MB':>8} {'speed-up':>8}"
        print(header)
        totals = {"afs": 0.0, "base": 0.0}
        for step in ROWS:
            a = afs["steps"][step]
            totals["afs"] += a[measure]
            line = (f"{step:<10} {a[measure]:8.1f} {records / a[measure]:10,.0f} "
                    f"{a['peak_mb']:7.0f}")
            if baseline:
                b = baseline["steps"][step]
                totals["base"] += b[measure]
                speed = (records / a[measure]) / (baseline_records / b[measure])
                line += (f" {b[measure]:8.1f} {baseline_records / b[measure]:10,.0f} "
                         f"{b['peak_mb']:8.0f} {speed:7.1f}x")
            print(line)
        line = (f"{'total':<10} {totals['afs']:8.1f} {records / totals['afs']:10,.0f} "
                f"{afs['max_rss_mb']:7.0f}")
        if baseline:
            speed = (records / totals["afs"]) / (baseline_records / totals["base"])
            line += (f" {totals['base']:8.1f} {baseline_records / totals['base']:10,.0f} "
                     f"{baseline['max_rss_mb']:8.0f} {speed:7.1f}x")
        print(line + "\n")
    loads = [s["load"] for side in (afs, baseline) if side for s in side["steps"].values()]
    print(f"load average (1 min) at the end of each step: {min(loads):.1f} to {max(loads):.1f} "
          f"on {os.cpu_count()} CPUs")
    if baseline:
        steps = baseline["steps"]
        print(f"baseline dedup {steps['dedup']['seconds']:.1f} s, mix {steps['mix']['seconds']:.1f} s")
    if afs.get("worker_max_rss_mb"):
        print(f"afs scoring workers ({afs['counts']['score_workers']}): peak "
              f"{afs['worker_max_rss_mb']:.0f} MB each at most")
    print("afs counts:", json.dumps({k: v for k, v in afs["counts"].items() if k != "dedup"}))
    print("afs dedup:", json.dumps(afs["counts"]["dedup"]))
    if baseline:
        print("baseline counts:", json.dumps(baseline["counts"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--baseline-records", type=int, default=None,
                        help="records for the baseline (default: min(records, 100000); "
                             "datasketch needs about 1 ms a sample)")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", default="auto",
                        help="quality.workers for the afs score stage: a number or auto "
                             "(the default, as in a build); the baseline uses one process")
    parser.add_argument("--keep", metavar="DIR", help="work in DIR and keep the files")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument("--child", choices=("afs", "baseline"), help=argparse.SUPPRESS)
    parser.add_argument("--csn", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    base_n = 0 if args.no_baseline else (args.baseline_records or min(args.records, 100_000))
    with tempfile.TemporaryDirectory(prefix="afs-bench-") as temp:
        work = Path(args.keep or temp)
        work.mkdir(parents=True, exist_ok=True)
        csn = work / "csn.jsonl"
        start = time.perf_counter()
        generate(csn, args.records, args.seed)
        print(f"generated {args.records:,} records ({csn.stat().st_size / 2**20:,.0f} MB) in "
              f"{time.perf_counter() - start:.0f} s", file=sys.stderr)
        afs = _spawn("afs", csn, work / "afs", args.seed, args.records, args.workers)
        baseline = None
        if base_n:
            base_csn = csn
            if base_n != args.records:
                base_csn = work / "csn.baseline.jsonl"
                generate(base_csn, base_n, args.seed)
            baseline = _spawn("baseline", base_csn, work / "baseline", args.seed, base_n)
        report(args.records, afs, baseline, base_n)
        if args.json:
            Path(args.json).write_text(json.dumps(
                {"records": args.records, "baseline_records": base_n, "afs": afs,
                 "baseline": baseline}, indent=2) + "\n")


if __name__ == "__main__":
    main()
