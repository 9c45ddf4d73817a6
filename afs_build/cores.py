"""The CPU cores this process may use."""

from __future__ import annotations

import os


def usable() -> int:
    """The CPUs this process may use (a container's cpuset, not the host's core count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def model_copies() -> int:
    """Copies of a llama.cpp model worth running at once here: 2 where 2 cores are usable (each
    on llama.cpp's default threads, half the cores; on 2 cores two copies of one thread make 1.9
    times the tokens a second of one: bench/serve_parallel.py), else 1."""
    return 2 if usable() >= 2 else 1
