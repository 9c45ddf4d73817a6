"""Dedup, decontaminate and mix each specialist's sources into train/eval splits (mix:<specialist>)."""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Iterator

from .. import log
from ..atomic import write_json
from ..manifest import Manifest
from ..paths import Layout
from ..uptodate import SliceChanged
from .common import action

NAME = "mix"
MIXER_VERSION = 2


def slices(manifest: Manifest, specialist: str) -> list:
    """The manifest slices a specialist's mix reads."""

    spec = manifest.specialists[specialist]
    # Always present (None when off), so that turning train_context off mixes again.
    context = spec.retrieval if spec.retrieval and spec.retrieval.train_context else None
    return [
        SliceChanged(f"specialists.{specialist}.retrieval (training context)", context),
        SliceChanged(f"specialists.{specialist}.mix", spec.mix),
        SliceChanged(f"mixes.{spec.mix}", {"mix": manifest.mixes[spec.mix], "mixer": MIXER_VERSION}),
        SliceChanged("dedup", manifest.dedup),
        SliceChanged("project.seed", manifest.project.seed),
        SliceChanged("eval.suite", manifest.eval.suite),
    ]


def tasks(manifest: Manifest) -> Iterator[dict]:
    layout = Layout.of(manifest)
    for spec in manifest.trained:
        mix = manifest.mixes[spec.mix]
        files = layout.mix(spec.name)
        file_dep = [str(layout.score(s).samples) for s in mix.sources]
        if manifest.eval.suite:
            file_dep.append(str(manifest.resolve(manifest.eval.suite)))
        # Samples that carry retrieved context are searched in the specialist's index.
        index = [spec.retrieval.index] if spec.retrieval and spec.retrieval.train_context else []
        file_dep += [str(layout.index(i).report) for i in index]
        yield {
            "name": f"{NAME}:{spec.name}",
            "doc": f"Dedup, decontaminate and mix {spec.title}'s data ({mix.name}) into train/eval splits.",
            "actions": [(run, [manifest, spec.name])],
            "file_dep": file_dep,
            "task_dep": [f"score:{s}" for s in mix.sources] + [f"index:{i}" for i in index],
            "targets": [str(files.train), str(files.eval), str(files.stats), str(files.rejects)]
            + [str(files.context) for _ in index],
            "uptodate": slices(manifest, spec.name),
            "clean": True,
        }


@action(NAME)
def run(manifest: Manifest, specialist: str) -> None:
    """Dedup across the mix's sources, decontaminate, draw the mix, write the four outputs."""
    import tempfile

    from ..data.decontam import Decontaminator
    from ..data.dedup import DedupIndex
    from ..data.jsonl import AtomicJsonlWriter, read_jsonl, write_jsonl
    from ..data.mix import mix as draw
    from ..data.records import Reject

    layout = Layout.of(manifest)
    spec = manifest.specialists[specialist]
    recipe = manifest.mixes[spec.mix]
    files = layout.mix(specialist)
    task = f"{NAME}:{specialist}"
    sources = recipe.sources
    dd = manifest.dedup

    def scored():
        for source in sources:
            yield from read_jsonl(layout.score(source).samples)

    with log.step(task, f"mixing {recipe.name}", specialist=specialist) as summary, \
            tempfile.TemporaryDirectory(dir=layout.build) as tmp, \
            AtomicJsonlWriter(files.rejects) as rejects:
        # Earlier stages' rejects first, so this one file accounts for every dropped record.
        upstream: dict[str, dict] = {}
        records: dict[str, dict] = {}
        filtered: dict[str, dict] = {}
        for source in sources:
            for stage in (layout.ingest(source), layout.score(source)):
                for item in read_jsonl(stage.rejects):
                    rejects.write(item)
                meta = json.loads(stage.meta.read_text(encoding="utf-8"))
                for reason, count in meta.get("reject_reasons", {}).items():
                    upstream.setdefault(source, {})[reason] = upstream.get(source, {}).get(reason, 0) + count
                if stage == layout.ingest(source):
                    records[source] = meta.get("records", {})
                    filtered[source] = meta.get("filtered", {})

        index = DedupIndex(exact=dd.exact, near=dd.near, threshold=dd.threshold,
                           num_perm=dd.num_perm, shingle=dd.shingle, seed=manifest.project.seed)
        if dd.exact or dd.near:
            for sample in scored():
                index.add(sample)
        result = index.finish() if (dd.exact or dd.near) else None
        questions = eval_questions(manifest) if dd.decontaminate else []
        checker = Decontaminator(questions)
        pools = {source: Path(tmp) / f"{source}.jsonl" for source in sources}
        with contextlib.ExitStack() as stack:
            writers = {s: stack.enter_context(AtomicJsonlWriter(p)) for s, p in pools.items()}
            stream = result.apply(scored()) if result is not None else scored()
            for record in checker.apply(stream):
                if isinstance(record, Reject):
                    rejects.write(record)
                else:
                    writers[record["source"]].write(record)

        size = ("tokens", recipe.tokens) if recipe.tokens else ("samples", recipe.samples)
        mixed = draw(
            {g.name: {s: (lambda p=pools[s]: read_jsonl(p)) for s in g.sources} for g in recipe.groups},
            {g.name: g.share for g in recipe.groups},
            target=size[1], unit=size[0], seed=manifest.project.seed, shortfall=recipe.shortfall,
            upsample_cap=recipe.upsample_cap, eval_fraction=recipe.eval_fraction,
            name=f"{manifest.file.name}: mixes.{recipe.name} (for specialist {specialist!r})", rejects=upstream,
            dedup_stats=result.stats if result is not None else {"enabled": False},
            decontam_stats={**checker.stats, "suite": manifest.eval.suite})
        for warning in mixed.stats["warnings"]:
            log.event(warning, task=task, level=logging.WARNING, specialist=specialist)
        train, evals = mixed.train, mixed.eval
        if spec.retrieval is not None and spec.retrieval.train_context:
            from ..retrieval.training import add_context

            with log.step(task, f"adding context from index {spec.retrieval.index}", specialist=specialist):
                (train, evals), context = add_context(manifest, specialist, train, evals)
            write_json(files.context, context)
        write_jsonl(files.train, train)
        write_jsonl(files.eval, evals)
        summary.update(train=len(mixed.train), eval=len(mixed.eval), rejects=rejects.count)
    # Per source, every record read is kept, rejected or filtered (records), and why (filtered).
    write_json(files.stats, {"specialist": specialist, "mix": recipe.name, **mixed.stats,
                             "records": records, "filtered": filtered})


def eval_questions(manifest: Manifest) -> list[str]:
    """The evaluation questions training data must not contain (from eval.suite, checked)."""
    from ..evaluation import suite

    if not manifest.eval.suite:
        return []
    # Decontamination reads the questions alone: who answers and who judges are eval's checks
    # (a judge name here only stops the loader asking for one).
    questions = suite.load(manifest.resolve(manifest.eval.suite), manifest.eval.suite,
                           judges=("decontamination",))
    return [q["question"] for q in questions if q.get("question")]
