"""Ask each served specialist the benchmark suite and grade its replies (eval:<specialist>).

Replies come from the response cache where the same served file was asked the same question
before (keyed by the file's digest, the messages and the sampling), so a rebuild that changes
nothing an answer depends on asks nothing again. Questions graded by judges are left to
``judge:family``. A specialist that retrieves is asked twice, with retrieval and with it turned
off (cached apart), and the difference per category is kept beside its results. Each index with questions gets its
retrieval quality measured (eval:index:<name>).
"""

from __future__ import annotations

from typing import Iterator

from .. import log
from ..atomic import write_json
from ..manifest import Manifest
from ..paths import Layout
from ..uptodate import SliceChanged, code_files
from .common import action, task

NAME = "eval"
CODE = ("stages/evaluate.py", "evaluation/benchmark.py", "evaluation/grading.py", "evaluation/sandbox.py",
        "evaluation/client.py", "evaluation/runner.py", "evaluation/suite.py")


def eval_slice(manifest: Manifest, name: str) -> dict:
    """What the replies depend on in the manifest: the questions chosen, the pass marks, the
    specialist's system prompt and the type it serves (not where it is served, nor how many
    requests are in flight: a new port asks nothing again)."""
    from ..deploy.server import served_kind

    spec = manifest.specialists[name]
    e = manifest.eval
    # A retrieving specialist's replies also depend on its retrieval settings (only then in the
    # slice, so the others' slices are what they were).
    return {"suite": e.suite, "max_questions": e.max_questions, "thresholds": e.thresholds,
            "system_prompt": spec.system_prompt, "served": served_kind(spec),
            **({"retrieval": spec.retrieval} if spec.retrieval else {})}


def tasks(manifest: Manifest) -> Iterator[dict]:
    yield from index_tasks(manifest)
    if not manifest.eval.suite:  # no benchmark to ask
        return
    layout = Layout.of(manifest)
    suite = manifest.resolve(manifest.eval.suite)
    for spec in manifest.specialists.values():
        files = layout.eval(spec.name)
        # the quantize report is written last: it changes when the served file does
        yield task(f"{NAME}:{spec.name}", f"Ask {spec.title} the benchmark suite on its server and grade the replies.",
                   run, manifest, spec.name,
                   file_dep=[suite, layout.post(spec.name).quantize_report, *code_files(*CODE)]
                   + ([layout.index(spec.retrieval.index).report] if spec.retrieval else []),
                   task_dep=[f"deploy:{spec.name}"],
                   targets=[files.results, files.summary]
                   + ([files.without_retrieval, files.retrieval_effect] if spec.retrieval else []),
                   uptodate=[SliceChanged(f"eval ({spec.name})", eval_slice(manifest, spec.name))])


def response_cache(manifest: Manifest):
    """The shared response cache (None-backed when eval.cache is false)."""
    from ..evaluation.cache import ResponseCache

    return ResponseCache(Layout.of(manifest).cache("eval") if manifest.eval.cache else None)


