"""The ``afs`` command: validate manifests and specs, plan a build, run it.

User mistakes print as ``FILE:LINE:COL: key.path: message`` lines and exit 1; no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

from .errors import AfsError, Problem

EXIT_INVALID = 1
EXIT_USAGE = 2


def main(argv: Optional[Sequence[str]] = None) -> int:
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see graph.dodo_namespace
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except AfsError as err:
        print(err.render(), file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `afs plan | head`: the reader has gone, nothing more to say
        sys.stderr.close()
        return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="afs", description="Turn data into small specialist "
                                     "language models that run on your own machine.")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"afs {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="check manifests (YAML) and JSON Schemas; print every problem")
    p.add_argument("files", nargs="*", default=["afs.yaml"], metavar="FILE",
                   help="manifests (.yaml/.yml) or schemas (specs/*.json); default afs.yaml")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("plan", help="which tasks would run and why, with training time and cost")
    p.add_argument("-m", "--manifest", default="afs.yaml", help="manifest file (default afs.yaml)")
    p.add_argument("--hardware", action="append", default=[], metavar="[SPECIALIST=]NAME",
                   help="price training on other hardware from the manifest (repeatable)")
    p.add_argument("--all", action="store_true", help="list up-to-date tasks too")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("build", help="run doit on a manifest (arguments after -- go to doit)")
    p.add_argument("-m", "--manifest", default="afs.yaml", help="manifest file (default afs.yaml)")
    p.add_argument("doit_args", nargs=argparse.REMAINDER, help="doit options and task names")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("status", help="each specialist's server: port, file, pid, "
                       "healthy/unauthorized/down/stopped")
    p.add_argument("-m", "--manifest", default="afs.yaml", help="manifest file (default afs.yaml)")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("stop", help="stop the servers afs started (all, or the named specialists)")
    p.add_argument("-m", "--manifest", default="afs.yaml", help="manifest file (default afs.yaml)")
    p.add_argument("names", nargs="*", metavar="NAME", help="specialists to stop (default: all)")
    p.set_defaults(func=cmd_stop)

    p = sub.add_parser("compare", help="each trained specialist against its base, per category")
    p.add_argument("-m", "--manifest", default="afs.yaml", help="manifest file (default afs.yaml)")
    p.add_argument("names", nargs="*", metavar="NAME", help="specialists to show (default: all trained)")
    p.add_argument("--json", action="store_true", help="print the comparisons as JSON")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("eval", help="evaluate a model afs did not build (--endpoint URL --model NAME, or an "
                       "eval.endpoints entry); with no model, show the last build's evaluation")
    p.add_argument("-m", "--manifest", default="afs.yaml", help="manifest file (default afs.yaml)")
    p.add_argument("names", nargs="*", metavar="NAME", help="eval.endpoints entries to evaluate")
    p.add_argument("--endpoint", metavar="URL", help="an OpenAI-compatible base URL, e.g. http://127.0.0.1:1234/v1")
    p.add_argument("--model", help="the model name the endpoint is asked for (with --endpoint)")
    p.add_argument("--api-key-env", metavar="VAR", help="environment variable holding the endpoint's API key")
    p.add_argument("--suite", help="benchmark questions (default: the manifest's eval.suite)")
    p.add_argument("--system", default="", help="system prompt to ask with (default: none)")
    p.add_argument("--limit", type=int, help="ask at most this many questions")
    p.add_argument("--concurrency", type=int, help="requests in flight at once (default eval.concurrency)")
    p.add_argument("--cache-key", help="cache replies under this name of the exact model version")
    p.add_argument("--out", help="folder for results, summary and report (default: under the build folder)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("feedback", help="merge the last round's judged mistakes into the feedback sources' files")
    p.add_argument("-m", "--manifest", default="afs.yaml", help="manifest file (default afs.yaml)")
    p.add_argument("sources", nargs="*", metavar="SOURCE", help="feedback sources to update (default: all)")
    p.set_defaults(func=cmd_feedback)

    p = sub.add_parser("screenshots", help="take the last screenshots as the new baselines (--accept)")
    p.add_argument("-m", "--manifest", default="afs.yaml", help="manifest file (default afs.yaml)")
    p.add_argument("--accept", action="store_true", help="copy the current images over the baselines")
    p.add_argument("names", nargs="*", metavar="NAME", help="specialists (default: all)")
    p.set_defaults(func=cmd_screenshots)

    p = sub.add_parser("site", help="build the site from what the build folder holds now (nothing "
                       "upstream runs; `doit site` brings it up to date first); --serve shows it")
    p.add_argument("-m", "--manifest", default="afs.yaml", help="manifest file (default afs.yaml)")
    p.add_argument("--serve", action="store_true", help="then serve the built site on 127.0.0.1")
    p.add_argument("--port", type=int, default=None, help="port for --serve (default: site.url's, "
                   "where instant navigation works)")
    p.add_argument("--no-build", action="store_true", help="with --serve: serve the site as last built")
    p.set_defaults(func=cmd_site)

    p = sub.add_parser("clean", help="remove what the build made for the named specialists (default: "
                       "everything, as doit clean): stop their servers, remove what afs put in LM "
                       "Studio's folder, remove their build outputs")
    p.add_argument("-m", "--manifest", default="afs.yaml", help="manifest file (default afs.yaml)")
    p.add_argument("-n", "--dry-run", action="store_true", help="say what would go; remove nothing")
    p.add_argument("names", nargs="*", metavar="NAME", help="specialists to clean (default: all)")
    p.set_defaults(func=cmd_clean)
    return parser


def cmd_validate(args: argparse.Namespace) -> int:
    from .manifest import load

    failed = False
    for name in args.files:
        path = Path(name)
        try:
            if path.suffix == ".json":
                what = _validate_schema_file(path)
            else:
                manifest = load(path, name)
                what = (f"{len(manifest.specialists)} specialists, {len(manifest.sources)} sources, "
                        f"{len(manifest.mixes)} mixes")
                _print_warnings(path, name)
            print(f"{name}: valid ({what})")
        except AfsError as err:
            failed = True
            print(err.render(), file=sys.stderr)
    return EXIT_INVALID if failed else 0


def _print_warnings(path: Path, name: str) -> None:
    """What is valid but risky in a manifest, as ``FILE:LINE:COL: key: warning: ...`` lines."""
    from . import checks, yamlload

    raw, positions = yamlload.load_yaml(path, name)
    for problem in checks.warnings(raw if isinstance(raw, dict) else {}, positions):
        print(problem, file=sys.stderr)


def _validate_schema_file(path: Path) -> str:
    """A JSON Schema file must parse and be valid against its metaschema (draft 2020-12)."""
    import jsonschema

    from .yamlload import read_text

    text = read_text(path)
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as err:
        raise AfsError(problems=[Problem(str(path), err.lineno, err.colno, "", f"JSON syntax error: {err.msg}")]) from None
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as err:
        where = ".".join(str(p) for p in err.absolute_path)
        raise AfsError(problems=[Problem(str(path), 1, 1, where, f"not a valid JSON Schema "
                                         f"(draft 2020-12): {err.message}")]) from None
    return "JSON Schema, draft 2020-12"


def cmd_plan(args: argparse.Namespace) -> int:
    from . import plan
    from .manifest import load

    manifest = load(args.manifest)
    override = _hardware_override(manifest, args.hardware)
    tasks = plan.task_plans(manifest)
    costs = plan.training_costs(manifest, override)
    if args.json:
        print(json.dumps({
            "tasks": [{"name": t.name, "runs": t.runs, "reasons": list(t.reasons)} for t in tasks],
            "training": [{"specialist": c.specialist, "hardware": c.hardware, "gpu": c.gpu,
                          "count": c.count, "tokens": c.estimate.tokens,
                          "tokens_from": c.estimate.tokens_source,
                          "tokens_per_second": round(c.estimate.tokens_per_second, 1),
                          "hours": round(c.estimate.hours, 4),
                          "price_per_hour": c.estimate.price_per_hour,
                          "cost": round(c.estimate.cost, 4),
                          "actual_hours": c.actual_hours and round(c.actual_hours, 4),
                          "actual_cost": c.actual_cost} for c in costs],
            "total": {"hours": round(sum(c.estimate.hours for c in costs), 4),
                      "cost": round(sum(c.estimate.cost for c in costs), 4)},
        }, indent=2))
        return 0
    running = [t for t in tasks if t.runs]
    print(f"{manifest.file.name}: {len(running)} of {len(tasks)} tasks would run")
    for t in tasks:
        if t.runs or args.all:
            print(f"  {'run ' if t.runs else 'ok  '} {t.name:<28} {'; '.join(t.reasons) or 'up to date'}")
    if costs:
        print("\nTraining (estimates; tokens from the built mix where it exists):")
        for c in costs:
            e = c.estimate
            print(f"  {c.title}: ${e.price_per_hour:.3f}/hr × {_hours(e.hours)} = ${e.cost:.2f}"
                  f"   ({c.gpu} ×{c.count} on {c.hardware}, {e.tokens:,} tokens × "
                  f"{manifest.specialists[c.specialist].epochs:g} epochs from {e.tokens_source}, "
                  f"~{e.tokens_per_second:,.0f} tokens/s)")
            if c.actual_hours is not None:
                print(f"      last run: {_hours(c.actual_hours)} = ${c.actual_cost:.2f}")
        total = sum(c.estimate.cost for c in costs)
        local = sum(c.estimate.hours for c in costs if manifest.hardware[c.hardware].backend == "local")
        rented = [c.estimate.hours for c in costs if manifest.hardware[c.hardware].backend != "local"]
        print(f"\nTotal: ${total:.2f} per training session (all {len(costs)} models); about "
              f"{_hours(local + max(rented, default=0))} of wall time (local training runs one "
              f"at a time, rented GPUs in parallel with doit -n)")
    return 0


def _hours(hours: float) -> str:
    return f"{hours:.1f}hr" if hours >= 1 else f"{hours * 60:.0f}min" if hours * 60 >= 1 else f"{hours * 3600:.0f}s"


def _hardware_override(manifest, values: list[str]) -> dict[str, str]:
    from .errors import one_of, suggest

    out: dict[str, str] = {}
    for value in values:
        who, _, hw = value.rpartition("=")
        who = who or "*"
        if hw not in manifest.hardware:
            raise AfsError(f"afs plan --hardware {value}: unknown hardware {hw!r}; expected one of: "
                           f"{one_of(manifest.hardware)}{suggest(hw, manifest.hardware)}")
        if who != "*" and who not in manifest.specialists:
            raise AfsError(f"afs plan --hardware {value}: unknown specialist {who!r}; expected one "
                           f"of: {one_of(manifest.specialists)}{suggest(who, manifest.specialists)}")
        out[who] = hw
    return out


def cmd_build(args: argparse.Namespace) -> int:
    from doit.cmd_base import ModuleTaskLoader
    from doit.doit_cmd import DoitMain

    from . import graph
    from .manifest import load

    manifest = load(args.manifest)
    extra = [a for a in args.doit_args if a != "--"]
    return DoitMain(ModuleTaskLoader(graph.namespace(manifest))).run(extra)


def cmd_status(args: argparse.Namespace) -> int:
    from .deploy import server
    from .manifest import load
    from .paths import Layout

    manifest = load(args.manifest)
    rows = server.status(Layout.of(manifest), manifest)
    table = [("SPECIALIST", "PORT", "STATE", "PID", "FILE")] + [
        (r["specialist"], str(r["port"]), r["state"],
         ",".join(map(str, r["pids"])) or ("-" if r["pid"] is None else str(r["pid"])),
         _shown_path(r["file"])) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[4])
    if any(r["state"] == "unauthorized" for r in rows):
        from .deploy.access import key_variable

        print(f"(unauthorized: the server answers but wants the API key; set "
              f"{key_variable(manifest.deploy)} to check it)", file=sys.stderr)
    return 0


def _shown_path(path: str) -> str:
    """`path` relative to the working folder when it lies below it."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


