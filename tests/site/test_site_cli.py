"""`afs site` and `afs site --serve` as a user runs them: a real process, a real HTTP server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from conftest import REPO
from site_fixtures import write_build
from site_browser import free_port


def _ctrl_c_stops() -> None:
    # As in a terminal: by the time this test runs in the whole suite, something earlier has
    # left SIGINT (and SIGQUIT) ignored in pytest's process, and an ignored signal stays
    # ignored across exec, so the server would never see the Ctrl-C below.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def afs(*args, cwd, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.Popen([sys.executable, "-m", "afs_build", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=_ctrl_c_stops, **kwargs)


def test_afs_site_builds_and_serves_the_site_on_loopback(tmp_path):
    write_build(tmp_path)
    port = free_port()
    proc = afs("site", "--serve", "--port", str(port), cwd=tmp_path)
    try:
        deadline = time.monotonic() + 300  # MkDocs builds first; the cores are shared
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/specialists/alpha.html", timeout=5) as r:
                    page = r.read().decode()
                break
            except OSError:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "afs site --serve never answered"
                time.sleep(0.3)
        assert 'id="afs-versus-alpha"' in page and "better than its base" in page
        assert (tmp_path / "site" / "build" / "index.html").is_file()
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the server stops cleanly
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"at http://127.0.0.1:{port}/" in out and "Traceback" not in err


def test_a_port_in_use_is_a_message_not_a_traceback(tmp_path):
    write_build(tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = afs("site", "--serve", "--no-build", "--port", str(port), cwd=tmp_path)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "no built site in" in err and "afs site -m afs.yaml" in err and "Traceback" not in err
    (tmp_path / "site" / "build").mkdir(parents=True)  # a site as last built (its content is not the point)
    (tmp_path / "site" / "build" / "index.html").write_text("<!doctype html><title>x</title>\n")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = afs("site", "--serve", "--no-build", "--port", str(port), cwd=tmp_path)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert f"cannot serve the site on 127.0.0.1:{port}" in err and "afs site --serve --port N" in err
    assert "Traceback" not in err
