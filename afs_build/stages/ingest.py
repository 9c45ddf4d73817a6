"""Convert each data source into canonical samples, behind the secrets gate (ingest:<source>).

A sample carrying a secret is rejected here, before anything is written, so that it is in no
file under ``build/``; its reject names the rule and the position, never the secret. The
sidecar counts the source's records: read = kept + rejected + filtered.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from .. import log
from ..atomic import write_json
from ..errors import AfsError, StageError
from ..manifest import Manifest, Source, plain
from ..paths import Layout
from ..uptodate import SliceChanged, TreeChanged
from .common import action, write_records

NAME = "ingest"
# Bump when a converter's output changes for the same input: every source re-ingests.
CONVERTER_VERSION = 2


def tasks(manifest: Manifest) -> Iterator[dict]:
    layout = Layout.of(manifest)
    for source in manifest.sources.values():
        files = layout.ingest(source.name)
        uptodate: list = [SliceChanged(f"sources.{source.name}",
                                       {"source": source, "converter": CONVERTER_VERSION,
                                        "system_prompt": replay_system_prompt(manifest, source)})]
        file_dep: list[str] = []
        if source.kind == "codebase":
            root = manifest.resolve(source.settings["path"])
            uptodate.append(TreeChanged(f"sources.{source.name}", _codebase_lister(source, root), root))
        elif source.kind == "custom" and source.settings.get("hub"):
            pass  # a hub dataset is identified by its id (in the slice); no local file
        else:
            file_dep = [str(manifest.resolve(p)) for p in source.input_paths()]
        task_dep: list[str] = []
        if source.kind == "replay":  # answered by the base's own GGUF
            model = source.settings["model"]
            file_dep.append(str(layout.baseline(model).report))
            task_dep.append(f"baseline:{model}")
        yield {
            "name": f"{NAME}:{source.name}",
            "doc": f"Convert {source.kind} source {source.name!r} into canonical samples.",
            "actions": [(run, [manifest, source.name])],
            "file_dep": file_dep,
            "task_dep": task_dep,
            "targets": [str(files.samples), str(files.rejects), str(files.meta)],
            "uptodate": uptodate,
            "clean": True,
        }


def replay_system_prompt(manifest: Manifest, source: Source):
    """The system prompt a replay source's prompts are answered with, or a feedback source's
    samples carry (None for other kinds)."""
    if source.kind == "feedback":
        of = source.settings["system_prompt_of"]
        return manifest.specialists[of].system_prompt if of else None
    if source.kind != "replay":
        return None
    of = source.settings["system_prompt_of"]
    return manifest.specialists[of].system_prompt if of else source.settings["system_prompt"]


def _codebase_lister(source: Source, root: Path):
    from ..data import codebase

    s = source.settings
    return _Lister(codebase.iter_files, root, tuple(s["include"]), tuple(s["exclude"]),
                   s["respect_gitignore"])


class _Lister:
    """A picklable call of the codebase walker (doit may send tasks to other processes)."""

    def __init__(self, walk, root, include, exclude, respect_gitignore):
        self.walk, self.root = walk, root
        self.include, self.exclude, self.gitignore = include, exclude, respect_gitignore

    def __call__(self):
        return self.walk(self.root, include=self.include, exclude=self.exclude,
                         respect_gitignore=self.gitignore)


def records(manifest: Manifest, source: Source, layout: Layout):
    """The converter's record stream for `source`."""
    s = source.settings
    path = lambda key: manifest.resolve(s[key])  # noqa: E731
    if source.kind == "toolbench":
        from ..data.toolbench import convert_toolbench

        return convert_toolbench(path("path"), source=source.name, max_chars=source.max_chars)
    if source.kind == "codesearchnet":
        from ..data.codesearchnet import convert_codesearchnet

        return convert_codesearchnet([manifest.resolve(p) for p in s["paths"]], source=source.name,
                                     languages=tuple(s["languages"]), partitions=tuple(s["partitions"]),
                                     directions=tuple(s["directions"]), max_chars=source.max_chars)
    if source.kind == "codebase":
        from ..data.codebase import convert_codebase

        return convert_codebase(path("path"), source=source.name, include=tuple(s["include"]),
                                exclude=tuple(s["exclude"]), max_file_bytes=s["max_file_kb"] * 1024,
                                respect_gitignore=s["respect_gitignore"], questions=tuple(s["questions"]))
    if source.kind == "synthetic":
        from ..data.synthetic import TeacherConfig, convert_synthetic

        teacher = TeacherConfig(**dict(s["teacher"])) if s.get("teacher") else None
        return convert_synthetic(path("facts"), path("templates"), source=source.name,
                                 seed=manifest.project.seed, paraphrases=s["paraphrases"],
                                 teacher=teacher, cache_dir=layout.cache("teacher"))
    if source.kind == "replay":
        import json

        from ..data.replay import convert_replay

        baseline = layout.baseline(s["model"])
        digest = json.loads(baseline.report.read_text(encoding="utf-8"))["files"][baseline.gguf("F16").name]["digest"]
        return convert_replay(path("path"), source=source.name, format=s["format"], fields=dict(s["fields"]),
                              max_chars=source.max_chars, gguf=baseline.gguf("F16"), model_digest=digest,
                              max_tokens=s["max_tokens"], system_prompt=replay_system_prompt(manifest, source),
                              limit=s["limit"],
                              cache_dir=layout.cache("replay"))
    if source.kind == "feedback":  # the last round's judged mistakes (afs feedback)
        from ..evaluation.feedback import convert_feedback

        of = s["system_prompt_of"]
        return convert_feedback(path("path"), source=source.name, specialists=tuple(s["specialists"]),
                                system_prompt=manifest.specialists[of].system_prompt if of else None,
                                max_chars=source.max_chars)
    if source.kind == "custom":
        from ..data import custom

        if s.get("hub"):
            return custom.convert_custom_hub(s["hub"], source=source.name, format=s["format"],
                                             fields=dict(s["fields"]), split=s["split"],
                                             max_chars=source.max_chars)
        return custom.convert_custom(path("path"), source=source.name, format=s["format"],
                                     fields=dict(s["fields"]), max_chars=source.max_chars)
    raise StageError(f"source {source.name!r}: no converter for kind {source.kind!r}")