def cmd_stop(args: argparse.Namespace) -> int:
    from .deploy import server
    from .manifest import load
    from .paths import Layout

    def waiting(name: str) -> None:
        print(f"waiting for the deploy of {name} in progress to finish...", file=sys.stderr)

    manifest = load(args.manifest)
    stopped = server.stop(Layout.of(manifest), manifest, args.names or None, on_wait=waiting)
    print(f"stopped: {', '.join(stopped)}" if stopped else "no afs server was running")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """The comparison tables the last ``compare`` tasks wrote (nothing is asked here)."""
    from .errors import AfsError as _Error
    from .manifest import load
    from .stages.report import family, lines

    manifest = load(args.manifest, _shown_path(args.manifest))
    reports = family(manifest)
    unknown = [n for n in args.names if n not in reports]
    if unknown:
        raise _Error(f"not a trained specialist of {args.manifest}: {', '.join(unknown)}; expected "
                     f"one of: {', '.join(reports)}")
    if args.names:
        reports = {n: reports[n] for n in args.names}
    if args.json:
        print(json.dumps(reports, indent=2, sort_keys=True))
        return 0
    for text, (name, report) in zip(lines(manifest, reports), reports.items()):
        print(text)
        if report is None:
            continue
        print(f"  {'category':<16} {'n':>3} {'spec':>5} {'base':>5} {'diff':>6}  {'95% interval':<16} W/T/L   sign p")
        # own and general first; then each category, less the general one (shown already) and
        # the own one when it is the only one (the same row twice says nothing)
        shown = {manifest.eval.general_category}
        if len(report.get("own_categories") or []) == 1:
            shown |= set(report["own_categories"])
        rows = [("own", report["own"]), ("general", report["general"])] + sorted(
            (k, v) for k, v in report["by_category"].items() if k not in shown)
        for label, row in rows:
            if not row["questions"]:
                continue
            print(f"  {label:<16} {row['questions']:>3} {row['mean_a']:>5.2f} {row['mean_b']:>5.2f} "
                  f"{row['difference']:>+6.2f}  [{row['low']:+.2f}, {row['high']:+.2f}]   "
                  f"{row['wins']}/{row['ties']}/{row['losses']:<5} {row['sign_p']:.3f}")
        for kind, q in (report.get("quantization") or {}).items():
            agree = q["agreement_with_f16"]
            print(f"  {kind:<8} {q['bytes'] / 2**20:7.1f} MiB  score {q['mean_score']:.2f}  same replies as "
                  f"F16 {'-' if agree is None else f'{agree:.0%}'}  {q['tokens_per_second'] or 0:.0f} tokens/s")
        print(f"  questions seen in training: {report['seen_in_training']}; version {report['version']}")
        regression = report.get("regression")
        if regression:
            word = "REGRESSION" if regression["regressed"] else "no regression"
            print(f"  against version {regression['previous']}: {regression['difference']:+.2f} "
                  f"[{regression['low']:+.2f}, {regression['high']:+.2f}]: {word}")
        if report.get("retrieval"):
            from .retrieval.effect import line as retrieval_line

            print("  " + retrieval_line(manifest.specialists[name].title, report["retrieval"]))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .evaluation import external

    return external.command(args)


