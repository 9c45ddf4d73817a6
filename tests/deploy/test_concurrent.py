"""Two builds at once on one build folder, and a server whose pid file is gone: one server
results, ``afs status`` sees it and ``afs stop`` stops it.

Before the deploy lock, two concurrent deploys both started a server; the losing run then
deleted the shared pid file, leaving a server that status called stopped and stop could
not stop.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from afs_build import cli  # noqa: E402
from afs_build.deploy import processes, server  # noqa: E402
from afs_build.paths import Layout  # noqa: E402
from conftest import REPO  # noqa: E402
from deploy_helpers import free_port, place_served, shared_tiny_gguf, write_manifest  # noqa: E402


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    return shared_tiny_gguf(tmp_path_factory)


def every_server(pid_file) -> list[int]:
    """Every process on the machine running afs's server for `pid_file`, by its arguments."""
    return [pid for pid, args in processes.scan()
            if "afs_build.serve" in args and str(pid_file) in args]


@pytest.fixture
def project(tmp_path, tiny_gguf):
    manifest = write_manifest(tmp_path, {"majora": {"port": free_port(), "quantize": ["Q8_0"]}})
    place_served(manifest, "majora", tiny_gguf)
    layout = Layout.of(manifest)
    yield manifest, layout
    for pid in every_server(layout.deploy("majora").pid):  # whatever a failure left behind
        processes.terminate(pid, 5)


def test_two_concurrent_deploys_leave_one_server_that_status_and_stop_see(project, capsys):
    manifest, layout = project
    files = layout.deploy("majora")
    command = [sys.executable, "-m", "doit", "-f", str(REPO / "dodo.py"), "-s", "deploy:majora"]
    env = {**os.environ, "AFS_MANIFEST": "afs.yaml", "HOME": str(manifest.root / "home")}
    runs = [subprocess.Popen(command, cwd=manifest.root, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=300)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], "\n".join(outputs)

    pids = every_server(files.pid)
    assert len(pids) == 1, pids
    record = json.loads(files.pid.read_text())
    assert record["pid"] == pids[0]
    actions = json.loads(files.report.read_text())["server"]["action"]
    assert actions in ("started", "kept")
    [row] = server.status(layout, manifest)
    assert (row["state"], row["pids"]) == ("healthy", pids)

    assert cli.main(["stop", "-m", str(manifest.file)]) == 0
    assert capsys.readouterr().out == "stopped: majora\n"
    assert every_server(files.pid) == []
    assert server.port_free("127.0.0.1", manifest.specialists["majora"].port)
    assert server.status(layout, manifest)[0]["state"] == "stopped"


def test_a_server_whose_pid_file_was_deleted_is_still_found_and_stopped(project, capsys):
    manifest, layout = project
    files = layout.deploy("majora")
    spec = manifest.specialists["majora"]
    record = server.start("majora", server.served_gguf(layout, spec), host="127.0.0.1",
                          port=spec.port, n_ctx=256, pid_file=files.pid, log_file=files.server_log)
    files.pid.unlink()  # what the losing run of a race did
    [row] = server.status(layout, manifest)
    assert (row["state"], row["pid"], row["port"]) == ("healthy", record["pid"], spec.port)
    assert cli.main(["status", "-m", str(manifest.file)]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[:4] == [
        "majora", str(spec.port), "healthy", str(record["pid"])]
    # A fresh deploy does not start a second server beside it.
    again = server.start("majora", server.served_gguf(layout, spec), host="127.0.0.1",
                         port=spec.port, n_ctx=256, pid_file=files.pid, log_file=files.server_log)
    assert again["action"] == "restarted" and every_server(files.pid) == [again["pid"]]
    files.pid.unlink()
    assert server.stop(layout, manifest) == ["majora"]
    assert every_server(files.pid) == []


def test_a_pid_file_pointing_at_another_afs_server_port_is_not_trusted(project):
    manifest, layout = project
    files = layout.deploy("majora")
    spec = manifest.specialists["majora"]
    record = server.start("majora", server.served_gguf(layout, spec), host="127.0.0.1",
                          port=spec.port, n_ctx=256, pid_file=files.pid, log_file=files.server_log)
    assert server.owned(record, files.pid)
    assert not server.owned({**record, "port": spec.port + 1})  # the command line says otherwise
    assert not server.owned(record, files.pid.with_name("other.pid"))
    server.stop(layout, manifest)
    assert not server.owned(record)
