"""The ``ifd`` quality signal: how much the question helps a base model predict the answer.

IFD (instruction-following difficulty; Li et al. 2024, "From Quantity to Quality") is the
answer's mean token loss given the question divided by its mean loss without it, both under
one model (``quality.model``: the base's F16 GGUF that ``baseline:<model>`` writes), computed
with llama.cpp:

* given the question: ``question + "\\n\\n" + answer``; without it: ``"\\n\\n" + answer``.
  The two parts are tokenized apart, so both runs predict exactly the same answer tokens, the
  first one included. The question keeps its last :data:`MAX_QUESTION_TOKENS` tokens (the end
  is nearest the answer), the answer its first :data:`MAX_ANSWER_TOKENS`.
* IFD near 1 or above: the question does not help (an answer the base predicts as well
  without it: boilerplate, an unrelated or generic reply). IFD near 0: the answer follows from
  the question almost token by token (a copy of it).

:func:`ifd_value` maps IFD to 0..1 with a reason; losses are cached per (model digest, sample
text) in SQLite (:class:`LossCache`), so a rebuild computes only new samples.
"""

from __future__ import annotations

import ctypes
import hashlib
import sqlite3
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

from ..errors import StageError

SIGNAL = "ifd"
VERSION = 1  # of the token layout below: part of every cache key and of the score task's slice
SEPARATOR = "\n\n"
MAX_QUESTION_TOKENS = 256
MAX_ANSWER_TOKENS = 256
# The mapping (documented in the notes): 1.0 up to IFD_OK, falling linearly to 0.0 at IFD_BAD;
# below IFD_COPY the answer is mostly a copy of the question: 0.5 at IFD 0, 1.0 at IFD_COPY.
IFD_OK, IFD_BAD, IFD_COPY = 0.9, 1.1, 0.25
# Answers shorter than this are not judged: on the default data every bare factual answer
# ("Oslo.", 3 tokens) had IFD 1.1-1.4 (a few tokens' mean loss is noise; notes/quality.md).
MIN_ANSWER_TOKENS = 8


def ifd_value(loss: float, loss_alone: float,
              tokens: int = 1) -> tuple[float, str, Optional[float]]:
    """``(value, reason, ifd)`` from the answer's mean loss with and without the question."""
    if tokens <= 0:
        return 1.0, "no answer tokens to measure", None  # the length signal's case
    if tokens < MIN_ANSWER_TOKENS:
        return 1.0, f"answer too short to judge ({tokens} tokens)", None
    if loss_alone <= 1e-6:  # nothing to explain: the base knows this answer by heart
        return 1.0, "answer predictable with or without the question", None
    ifd = loss / loss_alone
    if ifd > IFD_OK:
        value = round(max(0.0, 1.0 - (ifd - IFD_OK) / (IFD_BAD - IFD_OK)), 4)
        if ifd > 1.0:
            return value, f"answer less likely after the question than without it " \
                          f"(IFD {ifd:.2f}): unrelated to it?", ifd
        return value, f"answer predictable without the question (IFD {ifd:.2f})", ifd
    if ifd < IFD_COPY:
        return round(0.5 + 0.5 * ifd / IFD_COPY, 4), \
            f"answer mostly follows from the question's words (IFD {ifd:.2f})", ifd
    return 1.0, "ok", ifd


