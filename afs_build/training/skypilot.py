"""Training on rented GPUs through SkyPilot: render a task YAML, launch it, fetch the adapter.

afs never schedules machines itself. :func:`task_yaml` renders ``templates/sky.yaml.j2`` into a
SkyPilot task (resources from the manifest's hardware entry, the script and the two data files
as ``file_mounts``, a pinned ``setup``, a ``run`` that writes into ``~/afs/out``).
:func:`launch` drives SkyPilot's own CLI: ``sky launch`` (waits, streams into the log),
``rsync CLUSTER:afs/out/`` back (SkyPilot writes an ssh config entry named after the cluster,
so the cluster name is an ssh host; it is how SkyPilot's docs download artifacts, and vast.ai
has no object store to mount), then ``sky down`` in a ``finally``. Paths on both machines come
from :mod:`afs_build.paths` (``TrainFiles`` here, ``RemoteTrainFiles`` there).

Credentials never pass through here: cloud keys live in SkyPilot's own configuration
(``sky check``); HF_TOKEN is handed to ``sky launch --secret HF_TOKEN`` by name, so SkyPilot
reads its value from the environment and it appears in no file or argv; the log goes through
the JSON log's redaction. (SkyPilot 0.14
also accepts ``secrets: {HF_TOKEN: null}`` in the YAML, but then refuses to launch without it,
which would break public base models for users with no token.)
"""

from __future__ import annotations

import collections
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import time
import unicodedata
import zlib
from pathlib import Path
from typing import Any

import jinja2
import yaml

from ..errors import StageError, suggest
from ..log import REDACTED, redact
from ..manifest import Manifest
from ..paths import RemoteTrainFiles, TrainFiles
from ..resources import templates_dir

TEMPLATE = "sky.yaml.j2"

# Pinned for the remote venv: this machine's versions (bitsandbytes: the newest release),
# which need Python >= 3.11 (transformers 5.21+), hence a uv venv of our own on the node.
PYTHON = "3.11"
PACKAGES = ("torch==2.13.0", "transformers==5.24.0", "peft==0.21.2", "datasets==5.2.0",
            "accelerate==1.15.0")
QUANT_PACKAGES = ("bitsandbytes==0.50.2",)
QUANT_PRECISIONS = ("4bit", "8bit")
# Used only where the image lacks uv (SkyPilot installs it in ~/.local/bin on every node).
UV_INSTALLER = "https://astral.sh/uv/0.13.9/install.sh"

REMOTE = RemoteTrainFiles()  # under the remote home: train.py, data/, venv/, out/ (base/ if local)
SECRETS = ("HF_TOKEN",)  # passed by name when set in the environment, never by value
MIN_DISK_GB = 64
CLUSTER_NAME_MAX = 40  # well under every cloud's limit; SkyPilot's rule is the regex below
CLUSTER_NAME = re.compile(r"[a-zA-Z]([-_.a-zA-Z0-9]*[a-zA-Z0-9])?")
NOT_INSTALLED = "SkyPilot is not installed: pip install skypilot[vast] and run `sky check`"
TAIL_LINES = 25
UNSAFE_PATH_CHARS = "'\"$`\\"  # see _mount_source
_clock = time.monotonic  # a seam for tests: wall time and cost


# --- rendering ------------------------------------------------------------------------------


def cluster_name(project: str, specialist: str) -> str:
    """``<project>-<specialist>``, made a valid SkyPilot cluster name (short, stable)."""
    raw = f"{project}-{specialist}"
    name = re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9]+", "-", raw.lower())).strip("-")
    if not name or not name[0].isalpha():
        name = f"afs-{name}".rstrip("-")
    if len(name) > CLUSTER_NAME_MAX:  # keep names distinct after cutting: a digest of the whole
        digest = f"{zlib.crc32(raw.encode()):08x}"
        name = f"{name[:CLUSTER_NAME_MAX - 9].rstrip('-')}-{digest}"
    return name


def disk_size(params_b: float | None) -> int:
    """GB of disk: the base in 16-bit (the HF cache), the pip venv, and room, in steps of 32."""
    if params_b is None:
        return MIN_DISK_GB
    need = params_b * 2 * 1.5 + 40
    return max(MIN_DISK_GB, int(math.ceil(need / 32) * 32))


