"""doit up-to-date checks and content digests: the leaf every stage builds its tasks from.

Like ``doit/tools.py``, this module sits below everything that uses it: stages import it at
the top, and it imports no stage. Each check carries a ``reason`` so ``afs plan`` can say in
words why a task runs.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Iterable

from .manifest import plain

PACKAGE = Path(__file__).resolve().parent


def slice_digest(value) -> str:
    """SHA-256 of a manifest slice, as JSON with sorted keys (the digest SliceChanged stores)."""
    return hashlib.sha256(json.dumps(plain(value), sort_keys=True).encode()).hexdigest()


class SliceChanged:
    """doit ``uptodate``: true while the manifest slice a task reads is unchanged.

    Like ``doit.tools.config_changed``, but several may sit on one task, each is labelled (so
    ``afs plan`` can say which slice changed) and values are made JSON-ready first.
    """

    def __init__(self, label: str, value):
        self.label = label
        self.value = plain(value)
        self.digest = slice_digest(self.value)

    def configure_task(self, task) -> None:
        task.value_savers.append(lambda: {f"slice:{self.label}": self.digest})

    def __call__(self, task, values) -> bool:
        return values.get(f"slice:{self.label}") == self.digest

    def __repr__(self) -> str:
        return f"SliceChanged({self.label!r})"

    @property
    def reason(self) -> str:
        """Why the task runs when this check fails, in `afs plan`'s words."""
        return f"manifest slice changed: {self.label}"


class TreeChanged:
    """doit ``uptodate``: true while the content of a set of files is unchanged.

    For inputs that are a folder (a codebase) rather than a fixed list of files. Hashes are
    reused while a file's size and mtime are unchanged, so a no-op check costs only stats;
    a touched but unchanged file re-hashes to the same digest and rebuilds nothing.
    """

    def __init__(self, label: str, list_files: Callable[[], Iterable[Path]], root: Path):
        self.label = label
        self.list_files = list_files
        self.root = root
        self.state: dict = {}

    def configure_task(self, task) -> None:
        task.value_savers.append(lambda: {f"tree:{self.label}": self.state})

    def __call__(self, task, values) -> bool:
        previous = values.get(f"tree:{self.label}") or {}
        known = previous.get("files", {})
        files: dict[str, list] = {}
        for path in sorted(self.list_files()):
            stat = path.stat()
            rel = path.relative_to(self.root).as_posix()
            old = known.get(rel)
            if old and old[0] == stat.st_size and old[1] == stat.st_mtime_ns:
                files[rel] = old
            else:
                files[rel] = [stat.st_size, stat.st_mtime_ns, file_digest(path)]
        digest = hashlib.sha256(json.dumps([[k, v[2]] for k, v in files.items()]).encode()).hexdigest()
        self.state = {"digest": digest, "files": files}
        return previous.get("digest") == digest

    def __repr__(self) -> str:
        return f"TreeChanged({self.label!r})"

    @property
    def reason(self) -> str:
        return f"input content changed: {self.label}"


class DigestChanged:
    """doit ``uptodate``: true while `compute()` returns what it returned at the last success.

    For inputs whose content is summarised by a cheap digest (a model folder's config,
    tokenizer and weight headers) rather than by hashing every byte.
    """

    def __init__(self, label: str, compute: Callable[[], str]):
        self.label = label
        self.compute = compute
        self.value: str | None = None

    def configure_task(self, task) -> None:
        task.value_savers.append(lambda: {f"digest:{self.label}": self.value})

    def __call__(self, task, values) -> bool:
        self.value = self.compute()
        return values.get(f"digest:{self.label}") == self.value

    def __repr__(self) -> str:
        return f"DigestChanged({self.label!r})"

    @property
    def reason(self) -> str:
        return f"input content changed: {self.label}"


