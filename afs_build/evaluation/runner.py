"""Many chat requests over several endpoints at once: a bounded number in flight per endpoint.

Each endpoint has its own limit (``Endpoint.concurrency``): a llama.cpp server answers one
request at a time, so more in flight only queues there, while a hosted API takes several. An
endpoint with mirrors (copies of its server) takes that many at each of its URLs, and a request
goes to whichever URL is free first.
Requests are answered from the cache where it holds them. Results come back in the order the
requests were given, whatever order they finish in.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from .cache import ResponseCache
from .client import Completion, Endpoint, stream_chat


@dataclass(frozen=True)
class Request:
    endpoint: Endpoint
    messages: tuple  # of dicts; a tuple so requests can be dict keys in tests
    sampling: dict
    extra: dict = field(default_factory=dict)  # more request body fields, e.g. {"retrieval": False}


def sampling(max_tokens: int, *, temperature: float = 0.0, seed: int = 0) -> dict:
    """The sampling settings every benchmark request is asked with: greedy, seeded."""
    return {"max_tokens": int(max_tokens), "temperature": temperature, "seed": seed}


def ask_all(requests: Sequence[Request], cache: Optional[ResponseCache] = None,
            advance: Callable[[], None] = lambda: None) -> list[Completion]:
    """Every request's Completion, in the order given (failed ones carry their `error`)."""
    cache = cache or ResponseCache(None)
    out: list[Optional[Completion]] = [None] * len(requests)
    pending: dict[Endpoint, list[int]] = {}
    for i, request in enumerate(requests):
        messages = list(request.messages)
        hit = cache.get(request.endpoint.cache_digest, messages, request.sampling, request.extra)
        if hit is not None:
            out[i] = hit
            advance()
        else:
            pending.setdefault(request.endpoint, []).append(i)
    lock = threading.Lock()
    free: dict[Endpoint, queue.Queue] = {}
    for endpoint in pending:  # one slot per request an endpoint's URLs may have in flight
        free[endpoint] = queue.Queue()
        for url in (endpoint.base_url, *endpoint.mirrors):
            for _ in range(max(1, endpoint.concurrency)):
                free[endpoint].put(url)

    def one(i: int) -> None:
        request = requests[i]
        messages = list(request.messages)
        slots = free[request.endpoint]
        url = slots.get()
        try:
            target = request.endpoint if url == request.endpoint.base_url else \
                dataclasses.replace(request.endpoint, base_url=url, mirrors=())
            completion = stream_chat(target, messages, request.sampling, request.extra)
        finally:
            slots.put(url)
        cache.put(request.endpoint.cache_digest, messages, request.sampling, completion, request.extra)
        out[i] = completion
        with lock:
            advance()

    pools = [ThreadPoolExecutor(max_workers=max(1, e.concurrency) * (1 + len(e.mirrors)),
                                thread_name_prefix=f"ask-{e.name}") for e in pending]
    try:
        futures = [pool.submit(one, i) for pool, indexes in zip(pools, pending.values()) for i in indexes]
        for future in futures:
            future.result()
    finally:
        for pool in pools:
            pool.shutdown(wait=True, cancel_futures=True)
    return [c if c is not None else Completion(error="not asked") for c in out]
