"""Quantize GGUF files with llama.cpp, detect its silent fallbacks, and measure what each costs.

``quantize`` calls ``llama_model_quantize`` through llama-cpp-python. llama.cpp returns success
even when a tensor's rows do not fit the requested type's blocks (k-quants, i-quants and
ternary types pack 256 values per block): it then stores that tensor in another type (Q4_K ->
Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, ...) and says so only in its log. So every written file is
read back (its tensor directory, :mod:`afs_build.post.gguf_info`) and its tensor types are checked (the robust way: it needs
no log and works on any file); llama.cpp's own count is captured from its log as a cross-check.

``measure`` loads one GGUF file and times loading and greedy generation, and computes the
perplexity of the eval split's chat-templated texts; ``report`` does that for the F16 file and
each quantized file, so users see what each quantization costs in quality.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from ..atomic import atomic_path
from ..errors import StageError, one_of, suggest

# Every type the manifest's `quantize` list allows, in the schema's order, with its ftype.
QTYPES = {
    "F32": "LLAMA_FTYPE_ALL_F32", "F16": "LLAMA_FTYPE_MOSTLY_F16",
    "BF16": "LLAMA_FTYPE_MOSTLY_BF16",
    **{name: f"LLAMA_FTYPE_MOSTLY_{name}" for name in (
        "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q2_K_S", "Q3_K_S", "Q3_K_M", "Q3_K_L",
        "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M",
        "IQ3_XXS", "IQ3_XS", "IQ3_S", "IQ3_M", "IQ4_NL", "IQ4_XS", "TQ1_0", "TQ2_0")},
}
FLOAT_TYPES = ("F32", "F16", "BF16")
QK_K = 256  # values per block of the k-, i- and ternary quants
# The types llama.cpp falls back to when a tensor's rows are not a multiple of QK_K.
FALLBACK_TYPES = frozenset({"Q4_0", "Q5_0", "Q5_1", "Q8_0", "IQ4_NL", "F16"})
LOGGED_FALLBACK = re.compile(r"(\d+) of (\d+) tensor\(s\) required fallback quantization")
PROMPT = "The capital of France is"
WARMUP = 2  # untimed decode steps before the timed ones


def default_threads() -> int:
    """The CPUs this process may use (a container's cpuset, not the host's core count)."""
    from ..cores import usable

    return usable()


def quantize(src: Path, dst: Path, qtype: str, *, threads: int | None = None) -> dict:
    """Quantize `src` (an F16/BF16/F32 GGUF) to `dst` as `qtype`; report fallback tensors."""
    src, dst = Path(src), Path(dst)
    if qtype not in QTYPES:
        raise StageError(f"unknown quantization type {qtype!r}{suggest(qtype, QTYPES)}; "
                         f"expected one of: {one_of(QTYPES)}")
    if not src.is_file():
        raise StageError(f"{src}: the GGUF file to quantize is missing")
    if dst.resolve() == src.resolve():
        raise StageError(f"{dst}: quantizing to {qtype} would overwrite its source file")
    llama_cpp = _llama_cpp()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, QTYPES[qtype])
    params.nthread = threads or default_threads()
    start = time.perf_counter()
    with atomic_path(dst) as tmp, _captured_log(llama_cpp) as log:
        status = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(),
                                                ctypes.byref(params))
        if status != 0:
            raise StageError(_failure(src, qtype, "".join(log)))
        result = inspect_gguf(tmp, qtype)
    seconds = time.perf_counter() - start
    found = LOGGED_FALLBACK.search("".join(log))
    result.update(file=dst.name, size_bytes=dst.stat().st_size, seconds=round(seconds, 3),
                  threads=params.nthread, logged_fallback_count=int(found[1]) if found else 0)
    result["warning"] = _warning(result)
    return _sorted(result)


def inspect_gguf(gguf: Path, requested: str) -> dict:
    """The tensor types of a GGUF file, and the tensors stored in a fallback type.

    A tensor fell back when its rows (``shape[0]``, ggml's ``ne[0]``) are not a multiple of 256
    and it is stored in one of llama.cpp's fallback types other than the requested one. This
    also counts an output or tied embedding tensor that llama.cpp put in Q8_0 instead of Q6_K
    for that reason, which llama.cpp itself does not always count.
    """
    from .gguf_info import read

    tensors = [(t.name, t.type, list(t.shape)) for t in read(gguf).tensors]
    fallback = {}
    if requested not in FLOAT_TYPES:
        fallback = {name: kind for name, kind, shape in tensors
                    if len(shape) >= 2 and shape[0] % QK_K
                    and kind in FALLBACK_TYPES and kind != requested}
    return {"requested": requested, "tensor_types": dict(Counter(k for _, k, _ in tensors)),
            "weight_tensors": sum(1 for *_, shape in tensors if len(shape) >= 2),
            "fallback_tensors": fallback, "fallback_count": len(fallback)}


def measure(gguf: Path, eval_texts: Sequence[str], *, n_ctx: int = 512, threads: int | None = None,
            max_tokens: int = 1024, gen_tokens: int = 32) -> dict:
    """Size, load time, greedy tokens/s and eval-text perplexity of one GGUF file.

    Perplexity is over at most `max_tokens` tokens: each text is cut into windows of `n_ctx`
    tokens and the first token of each window (which nothing predicts) is skipped. Every file of
    a specialist is measured on the same tokens, so 1024 of them compare quantization types as
    well as more would, at half the time of 2048 (each file's pass was the quantize stage's
    largest cost); the answers each type changes are measured by compare:, not here.
    """
    import numpy as np

    gguf = Path(gguf)
    llama_cpp = _llama_cpp()
    threads = threads or default_threads()
    start = time.perf_counter()
    llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=n_ctx, n_batch=n_ctx, n_threads=threads,
                          n_threads_batch=threads, logits_all=True, seed=0, verbose=False)
    load_s = time.perf_counter() - start
    try:
        llm.reset()
        prompt = llm.tokenize(PROMPT.encode(), add_bos=True)
        gen_tokens = max(0, min(gen_tokens, n_ctx - len(prompt) - WARMUP))
        llm.eval(prompt)
        for step in range(WARMUP + gen_tokens):  # argmax by hand: a model may say EOS at once
            if step == WARMUP:  # the first decodes also pay for buffers and threads
                start = time.perf_counter()
            llm.eval([int(np.argmax(llm.scores[llm.n_tokens - 1]))])
        gen_s = time.perf_counter() - start if gen_tokens else 0.0
        nll, counted, texts = 0.0, 0, 0
        for text in eval_texts:
            if counted >= max_tokens:
                break
            texts += 1
            tokens = llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
            for at in range(0, len(tokens), n_ctx):
                window = tokens[at:at + n_ctx][:max_tokens - counted + 1]
                if len(window) < 2:
                    continue
                llm.reset()
                llm.eval(window)
                logits = np.asarray(llm.scores[:len(window) - 1], dtype=np.float64)
                peak = logits.max(axis=1, keepdims=True)
                log_z = peak[:, 0] + np.log(np.exp(logits - peak).sum(axis=1))
                nll -= float((logits[np.arange(len(window) - 1), window[1:]] - log_z).sum())
                counted += len(window) - 1
    finally:
        llm.close()
    return _sorted({
        "file": gguf.name, "size_bytes": gguf.stat().st_size, "load_s": round(load_s, 4),
        "gen_tokens": gen_tokens,
        "tokens_per_s": round(gen_tokens / gen_s, 1) if gen_tokens else None,
        "perplexity": round(math.exp(nll / counted), 4) if counted else None,
        "ppl_tokens": counted, "ppl_texts": texts, "n_ctx": n_ctx, "threads": threads})


def report(files: Mapping[str, Path], eval_texts: Sequence[str], *,
           quantized: Mapping[str, dict] | None = None, reference: str = "F16",
           **measure_options: Any) -> dict:
    """The quantization report of one specialist: each file's cost in size, speed and quality.

    `files` maps a type (F16, Q8_0, ...) to its GGUF file; `quantized` may hold the results of
    ``quantize`` per type, which add llama.cpp's logged fallback count and the quantize time
    (both None without it). `perplexity_change` is relative to the `reference` file's: 0.01 is
    1 % worse.
    """
    quants: dict[str, dict] = {}
    for kind, path in files.items():
        entry = measure(path, eval_texts, **measure_options)
        entry["fallback"] = entry["quantize_s"] = None
        if kind not in FLOAT_TYPES:
            entry["fallback"] = inspect_gguf(path, kind)
            done = (quantized or {}).get(kind, {})
            entry["fallback"]["logged_fallback_count"] = done.get("logged_fallback_count")
            entry["quantize_s"] = done.get("seconds")
            entry["fallback"]["warning"] = _warning({**entry["fallback"], "file": Path(path).name})
        quants[kind] = entry
    base = quants.get(reference)
    for entry in quants.values():
        entry["perplexity_change"] = entry["size_ratio"] = None
        if base and base["perplexity"] and entry["perplexity"] is not None:
            entry["perplexity_change"] = round(entry["perplexity"] / base["perplexity"] - 1, 6)
        if base:
            entry["size_ratio"] = round(entry["size_bytes"] / base["size_bytes"], 4)
    warnings = [e["fallback"]["warning"] for _, e in sorted(quants.items())
                if e["fallback"] and e["fallback"]["warning"]]
    return _sorted({"reference": reference if base else None, "quants": quants,
                    "eval_texts": len(eval_texts), "warnings": warnings})


def eval_texts(eval_jsonl: Path, tokenizer_dir: Path, *, limit: int = 64) -> list[str]:
    """The first `limit` eval samples rendered with the model's chat template, as plain text."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    texts = []
    with open(eval_jsonl, encoding="utf-8") as handle:
        for line in handle:
            if line.strip() and len(texts) < limit:
                messages = [{"role": m["role"], "content": m["content"]}
                            for m in json.loads(line)["messages"]]
                texts.append(tokenizer.apply_chat_template(messages, tokenize=False))
    return texts


def _llama_cpp():
    """llama_cpp, ready to load models (:mod:`afs_build.llamacpp`)."""
    from ..llamacpp import load

    return load()


@contextlib.contextmanager
def _captured_log(llama_cpp) -> Iterator[list[str]]:
    """Collect llama.cpp's log lines (the process-wide log) instead of printing them."""
    lines: list[str] = []

    @llama_cpp.llama_log_callback
    def callback(level, text, user_data):
        lines.append(text.decode("utf-8", "replace"))

    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))
    try:
        yield lines
    finally:
        from llama_cpp import _logger  # llama-cpp-python's own handler, set at its import

        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))


