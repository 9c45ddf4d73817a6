"""LM Studio: the GGUF in LM Studio's models folder, a config preset, and a load script.

LM Studio finds models laid out as ``<models folder>/<publisher>/<model>/<file>.gguf``; afs
uses ``deploy.publisher`` and the specialist's name for the two folders. The file is
hard-linked when the build folder and the models folder share a filesystem (no copy of
gigabytes), copied otherwise, and in both cases renamed into place, so LM Studio never sees a
half-written model.

The preset is LM Studio's own config-preset format (the JSON it writes to
``~/.lmstudio/config-presets/`` and imports): ``operation.fields`` carries the system prompt
and sampling settings under their ``llm.prediction.*`` keys, ``load.fields`` the context
length. It is installed beside the models folder (``<models folder>/../config-presets``,
which is ``~/.lmstudio/config-presets`` for the default folder).

``lmstudio.sh`` loads the model under the specialist's name (``lms load --exact <path>
--identifier <name>``) and starts LM Studio's server on the specialist's port. Every value in
it passes through ``shlex.quote``: the template environment quotes each ``{{ }}`` itself.

What afs puts in LM Studio's folder (the model's link or copy, the preset, the folders it
made) is recorded in the deploy folder's ``lmstudio.json`` *before* it is put there, so that
cleaning (:func:`remove_installed`) removes exactly those files, even after an interrupted
deploy, and never a file of the user's.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..atomic import atomic_path, write_json
from ..manifest import Manifest
from ..resources import templates_dir

TEMPLATE = "lmstudio.sh.j2"
PRESETS_FOLDER = "config-presets"


def models_dir(manifest: Manifest) -> Path:
    """LM Studio's models folder (``deploy.lmstudio_dir``, ``~`` expanded)."""
    return manifest.resolve(manifest.deploy.lmstudio_dir)


def model_path(manifest: Manifest, specialist: str, gguf: Path) -> str:
    """The model's path inside the models folder, as ``lms ls`` shows it: publisher/model/file."""
    return f"{manifest.deploy.publisher}/{specialist}/{Path(gguf).name}"


def preset_identifier(manifest: Manifest, specialist: str) -> str:
    return f"@local:{manifest.deploy.publisher}-{specialist}"


def preset_target(manifest: Manifest, specialist: str) -> Path:
    """Where LM Studio reads the preset from."""
    return (models_dir(manifest).parent / PRESETS_FOLDER
            / f"{manifest.deploy.publisher}-{specialist}.preset.json")


def place_model(source: Path, target: Path) -> str:
    """Put `source` at `target` atomically: ``linked``, ``copied`` or ``unchanged``."""
    source, target = Path(source), Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        if os.path.samefile(source, target):
            return "unchanged"
        s, t = source.stat(), target.stat()
        if (s.st_size, s.st_mtime_ns) == (t.st_size, t.st_mtime_ns):
            return "unchanged"  # an earlier copy (copy2 keeps the time)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    os.unlink(tmp)
    try:
        try:
            os.link(source, tmp)
            how = "linked"
        except OSError:  # another filesystem, or one without hard links
            shutil.copy2(source, tmp)
            how = "copied"
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return how


def preset(manifest: Manifest, specialist: str) -> dict[str, Any]:
    """The specialist's LM Studio config preset."""
    spec = manifest.specialists[specialist]
    s = spec.sampling
    return {
        "identifier": preset_identifier(manifest, specialist),
        "name": f"{spec.title} ({manifest.deploy.publisher})",
        "changed": True,
        "operation": {"fields": [
            {"key": "llm.prediction.systemPrompt", "value": spec.system_prompt},
            {"key": "llm.prediction.temperature", "value": s.temperature},
            {"key": "llm.prediction.topPSampling", "value": {"checked": True, "value": s.top_p}},
            {"key": "llm.prediction.repeatPenalty",
             "value": {"checked": True, "value": s.repeat_penalty}},
            {"key": "llm.prediction.maxPredictedTokens",
             "value": {"checked": True, "value": s.max_tokens}},
        ]},
        "load": {"fields": [
            {"key": "llm.load.contextLength", "value": spec.context_length},
        ]},
    }


def context(manifest: Manifest, specialist: str, gguf: Path, digest: str) -> dict[str, Any]:
    """The script template's context: plain values; the environment quotes each one.

    `digest` names the settings the file was written from (the deploy task's slice digest).
    """
    spec = manifest.specialists[specialist]
    return {
        "name": spec.name,
        "title": spec.title,
        "role": spec.role,
        "manifest_file": manifest.file.name,
        "digest": digest,
        "model_path": model_path(manifest, specialist, gguf),
        "context_length": spec.context_length,
        "port": spec.port,
    }


