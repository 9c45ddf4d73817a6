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
"""

from __future__ import annotations

import contextlib
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


def _remove_stale(folder: Path, specialist: str, keep: Path) -> list[str]:
    """Earlier quantizations of this specialist that afs placed (LM Studio would list them)."""
    removed = []
    for old in sorted(folder.glob(f"{specialist}-*.gguf")):
        if old.name != keep.name:
            old.unlink()
            removed.append(old.name)
    return removed


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


def context(manifest: Manifest, specialist: str, gguf: Path) -> dict[str, Any]:
    """The script template's context: plain values; the environment quotes each one."""
    spec = manifest.specialists[specialist]
    return {
        "name": spec.name,
        "title": spec.title,
        "role": spec.role,
        "manifest_file": manifest.file.name,
        "manifest_digest": manifest.digest,
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


def deploy(manifest: Manifest, specialist: str, gguf: Path, *, preset_file: Path,
           script: Path) -> dict[str, Any]:
    """Place `gguf` in LM Studio's folder, write and install the preset, write the script.

    Returns a small report (paths and how the model was placed) for ``deploy.json``.
    """
    gguf = Path(gguf)
    target = models_dir(manifest) / model_path(manifest, specialist, gguf)
    how = place_model(gguf, target)
    removed = _remove_stale(target.parent, specialist, target)
    body = preset(manifest, specialist)
    write_json(Path(preset_file), body)
    installed = preset_target(manifest, specialist)
    write_json(installed, body)
    with atomic_path(Path(script)) as tmp:
        tmp.write_text(render_script(context(manifest, specialist, gguf)), encoding="utf-8")
    os.chmod(script, 0o755)  # atomic_path leaves artifacts 0644
    return {"model": str(target), "model_path": model_path(manifest, specialist, gguf),
            "placed": how, "removed": removed, "preset": str(installed),
            "preset_identifier": body["identifier"], "script": str(script)}
