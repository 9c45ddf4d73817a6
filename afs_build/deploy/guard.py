"""An ASGI guard in front of llama-cpp-python's server: one model, good requests only.

llama-cpp-python answers a request naming an unknown model with its default model while
echoing the unknown name back, a request without a model under the GGUF's file path, and
input it cannot parse with a 500 whose message holds a traceback. It also reads a body of
any size and tokenizes it (a 150 MB body took a server to 9.7 GB). :class:`Guard` answers
those itself, OpenAI-style, before the server sees them:

- 401 ``invalid_api_key`` without the API key (when the server has one), on every request;
- 413 for a body over the limit, kept no further than the limit: one far over it is refused
  from its ``Content-Length`` before it is read (or as soon as that much has come), one a
  little over it is read to its end and dropped, so that its client gets the answer;
- 400 or 404 for a body :class:`~.request_checks.RequestChecker` refuses (checked in a worker
  thread, one at a time, so that a long prompt does not hold up health checks);
- ``/v1/models`` lists the alias alone (answered here, so a health check does not wait
  behind a long generation);
- a 5xx from the server reaches the client as a plain ``server_error`` (the details stay in
  server.log).
"""

from __future__ import annotations

import hmac
import json
import traceback
from typing import Optional

from .request_checks import REQUEST_TYPES, BadRequest, RequestChecker, error, not_served

MODELS_PATHS = ("/v1/models", "/models")
DISCARD_FACTOR = 4  # a body up to this many times the limit is read (and dropped) for its 413


class Guard:
    """ASGI wrapper: only `alias` is served, only to holders of `api_key` (when set), and only
    bodies of at most `max_body` bytes that parse; see the module docstring."""

    def __init__(self, app, alias: str, *, max_body: int, checker: RequestChecker,
                 api_key: Optional[str] = None):
        self.app, self.alias, self.max_body, self.checker = app, alias, max_body, checker
        self.api_key = api_key.encode() if api_key else None
        self._limiter = None  # one check at a time (made in the event loop, on first use)
        self.model = {"id": alias, "object": "model", "owned_by": "afs", "permissions": []}

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await self.app(scope, receive, send)
        if scope["type"] != "http":  # no websocket endpoints here
            return await send({"type": "websocket.close", "code": 1008})
        try:
            return await self._http(scope, receive, send)
        except BadRequest as bad:
            return await _json(send, bad.status, bad.body, close=bad.close)

    async def _http(self, scope, receive, send):
        if self.api_key is not None and not self._authorized(scope):
            raise BadRequest(401, error("missing or wrong API key; send it as 'Authorization: "
                                        "Bearer <key>' (the client's api_key)",
                                        code="invalid_api_key"), close=True)
        path = scope["path"].rstrip("/") or "/"
        method = scope["method"]
        if method == "GET" and path in MODELS_PATHS:
            return await _json(send, 200, {"object": "list", "data": [self.model]})
        if method == "GET" and path.startswith(tuple(p + "/" for p in MODELS_PATHS)):
            name = path.split("/", 3)[-1] if path.startswith("/v1/") else path.split("/", 2)[-1]
            if name == self.alias:
                return await _json(send, 200, self.model)
            raise BadRequest(404, not_served(name, self.alias))
        if method != "POST":
            return await self.app(scope, receive, _scrubbed(send))
        if path not in REQUEST_TYPES:
            raise BadRequest(404, error(f"no endpoint {path} here; this server answers "
                                        f"{', '.join(sorted(REQUEST_TYPES))} and GET /v1/models",
                                        code="unknown_url"))
        body = await self._read(scope, receive)
        if body is None:  # the client went away
            return
        import anyio
        import anyio.to_thread

        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(1)

        # In a worker thread: tokenizing a large prompt must not hold up the event loop (and
        # with it every health check) while it runs.
        data = await anyio.to_thread.run_sync(self._checked, path, body, limiter=self._limiter)
        raw = json.dumps(data, ensure_ascii=False).encode("utf-8")
        headers = [(k, v) for k, v in scope["headers"] if k != b"content-length"]
        scope = {**scope, "headers": headers + [(b"content-length", str(len(raw)).encode())]}
        return await self.app(scope, replay(raw, receive), _scrubbed(send))

    def _authorized(self, scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(),
                                                                           self.api_key)
        return False

    def _too_big(self, close: bool) -> BadRequest:
        return BadRequest(413, error(f"the request body is larger than this server takes "
                                     f"({self.max_body:,} bytes)", code="request_too_large"),
                          close=close)

    async def _read(self, scope, receive) -> Optional[bytes]:
        """The body, kept no further than the limit; None when the client disconnects.

        A body somewhat over the limit is read to its end and dropped, so that a client still
        sending it gets its 413 rather than a broken pipe; a body far over it (announced, or
        once that much has come) is not read at all: the connection closes.
        """
        discard = DISCARD_FACTOR * self.max_body
        declared = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.strip().isdigit():
                    raise BadRequest(400, error("the Content-Length header is not a number"),
                                     close=True)
                declared = int(value)
        if declared is not None and declared > discard:
            raise self._too_big(close=True)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > discard:
                raise self._too_big(close=True)
            if size <= self.max_body:
                chunks.append(chunk)
            else:
                chunks = []  # over the limit: read on, keep nothing
            if not message.get("more_body", False):
                if size > self.max_body:
                    raise self._too_big(close=False)
                return b"".join(chunks)

    def _checked(self, path: str, body: bytes) -> dict:
        try:
            return self.checker(path, body)
        except BadRequest:
            raise
        except Exception:  # a bug here: the details go to server.log, never to the client
            traceback.print_exc()
            raise BadRequest(500, error("the server could not check this request; its log "
                                        "has the details", kind="server_error")) from None

def replay(body: bytes, receive):
    """A receive that gives `body` once, then the client's own messages (its disconnect)."""
    sent = False

    async def replayed():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def _scrubbed(send):
    """`send` with a 5xx response's body replaced: its details belong in server.log only."""
    failed = False

    async def scrubbed(message):
        nonlocal failed
        if message["type"] == "http.response.start" and message["status"] >= 500:
            failed = True
            return await _json(send, message["status"],
                               error("the server could not answer this request; its log has "
                                     "the details", kind="server_error"))
        if failed:
            return None  # the original body: dropped
        return await send(message)

    return scrubbed


async def _json(send, status: int, body: dict, close: bool = False) -> None:
    raw = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
    await send({"type": "http.response.start", "status": status,
                "headers": headers + ([(b"connection", b"close")] if close else [])})
    await send({"type": "http.response.body", "body": raw})
