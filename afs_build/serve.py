"""Serve one specialist on an OpenAI-compatible endpoint (llama-cpp-python's server, guarded).

    python -m afs_build.serve --model F.gguf --alias majora --host 127.0.0.1 --port 5000 --n-ctx 2048

In front of llama-cpp-python's app sits :class:`afs_build.deploy.guard.Guard`: the alias is
the only model served, and bad requests (too large, not JSON, wrong model, no API key) are
answered there, OpenAI-style, before the model sees them.

The chat handler is built from the GGUF's own template, like llama-cpp-python's default, but
it also stops on the template family's turn markers (``<|im_start|>`` for ChatML) and on the
end-of-turn token, not only on the end-of-sequence token: a reply never runs on into a
made-up next turn.

The API key, when there is one, comes from the environment (``AFS_API_KEY``), never from the
command line, which every user of the machine can read. A server bound beyond loopback
refuses to start without one.

``afs_build.deploy.server.start`` runs this module in the background; ``--pid-file`` and
``--token`` are how ``afs status`` and ``afs stop`` recognise a process afs started (they are
in its command line).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

KEY_VARIABLE = "AFS_API_KEY"
BODY_BYTES = 1 << 20  # the least body limit: room for any chat that fits a small context
BODY_BYTES_PER_TOKEN = 64  # JSON-escaped text of one token, with room to spare
COUNT_BUFFER = 1 << 14  # tokens; a longer prompt is counted without being kept


def max_body_bytes(n_ctx: int) -> int:
    """The request body limit for a context of `n_ctx` tokens."""
    return BODY_BYTES + BODY_BYTES_PER_TOKEN * int(n_ctx)


def inspect_model(model: Path, alias: str):
    """Register a chat handler for `model` that stops on every end token.

    Returns (its name, the vocabulary size, the chat formatter); the name and formatter are
    None when the GGUF has no template (llama-cpp-python then chooses).
    """
    from llama_cpp import Llama, llama_chat_format

    from .deploy.ollama import family_of

    vocab = Llama(model_path=str(model), vocab_only=True, verbose=False)
    try:
        n_vocab = vocab.n_vocab()
        template = vocab.metadata.get("tokenizer.chat_template")
        if not template:
            return None, n_vocab, None

        def text(token: int) -> str:
            if token < 0:
                return ""
            return vocab.detokenize([token], special=True).decode("utf-8", "replace")

        stop_ids = {vocab.token_eos()}
        family = family_of(template)
        for marker in family.stops if family else ():
            ids = vocab.tokenize(marker.encode(), add_bos=False, special=True)
            # One id only when the marker is a special token of this vocabulary.
            if len(ids) == 1 and vocab.tokenize(marker.encode(), add_bos=False,
                                                special=False) != ids:
                stop_ids.add(ids[0])
        formatter = llama_chat_format.Jinja2ChatFormatter(
            template=template, eos_token=text(vocab.token_eos()),
            bos_token=text(vocab.token_bos()), stop_token_ids=sorted(i for i in stop_ids if i >= 0))
        name = f"afs-{alias}"
        llama_chat_format.LlamaChatCompletionHandlerRegistry().register_chat_completion_handler(
            name, formatter.to_chat_handler(), overwrite=True)
        return name, n_vocab, formatter
    finally:
        vocab.close()


class Vocabulary:
    """`model`'s vocabulary, kept loaded (a few MB) for the guard's checks of each request."""

    def __init__(self, model: Path):
        import threading

        from llama_cpp import Llama

        self._llama = Llama(model_path=str(model), vocab_only=True, verbose=False)
        self._lock = threading.Lock()  # the guard checks requests in worker threads
        # No token is longer than this: a text of n bytes has at least n / longest tokens.
        self.longest = max((len(self._llama.detokenize([t], special=True))
                            for t in range(self._llama.n_vocab())), default=1) or 1

    def parses(self, grammar: str) -> bool:
        """Whether llama.cpp parses `grammar` (GBNF with a ``root`` rule)."""
        from llama_cpp import llama_cpp as native

        with self._lock:
            sampler = native.llama_sampler_init_grammar(self._llama._model.vocab,
                                                        grammar.encode("utf-8"), b"root")
            if not sampler:
                return False
            native.llama_sampler_free(sampler)
            return True

    def count(self, text: str, at_most: Optional[int] = None) -> int:
        """Tokens in `text`, as the server tokenizes a prompt (special tokens, BOS).

        Past `at_most` the answer is only a number above it: a text too long to fit even in
        its longest tokens is not tokenized at all. Otherwise tokens are counted into a small
        buffer (llama.cpp returns the count it would need): a prompt of a megabyte never
        becomes a Python list of a million tokens.
        """
        from llama_cpp import llama_cpp as native

        raw = text.encode("utf-8")
        if at_most is not None and len(raw) // self.longest > at_most:
            return len(raw) // self.longest
        with self._lock:
            room = (native.llama_token * COUNT_BUFFER)()
            n = native.llama_tokenize(self._llama._model.vocab, raw, len(raw), room, COUNT_BUFFER,
                                      True, True)
        return abs(n)


def build_app(model: Path, alias: str, *, n_ctx: int, host: str = "127.0.0.1", port: int = 8000,
              n_threads: Optional[int] = None, api_key: Optional[str] = None,
              max_body: Optional[int] = None, retrieval: Optional[Path] = None):
    """The guarded ASGI app serving `model` as `alias` (loads the model: takes a moment)."""
    from .llamacpp import load

    load()  # before the app loads the model: no AMX buffers, passive OpenMP threads
    from llama_cpp.server.app import create_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    from .deploy.guard import Guard
    from .deploy.request_checks import RequestChecker

    os.environ.pop("CONFIG_FILE", None)  # create_app would read its settings from there instead
    # llama-cpp-python's own default (half the cores) is kept: on the 2-core machine a 135M
    # model generated at about half the speed with both (bench/serve_threads.py: 0.50-0.54x).
    extra = {"n_threads": n_threads} if n_threads else {}
    chat_format, n_vocab, formatter = inspect_model(model, alias)
    settings = ModelSettings(model=str(model), model_alias=alias, n_ctx=n_ctx,
                             chat_format=chat_format, verbose=False, **extra)
    # The key is checked by the guard, in front of every path; the app needs none of its own.
    # llama-cpp-python cuts a streamed answer short when another request arrives (made for
    # one user at a desk); a specialist serves several clients, so each answer is finished.
    app = create_app(server_settings=ServerSettings(host=host, port=port, interrupt_requests=False),
                     model_settings=[settings])
    vocabulary = Vocabulary(model)
    checker = RequestChecker(alias, n_ctx=n_ctx, n_vocab=n_vocab, grammar_ok=vocabulary.parses,
                             count_tokens=vocabulary.count, render_chat=formatter)
    limit = max_body or max_body_bytes(n_ctx)
    app = Guard(app, alias, api_key=api_key, checker=checker, max_body=limit)
    if retrieval is not None:  # /v1/embeddings, /v1/search and chat that retrieves first
        # outside the guard, which answers 404 for paths it does not know; it checks the key
        # and the body size itself, and what it passes on goes through the guard
        from .retrieval.endpoints import wrap

        app = wrap(app, retrieval, alias, api_key=api_key, max_body=limit)
    return app


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m afs_build.serve",
                                     description="Serve one specialist's GGUF on an "
                                     "OpenAI-compatible endpoint.")
    parser.add_argument("--model", required=True, type=Path, help="the GGUF file")
    parser.add_argument("--alias", required=True, help="the model name clients must use")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--n-ctx", type=int, default=2048, help="context length")
    parser.add_argument("--n-threads", type=int, default=None,
                        help="threads for generation (default: llama-cpp-python's, half the cores)")
    parser.add_argument("--max-body-bytes", type=int, default=None,
                        help="largest request body taken (default: from the context length)")
    parser.add_argument("--pid-file", default="", help="the pid file afs keeps for this server")
    parser.add_argument("--token", default="", help="marks a server afs started (afs stop)")
    parser.add_argument("--retrieval", type=Path, default=None,
                        help="retrieval settings written by deploy (afs_build.retrieval.endpoints)")
    args = parser.parse_args(argv)
    from .deploy.access import is_loopback

    # Read once and dropped from the environment: nothing else in this process needs it.
    api_key = os.environ.pop(KEY_VARIABLE, "") or None
    if api_key is None and not is_loopback(args.host):
        print(f"afs serve: refusing to serve on {args.host}, beyond this machine, without an "
              f"API key: set {KEY_VARIABLE}", file=sys.stderr)
        return 2
    # ggml's OpenMP threads spin while idle otherwise; must be set before llama_cpp loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    import uvicorn

    app = build_app(args.model, args.alias, n_ctx=args.n_ctx, host=args.host, port=args.port,
                    n_threads=args.n_threads, api_key=api_key, max_body=args.max_body_bytes,
                    retrieval=args.retrieval)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
