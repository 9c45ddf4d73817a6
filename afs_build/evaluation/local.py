"""Ask a GGUF file questions in this process through llama.cpp: greedy, as the servers answer.

For files that are not served (each quantization type of a specialist, compared in answers);
the chat template is the one the GGUF carries, as in the server, and the sampling is the
server's: a benchmark request sets only max_tokens, temperature and seed, and llama-cpp-python's
app fills in the rest from its request model's defaults (a repeat penalty of 1.1 where
``Llama.create_chat_completion`` alone would apply none).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Mapping, Optional, Sequence

from ..errors import StageError
from ..llamacpp import LOADING
from .runner import sampling


def messages_for(question: dict, system_prompt: str) -> list[dict]:
    """The chat a question is asked as: its own system turn, else the specialist's."""
    system = question["system"] if question.get("system") is not None else system_prompt
    return ([{"role": "system", "content": system}] if system else []) + \
        [{"role": "user", "content": question["question"]}]


SAMPLING_FIELDS = ("max_tokens", "temperature", "seed", "top_k", "top_p", "min_p", "repeat_penalty",
                   "presence_penalty", "frequency_penalty", "mirostat_mode", "mirostat_tau", "mirostat_eta")


def served_sampling(request: dict) -> dict:
    """The sampling arguments the server passes to ``create_chat_completion`` for a request
    carrying `request` (the benchmark's :func:`~afs_build.evaluation.runner.sampling`): those,
    and its request model's defaults for every other field."""
    from llama_cpp.server.types import CreateChatCompletionRequest

    body = CreateChatCompletionRequest(messages=[{"role": "user", "content": ""}], **request)
    return {field: getattr(body, field) for field in SAMPLING_FIELDS}


def _sampling(question: dict) -> dict:
    # "runtime" keeps these apart from the server's replies in the cache: the server stops on
    # more end tokens than a bare Llama does, so the two may differ
    return {**served_sampling(sampling(question["max_tokens"])), "runtime": "llama_cpp.Llama"}


def answer_all(gguf: Path, questions: Sequence[dict], system_prompt: str, *, n_ctx: int = 2048,
               cache=None, digest: Optional[str] = None,
               chats: Optional[Mapping[str, list[dict]]] = None) -> dict[str, dict]:
    """{question id: {"reply", "latency_s", "completion_tokens"}} for every question.

    Each question is asked as :func:`messages_for` writes it, or as `chats` gives it by id (the
    messages a retrieving server would send on: with its context). With a `cache` and the
    file's `digest`, replies asked before of the same file are reused (and the model is not
    even loaded when every one is).
    """
    def chat(question: dict) -> list[dict]:
        if chats is not None and question["id"] in chats:
            return chats[question["id"]]
        return messages_for(question, system_prompt)

    out = {}
    todo = []
    for question in questions:
        hit = cache.get(digest, chat(question), _sampling(question)) if cache else None
        if hit is not None:
            out[question["id"]] = {"reply": hit.reply, "latency_s": hit.latency_s or 0.0,
                                   "completion_tokens": hit.completion_tokens}
        else:
            todo.append(question)
    if not todo:
        return out
    from ..llamacpp import load
    from .client import Completion

    Llama = load().Llama

    if not Path(gguf).is_file():
        raise StageError(f"{gguf} does not exist; build it first (doit quantize)")
    # llama-cpp-python's thread default (half the cores), as the servers use: on 2 cores, two
    # threads generate at about half the speed of one (bench/serve_threads.py).
    with LOADING:
        llm = Llama(model_path=str(gguf), n_ctx=n_ctx, verbose=False, seed=0)
    try:
        for question in todo:
            started = time.perf_counter()
            data = llm.create_chat_completion(chat(question), **served_sampling(sampling(question["max_tokens"])))
            tokens = (data.get("usage") or {}).get("completion_tokens")
            out[question["id"]] = {"reply": data["choices"][0]["message"]["content"] or "",
                                   "latency_s": round(time.perf_counter() - started, 4),
                                   "completion_tokens": tokens}
            if cache is not None:
                cache.put(digest, chat(question), _sampling(question),
                          Completion(**out[question["id"]]))
    finally:
        llm.close()
    return out
