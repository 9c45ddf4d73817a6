"""Ask each served specialist the benchmark suite and grade its replies (eval:<specialist>)."""

from __future__ import annotations

from typing import Iterator

from .. import log
from ..atomic import write_json
from ..manifest import Manifest
from ..paths import Layout
from ..uptodate import SliceChanged
from .common import action

NAME = "eval"


def eval_slice(manifest: Manifest, name: str) -> dict:
    """What the replies depend on in the manifest: the eval section, the specialist's system
    prompt and the type it serves (not where it is served: a new port asks nothing again)."""
    from ..deploy.server import served_kind

    spec = manifest.specialists[name]
    return {"eval": manifest.eval, "system_prompt": spec.system_prompt, "served": served_kind(spec)}


def tasks(manifest: Manifest) -> Iterator[dict]:

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
            "file_dep": [suite] + [str(layout.post(n).quantize_report) for n in served],
            "task_dep": [f"deploy:{n}" for n in served],
            "targets": [str(files.results), str(files.summary)],
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
    write_jsonl(files.results, results)
    write_json(files.summary, summary)
    if summary["failures"]:
        raise StageError(f"{spec.title} does not meet the pass marks: {'; '.join(summary['failures'])} "
                         f"(replies in {files.results})")
