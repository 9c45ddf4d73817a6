"""A real server facing bad clients: malformed and oversized bodies, requests without a model,
input that crashed llama-cpp-python; and what the served process inherits and logs.

One server for the module, started with secrets in the parent's environment.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import afs_build  # noqa: E402
from afs_build import serve  # noqa: E402
from afs_build.deploy import guard, server  # noqa: E402
from afs_build.paths import Layout  # noqa: E402
from deploy_helpers import (free_port, get, place_served, post, post_raw, rss_kib,  # noqa: E402
                            log_text, shared_tiny_gguf, write_manifest)

N_CTX = 256
SECRETS = {"HF_TOKEN": "hf_" + "a1B2c3D4e5" * 3, "OPENAI_API_KEY": "sk-" + "x9Y8z7W6v5" * 3,
           "MY_SERVICE_PASSWORD": "correct horse battery staple",
           "DATABASE_SECRET": "s3cr3t-value-1234"}
HELLO = [{"role": "user", "content": "Hello"}]


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    return shared_tiny_gguf(tmp_path_factory)


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_gguf):
    """majora served from the tiny GGUF: (manifest, layout, port, pid)."""
    root = tmp_path_factory.mktemp("hardened")
    manifest = write_manifest(root, {"majora": {"port": free_port(), "quantize": ["F16"]}})
    gguf = place_served(manifest, "majora", tiny_gguf)
    layout = Layout.of(manifest)
    files = layout.deploy("majora")
    port = manifest.specialists["majora"].port
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {**SECRETS, "UNRELATED_SETTING": "plain"}.items():
            patch.setenv(name, value)
        record = server.start("majora", gguf, host="127.0.0.1", port=port, n_ctx=N_CTX,
                              pid_file=files.pid, log_file=files.server_log)
    yield manifest, layout, port, record["pid"]
    server.stop(layout, manifest)


def environment(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def raw_exchange(port: int, head: bytes, body: bytes = b"") -> bytes:
    """Send a request's head and part of its body on a socket; what comes back."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        try:
            sock.sendall(body)
        except OSError:
            pass  # the server may close before taking it all
        out = b""
        try:
            while chunk := sock.recv(65536):
                out += chunk
        except OSError:
            pass
    return out


