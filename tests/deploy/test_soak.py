"""A soak: a few hundred good and bad requests at once against a real served tiny model.

The server must answer every good request, reject every bad one with its OpenAI-style
error (and no traceback in server.log), stay up, and give its memory back: its resident
size afterwards stays near where it was after warming up. Bounded: a minute or less.
"""

from __future__ import annotations

import json
import os
import random
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from afs_build import serve  # noqa: E402
from afs_build.deploy import server  # noqa: E402
from afs_build.paths import Layout  # noqa: E402
from deploy_helpers import (free_port, get, place_served, post, post_raw, rss_kib,  # noqa: E402
                            shared_tiny_gguf, write_manifest)

N_CTX = 256
REQUESTS = 400
CLIENTS = 12
RSS_SLACK_KIB = 48 * 1024  # what "near where it started" allows (allocator noise, caches)
QUESTIONS = ["What is 12 plus 30?", "Which register starts DMA on the SNES?", "Hello",
             "Name the largest planet.", "What does XCE do?", "Unicode: café 東京 🙂"]


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    return shared_tiny_gguf(tmp_path_factory)


def good(rng: random.Random, port: int) -> tuple[str, callable]:
    question = rng.choice(QUESTIONS)
    kind = rng.choice(["chat", "chat", "completion", "models", "tokenize", "stream"])
    if kind == "chat":
        return kind, lambda: post(port, "/v1/chat/completions", {
            "model": "majora", "max_tokens": rng.randint(1, 6), "temperature": rng.random(),
            "messages": [{"role": "user", "content": question}]})
    if kind == "completion":
        return kind, lambda: post(port, "/v1/completions", {"prompt": question, "max_tokens": 4})
    if kind == "stream":
        return kind, lambda: stream(port, question)
    if kind == "models":
        return kind, lambda: get(port, "/v1/models")
    return kind, lambda: post(port, "/extras/tokenize", {"input": question, "model": "majora"})


def stream(port: int, question: str) -> tuple[int, dict]:
    import urllib.request

    body = json.dumps({"messages": [{"role": "user", "content": question}], "max_tokens": 4,
                       "stream": True}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", body,
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        events = [line for line in response.read().decode().splitlines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]", events
    return response.status, json.loads(events[0][6:])


def announced_too_big(port: int) -> tuple[int, dict]:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                     b"application/json\r\nContent-Length: 150000000\r\n\r\n" + b"x" * 50_000)
        raw = b""
        while b"\r\n\r\n" not in raw or len(raw.partition(b"\r\n\r\n")[2]) < 100:
            chunk = sock.recv(65536)
            if not chunk:
                break
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def bad(rng: random.Random, port: int, limit: int, every: bool = False):
    """One bad request (name, expected status, call), or with `every` all of them."""
    chat = "/v1/chat/completions"
    cases = [
        ("truncated", 400, lambda: post_raw(port, chat, b'{"messages": [{"role": "us')),
        ("not-utf8", 400, lambda: post_raw(port, chat, b'{"messages": "\xc3\x28"}')),
        ("not-object", 400, lambda: post_raw(port, chat, b'"hello"')),
        ("wrong-type", 400, lambda: post(port, chat, {"messages": 7})),
        ("other-model", 404, lambda: post(port, chat, {"model": "gpt-4", "messages": []})),
        ("grammar", 400, lambda: post(port, "/v1/completions",
                                      {"prompt": "x", "grammar": "root ::= ((("})),
        ("token-id", 400, lambda: post(port, "/extras/detokenize", {"tokens": [-7, 10 ** 8]})),
        ("empty-prompt", 400, lambda: post(port, "/v1/completions", {"prompt": ""})),
        ("surrogate", 400, lambda: post_raw(port, chat, b'{"messages": [{"role": "user", '
                                                         b'"content": "\\udc00"}]}')),
        ("too-long", 400, lambda: post(port, "/v1/completions", {"prompt": "Hello " * 400})),
        ("near-the-limit", 400, lambda: post(port, "/v1/completions",
                                             {"prompt": "ab " * ((limit - 100) // 3)})),
        ("too-big", 413, lambda: post_raw(port, "/v1/completions",
                                          b'{"prompt": "' + b"a" * (limit + 1) + b'"}')),
        ("announced-too-big", 413, lambda: announced_too_big(port)),
    ]
    return cases if every else rng.choice(cases)


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_gguf):
    root = tmp_path_factory.mktemp("soak")
    manifest = write_manifest(root, {"majora": {"port": free_port(), "quantize": ["Q8_0"]}})
    gguf = place_served(manifest, "majora", tiny_gguf)
    layout = Layout.of(manifest)
    files = layout.deploy("majora")
    port = manifest.specialists["majora"].port
    record = server.start("majora", gguf, host="127.0.0.1", port=port, n_ctx=N_CTX,
                          pid_file=files.pid, log_file=files.server_log)
    yield layout, port, record["pid"]
    server.stop(layout, manifest)


def test_soak_mixed_good_and_bad_requests(served):
    layout, port, pid = served
    rng = random.Random(7)
    limit = serve.max_body_bytes(N_CTX)
    # Warm up: every kind of request once, then a few at once (caches, the allocator's arenas,
    # the largest bodies): what the soak then adds is what the server keeps.
    for kind, call in {kind: call for kind, call in (good(rng, port) for _ in range(60))}.items():
        assert call()[0] == 200, kind
    cases = bad(rng, port, limit, every=True)
    for name, expected, call in cases:
        assert call()[0] == expected, name
    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(lambda case: case[2](), cases * 2))
    before = rss_kib(pid)

    plan = [("good", *good(rng, port)) if rng.random() < 0.5 else ("bad", *bad(rng, port, limit))
            for _ in range(REQUESTS)]
    started = time.monotonic()

    def run(item):
        try:
            status, body = item[-1]()
        except Exception as err:  # a dropped connection, a timeout: a failure either way
            return item, None, repr(err)
        return item, status, body

    with ThreadPoolExecutor(CLIENTS) as pool:
        results = list(pool.map(run, plan))
    took = time.monotonic() - started

    failures = []
    for item, status, body in results:
        if item[0] == "good":
            kind = item[1]
            ok = status == 200 and isinstance(body, dict) and (
                body.get("model") == "majora" if kind in ("chat", "completion", "stream")
                else kind != "models" or [m["id"] for m in body["data"]] == ["majora"])
        else:
            _, name, expected, _ = item
            ok = status == expected and isinstance(body, dict) and set(body) == {"error"} \
                and {"message", "type", "param", "code"} == set(body["error"])
            name = f"{name} (expected {expected})"
        if not ok:
            failures.append((item[0], item[1], status, str(body)[:200]))
    assert not failures, failures[:10]
    # About 15 s on two idle cores; the bound leaves room for a machine shared with others.
    assert took < 240, f"{REQUESTS} requests took {took:.0f} s"
    counts = {side: sum(1 for item, _, _ in results if item[0] == side) for side in ("good", "bad")}
    assert min(counts.values()) > REQUESTS // 4

    assert server.healthy("127.0.0.1", port, "majora")
    time.sleep(0.5)
    after = rss_kib(pid)
    assert after - before < RSS_SLACK_KIB, (before, after)
    log = layout.deploy("majora").server_log.read_text()
    assert "Traceback" not in log and " 500 " not in log
    print(f"\nsoak: {REQUESTS} requests ({counts}) from {CLIENTS} clients in {took:.1f} s; "
          f"server RSS {before / 1024:.0f} MiB before, {after / 1024:.0f} MiB after")