@action(NAME)
def run(manifest: Manifest, name: str) -> None:
    from ..data.jsonl import write_jsonl
    from ..deploy.server import served_gguf, served_kind
    from ..errors import StageError
    from ..evaluation import benchmark, suite

    layout = Layout.of(manifest)
    spec = manifest.specialists[name]
    files = layout.eval(name)
    task_name = f"{NAME}:{name}"
    path = manifest.resolve(manifest.eval.suite)
    questions = suite.load(path, manifest.eval.suite, specialists=list(manifest.specialists),
                           judges=manifest.eval.judges)
    mine = suite.for_specialist(questions, name, manifest.eval.max_questions)
    gguf = served_gguf(layout, spec)
    cache = response_cache(manifest)
    # the served model and its copies (eval.copies) answer while the task runs
    with benchmark.mirrored(manifest, benchmark.endpoint(manifest, name, layout), gguf,
                            n_ctx=spec.context_length, folder=files.folder, task=task_name,
                            retrieval=layout.deploy(name).retrieval if spec.retrieval else None) as endpoint:
        retrieving = endpoint if spec.retrieval is None else \
            benchmark.with_retrieval(endpoint, layout.index(spec.retrieval.index).report, spec.retrieval)
        with log.step(task_name, f"asking {len(mine)} benchmark questions", specialist=name) as extra, \
                log.progress(task_name, len(mine)) as advance:
            results = benchmark.run(retrieving, mine, system_prompt=spec.system_prompt, run_id=log.run_id(),
                                    model_file=gguf.relative_to(layout.build).as_posix(),
                                    quant=served_kind(spec), cache=cache, advance=advance)
            thresholds = manifest.eval.thresholds
            summary = benchmark.summarize(name, results, thresholds.min_score, thresholds.min_tokens_per_second)
            summary["suite_version"] = suite.version(path)
            extra.update(mean_score=summary["mean_score"], tokens_per_second=summary["tokens_per_second"],
                         cached=cache.hits, failed=summary["failed_requests"])
        files.folder.mkdir(parents=True, exist_ok=True)
        if spec.retrieval is not None:  # the same questions without retrieval, for the difference
            from ..retrieval.effect import effect

            # A question the server put no context in front of (nothing similar enough in the
            # index) was already asked exactly as it would be without retrieval: same model, same
            # messages, greedy. Its reply is reused, not asked for again.
            asked = {r["question_id"]: r for r in results}
            same = {q["id"] for q in mine if not asked[q["id"]].get("retrieved") and not asked[q["id"]].get("error")}
            again = [q for q in mine if q["id"] not in same]
            with log.step(task_name, "asking again without retrieval", specialist=name,
                          reused=len(same)), log.progress(task_name, len(again)) as advance:
                fresh = benchmark.run(endpoint, again, system_prompt=spec.system_prompt, run_id=log.run_id(),
                                      model_file=gguf.relative_to(layout.build).as_posix(),
                                      quant=served_kind(spec), cache=cache, advance=advance,
                                      extra={"retrieval": False})
            by_id = {r["question_id"]: r for r in fresh}
            plain = [by_id[q["id"]] if q["id"] in by_id else {**asked[q["id"]], "cached": True} for q in mine]
            write_jsonl(files.without_retrieval, plain)
            write_json(files.retrieval_effect, effect(manifest, name, questions, results, plain))
    write_jsonl(files.results, results)
    write_json(files.summary, summary)
    if summary["failed_requests"]:
        log.event(f"WARNING: {summary['failed_requests']} of {len(results)} requests to {spec.title} "
                  f"failed (not scored): {summary['failed'][0]['error']}", task=task_name, specialist=name)
    if summary["failures"]:
        raise StageError(f"{spec.title} does not meet the pass marks: {'; '.join(summary['failures'])} "
                         f"(replies in {files.results})")


def index_tasks(manifest: Manifest) -> Iterator[dict]:
    """eval:index:<name>: recall@k and MRR of each index on its questions."""
    layout = Layout.of(manifest)
    for name, index in manifest.retrieval.indexes.items():
        if not index.questions:
            continue
        files = layout.index(name)
        yield task(f"{NAME}:index:{name}", f"Measure recall@k and MRR of index {name} on {index.questions}.",
                   run_index, manifest, name,
                   file_dep=[manifest.resolve(index.questions), files.report]
                   + code_files("retrieval/quality.py", "retrieval/search.py", "retrieval/fusion.py"),
                   task_dep=[f"index:{name}"], targets=[files.quality],
                   uptodate=[SliceChanged(f"retrieval.indexes.{name}.search", index.search)])


@action(NAME)
def run_index(manifest: Manifest, name: str) -> None:
    from ..retrieval.quality import measure

    report = measure(manifest, name)
    for mode, row in report["modes"].items():
        o = row["overall"]
        log.event(f"index {name}, {mode}: recall@1 {o['recall@1']:.2f}, @5 {o['recall@5']:.2f}, "
                  f"@10 {o['recall@10']:.2f}, MRR {o['mrr']:.2f} ({o['questions']} questions)",
                  task=f"{NAME}:index:{name}")
