"""Deploy each specialist: LM Studio files, an Ollama Modelfile, and its own served endpoint (deploy:<specialist>).

The task's inputs are the manifest's serving settings, the served GGUF (through its quantize
report), the two templates and the code that renders them: an edit to any of them rewrites
the deploy files. One deploy of a specialist runs at a time (its deploy lock): a second run
waits, then finds the server the first started. Cleaning (``doit clean``, ``afs clean``)
stops the specialist's server and removes what afs put in LM Studio's folder, nothing else.
"""

from __future__ import annotations

import logging
from typing import Iterator

from .. import log
from ..atomic import write_json
from ..manifest import Manifest
from ..paths import Layout
from ..resources import templates_dir
from ..uptodate import ServerHealthy, SliceChanged, code_files, slice_digest
from .common import action

NAME = "deploy"
TEMPLATES = ("Modelfile.j2", "lmstudio.sh.j2")
RENDERERS = ("deploy/ollama.py", "deploy/lmstudio.py")
DIGEST_CHARS = 16


def deploy_slice(manifest: Manifest, name: str) -> dict:
    """What deploying reads: serving settings of the specialist and the deploy section."""
    spec = manifest.specialists[name]
    keep = ("role", "version", "description", "system_prompt", "port", "context_length",
            "sampling", "serve_quant", "quantize")
    served = {k: getattr(spec, k) for k in keep}
    if spec.retrieval is not None:  # only then: the others' slices stay what they were
        served["retrieval"] = spec.retrieval
    return {"specialist": served, "deploy": manifest.deploy}


def digest(manifest: Manifest, name: str) -> str:
    """The digest the deploy files name: that of the slice the task's up-to-date check keeps."""
    return slice_digest(deploy_slice(manifest, name))[:DIGEST_CHARS]


def input_files() -> list[str]:
    """The templates and the code the deploy files are rendered with (paths only)."""
    return [str(templates_dir() / t) for t in TEMPLATES] + code_files(*RENDERERS)


def tasks(manifest: Manifest) -> Iterator[dict]:
    from doit.task import clean_targets

    from ..deploy.access import key_variable

    layout = Layout.of(manifest)
    for spec in manifest.specialists.values():
        files = layout.deploy(spec.name)
        # A retrieving specialist's server searches its index: built first, settings beside.
        index = [spec.retrieval.index] if spec.retrieval else []
        yield {
            "name": f"{NAME}:{spec.name}",
            "doc": f"Deploy {spec.title} to LM Studio and Ollama files and serve it on port {spec.port}.",
            "actions": [(run, [manifest, spec.name])],
            "file_dep": [str(layout.post(spec.name).quantize_report)] + input_files()
            + [str(layout.index(i).report) for i in index],
            "task_dep": [f"quantize:{spec.name}"] + [f"index:{i}" for i in index],
            "targets": [str(files.report), str(files.modelfile), str(files.preset),
                        str(files.lmstudio_script)] + [str(files.retrieval) for _ in index],
            "uptodate": [SliceChanged(f"specialists.{spec.name} (serving)", deploy_slice(manifest, spec.name)),
                         ServerHealthy(manifest.deploy.host, spec.port, spec.name,
                                       key_variable(manifest.deploy))],
            # The server and LM Studio's files first: they are found through the deploy folder.
            "clean": [(undeploy, [manifest, spec.name]), clean_targets],
        }


@action(NAME)
def run(manifest: Manifest, name: str) -> None:
    from ..deploy import access, lmstudio, ollama, processes, server

    layout = Layout.of(manifest)
    spec = manifest.specialists[name]
    files = layout.deploy(name)
    gguf = server.served_gguf(layout, spec)
    task = f"{NAME}:{name}"
    host = manifest.deploy.host
    key = access.api_key(manifest)  # before anything: beyond loopback there must be one
    if not access.is_loopback(host):
        log.event(f"serving on {host}, reachable from other machines; requests need the API "
                  f"key in {access.key_variable(manifest.deploy)}", task=task, level=logging.WARNING,
                  specialist=name)
    stamp = digest(manifest, name)

    def waiting() -> None:
        log.event(f"waiting for another run deploying {name} ({files.lock})", task=task,
                  specialist=name)

    with processes.locked(files.lock, waiting):
        with log.step(task, "writing LM Studio and Ollama files", specialist=name):
            studio = lmstudio.deploy(manifest, name, gguf, preset_file=files.preset,
                                     script=files.lmstudio_script, record=files.installed,
                                     digest=stamp)
            ollama.write_modelfile(manifest, name, gguf, files.modelfile, stamp)
        retrieval = None
        if spec.retrieval is not None:
            retrieval = files.retrieval
            write_json(retrieval, {"manifest": str(manifest.file), "specialist": name,
                                   "index": spec.retrieval.index})
        with log.step(task, f"serving on {host}:{spec.port}", specialist=name):
            served = server.start(name, gguf, host=host, port=spec.port,
                                  n_ctx=spec.context_length, pid_file=files.pid,
                                  log_file=files.server_log, key=key, retrieval=retrieval)
        write_json(files.report, {
            "specialist": name, "gguf": str(gguf), "lmstudio": studio,
            "modelfile": str(files.modelfile), "digest": stamp, "auth": key is not None,
            "server": {k: served.get(k) for k in ("host", "port", "pid", "action")},
            "url": f"http://{host}:{spec.port}/v1"})


def undeploy(manifest: Manifest, name: str, dryrun: bool = False):
    """Stop the specialist's server and remove what afs put in LM Studio's folder."""
    from doit.exceptions import TaskFailed

    from ..deploy import lmstudio, processes, server
    from ..errors import AfsError

    layout = Layout.of(manifest)
    files = layout.deploy(name)
    try:
        if dryrun:
            pids = server.running(files.pid)
            if pids:
                print(f"{NAME}:{name} - would stop its server (pid {', '.join(map(str, pids))})")
            for path in lmstudio.remove_installed(files.installed, dryrun=True):
                print(f"{NAME}:{name} - would remove '{path}'")
            return None
        if not files.folder.exists():  # no deploy can be running; a server may still be
            if server.stop_one(layout, name):
                print(f"{NAME}:{name} - stopped its server")
            return None
        with processes.locked(files.lock, lambda: print(
                f"{NAME}:{name} - waiting for a run deploying it ({files.lock})")):
            if server.stop_one(layout, name):
                print(f"{NAME}:{name} - stopped its server")
            for path in lmstudio.remove_installed(files.installed):
                print(f"{NAME}:{name} - removing '{path}'")
    except (AfsError, OSError) as err:
        return TaskFailed(f"cleaning {NAME}:{name}: {err}")
    return None
