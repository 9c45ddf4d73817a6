"""The runner against a real served tiny model: streaming, timing, the cache, failures, retries,
concurrency per endpoint."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
import time

import pytest

from afs_build.evaluation import benchmark
from afs_build.evaluation.cache import ResponseCache
from afs_build.evaluation.client import Endpoint, stream_chat
from afs_build.evaluation.runner import Request, ask_all, sampling
from deploy.deploy_helpers import free_port, shared_tiny_gguf
from served import serving


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    return shared_tiny_gguf(tmp_path_factory)


@pytest.fixture(scope="module")
def server(tiny_gguf, tmp_path_factory):
    with serving(tiny_gguf, tmp_path_factory.mktemp("served"), key="k" * 20) as port:
        yield port


def questions(n: int) -> list[dict]:
    return [{"id": f"q{i}", "category": "general" if i % 2 else "snes", "question": f"What is {i} plus 30?",
             "system": None, "answer": str(i + 30), "value": i + 30, "grading": "numeric", "max_tokens": 12}
            for i in range(n)]


def test_streamed_replies_are_timed_graded_and_summed_up(server):
    endpoint = Endpoint("tiny", f"http://127.0.0.1:{server}/v1", key="k" * 20, digest="file-1")
    results = benchmark.run(endpoint, questions(6), system_prompt="You answer briefly.", run_id="r1")
    assert [r["question_id"] for r in results] == [f"q{i}" for i in range(6)]
    for r in results:
        assert r["error"] is None and r["attempts"] == 1 and not r["cached"]
        assert 0 < r["ttft_s"] <= r["latency_s"] and r["completion_tokens"] == 12  # max_tokens, streamed
        assert r["score"] in (0.0, 1.0) and r["grader"] == "numeric" and r["model_digest"] == "file-1"
    summary = benchmark.summarize("tiny", results)
    assert summary["questions"] == summary["scored"] == 6 and summary["failed_requests"] == 0
    assert summary["latency_s"]["p50"] <= summary["latency_s"]["p95"]
    assert summary["ttft_s"]["p50"] <= summary["latency_s"]["p50"]
    assert summary["tokens_per_second"] > 0 and summary["decode_tokens_per_second"] > 0
    assert set(summary["by_category"]) == {"general", "snes"}


def test_the_cache_answers_the_same_file_and_asks_again_for_another(server, tmp_path):
    cache = ResponseCache(tmp_path / "cache")
    url = f"http://127.0.0.1:{server}/v1"
    first = Endpoint("tiny", url, key="k" * 20, digest="file-1")
    asked = benchmark.run(first, questions(3), system_prompt="", run_id="r1", cache=cache)
    again = benchmark.run(first, questions(3), system_prompt="", run_id="r2", cache=cache)
    assert cache.hits == 3 and all(r["cached"] and r["attempts"] == 0 for r in again)
    assert [r["reply"] for r in again] == [r["reply"] for r in asked]
    # another served file (another digest), or another sampling: asked again
    changed = benchmark.run(Endpoint("tiny", url, key="k" * 20, digest="file-2"), questions(3),
                            system_prompt="", run_id="r3", cache=cache)
    assert not any(r["cached"] for r in changed)
    longer = [{**q, "max_tokens": 13} for q in questions(3)]
    assert not any(r["cached"] for r in benchmark.run(first, longer, system_prompt="", run_id="r4", cache=cache))
    # no digest (a model not known by content): never cached
    unknown = Endpoint("tiny", url, key="k" * 20)
    benchmark.run(unknown, questions(2), system_prompt="", run_id="r5", cache=cache)
    assert not any(r["cached"] for r in benchmark.run(unknown, questions(2), system_prompt="", run_id="r6", cache=cache))


def test_failed_requests_are_recorded_with_their_reason_and_not_scored(server, tmp_path):
    cache = ResponseCache(tmp_path / "cache")
    refused = Endpoint("tiny", f"http://127.0.0.1:{free_port()}/v1", digest="x", retries=1)
    started = time.perf_counter()
    results = benchmark.run(refused, questions(2), system_prompt="", run_id="r", cache=cache)
    assert time.perf_counter() - started >= 0.5  # one backoff pause per request
    for r in results:
        assert r["score"] is None and r["passed"] is None and r["attempts"] == 2
        assert r["error"].startswith("cannot reach 127.0.0.1") and r["error"].endswith("(after 2 tries)")
    summary = benchmark.summarize("tiny", results)
    assert summary["failed_requests"] == 2 and summary["scored"] == 0 and summary["mean_score"] is None
    unauthorized = Endpoint("tiny", f"http://127.0.0.1:{server}/v1", key="wrong-key-wrong-key", retries=3)
    answer = stream_chat(unauthorized, [{"role": "user", "content": "hi"}], sampling(4))
    assert answer.error.startswith("HTTP 401") and answer.attempts == 1  # not worth retrying
    wrong_model = Endpoint("nobody", f"http://127.0.0.1:{server}/v1", key="k" * 20)
    assert stream_chat(wrong_model, [{"role": "user", "content": "hi"}], sampling(4)).error.startswith("HTTP 404")
    assert not list((tmp_path / "cache").rglob("*.json"))  # failures are never cached


class Flaky(http.server.BaseHTTPRequestHandler):
    """A loopback stand-in for an overloaded hosted API: 503 twice, then a streamed reply; it
    counts how many requests are in flight at once."""

    calls = 0
    in_flight = 0
    most = 0
    lock = threading.Lock()
    fail_first = 2
    bodies: list = []

    def do_POST(self):  # noqa: N802
        cls = type(self)
        sent = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with cls.lock:
            cls.bodies.append(sent)
            cls.calls += 1
            call = cls.calls
            cls.in_flight += 1
            cls.most = max(cls.most, cls.in_flight)
        # a request is in flight until its reply starts: the client may send its next one as
        # soon as it has read this one's body, before this handler thread returns
        if call <= cls.fail_first:
            self.finish_in_flight()
            self.send_response(503)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")
            return
        time.sleep(0.2)
        events = [{"choices": [{"delta": {"content": w}}]} for w in ("4", "2")]
        events.append({"choices": [{"delta": {}, "finish_reason": "stop"}],
                       "usage": {"completion_tokens": 2}})
        body = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
        self.finish_in_flight()
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def finish_in_flight(self):
        cls = type(self)
        with cls.lock:
            cls.in_flight -= 1

    def log_message(self, *args):
        pass


@pytest.fixture
def flaky():
    Flaky.calls = Flaky.in_flight = Flaky.most = 0
    Flaky.bodies = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_retries_back_off_and_concurrency_is_bounded_per_endpoint(flaky):
    endpoint = Endpoint("hosted", flaky, concurrency=3, retries=3)
    answer = stream_chat(endpoint, [{"role": "user", "content": "12 plus 30?"}], sampling(8))
    assert answer.ok and answer.reply == "42" and answer.attempts == 3 and answer.completion_tokens == 2
    requests = [Request(endpoint, ({"role": "user", "content": f"q{i}"},), sampling(8)) for i in range(9)]
    started = time.perf_counter()
    answers = ask_all(requests)
    elapsed = time.perf_counter() - started
    assert all(a.ok and a.reply == "42" for a in answers)
    assert Flaky.most == 3  # never more than the endpoint's concurrency in flight
    assert elapsed < 9 * 0.2 * 0.75  # and they did overlap


def test_extra_body_fields_are_sent_and_cached_apart(flaky, tmp_path):
    """``{"retrieval": False}`` reaches the server, and a reply asked without retrieval is never
    served from the cache for the same question asked with it (nor the other way round)."""
    Flaky.fail_first = 0
    try:
        cache = ResponseCache(tmp_path / "cache")
        endpoint = Endpoint("hosted", flaky, digest="file-1")
        messages = ({"role": "user", "content": "12 plus 30?"},)
        plain = Request(endpoint, messages, sampling(8))
        off = Request(endpoint, messages, sampling(8), {"retrieval": False})
        first = ask_all([plain, off], cache)
        assert [a.cached for a in first] == [False, False] and Flaky.calls == 2
        assert "retrieval" not in Flaky.bodies[0] and Flaky.bodies[1]["retrieval"] is False
        assert Flaky.bodies[1]["stream"] is True and Flaky.bodies[1]["max_tokens"] == 8
        again = ask_all([off, plain], cache)
        assert [a.cached for a in again] == [True, True] and Flaky.calls == 2
        assert len(list((tmp_path / "cache").rglob("*.json"))) == 2
    finally:
        Flaky.fail_first = 2


def test_a_retrieving_servers_replies_are_cached_by_its_index_and_settings(tmp_path):
    """The cache key of a retrieving specialist follows the index's content and its retrieval
    settings, while the results still name the served file's digest."""
    from afs_build.manifest import SpecialistRetrieval

    report = tmp_path / "index.json"

    def write(digest, mtime):
        report.write_text(json.dumps({"model": {"name": "m"}, "settings": "s1", "built": str(mtime), "seconds": mtime,
                                      "inputs": {"/a.py": [10, mtime, digest]}}))

    settings = SpecialistRetrieval(index="code", top_k=3, context_chars=300, train_context=False, min_similarity=0.3, cite=False)
    plain = Endpoint("hylia", "http://127.0.0.1:1/v1", digest="file-1")
    write("d1", 1)
    first = benchmark.with_retrieval(plain, report, settings)
    assert first.digest == "file-1" and first.cache_digest.startswith("file-1+retrieval:")
    write("d1", 2)  # rebuilt, same content: the same key
    assert benchmark.with_retrieval(plain, report, settings).cache_digest == first.cache_digest
    write("d2", 2)  # a file indexed changed: another key
    assert benchmark.with_retrieval(plain, report, settings).cache_digest != first.cache_digest
    write("d1", 3)
    more = SpecialistRetrieval(index="code", top_k=5, context_chars=300, train_context=False, min_similarity=0.3, cite=False)
    assert benchmark.with_retrieval(plain, report, more).cache_digest != first.cache_digest
    report.unlink()
    assert benchmark.with_retrieval(plain, report, settings).cache_digest != \
        benchmark.with_retrieval(plain, report, settings).cache_digest  # unknown index: never a hit


