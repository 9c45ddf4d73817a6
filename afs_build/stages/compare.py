"""Compare each trained specialist with its base on the same questions (compare:<specialist>).

The base is asked every question the specialist was asked in ``eval``, with the specialist's
system prompt, the same sampling and the same grading, on the server of a served-only
specialist of the same base (the default family's Agahnim); where there is none, the base's
own GGUF (``baseline:<model>``, of the type the specialist serves) is served on a free
loopback port for as long as the comparison asks. Each quantized file of the
specialist (and its F16) answers the first ``eval.quant_questions`` of them as served (with the
context its server would retrieve for each), so what a quantization type costs is measured in
the answers a user would get. Results are kept per specialist version; a
version that scores lower than the one before beyond the interval is flagged.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
from typing import Iterator, Optional

from .. import log
from ..atomic import write_json
from ..errors import StageError
from ..manifest import Manifest, Specialist
from ..paths import Layout
from ..uptodate import SliceChanged, code_files
from .common import action, task

NAME = "compare"


def base_server(manifest: Manifest, spec: Specialist) -> Optional[Specialist]:
    """The served-only specialist that serves `spec`'s base as it is, preferring the same
    quantization type; None when there is none."""
    same = [s for s in manifest.specialists.values() if not s.train and s.base == spec.base]
    same.sort(key=lambda s: s.serve_quant != spec.serve_quant)
    return same[0] if same else None


def compare_slice(manifest: Manifest, name: str) -> dict:
    """What the comparison reads from the manifest: the eval section, and the specialist's
    system prompt and categories (the base is asked with them)."""
    spec = manifest.specialists[name]
    e = manifest.eval
    return {"eval": {k: getattr(e, k) for k in ("suite", "max_questions", "require_beats_base",
                                                 "general_category", "quant_questions", "seed")},
            "system_prompt": spec.system_prompt, "categories": spec.categories, "quantize": spec.quantize,
            **({"retrieval": spec.retrieval} if spec.retrieval else {})}  # the quant files are asked with it


def tasks(manifest: Manifest) -> Iterator[dict]:
    if not manifest.eval.suite:
        return
    layout = Layout.of(manifest)
    suite = manifest.resolve(manifest.eval.suite)
    for spec in manifest.trained:
        server = base_server(manifest, spec)
        files = layout.compare(spec.name)
        deps = [layout.eval(spec.name).results, suite, layout.mix(spec.name).train,
                layout.post(spec.name).quantize_report]
        if spec.retrieval:
            deps.append(layout.index(spec.retrieval.index).report)
        task_dep = [f"eval:{spec.name}"]
        if server is not None:
            deps.append(layout.post(server.name).quantize_report)
            task_dep.append(f"deploy:{server.name}")
        else:
            deps.append(layout.baseline(spec.base).report)
            task_dep.append(f"baseline:{spec.base}")
        yield task(f"{NAME}:{spec.name}", f"Compare {spec.title} with its base {spec.base!r} on the same questions.",
                   run, manifest, spec.name,
                   file_dep=deps + code_files("stages/compare.py", "evaluation/compare.py",
                                              "evaluation/stats.py", "evaluation/local.py",
                                              "evaluation/runner.py"),
                   task_dep=task_dep, targets=[files.report, files.base_results, files.quant_results],
                   uptodate=[SliceChanged(f"eval comparison ({spec.name})", compare_slice(manifest, spec.name))])


@action(NAME)
def run(manifest: Manifest, name: str) -> None:
    from ..data.jsonl import read_jsonl, write_jsonl
    from ..deploy.server import served_kind
    from ..evaluation import benchmark, compare, suite
    from .evaluate import response_cache

    layout = Layout.of(manifest)
    spec = manifest.specialists[name]
    files = layout.compare(name)
    task_name = f"{NAME}:{name}"
    questions = suite.load(manifest.resolve(manifest.eval.suite), manifest.eval.suite,
                           specialists=list(manifest.specialists), judges=manifest.eval.judges)
    by_id = {q["id"]: q for q in questions}
    mine = list(read_jsonl(layout.eval(name).results))
    asked = [by_id[r["question_id"]] for r in mine if r["question_id"] in by_id]
    server = base_server(manifest, spec)
    cache = response_cache(manifest)
    with serving_base(manifest, spec, server) as base, \
            log.step(task_name, f"asking the base ({base.name}) {len(asked)} questions", specialist=name), \
            log.progress(f"{task_name} base", len(asked)) as advance:
        base_results = benchmark.run(base, asked, system_prompt=spec.system_prompt, run_id=log.run_id(),
                                     model_file=None, quant=served_kind(spec), cache=cache, advance=advance)
    own = compare.own_categories(questions, name, spec.categories)
    report = compare.table(mine, base_results, own=own, general=manifest.eval.general_category,
                           seed=manifest.eval.seed)
    report.update(specialist=name, base=spec.base, base_server=server.name if server else None,
                  served=served_kind(spec), base_served=served_kind(server or spec),
                  seen_in_training=seen_in_training(layout, name, asked))
    with log.step(task_name, "asking each quantized file", specialist=name):
        quants, quant_rows = quantization(manifest, name, asked, cache)
    report["quantization"] = quants
    version = model_version(layout, name, spec)
    report["version"] = version
    from ..retrieval.effect import line as retrieval_line, section

    report["retrieval"] = section(manifest, name)  # with and without retrieval (eval:<name>)
    if report["retrieval"]:
        log.event(retrieval_line(spec.title, report["retrieval"]), task=task_name, specialist=name)
    report["regression"] = record_version(files.history, version, mine, own, manifest.eval.seed)
    files.folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(files.base_results, base_results)
    write_jsonl(files.quant_results, quant_rows)
    write_json(files.report, report)
    text = compare.line(spec.title, report)
    loud = report["verdict"] != compare.VERDICT_BETTER
    log.event(("WARNING: " if loud else "") + text, task=task_name, specialist=name)
    if report["regression"] and report["regression"]["regressed"]:
        log.event(f"WARNING: {spec.title} version {version} scores lower on its own categories than "
                  f"version {report['regression']['previous']} (beyond the interval)", task=task_name)
    if loud and manifest.eval.require_beats_base:
        raise StageError(f"{text} (eval.require_beats_base is true; the replies are in "
                         f"{layout.eval(name).results} and {files.base_results})")


@contextlib.contextmanager
def serving_base(manifest: Manifest, spec: Specialist, server: Optional[Specialist]) -> Iterator:
    """The endpoint that answers as `spec`'s base: the served-only specialist's server, or the
    base's own GGUF served on a free loopback port until the block ends; with
    ``eval.copies - 1`` more copies of it as mirrors."""
    from ..deploy import processes
    from ..deploy.access import client_key
    from ..deploy.server import GRACE_SECONDS, free_port, running, served_gguf, served_kind, start
    from ..evaluation import benchmark

    layout = Layout.of(manifest)
    task_name = f"{NAME}:{spec.name}"
    folder = layout.compare(spec.name).folder
    if server is not None:
        retrieval = layout.deploy(server.name).retrieval if server.retrieval else None
        with benchmark.mirrored(manifest, benchmark.endpoint(manifest, server.name), served_gguf(layout, server),
                                n_ctx=server.context_length, folder=folder, retrieval=retrieval,
                                task=task_name) as endpoint:
            yield endpoint
        return
    files = layout.baseline(spec.base)
    key = client_key(manifest.deploy)
    port = free_port()
    gguf = files.gguf(served_kind(spec))
    record = start(spec.base, gguf, host="127.0.0.1", port=port,
                   n_ctx=spec.context_length, pid_file=files.pid, log_file=files.server_log, key=key)
    try:
        endpoint = benchmark.local_endpoint(manifest, spec.base, f"http://127.0.0.1:{port}/v1", key,
                                            benchmark.served_digest(files.report, gguf.name))
        with benchmark.mirrored(manifest, endpoint, gguf, n_ctx=spec.context_length, folder=folder,
                                task=task_name) as endpoint:
            yield endpoint
    finally:
        for pid in running(files.pid) or [record["pid"]]:
            processes.terminate(pid, GRACE_SECONDS)
        files.pid.unlink(missing_ok=True)


def seen_in_training(layout: Layout, name: str, questions: list[dict]) -> int:
    """How many of the compared questions a training sample matches (decontamination keeps
    this at zero)."""
    from ..data.decontam import Decontaminator
    from ..data.jsonl import read_jsonl

    checker = Decontaminator([q["question"] for q in questions])
    seen = set()
    for sample in read_jsonl(layout.mix(name).train):
        found = checker.match(sample)
        if found is not None:
            seen.add(found[0])
    return len(seen)


def served_chats(manifest: Manifest, name: str, questions: list[dict]) -> dict[str, list[dict]]:
    """{question id: messages} for the questions `name`'s server puts context in front of (its
    index, top_k, min_similarity and context_chars), as it sends them on to the model; the
    others it sends as asked. Empty for a specialist that does not retrieve."""
    from ..evaluation.local import messages_for
    from ..retrieval.search import Retriever

    spec = manifest.specialists[name]
    if spec.retrieval is None or not questions:
        return {}
    chats = {}
    retriever = Retriever(manifest, spec.retrieval.index)
    try:
        for question in questions:
            messages, hits = retriever.serve(messages_for(question, spec.system_prompt), spec.retrieval)
            if hits:
                chats[question["id"]] = messages
    finally:
        retriever.close()
    return chats


def quantization(manifest: Manifest, name: str, questions: list[dict], cache=None) -> tuple[dict, list[dict]]:
    """Each quantized file and the F16 asked the first questions as served (with the context its
    server retrieves): score, agreement with the F16's replies, size and speed per type."""
    from concurrent.futures import ThreadPoolExecutor

    from ..evaluation import grading
    from ..evaluation.benchmark import served_digest
    from ..evaluation.local import answer_all

    spec = manifest.specialists[name]
    limit = manifest.eval.quant_questions
    chosen = [q for q in questions if q["grading"] not in ("judge", "code")]  # code: sandbox runs are slow
    chosen = chosen if limit is None else chosen[:limit]
    if not chosen:
        return {}, []
    post = Layout.of(manifest).post(name)
    chats = served_chats(manifest, name, chosen)
    kinds = ["F16"] + [t for t in spec.quantize if t != "F16"]
    replies: dict[str, dict[str, str]] = {}
    out: dict[str, dict] = {}
    rows = []

    def ask(kind: str) -> dict:
        path = post.gguf(kind)
        return answer_all(path, chosen, spec.system_prompt, n_ctx=spec.context_length, cache=cache,
                          digest=served_digest(post.quantize_report, path.name), chats=chats)

    # as many files at a time as a served model has copies (each on llama.cpp's default threads)
    with ThreadPoolExecutor(max_workers=manifest.eval.model_copies, thread_name_prefix="quant") as pool:
        asked = dict(zip(kinds, pool.map(ask, kinds)))
    for kind in kinds:
        path = post.gguf(kind)
        answers = asked[kind]
        replies[kind] = {qid: a["reply"] for qid, a in answers.items()}
        scores = {qid: grading.rule_score(q, answers[q["id"]]["reply"]) for q in chosen for qid in [q["id"]]}
        tokens = sum(a["completion_tokens"] or 0 for a in answers.values())
        seconds = sum(a["latency_s"] for a in answers.values())
        out[kind] = {"file": path.name, "bytes": path.stat().st_size, "questions": len(chosen),
                     "with_context": len(chats),
                     "mean_score": round(sum(scores.values()) / len(scores), 4),
                     "tokens_per_second": round(tokens / seconds, 2) if seconds else None}
        for q in chosen:
            rows.append({"quant": kind, "question_id": q["id"], "category": q["category"],
                         "reply": answers[q["id"]]["reply"], "score": round(scores[q["id"]], 4)})
    from ..evaluation.compare import agreement

    for kind in kinds:
        out[kind]["agreement_with_f16"] = agreement(replies[kind], replies["F16"])
    return out, rows


def model_version(layout: Layout, name: str, spec: Specialist) -> str:
    """The specialist version: a digest of its quantize report (which changes with every
    served file) and the system prompt it answers with."""
    text = layout.post(name).quantize_report.read_bytes() + spec.system_prompt.encode()
    return hashlib.sha256(text).hexdigest()[:12]


def record_version(history, version: str, results: list[dict], own: list[str], seed: int) -> Optional[dict]:
    """Append this version's own-category scores to the history (once per version) and compare
    them with the latest other version's."""
    from ..data.jsonl import read_jsonl
    from ..evaluation.compare import regression

    scores = {r["question_id"]: r["score"] for r in results if r["category"] in own and r.get("score") is not None}
    past = list(read_jsonl(history)) if history.exists() else []
    previous = next((p for p in reversed(past) if p["version"] != version), None)
    if not past or past[-1]["version"] != version:
        history.parent.mkdir(parents=True, exist_ok=True)
        entry = {"version": version, "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                 "own_mean": round(sum(scores.values()) / len(scores), 4) if scores else None,
                 "scores": scores}
        with open(history, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry, sort_keys=True) + "\n")
    if previous is None:
        return None
    return {"previous": previous["version"], **regression(scores, previous["scores"], seed=seed)}
