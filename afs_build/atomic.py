"""Atomic writes: a file appears complete under its name, or not at all.

A task killed half-way must not leave a file that a later run takes as done, so every
artifact is written to a temporary name in the same folder and renamed into place. A killed
run (kill -9, a power cut) cannot remove its temporary: the writer holds a lock on it while
it lives, and :func:`remove_stale` removes the temporaries that nobody holds.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` if the block succeeds.

    The temporary (``.<name>.<random>.tmp``) is locked (``flock``) until it is renamed or
    removed; the block must write it in place (open it by name), not replace it.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _locked_temporary(target)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; artifacts are not private
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    finally:
        os.close(fd)  # the lock goes with it, after the rename


def _locked_temporary(target: Path) -> tuple[int, str]:
    """A new temporary beside `target`, open and locked by this process."""
    while True:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        fcntl.flock(fd, fcntl.LOCK_EX)  # waits only while remove_stale holds it
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.stat(tmp), os.fstat(fd)):
                return fd, tmp
        # remove_stale took it for a leftover in the instant before the lock: take another
        os.close(fd)


def remove_stale(target: Path) -> list[Path]:
    """Remove the temporaries of `target` that killed writers left behind; return them.

    Only :func:`atomic_path`'s own (``.<target name>.<random>.tmp`` beside `target`, regular
    files) and only those no live process holds locked: a running writer's temporary stays,
    and nothing else in the folder is touched.
    """
    target = Path(target)
    pattern = re.compile(rf"\.{re.escape(target.name)}\.[A-Za-z0-9_]+\.tmp")
    try:
        candidates = sorted(p for p in target.parent.iterdir() if pattern.fullmatch(p.name))
    except FileNotFoundError:
        return []
    removed = []
    for path in candidates:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:  # gone already, or a link: not ours to judge
            continue
        try:
            if not os.path.isfile(path) or not os.path.samestat(os.fstat(fd), os.stat(path)):
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live writer's
            os.unlink(path)
            removed.append(path)
        except FileNotFoundError:
            continue
        finally:
            os.close(fd)
    return removed


def write_json(target: Path, value: Any) -> None:
    """Write `value` as indented, key-sorted JSON, atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n",
                       encoding="utf-8")