def cmd_feedback(args: argparse.Namespace) -> int:
    from .evaluation.feedback import merge
    from .manifest import load
    from .paths import Layout

    manifest = load(args.manifest, _shown_path(args.manifest))
    latest = Layout.of(manifest).judge().feedback
    sources = [s for s in manifest.sources.values() if s.kind == "feedback"]
    unknown = [n for n in args.sources if n not in {s.name for s in sources}]
    if unknown:
        raise AfsError(f"not a feedback source of {args.manifest}: {', '.join(unknown)}; expected one of: "
                       f"{', '.join(s.name for s in sources) or '(none)'}")
    if not latest.exists():
        raise AfsError(f"{latest} does not exist; judge a round first: doit judge:family")
    if not sources:
        lines = sum(1 for _ in latest.open(encoding="utf-8"))
        print(f"{latest}: {lines} judged mistakes; add a source of kind feedback (path: a project file) to "
              f"{args.manifest} and run afs feedback again to train on them")
        return 0
    for source in sources:
        if args.sources and source.name not in args.sources:
            continue
        added, total = merge(latest, manifest.resolve(source.settings["path"]))
        print(f"{source.name}: {added} new mistakes, {total} in {source.settings['path']}")
    return 0


def cmd_screenshots(args: argparse.Namespace) -> int:
    from .deploy.server import check_names
    from .manifest import load
    from .stages.screenshots import accept

    manifest = load(args.manifest, _shown_path(args.manifest))
    if not args.accept:
        raise AfsError("afs screenshots: say --accept to take the last images as the new baselines "
                       "(doit screenshots:family compares them)")
    taken = accept(manifest, check_names(manifest, args.names) if args.names else None)
    print(f"accepted {len(taken)} screenshots as baselines in {manifest.eval.screenshots.baselines}")
    return 0


