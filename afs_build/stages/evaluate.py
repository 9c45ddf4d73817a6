"""Ask each served specialist the benchmark suite and grade its replies (eval:<specialist>).

A specialist that retrieves is asked twice, with retrieval and with it turned off, and the
difference per category is kept beside its results. Each index with questions gets its
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


def eval_slice(manifest: Manifest, name: str) -> dict:
    """What the replies depend on in the manifest: the eval section, the specialist's system
    prompt and the type it serves (not where it is served: a new port asks nothing again)."""
    from ..deploy.server import served_kind

    spec = manifest.specialists[name]
    # A retrieving specialist's replies also depend on its retrieval settings (only then in the
    # slice, so the others' slices are what they were).
    return {"eval": manifest.eval, "system_prompt": spec.system_prompt, "served": served_kind(spec),
            **({"retrieval": spec.retrieval} if spec.retrieval else {})}


def tasks(manifest: Manifest) -> Iterator[dict]:
    yield from index_tasks(manifest)
    if not manifest.eval.suite:  # no benchmark to ask
        return
    layout = Layout.of(manifest)
    suite = str(manifest.resolve(manifest.eval.suite))
    judges = list(manifest.eval.judges)
    for spec in manifest.specialists.values():
        files = layout.eval(spec.name)
        served = sorted({spec.name, *judges})
        yield {
            "name": f"{NAME}:{spec.name}",
            "doc": f"Ask {spec.title} the benchmark suite on its server and grade the replies.",
            "actions": [(run, [manifest, spec.name])],
            # the quantize reports are written last: they change when a served file does
            "file_dep": [suite] + [str(layout.post(n).quantize_report) for n in served]
            + ([str(layout.index(spec.retrieval.index).report)] if spec.retrieval else []),
            "task_dep": [f"deploy:{n}" for n in served],
            "targets": [str(files.results), str(files.summary)]
            + ([str(files.without_retrieval), str(files.retrieval_effect)] if spec.retrieval else []),
            "uptodate": [SliceChanged(f"eval ({spec.name})", eval_slice(manifest, spec.name))],
            "clean": True,
        }


@action(NAME)
def run(manifest: Manifest, name: str) -> None:
    from ..data.jsonl import write_jsonl
    from ..deploy.server import served_gguf, served_kind
    from ..errors import StageError
    from ..evaluation import benchmark, suite

    layout = Layout.of(manifest)
    spec = manifest.specialists[name]
    files = layout.eval(name)
    task = f"{NAME}:{name}"
    questions = suite.load(manifest.resolve(manifest.eval.suite), manifest.eval.suite,
                           specialists=list(manifest.specialists), judges=manifest.eval.judges)
    mine = suite.for_specialist(questions, name, manifest.eval.max_questions)
    endpoint = benchmark.endpoint(manifest, name)
    judges = [benchmark.endpoint(manifest, j) for j in manifest.eval.judges]
    gguf = served_gguf(layout, spec)
    with log.step(task, f"asking {len(mine)} benchmark questions", specialist=name) as extra, \
            log.progress(task, len(mine)) as advance:
        results = benchmark.run(endpoint, mine, system_prompt=spec.system_prompt, run_id=log.run_id(),
                                judges=judges, model_file=gguf.relative_to(layout.build).as_posix(),
                                quant=served_kind(spec), advance=advance)
        thresholds = manifest.eval.thresholds
        summary = benchmark.summarize(name, results, thresholds.min_score, thresholds.min_tokens_per_second)
        extra.update(mean_score=summary["mean_score"], tokens_per_second=summary["tokens_per_second"])
    files.folder.mkdir(parents=True, exist_ok=True)
    if spec.retrieval is not None:  # the same questions without retrieval, for the difference
        from ..retrieval.effect import effect

        with log.step(task, "asking again without retrieval", specialist=name), \
                log.progress(task, len(mine)) as advance:
            plain = benchmark.run(endpoint, mine, system_prompt=spec.system_prompt, run_id=log.run_id(),
                                  judges=judges, model_file=gguf.relative_to(layout.build).as_posix(),
                                  quant=served_kind(spec), advance=advance, extra={"retrieval": False})
        write_jsonl(files.without_retrieval, plain)
        write_json(files.retrieval_effect, effect(manifest, name, questions, results, plain))
    write_jsonl(files.results, results)
    write_json(files.summary, summary)
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
