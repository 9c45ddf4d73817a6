"""Copy a server's output into its log, redacted, line by line; rotate the log by size.

    python -m afs_build.deploy.logpump LOG_FILE < server-output

The launcher starts this beside each server with the server's output on its standard input,
so everything the server prints (Python's and llama.cpp's own C-level lines alike) passes
through :func:`afs_build.log.redact`, the redaction the JSON log uses, before it reaches
``server.log``. It ignores the signals that stop the server and ends when the server's output
does (at end of file), so a crash's last lines are kept.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import BinaryIO

MAX_BYTES = 5 * 2**20  # then server.log becomes server.log.1 (one old log kept)
MAX_LINE = 1 << 16  # a longer line is written in pieces


def pump(source: BinaryIO, log_file: Path, max_bytes: int = MAX_BYTES) -> None:
    """Copy `source` into `log_file` until end of file, redacting every line."""
    from ..log import redact

    log_file = Path(log_file)
    out = open(log_file, "ab", buffering=0)
    try:
        while True:
            line = source.readline(MAX_LINE)
            if not line:
                return
            out.write(redact(line.decode("utf-8", "replace")).encode("utf-8"))
            if out.tell() > max_bytes:
                out.close()
                os.replace(log_file, log_file.with_name(log_file.name + ".1"))
                out = open(log_file, "ab", buffering=0)
    finally:
        out.close()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m afs_build.deploy.logpump LOG_FILE", file=sys.stderr)
        return 2
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # the server's end (end of file) ends this
    pump(sys.stdin.buffer, Path(args[0]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