def cmd_site(args: argparse.Namespace) -> int:
    """Build the site from the build folder as it is; with --serve, serve it on loopback."""
    from .manifest import load
    from .paths import SiteFiles
    from .site import build

    manifest = load(args.manifest, _shown_path(args.manifest))
    folder = SiteFiles.of(manifest).html
    if not args.no_build:
        folder = build.build_site(manifest)
        print(f"site built: {_shown_path(str(folder / 'index.html'))}")
    if args.serve:
        if not (folder / "index.html").is_file():
            raise AfsError(f"no built site in {folder}; build it with: afs site -m {args.manifest}")
        from urllib.parse import urlparse

        from .site.serve import serve

        serve(folder, args.port if args.port is not None else (urlparse(manifest.site.url).port or 8000))
    return 0


# The stages with one task per specialist: cleaning a specialist cleans these tasks of it.
SPECIALIST_STAGES = ("mix", "render", "train", "merge", "gguf", "quantize", "deploy", "eval", "compare")


def cmd_clean(args: argparse.Namespace) -> int:
    from doit.cmd_base import ModuleTaskLoader
    from doit.doit_cmd import DoitMain

    from . import graph
    from .deploy.server import check_names
    from .manifest import load

    manifest = load(args.manifest)
    names = check_names(manifest, args.names)
    chosen = [t["name"] for t in graph.all_tasks(manifest)
              if t["name"].split(":", 1)[0] in SPECIALIST_STAGES
              and t["name"].split(":", 1)[1] in names]
    options = ["--dry-run"] if args.dry_run else []
    # Later stages first (the server before the files it serves), as doit orders a full clean;
    # no names: everything, as `doit clean`.
    code = DoitMain(ModuleTaskLoader(graph.namespace(manifest))).run(
        ["clean", *options, *reversed(chosen)])
    return code if isinstance(code, int) else 0
