"""Write each base model's own GGUF, for replay sources and comparisons (baseline:<model>).

A ``replay`` source has its prompts answered by the base's F16 GGUF; the ``ifd`` quality
signal (``quality.model``) is computed on it. A base that no
served-only specialist serves already (the default family's Agahnim serves SmolLM2 as it is)
is also quantized to the types its specialists serve, so that the comparison can start it on a
free loopback port and both sides answer from the same kind of file.
"""

from __future__ import annotations

from typing import Iterator

from .. import log
from ..atomic import remove_stale, write_json
from ..manifest import Manifest
from ..paths import Layout
from ..uptodate import OutputsIntact, code_files, file_records
from .common import action, task
from .gguf import FLOAT_TYPES

NAME = "baseline"
CODE = ("stages/baseline.py", "post/gguf_convert.py", "post/weights.py", "post/architectures.py",
        "post/vocab.py", "post/quantize.py")


def unserved(manifest: Manifest) -> list[str]:
    """Bases of trained specialists that no served-only specialist serves as they are (only
    when there is a suite to compare on)."""
    if not manifest.eval.suite:
        return []
    served = {s.base for s in manifest.specialists.values() if not s.train}
    return list(dict.fromkeys(s.base for s in manifest.trained if s.base not in served))


def replayed(manifest: Manifest) -> list[str]:
    """Models that answer the prompts of some replay source."""
    return list(dict.fromkeys(s.settings["model"] for s in manifest.sources.values() if s.kind == "replay"))


def models(manifest: Manifest) -> list[str]:
    """Every model that needs its own GGUF, in manifest order (the quality model's included)."""
    wanted = set(unserved(manifest)) | set(replayed(manifest))
    if manifest.quality.model_signal:
        wanted.add(manifest.quality.model_signal)
    return [m for m in manifest.models if m in wanted]


def kinds(manifest: Manifest, model: str) -> list[str]:
    """F16, and, for a compared base, every type its specialists serve."""
    from ..deploy.server import served_kind

    served = [served_kind(s) for s in manifest.trained if s.base == model] if model in unserved(manifest) else []
    return list(dict.fromkeys(["F16", *served]))


def tasks(manifest: Manifest) -> Iterator[dict]:
    layout = Layout.of(manifest)
    for model in models(manifest):
        files = layout.baseline(model)
        outputs = [files.gguf(k) for k in kinds(manifest, model)]
        yield task(f"{NAME}:{model}", f"Write base {model!r} as its own GGUF, to compare its specialists with.",
                   run, manifest, model, file_dep=[layout.base(model).report, *code_files(*CODE)],
                   task_dep=[f"base:{model}"], targets=[files.report, *outputs],
                   uptodate=[OutputsIntact(files.report, outputs)])


@action(NAME)
def run(manifest: Manifest, model: str) -> None:
    from ..post import quantize
    from ..post.gguf_convert import convert_folder
    from .merge import base_folder

    layout = Layout.of(manifest)
    files = layout.baseline(model)
    wanted = kinds(manifest, model)
    for kind in wanted:
        remove_stale(files.gguf(kind))
    task_name = f"{NAME}:{model}"
    with log.step(task_name, "converting the base to GGUF"):
        conversion = convert_folder(base_folder(manifest, model), files.gguf("F16"), outtype="F16", name=model)
    results = {}
    for kind in wanted[1:]:
        with log.step(task_name, f"quantizing the base to {kind}"):
            if kind in FLOAT_TYPES:
                convert_folder(base_folder(manifest, model), files.gguf(kind), outtype=kind, name=model)
            else:
                results[kind] = quantize.quantize(files.gguf("F16"), files.gguf(kind), kind)
    write_json(files.report, {"model": model, "conversion": conversion, "quantize": results,
                              "files": file_records(files.gguf(k) for k in wanted)})