def _one_line(value: Any) -> str:
    """For text inside a ``#`` comment: a newline there would start a command."""
    return " ".join(str(value).split())


def render_script(ctx: dict[str, Any]) -> str:
    """Lay out ``lmstudio.sh``; every ``{{ value }}`` comes out ``shlex.quote``d."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir())),
                             undefined=jinja2.StrictUndefined, autoescape=False,
                             keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True,
                             finalize=lambda value: shlex.quote(str(value)))
    env.filters["one_line"] = _one_line
    return env.get_template(TEMPLATE).render(**ctx)


def _read_record(path: Path) -> dict[str, list[str]]:
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = {}
    if not isinstance(record, dict):
        record = {}
    return {key: [str(v) for v in record.get(key, []) if isinstance(v, str)]
            for key in ("files", "dirs")}


def _write_record(path: Path, files: list[str], dirs: list[str]) -> None:
    write_json(Path(path), {"files": sorted(set(files)), "dirs": sorted(set(dirs))})


def deploy(manifest: Manifest, specialist: str, gguf: Path, *, preset_file: Path,
           script: Path, record: Path, digest: str) -> dict[str, Any]:
    """Place `gguf` in LM Studio's folder, write and install the preset, write the script.

    Everything put in LM Studio's folder is listed in `record` first; files of an earlier
    deploy that this one no longer needs (another quantization) are removed. Returns a
    small report (paths and how the model was placed) for ``deploy.json``.
    """
    gguf = Path(gguf)
    target = models_dir(manifest) / model_path(manifest, specialist, gguf)
    installed = preset_target(manifest, specialist)
    before = _read_record(record)
    # What will be there, recorded before it is: an interrupted deploy leaves nothing unlisted.
    dirs = before["dirs"] + [d for folder in (target.parent, installed.parent)
                             for d in _missing(folder)]
    _write_record(record, before["files"] + [str(target), str(installed)], dirs)
    how = place_model(gguf, target)
    body = preset(manifest, specialist)
    write_json(Path(preset_file), body)
    write_json(installed, body)
    removed = [Path(old).name for old in before["files"]
               if old not in (str(target), str(installed)) and _remove_file(Path(old))]
    _write_record(record, [str(target), str(installed)], dirs)
    with atomic_path(Path(script)) as tmp:
        tmp.write_text(render_script(context(manifest, specialist, gguf, digest)),
                       encoding="utf-8")
    os.chmod(script, 0o755)  # atomic_path leaves artifacts 0644
    return {"model": str(target), "model_path": model_path(manifest, specialist, gguf),
            "placed": how, "removed": removed, "preset": str(installed),
            "preset_identifier": body["identifier"], "script": str(script)}


def _missing(folder: Path) -> list[str]:
    """`folder` and those of its parents that do not exist yet (deepest first)."""
    missing = []
    for parent in [folder, *folder.parents]:
        if parent.exists():
            break
        missing.append(str(parent))
    return missing


def _remove_file(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def remove_installed(record: Path, dryrun: bool = False) -> list[str]:
    """Remove what `record` lists as put in LM Studio's folder by afs; return what went.

    Only listed files, and listed folders once empty: a file of the user's, even beside
    afs's model, stays (and so does its folder, listed still).
    """
    listed = _read_record(record)
    gone = []
    for name in listed["files"]:
        path = Path(name)
        if path.is_file() or path.is_symlink():
            gone.append(str(path))
            if not dryrun:
                path.unlink()
    for name in sorted(listed["dirs"], key=lambda d: -len(Path(d).parts)):  # deepest first
        path = Path(name)
        if not path.is_dir():
            continue
        if dryrun:  # would it be empty once the listed files are gone?
            if all(str(p) in gone for p in path.rglob("*") if not p.is_dir()):
                gone.append(str(path))
        elif not any(path.iterdir()):
            path.rmdir()
            gone.append(str(path))
    if not dryrun:
        # Folders afs made that still hold the user's files stay listed, for a later clean.
        kept = [d for d in listed["dirs"] if Path(d).is_dir()]
        if kept:
            _write_record(record, [], kept)
        else:
            Path(record).unlink(missing_ok=True)
    return gone
