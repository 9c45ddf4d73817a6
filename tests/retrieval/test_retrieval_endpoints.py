"""Hylia served: /v1/embeddings, /v1/search and chat that retrieves and cites, on a real tiny
model behind the real server, deployed by the deploy stage's own action; a stale index is a
clear error, a rebuilt one is picked up without a restart; status and stop as for any server.

The tests share one server (started once) and run in file order; the last one stops it.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.request

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import openai  # noqa: E402  (required: fails, not skips, when missing)

from afs_build import cli, log  # noqa: E402
from afs_build.deploy import server  # noqa: E402
from afs_build.paths import Layout  # noqa: E402
from afs_build.retrieval.build import build  # noqa: E402
from afs_build.stages import deploy  # noqa: E402
from retrieval_helpers import write_project  # noqa: E402
from tinymodel import tiny_gguf  # noqa: E402

QUESTION = "Which file defines `minhash_signatures`?"
SUITE = "".join(json.dumps(q) + "\n" for q in [
    {"id": "r1", "category": "retrieval", "specialists": ["hylia"], "question": QUESTION,
     "answer": "dedup.py", "grading": "contains", "max_tokens": 4},
    {"id": "g1", "category": "general", "question": "What is 2 plus 2?", "answer": "4",
     "grading": "contains", "max_tokens": 4}])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_hylia(root, retrieval: dict):
    port = free_port()
    manifest = write_project(root, specialists={"hylia": {
        "role": "Retrieval", "base": "tiny", "mix": "general", "hardware": "cpu", "port": port,
        "quantize": ["F16"], "context_length": 512, "system_prompt": "You are Hylia.",
        "retrieval": retrieval}},
        extra={"deploy": {"lmstudio_dir": str(root / "lmstudio")}, "eval": {"suite": "suite.jsonl"}},
        files={"suite.jsonl": SUITE})
    layout = Layout.of(manifest)
    log.setup(layout.log_file)
    build(manifest, "code", "index:code")
    gguf = layout.post("hylia").gguf("F16")
    gguf.parent.mkdir(parents=True)
    os.link(tiny_gguf(root / "model"), gguf)
    assert deploy.run(manifest, "hylia") is None  # the stage's action: no TaskFailed
    return manifest, layout, port


@pytest.fixture(scope="module")
def hylia(tmp_path_factory):
    manifest, layout, port = serve_hylia(tmp_path_factory.mktemp("hylia"), {
        "index": "code", "top_k": 2, "context_chars": 60, "cite": True, "min_similarity": None})
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=120)
    yield manifest, layout, port, client
    server.stop(layout, manifest)


def test_questions_that_got_no_context_are_not_asked_again_without_retrieval(tmp_path):
    from afs_build.stages import evaluate

    # no chunk of the tiny index is this similar to either question: both are asked once
    manifest, layout, _ = serve_hylia(tmp_path, {"index": "code", "top_k": 2, "min_similarity": 0.9999})
    try:
        assert evaluate.run(manifest, "hylia") is None
    finally:
        server.stop(layout, manifest)
    files = layout.eval("hylia")
    with_rows = [json.loads(line) for line in files.results.read_text().splitlines()]
    without = [json.loads(line) for line in files.without_retrieval.read_text().splitlines()]
    assert not any("retrieved" in r for r in with_rows)
    assert [r["reply"] for r in without] == [r["reply"] for r in with_rows]
    assert all(r["cached"] for r in without)
    events = [json.loads(line) for line in layout.log_file.read_text().splitlines()]
    assert any(e["event"] == "asking again without retrieval: done" and (e.get("data") or {}).get("reused") == 2
               for e in events)


def post(port: int, path: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_deploy_wrote_the_retrieval_settings_and_status_shows_the_server(hylia, capsys):
    manifest, layout, port, _ = hylia
    settings = json.loads(layout.deploy("hylia").retrieval.read_text())
    assert settings == {"manifest": str(manifest.file), "specialist": "hylia", "index": "code"}
    record = server.read_pid_file(layout.deploy("hylia").pid)
    assert json.loads(record["retrieval"]) == settings  # part of what is served: a change restarts
    assert cli.main(["status", "-m", str(manifest.file)]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[:3] == ["hylia", str(port), "healthy"]


def test_embeddings_are_openai_compatible(hylia):
    *_, client = hylia
    result = client.embeddings.create(model="hylia", input=["minhash", "atomic writes"])
    assert [d.index for d in result.data] == [0, 1]
    assert all(len(d.embedding) == 32 for d in result.data)
    assert abs(sum(x * x for x in result.data[0].embedding) - 1.0) < 1e-3
    assert client.embeddings.create(model="tiny-bert", input="x").data[0].embedding
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="gpt-4", input="x")


def test_search_returns_ranked_chunks_with_provenance_and_scores(hylia):
    _, _, port, _ = hylia
    status, body = post(port, "/v1/search", {"query": "minhash_signatures", "top_k": 2, "mode": "lexical"})
    assert status == 200 and body["index"] == "code" and body["mode"] == "lexical"
    first = body["data"][0]
    assert {k: first[k] for k in ("source", "file", "start_line", "end_line", "symbol")} == \
        {"source": "code", "file": "dedup.py", "start_line": 6, "end_line": 8, "symbol": "minhash_signatures"}
    assert first["lexical"]["rank"] == 1 and first["text"].startswith("def minhash_signatures")
    status, body = post(port, "/v1/search", {"query": "minhash"})
    assert status == 200 and body["mode"] == "hybrid" and len(body["data"]) == 5
    assert body["data"][0]["lexical"] is not None and body["data"][0]["dense"] is not None
    assert post(port, "/v1/search", {"query": ""})[0] == 400
    assert post(port, "/v1/search", {"query": "x", "mode": "fuzzy"})[0] == 400
    assert post(port, "/v1/search", {"query": "x", "model": "beta"})[1]["error"]["code"] == "model_not_found"


def test_chat_answers_with_the_retrieved_chunks_and_cites_them(hylia):
    *_, client = hylia
    messages = [{"role": "system", "content": "You are Hylia."}, {"role": "user", "content": QUESTION}]
    reply = client.chat.completions.create(model="hylia", messages=messages, max_tokens=4, temperature=0)
    chunks = reply.model_extra["retrieval"]["chunks"]
    assert reply.model_extra["retrieval"]["index"] == "code" and len(chunks) == 2
    assert chunks[0]["file"] == "dedup.py" and "text" not in chunks[0]
    cited = [f"[{i}] {c['file']}:{c['start_line']}" + (f"-{c['end_line']}" if c["end_line"] != c["start_line"] else "")
             + (f" ({c['symbol']})" if c["symbol"] else "") for i, c in enumerate(chunks, start=1)]
    assert reply.choices[0].message.content.endswith("\n\nSources: " + "; ".join(cited))
    assert cited[0] == "[1] dedup.py:6-8 (minhash_signatures)"
    plain = client.chat.completions.create(model="hylia", messages=messages, max_tokens=4, temperature=0,
                                           extra_body={"retrieval": False})
    assert "retrieval" not in (plain.model_extra or {}) and "Sources:" not in plain.choices[0].message.content
    # The context went into the prompt: the same question costs more prompt tokens with it.
    assert reply.usage.prompt_tokens > plain.usage.prompt_tokens + 20
    one = client.chat.completions.create(model="hylia", messages=messages, max_tokens=1,
                                         extra_body={"retrieval": {"top_k": 1}})
    assert len(one.model_extra["retrieval"]["chunks"]) == 1


def test_eval_asks_with_and_without_retrieval_and_keeps_the_difference(hylia):
    from afs_build.stages import evaluate

    manifest, layout, _, _ = hylia
    assert evaluate.run(manifest, "hylia") is None
    files = layout.eval("hylia")
    with_rows = [json.loads(line) for line in files.results.read_text().splitlines()]
    without = [json.loads(line) for line in files.without_retrieval.read_text().splitlines()]
    assert [r["question_id"] for r in with_rows] == [r["question_id"] for r in without] == ["r1", "g1"]
    assert with_rows[0]["retrieved"][0] == "dedup.py:6-8" and "retrieved" not in without[0]
    # With cite on, the reply names the retrieved file: the contains-grading sees it.
    assert with_rows[0]["score"] == 1.0 and "Sources: [1] dedup.py:6-8" in with_rows[0]["reply"]
    effect = json.loads(files.retrieval_effect.read_text())
    assert effect["index"] == "code" and effect["questions_with_context"] == 2
    assert effect["own_categories"] == ["retrieval"] and effect["by_category"]["retrieval"]["mean_a"] == 1.0
    assert effect["by_category"]["retrieval"]["difference"] == 1.0 - without[0]["score"]
    from jsonschema import Draft202012Validator

    from conftest import REPO

    validator = Draft202012Validator(json.loads((REPO / "specs/result.schema.json").read_text()))
    for row in with_rows + without:
        validator.validate(row)


def test_quantized_files_are_asked_with_the_context_the_server_gives(hylia):
    """compare:<name> asks each quantized file in this process; it must see the prompt the
    server would send on, context included: as many prompt tokens as the server counted."""
    from afs_build.evaluation.local import answer_all
    from afs_build.llamacpp import load
    from afs_build.stages.compare import served_chats

    manifest, layout, _, client = hylia
    asked = [{"role": "system", "content": "You are Hylia."}, {"role": "user", "content": QUESTION}]
    questions = [{"id": "r1", "question": QUESTION, "max_tokens": 4}]
    chats = served_chats(manifest, "hylia", questions)
    user = chats["r1"][-1]["content"]
    assert chats["r1"][0] == asked[0]
    assert user.startswith("Context:\n[1] dedup.py:6-8 minhash_signatures") and user.endswith(QUESTION)
    served = client.chat.completions.create(model="hylia", max_tokens=4, temperature=0, messages=asked)
    gguf = layout.post("hylia").gguf("F16")
    llm = load().Llama(model_path=str(gguf), n_ctx=512, verbose=False)
    try:
        count = [llm.create_chat_completion(m, max_tokens=1, temperature=0)["usage"]["prompt_tokens"]
                 for m in (chats["r1"], asked)]
    finally:
        llm.close()
    assert served.usage.prompt_tokens == count[0] > count[1]
    local = answer_all(gguf, questions, "You are Hylia.", n_ctx=512, chats=chats)
    # the server strips the reply's end before its Sources line
    assert served.choices[0].message.content.split("\n\nSources: ")[0] == local["r1"]["reply"].rstrip()


def test_a_stale_index_is_an_error_naming_its_task_and_a_rebuilt_one_is_picked_up(hylia):
    import time

    manifest, _, port, client = hylia
    source = manifest.root / "code" / "atomic.py"
    source.write_text('"""Atomic writes, changed."""\n')
    time.sleep(2.1)  # the server checks its index at most every 2 s
    status, body = post(port, "/v1/search", {"query": "minhash"})
    assert status == 409 and body["error"]["code"] == "index_stale"
    assert "atomic.py changed since it was built; rebuild it with: doit index:code" in body["error"]["message"]
    with pytest.raises(openai.ConflictError):
        client.chat.completions.create(model="hylia", max_tokens=1, messages=[{"role": "user", "content": QUESTION}])
    plain = client.chat.completions.create(model="hylia", max_tokens=1, extra_body={"retrieval": False},
                                           messages=[{"role": "user", "content": QUESTION}])
    assert plain.choices[0].message.content is not None
    build(manifest, "code", "index:code")
    time.sleep(2.1)
    status, body = post(port, "/v1/search", {"query": "Atomic writes changed", "mode": "lexical", "top_k": 1})
    assert status == 200 and body["data"][0]["text"] == '"""Atomic writes, changed."""'


def test_stop_stops_the_retrieving_server(hylia, capsys):
    manifest, layout, port, _ = hylia
    assert cli.main(["stop", "-m", str(manifest.file), "hylia"]) == 0
    assert capsys.readouterr().out.strip() == "stopped: hylia"
    assert not server.healthy("127.0.0.1", port, "hylia")
