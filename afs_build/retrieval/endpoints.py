"""The served side of retrieval: ``/v1/embeddings``, ``/v1/search`` and retrieving chat.

:class:`RetrievalApp` sits in front of a specialist's server (``python -m afs_build.serve
--retrieval FILE``), where FILE is the JSON that ``deploy`` writes: the manifest and the
specialist. It answers

- ``POST /v1/embeddings`` (OpenAI's shape) with the index's embedding model; ``model`` may be
  the specialist's name or the embedding model's;
- ``POST /v1/search`` ``{"query": ..., "top_k": 5, "mode": "hybrid"}`` with the ranked chunks,
  their provenance (source, file, lines, symbol) and scores (fused, and rank and score in the
  lexical and dense rankings);
- ``POST /v1/chat/completions``: the last user turn is searched and the top chunks are put in
  front of it (:mod:`.context`); the reply carries ``retrieval`` (what was retrieved), and with
  ``cite`` a ``Sources:`` line (a streamed reply: what was retrieved in an ``X-AFS-Retrieval``
  header, the line as a last content chunk). ``"retrieval": false`` in the request turns retrieval off for
  it (the benchmark asks both ways), ``{"top_k": n}`` changes how many chunks it gets.

A missing or stale index is a 503 ``index_missing`` or 409 ``index_stale`` error whose message
names the task that rebuilds it. Everything else goes to the wrapped app unchanged.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import threading
from pathlib import Path
from typing import Optional

from ..deploy.guard import replay
from .search import MODES, RetrievalError

CHAT = "/v1/chat/completions"
EMBEDDINGS = "/v1/embeddings"
SEARCH = "/v1/search"
MAX_BODY = 4 << 20
MAX_INPUTS = 2048


class _Bad(Exception):
    def __init__(self, status: int, message: str, code: Optional[str] = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.body = status, {"error": {"message": message, "type": kind, "param": None,
                                                    "code": code}}


class RetrievalApp:
    """ASGI wrapper adding retrieval to `app` (see the module docstring)."""

    def __init__(self, app, *, alias: str, manifest, specialist: str, api_key: Optional[str] = None,
                 max_body: int = MAX_BODY, retriever=None):
        self.app, self.alias, self.manifest = app, alias, manifest
        self.settings = manifest.specialists[specialist].retrieval
        self.index_name = self.settings.index
        self.api_key = api_key.encode() if api_key else None
        self.max_body = max_body
        self._retriever = retriever
        self._lock = threading.Lock()

    def warm(self) -> None:
        """Open the index and load the embedding model now (in a thread: startup stays quick)."""
        def run():
            try:
                self.retriever().embedder  # noqa: B018 (loads it)
            except Exception:  # reported to the first request that needs it
                pass

        threading.Thread(target=run, name="afs-retrieval-warm", daemon=True).start()

    def retriever(self):
        with self._lock:
            if self._retriever is None:
                from .search import Retriever

                self._retriever = Retriever(self.manifest, self.index_name)
            return self._retriever

    async def __call__(self, scope, receive, send):
        path = (scope.get("path") or "").rstrip("/")
        if scope["type"] != "http" or scope["method"] != "POST" or path not in (CHAT, EMBEDDINGS, SEARCH):
            return await self.app(scope, receive, send)
        try:
            if self.api_key is not None and not self._authorized(scope):
                raise _Bad(401, "missing or wrong API key; send it as 'Authorization: Bearer <key>'",
                           "invalid_api_key")
            body = await _read(scope, receive, self.max_body)
            if body is None:
                return
            data = _object(body)
            if path == CHAT:
                return await self._chat(scope, data, receive, send)
            result = await asyncio.to_thread(self._embeddings if path == EMBEDDINGS else self._search, data)
            return await _json(send, 200, result)
        except _Bad as bad:
            return await _json(send, bad.status, bad.body)
        except RetrievalError as err:
            status = 409 if err.code == "index_stale" else 503
            return await _json(send, status, _Bad(status, str(err), err.code, "server_error").body)

    def _authorized(self, scope) -> bool:
        for name, value in scope.get("headers", []):
            if name == b"authorization" and value.startswith(b"Bearer "):
                return hmac.compare_digest(value[7:], self.api_key)
        return False

    def _model_ok(self, data: dict, also: tuple = ()) -> None:
        model = data.get("model")
        if model is not None and model not in (self.alias, *also):
            raise _Bad(404, f"model '{model}' is not served here; this server serves '{self.alias}'",
                       "model_not_found")

    # --- endpoints -----------------------------------------------------------------------

    def _embeddings(self, data: dict) -> dict:
        retriever = self.retriever()
        name = retriever.report["model"]["name"]
        self._model_ok(data, (name,))
        given = data.get("input")
        texts = [given] if isinstance(given, str) else given
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise _Bad(400, "expected 'input': a string or a non-empty list of strings")
        if len(texts) > MAX_INPUTS:
            raise _Bad(400, f"expected at most {MAX_INPUTS} inputs, got {len(texts)}")
        vectors = retriever.embed_queries(texts)
        tokens = sum(len(t.split()) for t in texts)
        return {"object": "list", "model": name,
                "data": [{"object": "embedding", "index": i, "embedding": [round(float(x), 7) for x in v]}
                         for i, v in enumerate(vectors)],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    def _search(self, data: dict) -> dict:
        self._model_ok(data)
        query, top_k, mode = data.get("query"), data.get("top_k", 5), data.get("mode")
        if not isinstance(query, str) or not query.strip():
            raise _Bad(400, "expected 'query': a non-empty string")
        if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= 100:
            raise _Bad(400, "expected 'top_k': an integer from 1 to 100")
        if mode is not None and mode not in MODES:
            raise _Bad(400, f"expected 'mode': one of {', '.join(MODES)}")
        retriever = self.retriever()
        hits = retriever.search(query, top_k, mode)
        return {"object": "list", "index": self.index_name, "mode": mode or retriever.index.search.mode,
                "data": [h.to_json() for h in hits]}

    async def _chat(self, scope, data: dict, receive, send):
        from .context import sources_line

        wanted = data.pop("retrieval", True)
        top_k = self.settings.top_k
        if isinstance(wanted, dict):
            top_k = wanted.get("top_k", top_k)
            wanted = wanted.get("enabled", True)
        if not isinstance(wanted, bool) or not isinstance(top_k, int) or isinstance(top_k, bool) \
                or not 1 <= top_k <= 20:
            raise _Bad(400, "expected 'retrieval': true, false or {\"enabled\": bool, \"top_k\": 1-20}")
        messages = data.get("messages")
        hits = []
        if wanted and isinstance(messages, list):
            data["messages"], hits = await asyncio.to_thread(self.retriever().serve, messages, self.settings, top_k)
        body = json.dumps(data, ensure_ascii=False).encode("utf-8")
        if not hits:
            return await self.app(scope, replay(body, receive), send)
        retrieval = {"index": self.index_name, "chunks": [
            {k: v for k, v in h.to_json().items() if k != "text"} for h in hits]}
        if data.get("stream"):  # a stream has no place for it: a header says what was retrieved
            cited = sources_line([h.chunk for h in hits]) if self.settings.cite else None
            return await self.app(scope, replay(body, receive), _streamed(send, retrieval, cited))
        status, headers, raw = await _capture(self.app, scope, body, receive)
        try:
            reply = json.loads(raw)
        except ValueError:
            reply = None
        if status != 200 or not isinstance(reply, dict):
            return await _send(send, status, headers, raw)
        reply["retrieval"] = retrieval
        if self.settings.cite:
            for choice in reply.get("choices", []):
                message = choice.get("message") or {}
                if isinstance(message.get("content"), str):
                    message["content"] = message["content"].rstrip() + "\n\n" + sources_line([h.chunk for h in hits])
        return await _json(send, 200, reply)


# --- ASGI plumbing ---------------------------------------------------------------------------


async def _read(scope, receive, limit: int) -> Optional[bytes]:
    for name, value in scope.get("headers", []):
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise _Bad(413, f"request body over {limit} bytes")
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        part = message.get("body", b"")
        size += len(part)
        if size > limit:
            raise _Bad(413, f"request body over {limit} bytes")
        chunks.append(part)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _object(body: bytes) -> dict:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise _Bad(400, "expected a JSON object as the request body") from None
    if not isinstance(data, dict):
        raise _Bad(400, "expected a JSON object as the request body")
    return data


RETRIEVAL_HEADER = b"x-afs-retrieval"  # read by afs_build.evaluation.client


def _streamed(send, retrieval: dict, cited: Optional[str]):
    """A send for a streamed reply: what was retrieved (file and lines of each chunk) as a
    header, and with `cited` one more content chunk, the ``Sources:`` line, before ``[DONE]``."""
    value = json.dumps({"index": retrieval["index"], "chunks": [
        {k: c[k] for k in ("file", "start_line", "end_line") if k in c} for c in retrieval["chunks"]]})
    event = b"data: " + json.dumps({"object": "chat.completion.chunk", "choices": [
        {"index": 0, "delta": {"content": "\n\n" + (cited or "")}, "finish_reason": None}]}).encode() + b"\r\n\r\n"
    pending = cited is not None

    async def sending(message):
        nonlocal pending
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), (RETRIEVAL_HEADER, value.encode())]}
        elif message["type"] == "http.response.body" and pending:
            part = message.get("body", b"")
            at = part.find(b"data: [DONE]")
            if at >= 0 or not message.get("more_body", False):
                at = len(part) if at < 0 else at
                message, pending = {**message, "body": part[:at] + event + part[at:]}, False
        await send(message)

    return sending


async def _capture(app, scope, body: bytes, receive) -> tuple[int, list, bytes]:
    """Run `app` on `body` and collect its whole response."""
    status, headers, parts = 500, [], []

    async def send(message):
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status, headers = message["status"], list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            parts.append(message.get("body", b""))

    await app(scope, replay(body, receive), send)
    return status, headers, b"".join(parts)


async def _send(send, status: int, headers: list, raw: bytes) -> None:
    headers = [(k, v) for k, v in headers if k.lower() != b"content-length"]
    await send({"type": "http.response.start", "status": status,
                "headers": headers + [(b"content-length", str(len(raw)).encode())]})
    await send({"type": "http.response.body", "body": raw})


async def _json(send, status: int, body: dict) -> None:
    await _send(send, status, [(b"content-type", b"application/json")],
                json.dumps(body, ensure_ascii=False).encode("utf-8"))


def wrap(app, config_file: Path, alias: str, api_key: Optional[str] = None, max_body: int = MAX_BODY):
    """`app` with retrieval, as the deploy stage configured it in `config_file`."""
    from ..manifest import load

    config = json.loads(Path(config_file).read_text(encoding="utf-8"))
    manifest = load(config["manifest"])
    wrapped = RetrievalApp(app, alias=alias, manifest=manifest, specialist=config["specialist"],
                           api_key=api_key, max_body=max_body)
    wrapped.warm()
    return wrapped