def _flaky_copy(name: str):
    """A Flaky server class of its own (own counters), answering at once."""
    return type(name, (Flaky,), {"calls": 0, "in_flight": 0, "most": 0, "fail_first": 0, "bodies": [],
                                 "lock": threading.Lock()})


def test_an_endpoint_with_mirrors_spreads_its_requests_over_every_copy():
    """Copies of a server (eval.copies) each take `concurrency` requests at a time, and the
    requests go to whichever is free: both answer, neither holds two at once, they overlap."""
    handlers = [_flaky_copy("First"), _flaky_copy("Second")]
    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), h) for h in handlers]
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    try:
        urls = [f"http://127.0.0.1:{s.server_address[1]}/v1" for s in servers]
        endpoint = Endpoint("served", urls[0], mirrors=(urls[1],))
        requests = [Request(endpoint, ({"role": "user", "content": f"q{i}"},), sampling(8)) for i in range(8)]
        started = time.perf_counter()
        answers = ask_all(requests)
        elapsed = time.perf_counter() - started
        assert all(a.ok and a.reply == "42" for a in answers)
        assert [h.calls for h in handlers] != [8, 0] and sum(h.calls for h in handlers) == 8
        assert min(h.calls for h in handlers) >= 2
        assert [h.most for h in handlers] == [1, 1]
        assert elapsed < 8 * 0.2 * 0.75
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()


