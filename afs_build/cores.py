"""The CPU cores this process may use."""

from __future__ import annotations

import os


def usable() -> int:
    """The CPUs this process may use (a container's cpuset, not the host's core count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)
