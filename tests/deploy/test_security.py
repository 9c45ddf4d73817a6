"""Serving beyond loopback: validation warns, a host that is no address is an error, and the
servers require an API key from the environment on every request.

No test binds anything but loopback: the key is tested on a loopback server whose manifest
names its variable (deploy.api_key_env), which requires the key there too.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from afs_build import cli  # noqa: E402
from afs_build.deploy import access, server  # noqa: E402
from afs_build.errors import ManifestError, StageError  # noqa: E402
from afs_build.manifest import load  # noqa: E402
from afs_build.paths import Layout  # noqa: E402
from afs_build.stages import deploy as stage  # noqa: E402
from afs_build.uptodate import ServerHealthy  # noqa: E402
from deploy_helpers import (free_port, get, place_served, post, shared_tiny_gguf,  # noqa: E402
                            log_text, write_manifest)

KEY = "k3y-" + "Zq8Lw2Rt" * 4
import openai


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    return shared_tiny_gguf(tmp_path_factory)


def host_at(path: Path) -> str:
    """``FILE:LINE:COL`` of deploy.host's value in the written manifest (quoted or not)."""
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1)
                if text.strip().startswith("host:"))
    text = path.read_text().splitlines()[line - 1]
    return f"{path}:{line}:{text.index('host:') + 7}"


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::", "my-box.lan"])
def test_validate_warns_about_a_host_beyond_loopback(project, minimal, capsys, host):
    minimal["deploy"] = {"host": host}
    path = project.write(minimal)
    assert cli.main(["validate", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out == f"{path}: valid (2 specialists, 1 sources, 1 mixes)\n"
    assert err == (f"{host_at(path)}: deploy.host: warning: "
                   f"{host!r} serves the specialists to other machines, not only this one; "
                   f"every request then needs the API key from AFS_API_KEY (set it before "
                   f"deploying), and traffic is not encrypted (HTTP)\n")


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_hosts_get_no_warning(project, minimal, capsys, host):
    minimal["deploy"] = {"host": host}
    assert cli.main(["validate", str(project.write(minimal))]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("host", ["http://0.0.0.0:8000", "127.0.0.1:5000", "999.1.1.1",
                                  "my host", "-bad.example", "[::1]"])
def test_a_host_that_is_not_an_address_is_an_error_with_its_position(project, minimal, host):
    minimal["deploy"] = {"host": host}
    path = project.write(minimal)
    with pytest.raises(ManifestError) as err:
        load(path)
    assert [str(p) for p in err.value.problems] == [
        f"{host_at(path)}: deploy.host: expected "
        f"an IP address (127.0.0.1 for this machine only, 0.0.0.0 for every interface) or a "
        f"host name, got {host!r}"]


def test_api_key_env_must_be_a_variable_name(project, minimal):
    minimal["deploy"] = {"api_key_env": "my key"}
    with pytest.raises(ManifestError, match=r"deploy\.api_key_env"):
        load(project.write(minimal))


def test_beyond_loopback_the_key_is_required_before_anything_is_served(tmp_path, monkeypatch,
                                                                       tiny_gguf):
    manifest = write_manifest(tmp_path, {"majora": {"port": free_port(), "quantize": ["F16"]}},
                              {"host": "0.0.0.0"})
    place_served(manifest, "majora", tiny_gguf)
    monkeypatch.delenv("AFS_API_KEY", raising=False)
    failed = stage.run(manifest, "majora")
    assert failed.get_msg().strip() == (
        f"{manifest.file}: deploy.host is '0.0.0.0', reachable from other machines, so the "
        f"servers require an API key; set AFS_API_KEY in the environment (clients send it as "
        f"their API key)")
    deploy = Layout.of(manifest).deploy("majora")
    assert not deploy.pid.exists() and not deploy.report.exists()
    monkeypatch.setenv("AFS_API_KEY", "short")
    with pytest.raises(StageError, match="has 5 characters; expected at least 16"):
        access.api_key(manifest)
    monkeypatch.setenv("AFS_API_KEY", KEY)
    assert access.api_key(manifest) == KEY


def test_serve_refuses_a_host_beyond_loopback_without_a_key(tiny_gguf):
    env = {k: v for k, v in os.environ.items() if k != "AFS_API_KEY"}
    result = subprocess.run([sys.executable, "-m", "afs_build.serve", "--model", str(tiny_gguf),
                             "--alias", "x", "--host", "0.0.0.0", "--port", str(free_port())],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == ("afs serve: refusing to serve on 0.0.0.0, beyond this "
                                     "machine, without an API key: set AFS_API_KEY")


@pytest.fixture(scope="module")
def keyed(tmp_path_factory, tiny_gguf):
    """majora on loopback behind a key from MY_AFS_KEY (deploy.api_key_env), via the stage."""
    root = tmp_path_factory.mktemp("keyed")
    manifest = write_manifest(root, {"majora": {"port": free_port(), "quantize": ["F16"]}},
                              {"api_key_env": "MY_AFS_KEY"})
    place_served(manifest, "majora", tiny_gguf)
    layout = Layout.of(manifest)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MY_AFS_KEY", KEY)
        assert stage.run(manifest, "majora") is None
    yield manifest, layout, manifest.specialists["majora"].port
    server.stop(layout, manifest)


@pytest.mark.parametrize("key", [None, "wrong-" + KEY[6:], KEY + "x"], ids=["none", "wrong", "longer"])
def test_every_request_needs_the_key(keyed, key):
    _, _, port = keyed
    for status, body in (get(port, "/v1/models", key), get(port, "/v1/models/majora", key),
                         post(port, "/v1/chat/completions", {"messages": []}, key),
                         post(port, "/extras/tokenize", {"input": "x"}, key),
                         get(port, "/docs", key), post(port, "/nowhere", {}, key)):
        assert status == 401
        assert body == {"error": {"message": "missing or wrong API key; send it as "
                                             "'Authorization: Bearer <key>' (the client's api_key)",
                                  "type": "invalid_request_error", "param": None,
                                  "code": "invalid_api_key"}}


def test_the_key_opens_the_openai_client(keyed):
    _, _, port = keyed
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0)
    reply = client.chat.completions.create(model="majora", max_tokens=2,
                                           messages=[{"role": "user", "content": "Hello"}])
    assert reply.model == "majora"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="nope",
                      max_retries=0).models.list()


def test_the_key_is_in_no_command_line_file_or_log(keyed):
    manifest, layout, port = keyed
    pid = server.running(layout.deploy("majora").pid)[0]
    assert KEY.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert f"AFS_API_KEY={KEY}".encode() in environ  # the one secret it needs
    assert not any(item.startswith(b"MY_AFS_KEY=") for item in environ)
    get(port, f"/v1/models/{KEY}", KEY)  # uvicorn logs the path
    files = layout.deploy("majora")
    # once the request's log line is in server.log (a pump thread writes it), nothing holds the key
    assert "/v1/models/[redacted]" in log_text(files.server_log, "/v1/models/[redacted]")
    for path in files.folder.iterdir():
        if path.is_file():
            assert KEY not in path.read_text(errors="replace"), path


def test_status_and_the_up_to_date_check_use_the_key(keyed, monkeypatch, capsys):
    manifest, layout, port = keyed
    check = ServerHealthy("127.0.0.1", port, "majora", "MY_AFS_KEY")
    monkeypatch.delenv("MY_AFS_KEY", raising=False)
    assert check(None, {}) is False
    [row] = server.status(layout, manifest)
    assert row["state"] == "unauthorized" and row["alive"]
    assert cli.main(["status", "-m", str(manifest.file)]) == 0
    assert "set MY_AFS_KEY to check it" in capsys.readouterr().err
    monkeypatch.setenv("MY_AFS_KEY", KEY)
    assert check(None, {}) is True
    [row] = server.status(layout, manifest)
    assert row["state"] == "healthy"
    # The same key: the next deploy keeps the server; another key restarts it.
    assert stage.run(manifest, "majora") is None
    assert server.running(layout.deploy("majora").pid) == [row["pid"]]
    other = KEY[::-1]
    monkeypatch.setenv("MY_AFS_KEY", other)
    assert stage.run(manifest, "majora") is None
    [pid] = server.running(layout.deploy("majora").pid)
    assert pid != row["pid"]
    assert get(port, "/v1/models", other)[0] == 200 and get(port, "/v1/models", KEY)[0] == 401
