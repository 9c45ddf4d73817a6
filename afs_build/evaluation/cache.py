"""Replies cached by what they depend on: the served file's digest, the messages, the sampling.

A rebuild that changes nothing an answer depends on (a new port, a rewritten report, a touched
suite) asks nothing again; a changed model (another digest) asks again. The key never holds
the endpoint's address or a path: content, not paths, decides. An endpoint whose model is not
known by digest (a hosted API) is not cached unless its caller names a digest for it.

One small JSON file per reply under ``build/cache/eval/<2 hex>/<key>.json``, written
atomically; failed requests are never cached.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional

from ..atomic import write_json
from .client import Completion

VERSION = 1  # bump when what a cached reply holds changes


def key(digest: str, messages: list[dict], sampling: dict, extra: Optional[dict] = None) -> str:
    """The cache key; `extra` (more request body fields, such as ``{"retrieval": False}``)
    counts only when given, so keys of plain requests stay what they were."""
    fields = {"v": VERSION, "model": digest, "messages": messages, "sampling": sampling}
    if extra:
        fields["extra"] = extra
    text = json.dumps(fields, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


class ResponseCache:
    """The cache folder; `get` and `put` do nothing for a model without a digest."""

    def __init__(self, folder: Optional[Path]):
        self.folder = Path(folder) if folder else None
        self.hits = self.misses = 0

    def _path(self, digest: Optional[str], messages: list[dict], sampling: dict,
              extra: Optional[dict]) -> Optional[Path]:
        if self.folder is None or not digest:
            return None
        k = key(digest, messages, sampling, extra)
        return self.folder / k[:2] / f"{k}.json"

    def get(self, digest: Optional[str], messages: list[dict], sampling: dict,
            extra: Optional[dict] = None) -> Optional[Completion]:
        path = self._path(digest, messages, sampling, extra)
        if path is None:
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.misses += 1
            return None
        self.hits += 1
        return Completion(reply=data["reply"], latency_s=data.get("latency_s"), ttft_s=data.get("ttft_s"),
                          completion_tokens=data.get("completion_tokens"), attempts=0, cached=True,
                          finish_reason=data.get("finish_reason"), retrieved=data.get("retrieved"))

    def put(self, digest: Optional[str], messages: list[dict], sampling: dict, completion: Completion,
            extra: Optional[dict] = None) -> None:
        path = self._path(digest, messages, sampling, extra)
        if path is None or not completion.ok:
            return
        write_json(path, completion.to_json())