def test_copies_of_a_served_model_answer_as_it_does_and_stop_with_the_block(server, tiny_gguf, tmp_path):
    """benchmark.mirrored starts eval.copies - 1 real copies of a server's file: the same greedy
    replies from each, and no copy left running once the block ends."""
    import types

    from afs_build.deploy.server import running

    manifest = types.SimpleNamespace(eval=types.SimpleNamespace(model_copies=3))
    original = Endpoint("tiny", f"http://127.0.0.1:{server}/v1", key="k" * 20)
    with benchmark.mirrored(manifest, original, tiny_gguf, n_ctx=512, folder=tmp_path) as mirrored:
        assert len(mirrored.mirrors) == 2 and original.base_url not in mirrored.mirrors
        pid_files = sorted(tmp_path.glob("copy-*.pid"))
        assert len(pid_files) == 2 and all(running(p) for p in pid_files)
        replies = set()
        for url in (original.base_url, *mirrored.mirrors):
            answer = stream_chat(Endpoint("tiny", url, key="k" * 20),
                                 [{"role": "user", "content": "What is 2 plus 30?"}], sampling(12))
            assert answer.ok, answer.error
            replies.add(answer.reply)
        assert len(replies) == 1
    assert not list(tmp_path.glob("copy-*.pid"))
    assert [running(p) for p in pid_files] == [[], []]


