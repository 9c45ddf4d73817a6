"""Deploy each specialist: LM Studio files, an Ollama Modelfile, and its own served endpoint (deploy:<specialist>)."""

from __future__ import annotations

from typing import Iterator

from .. import log
from ..atomic import write_json
from ..manifest import Manifest
from ..paths import Layout
from ..uptodate import ServerHealthy, SliceChanged
from .common import action

NAME = "deploy"


def deploy_slice(manifest: Manifest, name: str) -> dict:
    """What deploying reads: serving settings of the specialist and the deploy section."""
    spec = manifest.specialists[name]
    keep = ("role", "version", "description", "system_prompt", "port", "context_length",
            "sampling", "serve_quant", "quantize")
    served = {k: getattr(spec, k) for k in keep}
    if spec.retrieval is not None:  # only then: the others' slices stay what they were
        served["retrieval"] = spec.retrieval
    return {"specialist": served, "deploy": manifest.deploy}


def tasks(manifest: Manifest) -> Iterator[dict]:

    layout = Layout.of(manifest)
    for spec in manifest.specialists.values():
        files = layout.deploy(spec.name)
        # A retrieving specialist's server searches its index: built first, settings beside.
        index = [spec.retrieval.index] if spec.retrieval else []
        yield {
            "name": f"{NAME}:{spec.name}",
            "doc": f"Deploy {spec.title} to LM Studio and Ollama files and serve it on port {spec.port}.",
            "actions": [(run, [manifest, spec.name])],
            "file_dep": [str(layout.post(spec.name).quantize_report)]
            + [str(layout.index(i).report) for i in index],
            "task_dep": [f"quantize:{spec.name}"] + [f"index:{i}" for i in index],
            "targets": [str(files.report), str(files.modelfile), str(files.preset),
                        str(files.lmstudio_script)] + [str(files.retrieval) for _ in index],
            "uptodate": [SliceChanged(f"specialists.{spec.name} (serving)", deploy_slice(manifest, spec.name)),
                         ServerHealthy(manifest.deploy.host, spec.port, spec.name)],
            "clean": True,
        }


@action(NAME)
def run(manifest: Manifest, name: str) -> None:
    from ..deploy import lmstudio, ollama, server

    layout = Layout.of(manifest)
    spec = manifest.specialists[name]
    files = layout.deploy(name)
    gguf = server.served_gguf(layout, spec)
    task = f"{NAME}:{name}"
    with log.step(task, "writing LM Studio and Ollama files", specialist=name):
        studio = lmstudio.deploy(manifest, name, gguf, preset_file=files.preset, script=files.lmstudio_script)
        ollama.write_modelfile(manifest, name, gguf, files.modelfile)
    retrieval = None
    if spec.retrieval is not None:
        retrieval = files.retrieval
        write_json(retrieval, {"manifest": str(manifest.file), "specialist": name, "index": spec.retrieval.index})
    with log.step(task, f"serving on {manifest.deploy.host}:{spec.port}", specialist=name):
        served = server.start(name, gguf, host=manifest.deploy.host, port=spec.port,
                              n_ctx=spec.context_length, pid_file=files.pid, log_file=files.server_log,
                              retrieval=retrieval)
    write_json(files.report, {"specialist": name, "gguf": str(gguf), "lmstudio": studio,
                              "modelfile": str(files.modelfile),
                              "server": {k: served.get(k) for k in ("host", "port", "pid", "action")},
                              "url": f"http://{manifest.deploy.host}:{spec.port}/v1"})