def _failure(src: Path, qtype: str, log: str) -> str:
    if "requires an imatrix" in log:
        return (f"{src}: llama.cpp cannot make {qtype} without an importance matrix, which afs "
                f"does not compute; choose another type (IQ3_S, IQ4_XS, Q2_K or any Q*_K_* type)")
    last = [line.strip() for line in log.splitlines() if line.strip()][-1:] or ["no log"]
    return f"{src}: llama.cpp failed to quantize to {qtype}: {last[0]}"


def _warning(result: dict) -> str | None:
    """A sentence for users when some tensors were stored in another type than requested."""
    if not result["fallback_count"]:
        return None
    kinds = Counter(result["fallback_tensors"].values())
    used = ", ".join(f"{kind} x{n}" for kind, n in sorted(kinds.items()))
    logged = result.get("logged_fallback_count")
    note = f" (llama.cpp counted {logged})" if logged is not None and logged != \
        result["fallback_count"] else ""
    return (f"{result['file']}: {result['fallback_count']} of {result['weight_tensors']} weight "
            f"tensors are not {result['requested']}: their rows are not a multiple of {QK_K}, so "
            f"llama.cpp stored them as {used}{note}; the file is larger and its quality differs "
            f"from a true {result['requested']}")


def _sorted(value: Any) -> Any:
    """`value` with every dict's keys in sorted order, for deterministic reports."""
    if isinstance(value, dict):
        return {key: _sorted(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted(item) for item in value]
    return value