def test_files_asked_from_several_threads_leave_the_process_able_to_print(tiny_gguf):
    """llama-cpp-python points fds 1 and 2 at /dev/null while it loads a model: loads in two
    threads at once once left the whole build printing nowhere (compare's quantized files)."""
    script = ("import sys\nfrom concurrent.futures import ThreadPoolExecutor\n"
              "from afs_build.evaluation.local import answer_all\n"
              "qs = [{'id': 'q', 'question': 'What is 1 plus 30?', 'max_tokens': 4}]\n"
              "for _ in range(3):\n"
              "    with ThreadPoolExecutor(3) as pool:\n"
              "        asked = list(pool.map(lambda _: answer_all(sys.argv[1], qs, '', n_ctx=256), range(3)))\n"
              "    assert len({a['q']['reply'] for a in asked}) == 1\n"
              "print('still printing'); print('and on stderr', file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", script, str(tiny_gguf)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "still printing" and "and on stderr" in done.stderr


def test_a_file_asked_in_this_process_answers_as_its_server_does(server, tiny_gguf):
    """compare:<name> asks each quantized file in this process and says "as served": the server
    fills in the sampling a request leaves out (a repeat penalty of 1.1) and so must this."""
    from afs_build.evaluation.local import answer_all, messages_for, served_sampling
    from afs_build.llamacpp import load

    endpoint = Endpoint("tiny", f"http://127.0.0.1:{server}/v1", key="k" * 20)
    asked = [{"id": f"q{i}", "question": text, "max_tokens": 48}
             for i, text in enumerate(("Say it again and again: la la la", "Count from one to twenty."))]
    served = {q["id"]: stream_chat(endpoint, messages_for(q, "Be brief."), sampling(48)) for q in asked}
    assert all(a.ok and a.completion_tokens for a in served.values())
    local = answer_all(tiny_gguf, asked, "Be brief.", n_ctx=256)
    assert {k: a["reply"] for k, a in local.items()} == {k: a.reply for k, a in served.items()}
    assert served_sampling(sampling(48))["repeat_penalty"] == 1.1
    # and the setting matters: without the penalty this process answers otherwise
    llm = load().Llama(model_path=str(tiny_gguf), n_ctx=256, verbose=False, seed=0)
    try:
        bare = {q["id"]: llm.create_chat_completion(messages_for(q, "Be brief."), temperature=0.0, seed=0,
                                                    max_tokens=48)["choices"][0]["message"]["content"]
                for q in asked}
    finally:
        llm.close()
    assert bare != {k: a.reply for k, a in served.items()}
