"""Temporaries of killed writers are removed, and nothing else: atomic_path and remove_stale."""

from __future__ import annotations

import os
import time

from afs_build.atomic import atomic_path, remove_stale
from afs_build.uptodate import sampled_digest
from leftovers import writer


def test_a_killed_writers_temporary_is_removed_and_nothing_else(tmp_path):
    target = tmp_path / "alpha-F16.gguf"
    target.write_bytes(b"the finished file")
    _, killed = writer(target, "kill")
    live, running = writer(target, "sleep")
    try:
        others = [".alpha-F16.gguf.tmp", "alpha-F16.gguf.abcd1234.tmp", ".alpha-F16.gguf.abcd1234",
                  ".alpha-Q8_0.gguf.abcd1234.tmp", ".alpha-F16.gguf.a.b.tmp", "notes.txt"]
        for name in others:
            (tmp_path / name).write_text("not a leftover of alpha-F16.gguf")
        (tmp_path / ".alpha-F16.gguf.folder12.tmp").mkdir()
        (tmp_path / ".alpha-F16.gguf.link1234.tmp").symlink_to(tmp_path / "notes.txt")
        assert remove_stale(target) == [tmp_path / killed]
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            others + [".alpha-F16.gguf.folder12.tmp", ".alpha-F16.gguf.link1234.tmp",
                      "alpha-F16.gguf", running])
        assert remove_stale(target) == []  # the running writer's stays while it runs
    finally:
        live.kill()
        live.wait()
    assert remove_stale(target) == [tmp_path / running]  # and goes once it is dead
    assert target.read_bytes() == b"the finished file"
    assert remove_stale(tmp_path / "missing" / "x.gguf") == []


def test_a_writer_in_this_process_is_not_disturbed(tmp_path):
    target = tmp_path / "alpha-Q8_0.gguf"
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        assert remove_stale(target) == [] and tmp.exists()
        tmp.write_bytes(b"whole")
    assert target.read_bytes() == b"whole" and os.listdir(tmp_path) == ["alpha-Q8_0.gguf"]


def test_sampled_digest_is_cheap_and_sees_cuts_and_rewrites(tmp_path):
    path = tmp_path / "big.gguf"
    with open(path, "wb") as f:  # 8 GiB, sparse: only what is read costs anything
        f.write(b"GGUF" + os.urandom(1 << 20))
        f.truncate(8 << 30)
    start = time.perf_counter()
    digest = sampled_digest(path)
    assert time.perf_counter() - start < 2.0
    assert sampled_digest(path) == digest
    with open(path, "r+b") as f:
        f.seek((8 << 30) - 10)
        f.write(b"x")  # the last block is always sampled
    changed = sampled_digest(path)
    assert changed != digest
    with open(path, "r+b") as f:
        f.truncate(4 << 30)
    assert sampled_digest(path) not in (digest, changed)
