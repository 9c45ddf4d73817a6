"""A real specialist server on a free loopback port: the OpenAI client, the chat template and
stop tokens, wrong model names, status, restart, and stopping only what afs started.

The tests in this module share one server (started once) and run in file order; the last
ones kill, restart and stop it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from afs_build import cli  # noqa: E402
from afs_build.deploy import server  # noqa: E402
from afs_build.errors import AfsError, StageError  # noqa: E402
from afs_build.paths import Layout  # noqa: E402
from deploy_helpers import free_port, shared_tiny_gguf, write_manifest  # noqa: E402

import llama_cpp.server  # noqa: E402, F401  (required: a declared dependency must fail, not skip, when missing)
import openai  # noqa: E402

N_CTX = 256
SYSTEM = "You are Majora. Answer briefly."


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    return shared_tiny_gguf(tmp_path_factory)


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_gguf):
    """A manifest with two specialists on free ports; majora served from the tiny GGUF."""
    root = tmp_path_factory.mktemp("served")
    manifest = write_manifest(root, {
        "majora": {"port": free_port(), "system_prompt": SYSTEM, "quantize": ["F16"]},
        "beta": {"port": free_port(), "quantize": ["F16"]},
    })
    layout = Layout.of(manifest)
    gguf = layout.post("majora").gguf("F16")
    gguf.parent.mkdir(parents=True)
    os.link(tiny_gguf, gguf)
    yield manifest, layout, gguf
    server.stop(layout, manifest)


def start(env, **kw):
    manifest, layout, gguf = env
    spec = manifest.specialists["majora"]
    files = layout.deploy("majora")
    args = dict(host="127.0.0.1", port=spec.port, n_ctx=N_CTX, pid_file=files.pid,
                log_file=files.server_log, timeout=60)
    return server.start("majora", kw.pop("gguf", gguf), **{**args, **kw})


@pytest.fixture(scope="module")
def first_start(env):
    record = start(env)
    manifest = env[0]
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{manifest.specialists['majora'].port}/v1",
                           api_key="none", max_retries=0, timeout=30)
    return record, client


@pytest.fixture
def served(env, first_start):
    """majora serving the F16 GGUF, whatever an earlier test did (killed, switched, stopped it).

    Tests then pass in any order; a server already in that state is kept, not restarted.
    """
    return start(env), first_start[1]


def post(port: int, path: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def token_id(port: int, text: str) -> int:
    status, body = post(port, "/extras/tokenize", {"input": text, "model": "majora"})
    assert status == 200 and len(body["tokens"]) == 1, body
    return body["tokens"][0]


def test_start_writes_pid_file(env, first_start, served):
    record, _ = served
    manifest, layout, gguf = env
    assert first_start[0]["action"] == "started"
    on_disk = json.loads(layout.deploy("majora").pid.read_text())
    assert on_disk == {k: v for k, v in record.items() if k != "action"}
    assert on_disk["port"] == manifest.specialists["majora"].port
    assert on_disk["gguf"] == str(gguf) and on_disk["token"].startswith(server.TOKEN_PREFIX)
    assert {"pid", "started", "gguf_size", "gguf_mtime_ns", "n_ctx", "host", "auth",
            "code"} <= set(on_disk)


def test_openai_client_gets_an_answer(served):
    _, client = served
    reply = client.chat.completions.create(
        model="majora", max_tokens=12, temperature=0,
        messages=[{"role": "system", "content": SYSTEM},
                  {"role": "user", "content": "What is 12 plus 30?"}])
    text = reply.choices[0].message.content
    assert reply.model == "majora" and isinstance(text, str)
    assert "<|im_end|>" not in text and "<|im_start|>" not in text
    assert reply.usage.completion_tokens <= 12


def test_prompt_is_rendered_with_the_chat_template(env, served):
    _, client = served
    port = env[0].specialists["majora"].port
    messages = [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": "What is 12 plus 30?"}]
    reply = client.chat.completions.create(model="majora", max_tokens=1, messages=messages)
    chatml = ("<|im_start|>system\nYou are Majora. Answer briefly.<|im_end|>\n"
              "<|im_start|>user\nWhat is 12 plus 30?<|im_end|>\n<|im_start|>assistant\n")
    status, count = post(port, "/extras/tokenize/count", {"input": chatml, "model": "majora"})
    assert status == 200 and reply.usage.prompt_tokens == count["count"]


@pytest.mark.parametrize("marker", ["<|im_end|>", "<|im_start|>", "<|endoftext|>"])
def test_generation_stops_at_every_end_token(env, served, marker):
    # Force the marker as the first token: the reply must end there, not run on to max_tokens.
    _, client = served
    port = env[0].specialists["majora"].port
    reply = client.chat.completions.create(
        model="majora", max_tokens=8, logit_bias={str(token_id(port, marker)): 100},
        messages=[{"role": "user", "content": "Hello"}])
    choice = reply.choices[0]
    assert choice.finish_reason == "stop" and reply.usage.completion_tokens <= 1
    assert choice.message.content == ""


def test_another_model_name_gets_404(env, served):
    _, client = served
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="beta", max_tokens=4,
                                       messages=[{"role": "user", "content": "Hello"}])
    assert err.value.status_code == 404
    assert err.value.body == {"message": "model 'beta' is not served here; this server serves "
                                         "'majora'",
                              "type": "invalid_request_error", "param": None,
                              "code": "model_not_found"}
    status, body = post(env[0].specialists["majora"].port, "/v1/completions",
                        {"model": "gpt-4", "prompt": "x", "max_tokens": 1})
    assert status == 404 and body["error"]["code"] == "model_not_found"


def test_models_lists_only_the_alias(served):
    _, client = served
    assert [m.id for m in client.models.list().data] == ["majora"]
    assert client.models.retrieve("majora").id == "majora"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("beta")


def test_status_shows_healthy_and_stopped(env, served, capsys):
    manifest, layout, gguf = env
    rows = {r["specialist"]: r for r in server.status(layout, manifest)}
    assert rows["majora"] == {
        "specialist": "majora", "port": manifest.specialists["majora"].port, "file": str(gguf),
        "pid": served[0]["pid"], "pids": [served[0]["pid"]], "alive": True, "healthy": True,
        "state": "healthy"}
    assert rows["beta"]["state"] == "stopped" and rows["beta"]["pid"] is None
    assert rows["beta"]["file"] == str(layout.post("beta").gguf("F16"))

    assert cli.main(["status", "-m", str(manifest.file)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["SPECIALIST", "PORT", "STATE", "PID", "FILE"]
    assert lines[1].split()[:4] == ["majora", str(manifest.specialists["majora"].port),
                                    "healthy", str(served[0]["pid"])]
    assert lines[2].split()[:4] == ["beta", str(manifest.specialists["beta"].port), "stopped", "-"]


def test_start_keeps_a_healthy_server_for_the_same_gguf(env, served):
    record = start(env)
    assert record["action"] == "kept" and record["pid"] == served[0]["pid"]


def test_port_held_by_another_program(env):
    manifest, layout, _ = env
    port = manifest.specialists["beta"].port
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", port))
        listener.listen()
        with pytest.raises(StageError) as err:
            server.start("beta", env[2], host="127.0.0.1", port=port, n_ctx=N_CTX,
                         pid_file=layout.deploy("beta").pid,
                         log_file=layout.deploy("beta").server_log)
    assert str(err.value) == (f"port {port} (specialist beta) is already in use by another "
                              f"program; stop it or change specialists.beta.port")
    assert not layout.deploy("beta").pid.exists()


def test_a_gguf_that_fails_to_load_reports_the_log(env, tmp_path):
    manifest, layout, _ = env
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"not a gguf")
    files = layout.deploy("beta")
    with pytest.raises(StageError) as err:
        server.start("beta", bad, host="127.0.0.1", port=manifest.specialists["beta"].port,
                     n_ctx=N_CTX, pid_file=files.pid, log_file=files.server_log)
    message = str(err.value)
    assert message.startswith("the server for specialist beta exited with code 1 before it was "
                              f"ready; the end of {files.server_log}:\n")
    assert "broken.gguf" in message and not files.pid.exists()


def test_not_ready_in_time_is_an_error_and_leaves_nothing_running(env, tmp_path):
    manifest, layout, gguf = env
    files = layout.deploy("beta")
    with pytest.raises(StageError, match=r"the server for specialist beta on port \d+ was not "
                                         r"ready within 0\.01 s; the end of "):
        server.start("beta", gguf, host="127.0.0.1", port=manifest.specialists["beta"].port,
                     n_ctx=N_CTX, pid_file=files.pid, log_file=files.server_log, timeout=0.01)
    assert not files.pid.exists()
    assert server.port_free("127.0.0.1", manifest.specialists["beta"].port)


def test_a_killed_server_is_restarted(env, served):
    manifest, layout, _ = env
    old = json.loads(layout.deploy("majora").pid.read_text())
    os.kill(old["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while server.owned(old) and time.monotonic() < deadline:
        time.sleep(0.05)
    row = next(r for r in server.status(layout, manifest) if r["specialist"] == "majora")
    assert row["state"] == "down" and not row["alive"]
    record = start(env)
    assert record["action"] == "restarted" and record["pid"] != old["pid"]
    assert server.healthy("127.0.0.1", manifest.specialists["majora"].port, "majora")


def test_a_changed_gguf_restarts_the_server(env, served, tmp_path):
    manifest, layout, gguf = env
    old = json.loads(layout.deploy("majora").pid.read_text())
    other = layout.post("majora").gguf("Q8_0")
    other.write_bytes(gguf.read_bytes())
    record = start(env, gguf=other)
    assert record["action"] == "restarted" and record["pid"] != old["pid"]
    assert record["gguf"] == str(other) and not server.owned(old)


def test_stop_stops_only_afs_servers(env, served):
    manifest, layout, _ = env
    majora = json.loads(layout.deploy("majora").pid.read_text())
    # A foreign process, and a pid file for beta that claims it (token and all).
    foreign = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        beta_pid = layout.deploy("beta").pid
        beta_pid.parent.mkdir(parents=True, exist_ok=True)
        beta_pid.write_text(json.dumps({**majora, "pid": foreign.pid,
                                        "port": manifest.specialists["beta"].port}))
        with pytest.raises(AfsError, match=r"unknown specialist 'majro'.*did you mean 'majora'"):
            server.stop(layout, manifest, ["majro"])
        assert cli.main(["stop", "-m", str(manifest.file)]) == 0
        assert foreign.poll() is None  # not signalled
        assert not server.owned(majora)
        assert not beta_pid.exists() and not layout.deploy("majora").pid.exists()
        assert server.port_free("127.0.0.1", manifest.specialists["majora"].port)
        assert [r["state"] for r in server.status(layout, manifest)] == ["stopped", "stopped"]
        assert server.stop(layout, manifest) == []
    finally:
        foreign.kill()
        foreign.wait()