def cache_key(instruction: str, answer: str) -> str:
    """The content key of one sample's losses (the model is the cache file's, not the key's)."""
    text = f"{VERSION}\0{MAX_QUESTION_TOKENS}\0{MAX_ANSWER_TOKENS}\0{instruction}\0{answer}"
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class LossCache:
    """The losses of one model by :func:`cache_key`, in SQLite."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path))
        self.db.execute("CREATE TABLE IF NOT EXISTS losses "
                        "(key TEXT PRIMARY KEY, loss REAL, alone REAL, tokens INTEGER)")

    def get(self, keys: Sequence[str]) -> dict[str, tuple[float, float, int]]:
        found = {}
        for at in range(0, len(keys), 500):
            part = list(keys[at:at + 500])
            rows = self.db.execute("SELECT key, loss, alone, tokens FROM losses WHERE key IN "
                                   f"({','.join('?' * len(part))})", part)
            found.update({key: (loss, alone, tokens) for key, loss, alone, tokens in rows})
        return found

    def put(self, rows: Iterable[tuple[str, float, float, int]]) -> None:
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO losses VALUES (?, ?, ?, ?)", rows)

    def close(self) -> None:
        self.db.close()


class LossModel:
    """A GGUF in llama.cpp that scores many (question, answer) pairs per decode.

    Several sequences share one batch (each its own sequence id and, unless `unified`, its own
    KV stream, so no token attends across sequences), and logits are asked for only where the
    next token is an answer token: the losses of a batch of short samples cost one forward
    pass. Measured on SmolLM2's F16 (notes/quality.md): about 0.18 CPU-seconds a short chat
    sample, the same with 600- or 2048-token batches.
    """

    def __init__(self, gguf: Path, *, threads: Optional[int] = None, batch_tokens: int = 2048,
                 max_sequences: int = 16, unified: bool = False):
        from ..llamacpp import load
        from ..post.quantize import default_threads

        llama_cpp = load()

        self.lib = llama_cpp
        llama_cpp.llama_backend_init()
        _silence(llama_cpp, True)
        try:
            self.model = llama_cpp.llama_model_load_from_file(
                str(gguf).encode(), llama_cpp.llama_model_default_params())
        finally:
            _silence(llama_cpp, False)
        if not self.model:
            raise StageError(f"llama.cpp cannot load {gguf}; rebuild it with "
                             f"`doit forget <its task>` and `doit`")
        need = MAX_QUESTION_TOKENS + MAX_ANSWER_TOKENS + 8
        self.batch_tokens = max(batch_tokens, need)
        self.max_sequences = max_sequences
        params = llama_cpp.llama_context_default_params()
        params.n_batch = params.n_ubatch = self.batch_tokens
        params.n_seq_max = max_sequences
        params.kv_unified = unified
        # each sequence its own KV stream: a token attends to its own sequence's cells only
        params.n_ctx = self.batch_tokens if unified else max_sequences * need
        params.n_threads = params.n_threads_batch = threads or default_threads()
        _silence(llama_cpp, True)
        try:
            self.ctx = llama_cpp.llama_init_from_model(self.model, params)
        finally:
            _silence(llama_cpp, False)
        if not self.ctx:
            llama_cpp.llama_model_free(self.model)
            raise StageError(f"llama.cpp cannot make a context for {gguf}")
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.batch = llama_cpp.llama_batch_init(self.batch_tokens, 0, 1)
        self.separator = self.tokens(SEPARATOR)
        bos = llama_cpp.llama_vocab_bos(self.vocab)
        self.start = [bos] if bos >= 0 and llama_cpp.llama_vocab_get_add_bos(self.vocab) else []

    def tokens(self, text: str) -> list[int]:
        """`text` as tokens, special-token markup read as plain text."""
        data = text.encode("utf-8", "replace")
        room = len(data) + 8
        out = (self.lib.llama_token * room)()
        count = self.lib.llama_tokenize(self.vocab, data, len(data), out, room, False, False)
        if count < 0:  # cannot happen with a token per byte and more; kept for safety
            out = (self.lib.llama_token * -count)()
            count = self.lib.llama_tokenize(self.vocab, data, len(data), out, -count, False, False)
        return list(out[:count])

    def losses(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[float, float, int]]:
        """``(mean loss given the question, mean loss without it, answer tokens)`` per pair."""
        sequences: list[tuple[list[int], int]] = []  # tokens, index of the first answer token
        for question, answer in pairs:
            said = self.tokens(answer)[:MAX_ANSWER_TOKENS]
            asked = self.tokens(question)[-MAX_QUESTION_TOKENS:] if question else []
            prefix = self.start + asked + self.separator
            sequences.append((prefix + said, len(prefix)))
            alone = self.start + self.separator
            sequences.append((alone + said, len(alone)))
        sums = self._token_losses(sequences)
        out = []
        for at in range(0, len(sums), 2):
            (given, n), (alone, _) = sums[at], sums[at + 1]
            out.append((given / n if n else 0.0, alone / n if n else 0.0, n))
        return out

    def _token_losses(self, sequences: list[tuple[list[int], int]]) -> list[tuple[float, int]]:
        results: list[tuple[float, int]] = []
        group: list[tuple[list[int], int]] = []
        size = 0
        for tokens, first in sequences:
            if group and (size + len(tokens) > self.batch_tokens
                          or len(group) == self.max_sequences):
                results.extend(self._decode(group))
                group, size = [], 0
            group.append((tokens, first))
            size += len(tokens)
        if group:
            results.extend(self._decode(group))
        return results

    def _decode(self, group: list[tuple[list[int], int]]) -> list[tuple[float, int]]:
        import numpy as np

        lib, batch = self.lib, self.batch
        targets: list[int] = []
        owners: list[int] = []
        n = 0
        for seq, (tokens, first) in enumerate(group):
            for pos, token in enumerate(tokens):
                batch.token[n] = token
                batch.pos[n] = pos
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = seq
                # the logits at pos predict token pos+1: wanted where that is an answer token
                wanted = first - 1 <= pos < len(tokens) - 1
                batch.logits[n] = wanted
                if wanted:
                    targets.append(tokens[pos + 1])
                    owners.append(seq)
                n += 1
        batch.n_tokens = n
        lib.llama_memory_clear(lib.llama_get_memory(self.ctx), True)
        if not targets:
            return [(0.0, 0)] * len(group)
        status = lib.llama_decode(self.ctx, batch)
        if status != 0:
            raise StageError(f"llama.cpp could not evaluate a batch of {n} tokens "
                             f"(status {status})")
        logits = np.ctypeslib.as_array(lib.llama_get_logits(self.ctx),
                                       shape=(len(targets), self.n_vocab))
        peak = logits.max(axis=1)
        lse = np.log(np.exp(logits - peak[:, None]).sum(axis=1)) + peak
        picked = logits[np.arange(len(targets)), np.asarray(targets)]
        loss = (lse - picked).astype(np.float64)
        sums = np.bincount(np.asarray(owners), weights=loss, minlength=len(group))
        counts = np.bincount(np.asarray(owners), minlength=len(group))
        return [(float(s), int(c)) for s, c in zip(sums, counts)]

    def close(self) -> None:
        lib = self.lib
        lib.llama_batch_free(self.batch)
        _silence(lib, True)
        try:
            lib.llama_free(self.ctx)
            lib.llama_model_free(self.model)
        finally:
            _silence(lib, False)


def compute_losses(pairs: Sequence[tuple[str, str]], gguf: Path, cache_path: Path, *,
                   batch_pairs: int = 16,
                   progress: Optional[Callable[[int], None]] = None) -> tuple[dict, dict]:
    """The losses of every (instruction, answer) pair by :func:`cache_key`, and the counts.

    Pairs already in the cache are not evaluated (the model is not even loaded when none is
    new). `progress` is called with the number of pairs done. Counts: ``{"computed",
    "cached"}``.
    """
    cache = LossCache(cache_path)
    try:
        keys = [cache_key(q, a) for q, a in pairs]
        found = cache.get(list(dict.fromkeys(keys)))
        todo = list({key: pair for key, pair in zip(keys, pairs) if key not in found}.items())
        if progress is not None and len(pairs) - len(todo):
            progress(len(pairs) - len(todo))
        if todo:
            model = LossModel(gguf)
            try:
                for at in range(0, len(todo), batch_pairs):
                    part = todo[at:at + batch_pairs]
                    rows = [(key, *losses) for (key, _), losses
                            in zip(part, model.losses([pair for _, pair in part]))]
                    cache.put(rows)  # kept as it goes: an interrupted run keeps its work
                    found.update({key: tuple(rest) for key, *rest in rows})
                    if progress is not None:
                        progress(len(part))
            finally:
                model.close()
        return found, {"computed": len(todo), "cached": len(set(keys)) - len(todo)}
    finally:
        cache.close()


_SILENT: list = []  # the log callback, kept alive while llama.cpp may call it


def _silence(llama_cpp, on: bool) -> None:
    """Hide llama.cpp's loader chatter (on) or give its log back to llama-cpp-python (off)."""
    if not on:
        from llama_cpp import _logger

        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
        return
    if not _SILENT:
        _SILENT.append(llama_cpp.llama_log_callback(lambda level, text, data: None))
    llama_cpp.llama_log_set(_SILENT[0], ctypes.c_void_p(0))


def file_pairs(samples_path: Path) -> list[tuple[str, str]]:
    """The (instruction, answer) of every sample of a JSONL file, as the scorer reads them."""
    from .jsonl import read_jsonl
    from .texts import sample_texts

    return [sample_texts(sample) for sample in read_jsonl(samples_path)]
