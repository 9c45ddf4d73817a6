"""Replay: prompts answered by the base model itself, so training keeps what the base could do.

A specialist trained on its subject alone forgets general ability: measured on the default
family, Veran trained with hand-written short general answers in its mix answered "Which
planet orbits closest to the Sun?" with "Mars" where its base said Mercury. Replaying the
base's *own* answers to general prompts (self-distillation) asks the adapter to leave those
answers as they were instead of teaching it a new style: in the README's experiments (Veran)
replay did better on general questions than hand-written answers (on the same 6 questions:
+0.17 against -0.33, relative to the base), though no setting was measured to keep the
base's general score. The prompts come from any file the ``custom`` readers take (their
answers are dropped), the answers from the base's own GGUF through llama.cpp, greedy.

Answers are cached by a digest of the model file, the prompt and the settings, so a rebuild
asks nothing again and a changed base asks again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterator, Mapping, NamedTuple, Optional

from ..atomic import write_json
from .records import Filtered, Marker, Record, Reject, canonical_json, make_sample


class _Ask(NamedTuple):
    """A prompt of the file to answer, with its cache key."""

    record: Record
    prompt: list[dict]
    key: str


def convert_replay(path, *, source: str, format: str, fields: Mapping[str, str] | None, max_chars: int,
                   gguf: Path, model_digest: str, max_tokens: int = 128, system_prompt: Optional[str] = None,
                   limit: Optional[int] = None, cache_dir: Optional[Path] = None,
                   n_ctx: int = 2048, workers: Optional[int] = None) -> Iterator[Record]:
    """One sample per prompt of `path`: the conversation up to its last user turn, answered by
    the model in `gguf`. Rejects of the reader pass through.

    The prompts not in the cache are answered by `workers` copies of the model at once (default
    :func:`afs_build.cores.model_copies`, as the servers run), then every outcome is yielded in
    the file's order."""
    from .custom import convert_custom

    cache_file = Path(cache_dir) / f"{source}.json" if cache_dir else None
    cache = _read_cache(cache_file)
    outcomes: list = []  # the reader's outcomes and an _Ask for each prompt, in the file's order
    count = 0
    for record in convert_custom(path, source=source, format=format, fields=fields, max_chars=max_chars):
        if isinstance(record, (Reject, Marker, Filtered)):  # the reader's own outcomes and markers
            outcomes.append(record)
            continue
        if limit is not None and count >= limit:
            outcomes.append(Filtered(f"past replay limit {limit}"))
            continue
        prompt = _prompt(record["messages"], system_prompt)
        if prompt is None:
            outcomes.append(Reject(source, "no user turn to answer", file=record["provenance"].get("file"),
                                   line=record["provenance"].get("line")))
            continue
        key = hashlib.sha256(canonical_json([model_digest, prompt, max_tokens]).encode()).hexdigest()
        outcomes.append(_Ask(record, prompt, key))
        count += 1
    asks = [o for o in outcomes if isinstance(o, _Ask)]
    answers = dict(cache)
    try:
        _answer_all({a.key: a.prompt for a in asks if a.key not in cache}, gguf, n_ctx, max_tokens, workers,
                    into=answers)
    finally:  # the file's answers so far, also when one failed: a rerun asks only the rest
        kept = {a.key: answers[a.key] for a in asks if a.key in answers}
        if cache_file is not None and kept != cache:
            write_json(cache_file, kept)
    for outcome in outcomes:
        if not isinstance(outcome, _Ask):
            yield outcome
            continue
        record, prompt, reply = outcome.record, outcome.prompt, kept[outcome.key]
        if not reply.strip():
            yield Reject(source, "the model gave an empty answer", file=record["provenance"].get("file"),
                         line=record["provenance"].get("line"), excerpt=prompt[-1]["content"])
            continue
        messages = [m for m in prompt if m["role"] != "system"] + [{"role": "assistant", "content": reply}]
        yield make_sample(source, messages, provenance=record["provenance"],
                          metadata={**record.get("metadata", {}),
                                    "replay": {"model_digest": model_digest, "max_tokens": max_tokens}})


def _answer_all(prompts: dict[str, list[dict]], gguf: Path, n_ctx: int, max_tokens: int,
                workers: Optional[int], into: dict[str, str]) -> None:
    """Every prompt's reply into `into` by its key, as each arrives, `workers` models answering
    at once (one model loaded per worker, none when there is nothing to answer). Greedy, so the
    split changes no reply."""
    if not prompts:
        return
    from concurrent.futures import ThreadPoolExecutor

    from ..cores import model_copies

    workers = max(1, min(len(prompts), workers or model_copies()))
    keys = list(prompts)

    def answer(share: list[str]) -> None:
        answerer = _Answerer(gguf, n_ctx)
        try:
            for key in share:
                into[key] = answerer(prompts[key], max_tokens)
        finally:
            answerer.close()

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="replay") as pool:
        for done in [pool.submit(answer, keys[i::workers]) for i in range(workers)]:
            done.result()


def _prompt(messages: list[dict], system_prompt: Optional[str]) -> Optional[list[dict]]:
    """The conversation up to and including its last user turn, with `system_prompt` first."""
    last = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
    if last is None:
        return None
    turns = [{"role": m["role"], "content": m["content"]} for m in messages[:last + 1] if m["role"] != "system"]
    return ([{"role": "system", "content": system_prompt}] if system_prompt else []) + turns


def _read_cache(path: Optional[Path]) -> dict[str, str]:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class _Answerer:
    """llama.cpp loaded on first use (a fully cached rebuild loads nothing)."""

    def __init__(self, gguf: Path, n_ctx: int):
        self.gguf, self.n_ctx, self.llm = Path(gguf), n_ctx, None

    def __call__(self, prompt: list[dict], max_tokens: int) -> str:
        if self.llm is None:
            from ..llamacpp import LOADING, load

            # llama-cpp-python's thread default, as the servers use (bench/serve_threads.py);
            # one load at a time (LOADING says why)
            with LOADING:
                self.llm = load().Llama(model_path=str(self.gguf), n_ctx=self.n_ctx, verbose=False, seed=0)
        data = self.llm.create_chat_completion(prompt, temperature=0.0, max_tokens=max_tokens, seed=0)
        return (data["choices"][0]["message"]["content"] or "").strip()

    def close(self) -> None:
        if self.llm is not None:
            self.llm.close()
            self.llm = None