class ServerHealthy:
    """doit ``uptodate``: false while a specialist's server is not answering, so that running
    the deploy task again restarts a crashed server."""

    def __init__(self, host: str, port: int, alias: str, key_variable: str | None = None):
        self.host, self.port, self.alias = host, port, alias
        self.key_variable = key_variable  # the name only: the key is read when checking

    def __call__(self, task, values) -> bool:
        import os

        from .deploy.server import healthy

        key = os.environ.get(self.key_variable) if self.key_variable else None
        return healthy(self.host, self.port, self.alias, key=key or None)

    def __repr__(self) -> str:
        return f"ServerHealthy({self.alias!r})"

    @property
    def reason(self) -> str:
        return f"server {self.alias} on port {self.port} is not answering"


def file_digest(path: Path) -> str:
    """Content digest of one file (xxh3-128: fast, and only compared with itself)."""
    import xxhash

    digest = xxhash.xxh3_128()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def code_files(*modules: str) -> list[str]:
    """The source files of afs modules (``"training/loop.py"``) a task's output is made by.

    Listed in a task's ``file_dep``, an edit to the code that writes an artifact rebuilds it;
    paths only, so planning reads nothing.
    """
    return [str(PACKAGE / m) for m in modules]


# Large outputs: a size and a sampled digest, recorded in the report beside them.
HEAD_BYTES = 1 << 20  # a GGUF's header, keys and most of its tensor table
SAMPLES, SAMPLE_BYTES = 32, 64 * 1024


def sampled_digest(path: Path) -> str:
    """A cheap content digest of a large file: its size, its first MiB and 32 spread 64 KiB blocks.

    About 3 MiB is read whatever the size, so a multi-GB GGUF is checked in milliseconds. A
    truncated or regrown file changes its size; a file rewritten in place is noticed where the
    change touches the header or a sampled block (a whole different build always does).
    """
    import xxhash

    digest = xxhash.xxh3_128()
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        digest.update(f"{size}\0".encode())
        digest.update(handle.read(HEAD_BYTES))
        for k in range(SAMPLES):
            handle.seek(max(0, (size - SAMPLE_BYTES) * k // (SAMPLES - 1)))
            digest.update(handle.read(SAMPLE_BYTES))
    return digest.hexdigest()


def file_records(paths: Iterable[Path]) -> dict[str, dict]:
    """``{file name: {"bytes", "digest"}}`` of output files: what a report records of them."""
    return {Path(p).name: {"bytes": Path(p).stat().st_size, "digest": sampled_digest(Path(p))}
            for p in paths}


class OutputsIntact:
    """doit ``uptodate``: false when an output file no longer has the size and sampled digest
    that its report's ``files`` records (a file truncated or overwritten from outside).

    Its ``reason`` says which file and what differs. A missing report or file is left to
    doit's own missing-target check.
    """

    def __init__(self, report: Path, files: Iterable[Path]):
        self.report = Path(report)
        self.files = [Path(p) for p in files]
        self.reason = f"an output differs from what {self.report.name} records"

    def __call__(self, task, values) -> bool:
        try:
            recorded = json.loads(self.report.read_text(encoding="utf-8")).get("files")
        except FileNotFoundError:
            return True
        except (OSError, ValueError) as err:
            self.reason = f"report unreadable: {self.report} ({err})"
            return False
        for path in self.files:
            entry = (recorded or {}).get(path.name)
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue  # doit's missing-target check runs it
            if not isinstance(entry, dict):
                self.reason = f"output not recorded: {self.report.name} has no size and digest of {path.name}"
                return False
            if size != entry.get("bytes"):
                self.reason = (f"output damaged: {path} is {size} bytes, {self.report.name} "
                               f"records {entry.get('bytes')}")
                return False
            if sampled_digest(path) != entry.get("digest"):
                self.reason = (f"output damaged: the content of {path} differs from the digest "
                               f"{self.report.name} records")
                return False
        return True

    def __repr__(self) -> str:
        return f"OutputsIntact({str(self.report)!r})"
