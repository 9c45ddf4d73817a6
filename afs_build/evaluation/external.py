"""``afs eval``: ask a model afs did not build the benchmark, or show the last build's evaluation.

    afs eval --endpoint http://127.0.0.1:1234/v1 --model qwen2.5-0.5b-instruct   # LM Studio
    afs eval gpt                       # an eval.endpoints entry (its key from api_key_env)
    afs eval                           # the last build's per-model summaries

The model is asked the suite's questions (all of them, or ``--limit``) through the same runner
as the build's ``eval`` (streaming, retries, per-endpoint concurrency), graded by the same
rules, and written as results.jsonl, summary.json and a report (JSON, Markdown, HTML). The API
key is read from the environment variable named by ``--api-key-env`` or the manifest, never
taken from the command line or the manifest. Replies are cached only under ``--cache-key`` (or
the entry's ``cache_key``): a hosted model can change behind the same name.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

from ..errors import AfsError


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-")[:48] or "model"


def command(args) -> int:
    from ..manifest import load

    manifest = load(args.manifest) if Path(args.manifest).exists() else None
    if args.endpoint or args.names:
        return evaluate(args, manifest)
    if manifest is None:
        raise AfsError(f"{args.manifest} not found: give --endpoint URL --model NAME --suite FILE to "
                       f"evaluate a model without a manifest")
    return show(args, manifest)


def endpoints(args, manifest):
    """(report name, Endpoint, system prompt) for each model to evaluate."""
    from .benchmark import external_endpoint
    from .client import Endpoint

    out = []
    if args.endpoint:
        if not args.model:
            raise AfsError("afs eval --endpoint needs --model: the name the endpoint serves the model as")
        key = None
        if args.api_key_env:
            key = os.environ.get(args.api_key_env)
            if not key:
                raise AfsError(f"--api-key-env names {args.api_key_env}, which is not set; export it with the key")
        name = slug(args.model)
        if manifest is not None and name in manifest.specialists:
            raise AfsError(f"{name!r} is a specialist of {args.manifest}; its evaluation is doit eval:{name}")
        e = manifest.eval if manifest else None
        out.append((name, Endpoint(name=name, base_url=args.endpoint, key=key, model=args.model,
                                   digest=f"external:{args.endpoint}:{args.model}:{args.cache_key}" if args.cache_key else None,
                                   concurrency=args.concurrency or (e.concurrency if e else 1),
                                   timeout=e.timeout if e else 600.0, retries=e.retries if e else 2), args.system))
    for name in args.names:
        if manifest is None or name not in manifest.eval.endpoints:
            known = ", ".join(manifest.eval.endpoints) if manifest else ""
            raise AfsError(f"not an eval.endpoints entry of {args.manifest}: {name!r}; expected one of: {known or '(none)'}")
        endpoint = external_endpoint(manifest, name)
        if args.concurrency:
            from dataclasses import replace

            endpoint = replace(endpoint, concurrency=args.concurrency)
        out.append((name, endpoint, args.system or manifest.eval.endpoints[name].system_prompt))
    return out


def evaluate(args, manifest) -> int:
    from ..atomic import write_json
    from ..data.jsonl import write_jsonl
    from ..paths import Layout, ReportFiles
    from ..stages.evaluate import response_cache
    from . import benchmark, reports, suite
    from .cache import ResponseCache

    path = Path(args.suite) if args.suite else (manifest.resolve(manifest.eval.suite)
                                                 if manifest and manifest.eval.suite else None)
    if path is None:
        raise AfsError("no benchmark suite: give --suite FILE (or set eval.suite in the manifest)")
    questions = suite.load(path, args.suite or manifest.eval.suite, judges=["external"])
    questions = questions[:args.limit] if args.limit else questions
    cache = response_cache(manifest) if manifest else ResponseCache(None)
    for name, endpoint, system in endpoints(args, manifest):
        if args.out:
            folder = Path(args.out) / name
            files_results, files_summary, report_files = folder / "results.jsonl", folder / "summary.json", ReportFiles(folder)
        else:
            layout = Layout.of(manifest)
            ext = layout.external(name)
            files_results, files_summary, report_files = ext.results, ext.summary, layout.model_report(name)
        done = [0]

        def advance() -> None:
            done[0] += 1
            print(f"\r{name}: {done[0]}/{len(questions)}", end="", file=sys.stderr, flush=True)

        results = benchmark.run(endpoint, questions, system_prompt=system, run_id="afs-eval", cache=cache,
                                advance=advance)
        print(file=sys.stderr)
        summary = benchmark.summarize(name, results)
        summary["suite_version"] = suite.version(path)
        write_jsonl(files_results, results)
        write_json(files_summary, summary)
        report = reports.model_report(name, results, summary, suite_version=summary["suite_version"], kind="endpoint")
        from ..stages.scorecard import draw, write

        draw(write(report_files, report, reports.model_markdown(report),
                   {"categories": reports.charts_categories(f"{name}: score per category", {name: report})}),
             "afs eval")
        if args.json:
            print(json.dumps(summary, indent=2, sort_keys=True))
        else:
            print(line(name, summary))
            print(f"  results: {files_results}\n  report:  {report_files.html}")
    return 0


def line(name: str, s: dict) -> str:
    mean = "-" if s["mean_score"] is None else f"{s['mean_score']:.3f}"
    lat, ttft = s["latency_s"], s["ttft_s"]
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    return (f"{name}: mean score {mean} ({s['scored']} of {s['questions']} scored, {s['failed_requests']} failed "
            f"requests); latency p50/p95 {fmt(lat['p50'])}/{fmt(lat['p95'])} s, TTFT p50/p95 "
            f"{fmt(ttft['p50'])}/{fmt(ttft['p95'])} s, {fmt(s['tokens_per_second'])} tokens/s")


def show(args, manifest) -> int:
    from ..paths import Layout

    layout = Layout.of(manifest)
    out = {}
    for name in manifest.specialists:
        try:
            out[name] = json.loads(layout.eval(name).summary.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            out[name] = None
    if args.json:
        print(json.dumps(out, indent=2, sort_keys=True))
        return 0
    for name, summary in out.items():
        print(line(name, summary) if summary else f"{name}: not evaluated yet (doit eval:{name})")
    print(f"reports: {layout.family_eval_report.html}")
    return 0