def context(manifest: Manifest, specialist: str, *, script: Path, train: Path, eval: Path,
            base: str) -> dict[str, Any]:
    """Every value the task YAML reads (also the slice a doit ``config_changed`` should hold).

    `base` is a hub id, passed as it is, or a local folder (an absolute path), which is
    uploaded to ``~/afs/base``.
    """
    if specialist not in manifest.specialists:
        raise StageError(f"{manifest.file}: no specialist {specialist!r}"
                         f"{suggest(specialist, manifest.specialists)}")
    spec = manifest.specialists[specialist]
    if spec.hardware is None or spec.hardware not in manifest.hardware:
        raise StageError(f"{manifest.file}: specialists.{specialist}.hardware: SkyPilot needs "
                         f"a hardware entry to know which GPU to rent")
    hw = manifest.hardware[spec.hardware]
    model = manifest.models.get(spec.base)
    mounts = [(REMOTE.home(REMOTE.script), script), (REMOTE.home(REMOTE.train), train),
              (REMOTE.home(REMOTE.eval), eval)]
    local_base = Path(base).is_absolute()
    if local_base:
        mounts.append((REMOTE.home(REMOTE.base), Path(base)))
    return {
        "project": manifest.project.name,
        "specialist": specialist,
        "name": cluster_name(manifest.project.name, specialist),
        "cluster": cluster_name(manifest.project.name, specialist),
        "accelerators": None if hw.is_cpu else f"{hw.gpu}:{hw.count}",
        "infra": hw.infra,
        "use_spot": hw.spot,
        "disk_size": disk_size(model.params_b if model else None),
        "nproc": 1 if hw.is_cpu else hw.count,
        "file_mounts": [(remote, _mount_source(local)) for remote, local in mounts],
        "envs": sorted({
            "AFS_PROJECT": manifest.project.name,
            "AFS_SPECIALIST": specialist,
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }.items()),
        "python": PYTHON,
        "uv_installer": UV_INSTALLER,
        "packages": PACKAGES + (QUANT_PACKAGES if spec.base_precision in QUANT_PRECISIONS else ()),
        "remote_root": REMOTE.home(),
        "remote_out": REMOTE.home(REMOTE.out),
        "venv": REMOTE.home(REMOTE.venv),
        "venv_python": REMOTE.home(f"{REMOTE.venv}/bin/python"),
        "script": REMOTE.script,
        "train": REMOTE.train,
        "eval": REMOTE.eval,
        "out": REMOTE.out,
        "base_arg": f"./{REMOTE.base}" if local_base else base,
    }


def task_yaml(manifest: Manifest, specialist: str, *, script: Path, train: Path, eval: Path,
              base: str) -> str:
    """The SkyPilot task YAML for `specialist`: deterministic text, no secrets in it."""
    values = context(manifest, specialist, script=script, train=train, eval=eval, base=base)
    return _environment().get_template(TEMPLATE).render(**values)


def _mount_source(path: Path) -> str:
    """`path` made absolute, refused where SkyPilot's upload would misread it.

    SkyPilot 0.14 uploads file mounts with a shell ``rsync`` line that quotes paths with
    Python's ``repr``: a path holding a quote and ``$(...)`` would run on this machine. The
    YAML itself would be fine; the upload would not.
    """
    text = str(Path(path).absolute())
    bad = sorted({c for c in text if c in UNSAFE_PATH_CHARS or unicodedata.category(c) == "Cc"})
    if bad:
        raise StageError(f"{text}: SkyPilot cannot upload a path containing "
                         f"{' '.join(repr(c) for c in bad)} safely (it quotes paths for a "
                         f"shell with Python's repr); move the project or build_dir to a "
                         f"path without them")
    return text


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir())),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             autoescape=False)
    env.filters["sh"] = _sh
    env.filters["yq"] = _yaml_scalar
    return env


def _sh(value: Any) -> str:
    """`value` quoted for a shell line inside a YAML block (no control characters there)."""
    text = str(value)
    bad = [c for c in text if unicodedata.category(c) == "Cc"]
    if bad:
        raise StageError(f"{text!r} contains a control character ({bad[0]!r}) and cannot be "
                         f"passed to the training command")
    return shlex.quote(text)


