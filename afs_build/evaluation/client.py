"""One streaming chat request to an OpenAI-compatible endpoint, timed, retried, never raising.

Works with afs's own servers (llama-cpp-python behind the guard), LM Studio's server and
hosted APIs: ``POST {base_url}/chat/completions`` with ``"stream": true``, read as server-sent
events. Streaming is what lets the time to the first token be measured; the completion's
tokens are the ``usage`` the server sends (``stream_options.include_usage``), else the
number of content chunks (llama-cpp-python sends one per token).

A request that fails (refused, timed out, an HTTP error, a broken stream) is retried with
exponential backoff where another try can help (connection errors, timeouts, 408, 429, 5xx);
what comes back is a :class:`Completion` whose ``error`` says why, never an exception: a
failed request is recorded as failed, not scored as a wrong answer.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Optional

RETRY_STATUS = (408, 425, 429, 500, 502, 503, 504)
BACKOFF_S = 0.5  # the first pause; doubled each try, at most BACKOFF_MAX_S
BACKOFF_MAX_S = 8.0
# What a retrieving afs server retrieved for a streamed reply (JSON: index and chunks), since a
# stream has no place for it; a plain JSON reply carries it as its "retrieval" field.
RETRIEVAL_HEADER = "X-AFS-Retrieval"


@dataclass(frozen=True)
class Endpoint:
    """A served model: the name it answers to and its OpenAI-compatible base URL.

    `key` is the API key itself (read from the environment by whoever builds this, never from
    a manifest); `digest` identifies the served file (a GGUF's sampled digest), so cached
    replies are reused only for the same model; None means unknown (nothing is cached).
    """

    name: str
    base_url: str  # e.g. http://127.0.0.1:5000/v1
    key: Optional[str] = field(default=None, repr=False)
    digest: Optional[str] = None
    concurrency: int = 1
    timeout: float = 600.0
    retries: int = 2
    model: Optional[str] = None  # the model name sent; default: `name`
    # What the replies depend on besides the served file (a retrieval index's content and
    # settings), for the cache only: the results still name the file's own digest.
    context: Optional[str] = None
    # More base URLs serving the same file with the same settings (copies of the server, for
    # the length of a task): requests are spread over all of them, `concurrency` at each.
    mirrors: tuple[str, ...] = ()

    @property
    def cache_digest(self) -> Optional[str]:
        """The cache's model key: the file's digest, with the context when there is one."""
        if not self.digest:
            return None
        return f"{self.digest}+{self.context}" if self.context else self.digest

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"

    @property
    def sent_model(self) -> str:
        return self.model or self.name


@dataclass
class Completion:
    """A reply and how it came: times in seconds, tokens, tries; `error` when it failed."""

    reply: str = ""
    latency_s: Optional[float] = None
    ttft_s: Optional[float] = None
    completion_tokens: Optional[int] = None
    attempts: int = 0
    error: Optional[str] = None
    cached: bool = False
    finish_reason: Optional[str] = None
    retrieved: Optional[list] = None  # chunk ids ("file:start-end") a retrieving server put in

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict:
        return {"reply": self.reply, "latency_s": self.latency_s, "ttft_s": self.ttft_s,
                "completion_tokens": self.completion_tokens, "finish_reason": self.finish_reason,
                **({"retrieved": self.retrieved} if self.retrieved else {})}


class _Failure(Exception):
    def __init__(self, reason: str, retry: bool):
        super().__init__(reason)
        self.reason, self.retry = reason, retry


_local = threading.local()  # one keep-alive connection per thread and host


def _connection(url: urllib.parse.SplitResult, timeout: float) -> http.client.HTTPConnection:
    key = (url.scheme, url.netloc)
    pool = getattr(_local, "pool", None)
    if pool is None:
        pool = _local.pool = {}
    conn = pool.get(key)
    if conn is None:
        cls = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
        conn = pool[key] = cls(url.netloc, timeout=timeout)
    conn.timeout = timeout
    if conn.sock is not None:
        conn.sock.settimeout(timeout)
    return conn


def _drop(url: urllib.parse.SplitResult) -> None:
    conn = getattr(_local, "pool", {}).pop((url.scheme, url.netloc), None)
    if conn is not None:
        conn.close()


def body(endpoint: Endpoint, messages: list[dict], sampling: dict, extra: Optional[dict] = None) -> dict:
    """The request body: the model, the messages, streaming with usage, the sampling settings
    and `extra` fields (``{"retrieval": False}`` turns an afs server's retrieval off)."""
    return {"model": endpoint.sent_model, "messages": messages, "stream": True,
            "stream_options": {"include_usage": True}, **sampling, **(extra or {})}


def retrieved_ids(retrieval) -> Optional[list]:
    """``file:start-end`` of each chunk in a reply's ``retrieval`` object (None when absent)."""
    chunks = retrieval.get("chunks") if isinstance(retrieval, dict) else None
    if not chunks:
        return None
    return [f"{c['file']}:{c['start_line']}-{c['end_line']}" for c in chunks
            if isinstance(c, dict) and {"file", "start_line", "end_line"} <= c.keys()] or None


def stream_chat(endpoint: Endpoint, messages: list[dict], sampling: dict,
                extra: Optional[dict] = None) -> Completion:
    """Ask once (retrying what may pass on another try); a Completion, failed or not."""
    payload = json.dumps(body(endpoint, messages, sampling, extra)).encode()
    url = urllib.parse.urlsplit(endpoint.url)
    if url.scheme not in ("http", "https") or not url.netloc:
        return Completion(error=f"not an http(s) URL: {endpoint.url}", attempts=0)
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    if endpoint.key:
        headers["Authorization"] = f"Bearer {endpoint.key}"
    attempts, reason = 0, "not asked"
    for attempt in range(endpoint.retries + 1):
        attempts = attempt + 1
        try:
            result = _once(url, payload, headers, endpoint.timeout)
            result.attempts = attempts
            return result
        except _Failure as failure:
            reason = failure.reason
            _drop(url)
            if not failure.retry or attempt == endpoint.retries:
                break
        time.sleep(min(BACKOFF_MAX_S, BACKOFF_S * 2 ** attempt))
    return Completion(error=f"{reason} (after {attempts} tries)" if attempts > 1 else reason,
                      attempts=attempts)


def _once(url: urllib.parse.SplitResult, payload: bytes, headers: dict, timeout: float) -> Completion:
    path = url.path + (f"?{url.query}" if url.query else "")
    started = time.perf_counter()
    conn = _connection(url, timeout)
    try:
        conn.request("POST", path, body=payload, headers=headers)
        response = conn.getresponse()
    except (socket.timeout, TimeoutError):
        raise _Failure(f"no answer within {timeout:g} s", True) from None
    except (OSError, http.client.HTTPException) as err:
        raise _Failure(f"cannot reach {url.netloc}: {err}", True) from None
    if response.status != 200:
        detail = response.read(600).decode("utf-8", "replace").strip()
        raise _Failure(f"HTTP {response.status}: {detail[:300]}", response.status in RETRY_STATUS)
    parts: list[str] = []
    ttft = usage = finish = None
    chunks = 0
    kind = response.getheader("Content-Type", "")
    retrieval = None
    header = response.getheader(RETRIEVAL_HEADER)  # afs's retrieving servers, when streaming
    if header:
        try:
            retrieval = json.loads(header)
        except ValueError:
            retrieval = None
    try:
        if "text/event-stream" not in kind:  # a server that ignores "stream": one JSON body
            data = json.loads(response.read())
            ttft = time.perf_counter() - started
            parts.append(((data.get("choices") or [{}])[0].get("message") or {}).get("content") or "")
            usage = data.get("usage")
            retrieval = data.get("retrieval") or retrieval
            finish = (data.get("choices") or [{}])[0].get("finish_reason")
        else:
            for raw in response:
                line = raw.strip()
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    break
                event = json.loads(data)
                if event.get("error"):
                    raise _Failure(f"the server reported an error mid-stream: "
                                   f"{json.dumps(event['error'])[:300]}", False)
                usage = event.get("usage") or usage
                for choice in event.get("choices") or ():
                    text = (choice.get("delta") or {}).get("content")
                    finish = choice.get("finish_reason") or finish
                    if text is not None:  # a token, even one that decodes to no text
                        if ttft is None:
                            ttft = time.perf_counter() - started
                        parts.append(text)
                        chunks += 1
            response.read()  # the rest of the stream, so the connection can be reused
    except (socket.timeout, TimeoutError):
        raise _Failure(f"the reply stopped for more than {timeout:g} s", True) from None
    except (OSError, http.client.HTTPException) as err:
        raise _Failure(f"the stream broke: {err}", True) from None
    except (ValueError, AttributeError, TypeError) as err:
        raise _Failure(f"not an OpenAI-style reply: {err}", False) from None
    latency = time.perf_counter() - started
    tokens = (usage or {}).get("completion_tokens")
    return Completion(reply="".join(parts), latency_s=round(latency, 4),
                      ttft_s=round(ttft if ttft is not None else latency, 4),
                      completion_tokens=tokens if isinstance(tokens, int) else chunks,
                      finish_reason=finish, retrieved=retrieved_ids(retrieval))
