"""Serve the built site on loopback (``afs site --serve``) until interrupted."""

from __future__ import annotations

import functools
import http.server
from pathlib import Path

from ..errors import AfsError


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass  # one line per request would drown the address


def serve(folder: Path, port: int, host: str = "127.0.0.1") -> None:
    """Serve `folder` at http://`host`:`port`/ (loopback only: the site names local paths)."""
    try:
        server = http.server.ThreadingHTTPServer((host, port), functools.partial(_Handler, directory=str(folder)))
    except OSError as err:
        raise AfsError(f"cannot serve the site on {host}:{port}: {err.strerror or err}; "
                       f"expected a free port (afs site --serve --port N)") from None
    print(f"serving {folder} at http://{host}:{server.server_address[1]}/ (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
