"""Write each base model's own GGUF, to compare its specialists with (baseline:<model>).

Only for a base that no served-only specialist serves already (the default family's Agahnim
serves SmolLM2 as it is): the comparison then starts the base on a free loopback port for as
long as it asks its questions. The base is quantized to the types its specialists serve, so
both sides of a comparison answer from the same kind of file.
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
    """Bases of trained specialists that no served-only specialist serves as they are."""
    served = {s.base for s in manifest.specialists.values() if not s.train}
    return list(dict.fromkeys(s.base for s in manifest.trained if s.base not in served))


def kinds(manifest: Manifest, model: str) -> list[str]:
    """F16, and every type the specialists of `model` serve."""
    from ..deploy.server import served_kind

    served = [served_kind(s) for s in manifest.trained if s.base == model]
    return list(dict.fromkeys(["F16", *served]))


def tasks(manifest: Manifest) -> Iterator[dict]:
    if not manifest.eval.suite:
        return
    layout = Layout.of(manifest)
    for model in unserved(manifest):
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