@action(NAME)
def run(manifest: Manifest, name: str) -> None:
    """Stream the source's records through the secrets gate into samples.jsonl and rejects.jsonl."""
    from ..data.records import Tally
    from ..data.secrets import screen

    layout = Layout.of(manifest)
    source = manifest.sources[name]
    files = layout.ingest(name)
    task = f"{NAME}:{name}"
    root = str(manifest.root) + "/"
    where = f"{manifest.file.name}: sources.{name}"

    def relative(item: dict) -> dict:
        # Provenance and rejects name files relative to the manifest, so outputs are portable.
        holder = item.get("provenance", item)
        if str(holder.get("file", "")).startswith(root):
            holder["file"] = holder["file"][len(root):]
        return item

    tally = Tally()
    with log.step(task, f"converting {source.kind} source", source=name) as summary:
        try:
            stream = tally.count(screen(records(manifest, source, layout)))
            counts = write_records(stream, files, task, fix=relative)
        except AfsError as err:
            raise StageError(f"{where} ({source.kind}): {err.render()}") from None
        except OSError as err:
            if str(err.filename or "").startswith(str(layout.build)):
                raise StageError(f"{task}: cannot write {err.filename}: {err.strerror or err}; "
                                 f"check the build folder's disk and permissions") from None
            raise StageError(f"{where} ({source.kind}): {_read_problem(err)}; fix "
                             f"sources.{name} or the file") from None
        summary.update(samples=counts["samples"], rejects=counts["rejects"],
                       filtered=tally.filtered)
    write_json(files.meta, {"source": name, "kind": source.kind, **counts,
                            "records": tally.summary(), "filtered": tally.reasons,
                            "settings": plain(source.settings)})


def _read_problem(err: OSError) -> str:
    """What went wrong reading an input, in the words of the file system."""
    path = err.filename or ""
    if isinstance(err, FileNotFoundError):
        return f"input not found: {path or err}"
    if isinstance(err, IsADirectoryError):
        return f"{path}: expected a file, found a folder"
    if isinstance(err, NotADirectoryError) and not path:
        return str(err)
    return f"cannot read {path or 'an input'}: {err.strerror or err}"