def _yaml_scalar(value: Any) -> str:
    """A YAML scalar: strings double-quoted with escapes (any content survives), numbers bare."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return yaml.safe_dump(str(value), default_style='"', allow_unicode=True,
                          width=float("inf")).rstrip("\n")


# --- launching ------------------------------------------------------------------------------


def launch(files: TrainFiles, *, cluster: str, sky: str = "sky", down: bool = True,
           idle_minutes: int = 10, price_per_hour: float = 0.0, rsync: str = "rsync") -> dict:
    """Run ``files.sky_task`` with ``sky launch``, download its outputs, tear the cluster down.

    Returns the downloaded ``training_summary.json`` plus a ``skypilot`` entry: the cluster,
    the real wall time (provisioning, setup, training, download and teardown: what the
    provider bills) and its cost at `price_per_hour` (the whole node). With `down`, the
    cluster also gets SkyPilot's own autodown after `idle_minutes` idle, so a killed afs
    leaves nothing billing for long; without it, only autostop.
    """
    if not CLUSTER_NAME.fullmatch(cluster):
        raise StageError(f"invalid SkyPilot cluster name {cluster!r}: expected letters, digits, "
                         f"'-', '_' and '.', starting with a letter (see cluster_name())")
    sky_exe = shutil.which(sky)
    if sky_exe is None:
        raise StageError(NOT_INSTALLED)
    rsync_exe = shutil.which(rsync)
    if rsync_exe is None:  # checked before renting anything: no way to bring the adapter back
        raise StageError("rsync is not installed: SkyPilot needs it to upload files and afs "
                         "to download the adapter; install rsync (apt install rsync, brew "
                         "install rsync) and retry")
    files.folder.mkdir(parents=True, exist_ok=True)
    log = _Log(files.log)
    start = _clock()
    argv = [sky_exe, "launch", "-y", "-c", cluster, "--idle-minutes-to-autostop",
            str(idle_minutes)] + (["--down"] if down else [])
    for name in SECRETS:
        if os.environ.get(name):
            argv += ["--secret", name]  # by name: sky reads the value from its environment
    argv.append(str(files.sky_task))
    try:
        rc = log.run(argv)
        if rc != 0:
            raise StageError(f"sky launch failed for cluster {cluster} (exit {rc}); the last "
                             f"lines of {log.path}:\n{log.tail()}")
        _download(rsync_exe, cluster, files, log)
    except BaseException as exc:
        if down:
            _teardown(sky_exe, cluster, log, failing=exc)
        raise
    if down:
        _teardown(sky_exe, cluster, log, failing=None)
    wall = _clock() - start
    summary = json.loads(files.summary.read_text(encoding="utf-8"))
    summary["skypilot"] = {
        "cluster": cluster,
        "wall_seconds": round(wall, 1),
        "price_per_hour": price_per_hour,
        "cost_usd": round(wall / 3600 * price_per_hour, 4),
    }
    return summary


def _download(rsync_exe: str, cluster: str, files: TrainFiles, log: "_Log") -> None:
    """Fetch the remote outputs (not its checkpoints) into a staging folder, then swap them in.

    The summary moves last, so a half-done download never looks like a finished run.
    """
    staging = files.staging
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    source = f"{cluster}:{REMOTE.root}/{REMOTE.out}/"
    excluded = f"{files.checkpoints.relative_to(files.folder).as_posix()}/"
    rc = log.run([rsync_exe, "-az", "--exclude", excluded, source, f"{staging}/"])
    if rc != 0:
        raise StageError(f"downloading {source} into {files.folder} failed (rsync exit {rc}); the "
                         f"last lines of {log.path}:\n{log.tail()}")
    fetched = {path: staging / path.relative_to(files.folder) for path in files.outputs}
    missing = [path.name for path, got in fetched.items() if not got.exists()]
    if missing:
        raise StageError(f"the run on {cluster} finished but {REMOTE.home(REMOTE.out)} lacks "
                         f"{', '.join(missing)}; see {log.path}")
    for path, got in fetched.items():  # in order: the summary last
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if path.is_dir():
            os.replace(path, old)
        os.replace(got, path)
        shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)


def _teardown(sky_exe: str, cluster: str, log: "_Log", failing: BaseException | None) -> None:
    """``sky down -y CLUSTER``; a failure is an error of its own unless one is already raised."""
    rc = log.run([sky_exe, "down", "-y", cluster])
    if rc == 0:
        return
    message = (f"`sky down -y {cluster}` failed (exit {rc}): the cluster may still be running "
               f"and billing; check `sky status` and run `sky down {cluster}` yourself. The "
               f"last lines of {log.path}:\n{log.tail()}")
    log.note(message)
    if failing is None:
        raise StageError(message)
    if hasattr(failing, "add_note"):  # Python 3.11+; the log has it either way
        failing.add_note(message)


class _Log:
    """Runs commands with their output appended to the log; keeps a tail; hides secret values."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.lines: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.secrets = [v for v in (os.environ.get(n) for n in SECRETS) if v and len(v) >= 4]

    def run(self, argv: list[str]) -> int:
        shown = " ".join(shlex.quote(Path(a).name if i == 0 else a) for i, a in enumerate(argv))
        with self.path.open("a", encoding="utf-8") as log:
            log.write(self._redact(f"$ {shown}\n"))
            log.flush()
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            try:
                proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, env=env, text=True,
                                        errors="replace", bufsize=1)
            except OSError as exc:
                raise StageError(f"cannot run {argv[0]}: {exc}") from exc
            with proc:
                assert proc.stdout is not None
                for line in proc.stdout:
                    line = self._redact(line)
                    log.write(line)
                    log.flush()
                    self.lines.append(line.rstrip("\n"))
            log.write(f"[exit {proc.returncode}]\n")
        return proc.returncode

    def note(self, text: str) -> None:
        with self.path.open("a", encoding="utf-8") as log:
            log.write(self._redact(f"afs: {text}\n"))

    def tail(self) -> str:
        return "\n".join(self.lines) or "(no output)"

    def _redact(self, line: str) -> str:
        line = redact(line)  # what the JSON log hides, then the secrets passed by name
        for value in self.secrets:
            line = line.replace(value, REDACTED)
        return line
