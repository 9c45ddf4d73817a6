"""Ask a GGUF file questions in this process through llama.cpp: greedy, as the servers answer.

For files that are not served (each quantization type of a specialist, compared in answers);
the chat template is the one the GGUF carries, as in the server.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Sequence

from ..errors import StageError


def messages_for(question: dict, system_prompt: str) -> list[dict]:
    """The chat a question is asked as: its own system turn, else the specialist's."""
    system = question["system"] if question.get("system") is not None else system_prompt
    return ([{"role": "system", "content": system}] if system else []) + \
        [{"role": "user", "content": question["question"]}]


def answer_all(gguf: Path, questions: Sequence[dict], system_prompt: str, *, n_ctx: int = 2048) -> dict[str, dict]:
    """{question id: {"reply", "latency_s", "completion_tokens"}} for every question."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from llama_cpp import Llama

    if not Path(gguf).is_file():
        raise StageError(f"{gguf} does not exist; build it first (doit quantize)")
    llm = Llama(model_path=str(gguf), n_ctx=n_ctx, n_threads=max(1, min(os.cpu_count() or 1, 8)),
                verbose=False, seed=0)
    out = {}
    try:
        for question in questions:
            started = time.perf_counter()
            data = llm.create_chat_completion(messages_for(question, system_prompt), temperature=0.0,
                                              max_tokens=question["max_tokens"], seed=0)
            tokens = (data.get("usage") or {}).get("completion_tokens")
            out[question["id"]] = {"reply": data["choices"][0]["message"]["content"] or "",
                                   "latency_s": round(time.perf_counter() - started, 4),
                                   "completion_tokens": tokens}
    finally:
        llm.close()
    return out