def response(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def assert_openai_error(body: dict, fragment: str) -> None:
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == "invalid_request_error"
    assert fragment in body["error"]["message"]


@pytest.mark.parametrize("body, fragment", [
    (b'{"messages": [', "not valid JSON: Expecting value (line 1, column 15)"),
    (b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}', "not valid UTF-8 (byte 43)"),
    (b'[1, 2]', "expected a JSON object as the request body, got list"),
    (b'{"messages": NaN}', "NaN is not a JSON number"),
    (b'{"messages": [], "max_tokens": ' + b"9" * 5000 + b"}", "a number too long"),
    (b"[" * 100000 + b"]" * 100000, "nesting too deep"),
    (b'{"messages": "hi"}', "messages: Input should be a valid list"),
    (b'{"messages": [{"role": "user", "content": "\\ud800"}]}', "lone surrogate"),
    (b'{"model": 5, "messages": []}', "model: expected a string"),
], ids=["truncated", "not-utf8", "array", "nan", "long-int", "deep", "wrong-type",
        "surrogate", "model-type"])
def test_bad_bodies_get_400_with_an_openai_error(served, body, fragment):
    _, _, port, _ = served
    status, answer = post_raw(port, "/v1/chat/completions", body)
    assert status == 400
    assert_openai_error(answer, fragment)


@pytest.mark.parametrize("path, body, fragment", [
    ("/v1/completions", {"prompt": "hi", "grammar": "root ::= ((("}, "cannot parse this grammar"),
    ("/v1/chat/completions", {"messages": HELLO, "grammar": 'start ::= "a"'},
     "cannot parse this grammar"),
    ("/extras/detokenize", {"tokens": [10 ** 9]}, "is not a token id of this model"),
    ("/v1/completions", {"prompt": "hi", "logit_bias": {"99999999": 5}}, "not a token id"),
    ("/v1/completions", {"prompt": ["a", "b"]}, "one prompt per request"),
    ("/v1/completions", {"prompt": ""}, "prompt: empty"),
    ("/v1/chat/completions", {"messages": HELLO, "tools": [
        {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "tool_choice": {"type": "function", "function": {"name": "g"}}}, "no tool named 'g'"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]}, "reads text only"),
], ids=["grammar", "grammar-no-root", "token-id", "logit-bias", "two-prompts", "empty-prompt",
        "tool-choice", "image"])
def test_input_that_crashed_or_failed_the_server_is_refused(served, path, body, fragment):
    _, layout, port, pid = served
    status, answer = post(port, path, {"max_tokens": 2, **body})
    assert status == 400
    assert_openai_error(answer, fragment)
    assert server.healthy("127.0.0.1", port, "majora")  # an unparsed grammar killed it


def test_a_body_over_the_limit_gets_413_before_it_is_read(served):
    _, _, port, pid = served
    limit = serve.max_body_bytes(N_CTX)
    before = rss_kib(pid)
    started = time.monotonic()
    # 150 MB announced, 100 kB sent: the answer comes from the header alone.
    raw = raw_exchange(port, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                       b"application/json\r\nContent-Length: 150000000\r\n\r\n",
                       b'{"messages": [' + b"x" * 100_000)
    assert time.monotonic() - started < 5
    status, body = response(raw)
    assert status == 413 and body["error"]["code"] == "request_too_large"
    assert f"({limit:,} bytes)" in body["error"]["message"]
    # Chunked, no length announced: refused, and the connection closed, once far too much
    # has come; the rest is never read.
    chunk = b"%x\r\n%s\r\n" % (1 << 16, b"a" * (1 << 16))
    head = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    raw = raw_exchange(port, head, chunk * (guard.DISCARD_FACTOR * limit // (1 << 16) + 2))
    assert response(raw)[0] == 413 and b"connection: close" in raw.lower()
    # A little over the limit: read to its end (nothing kept), so the client gets its 413.
    raw = raw_exchange(port, head, chunk * (limit // (1 << 16) + 2) + b"0\r\n\r\n")
    assert response(raw)[0] == 413
    status, answer = post_raw(port, "/v1/completions", b'{"prompt": "' + b"a" * limit + b'"}')
    assert status == 413 and answer["error"]["code"] == "request_too_large"
    assert rss_kib(pid) - before < 32 * 1024  # nothing of the bodies kept


def test_a_request_without_a_model_is_answered_under_the_alias(served):
    manifest, layout, port, _ = served
    gguf = str(server.served_gguf(layout, manifest.specialists["majora"]))
    for path, body in (("/v1/chat/completions", {"messages": HELLO, "max_tokens": 2}),
                       ("/v1/completions", {"prompt": "Hello", "max_tokens": 2}),
                       ("/v1/chat/completions", {"messages": HELLO, "max_tokens": 2,
                                                 "model": None})):
        status, answer = post(port, path, body)
        assert status == 200 and answer["model"] == "majora"
        assert gguf not in json.dumps(answer) and ".gguf" not in json.dumps(answer)


def test_text_parts_and_null_content_are_read_as_text(served):
    _, _, port, _ = served
    for content in ([{"type": "text", "text": "Hello"}, {"type": "text", "text": "there"}], None):
        status, answer = post(port, "/v1/chat/completions",
                              {"messages": [{"role": "user", "content": content}],
                               "max_tokens": 2})
        assert status == 200 and answer["model"] == "majora"


def test_as_many_tokens_as_fit_is_answered(served):
    # llama-cpp-python runs past the end of the context on these (llama_decode fails).
    _, _, port, _ = served
    for body in ({"prompt": "Hello", "max_tokens": 0}, {"prompt": "Hello", "max_tokens": 10 ** 6},
                 {"prompt": "Hello", "max_tokens": 0}):
        status, answer = post(port, "/v1/completions", body)
        assert status == 200, answer
        assert answer["usage"]["total_tokens"] <= N_CTX
    status, answer = post(port, "/v1/chat/completions", {"messages": HELLO})
    assert status == 200 and answer["usage"]["total_tokens"] <= N_CTX
    status, answer = post(port, "/v1/completions", {"prompt": "Hello " * 400})
    assert status == 400 and answer["error"]["code"] == "context_length_exceeded"


def test_unknown_endpoints_get_an_openai_404(served):
    _, _, port, _ = served
    status, answer = post(port, "/v1/embeddings", {"input": "x"})
    assert status == 404 and answer["error"]["code"] == "unknown_url"
    status, answer = get(port, "/v1/models/other")
    assert status == 404 and answer["error"]["code"] == "model_not_found"


def test_the_served_process_inherits_no_secret(served):
    _, layout, _, pid = served
    env = environment(pid)
    assert not set(SECRETS) & set(env)
    assert not any(value in "\0".join(env.values()) for value in SECRETS.values())
    assert "UNRELATED_SETTING" not in env  # an explicit environment, not a filtered copy
    assert env["PATH"] == os.environ["PATH"] and env["OMP_WAIT_POLICY"] == "PASSIVE"
    assert "AFS_API_KEY" not in env  # loopback without api_key_env: no key
    pump = [p for p in os.listdir("/proc") if p.isdigit()
            and b"afs_build.deploy.logpump" in Path(f"/proc/{p}/cmdline").read_bytes()
            and str(layout.deploy("majora").server_log).encode()
            in Path(f"/proc/{p}/cmdline").read_bytes()]
    assert len(pump) == 1 and not set(SECRETS) & set(environment(int(pump[0])))


def test_afs_comes_from_the_installed_package_not_a_patched_path(served):
    _, layout, _, pid = served
    env = environment(pid)
    # Whatever PYTHONPATH the caller had passes unchanged; afs adds no folder of its own.
    assert env.get("PYTHONPATH") == os.environ.get("PYTHONPATH")
    if "PYTHONPATH" not in os.environ:
        assert "PYTHONPATH" not in env
    # `python -m` puts the working folder first on sys.path: it is the deploy folder.
    assert os.readlink(f"/proc/{pid}/cwd") == str(layout.deploy("majora").folder)
    assert not (layout.deploy("majora").folder / "afs_build").exists()
    source = Path(server.__file__).read_text()
    assert "PYTHONPATH=" not in source and "PACKAGE_ROOT" not in source
    assert Path(afs_build.__file__).name == "__init__.py"


def test_server_log_is_redacted_and_has_no_tracebacks(served):
    manifest, layout, port, _ = served
    hf = "hf_" + "Q" * 30
    # uvicorn logs each request's path: secrets in it must not reach server.log.
    get(port, f"/v1/models/{hf}")
    get(port, f"/v1/models/{SECRETS['OPENAI_API_KEY']}")
    log = layout.deploy("majora").server_log
    text = log_text(log, "/v1/models/[redacted]", count=2)
    assert text.count("/v1/models/[redacted]") == 2
    assert hf not in text and SECRETS["OPENAI_API_KEY"] not in text
    assert "Traceback" not in text  # every bad request above was refused without one
    assert " 500 " not in text
