"""Serve one specialist on an OpenAI-compatible endpoint (llama-cpp-python's server, wrapped).

    python -m afs_build.serve --model F.gguf --alias majora --host 127.0.0.1 --port 5000 --n-ctx 2048

llama-cpp-python answers a request naming an unknown model with its default model while
echoing the unknown name back, so a client pointed at the wrong port gets the wrong
specialist without noticing. :class:`OnlyAlias` puts a check in front: a request whose JSON
body names another model gets a 404 ``model_not_found`` error, and ``/v1/models`` lists the
alias alone (answered here, so a health check does not wait behind a long generation).

The chat handler is built from the GGUF's own template, like llama-cpp-python's default, but
it also stops on the template family's turn markers (``<|im_start|>`` for ChatML) and on the
end-of-turn token, not only on the end-of-sequence token: a reply never runs on into a
made-up next turn.

``afs_build.deploy.server.start`` runs this module in the background; ``--token`` is how
``afs stop`` recognises a process afs started (it is in the process's command line).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Optional, Sequence

MODELS_PATHS = ("/v1/models", "/models")


def not_served(model: str, alias: str) -> dict:
    """The OpenAI-style error body for a request naming another model."""
    return {"error": {"message": f"model '{model}' is not served here; this server serves "
                                 f"'{alias}'",
                      "type": "invalid_request_error", "code": "model_not_found"}}


class OnlyAlias:
    """ASGI wrapper: only `alias` is served here; other model names get 404 model_not_found."""

    def __init__(self, app, alias: str):
        self.app = app
        self.alias = alias
        self.model = {"id": alias, "object": "model", "owned_by": "afs", "permissions": []}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"].rstrip("/") or "/"
        method = scope["method"]
        if method == "GET" and path in MODELS_PATHS:
            return await _json(send, 200, {"object": "list", "data": [self.model]})
        if method == "GET" and path.startswith(tuple(p + "/" for p in MODELS_PATHS)):
            name = path.split("/", 3)[-1] if path.startswith("/v1/") else path.split("/", 2)[-1]
            if name == self.alias:
                return await _json(send, 200, self.model)
            return await _json(send, 404, not_served(name, self.alias))
        if method != "POST":
            return await self.app(scope, receive, send)

        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        model = _requested_model(body)
        if model is not None and model != self.alias:
            return await _json(send, 404, not_served(model, self.alias))

        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


def _requested_model(body: bytes) -> Optional[str]:
    """The body's ``model`` when it is a string; anything else is left to the server to judge."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    model = data.get("model") if isinstance(data, dict) else None
    return model if isinstance(model, str) else None


async def _json(send, status: int, body: dict) -> None:
    raw = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(raw)).encode())]})
    await send({"type": "http.response.body", "body": raw})


def chat_format(model: Path, alias: str) -> Optional[str]:
    """Register a chat handler for `model` that stops on every end token; its name, or None.

    None (no template in the GGUF) leaves llama-cpp-python's own choice.
    """
    from llama_cpp import Llama, llama_chat_format

    from .deploy.ollama import family_of

    vocab = Llama(model_path=str(model), vocab_only=True, verbose=False)
    template = vocab.metadata.get("tokenizer.chat_template")
    if not template:
        return None

    def text(token: int) -> str:
        if token < 0:
            return ""
        return vocab.detokenize([token], special=True).decode("utf-8", "replace")

    stop_ids = {vocab.token_eos()}
    family = family_of(template)
    for marker in family.stops if family else ():
        ids = vocab.tokenize(marker.encode(), add_bos=False, special=True)
        # One id only when the marker is a special token of this vocabulary.
        if len(ids) == 1 and vocab.tokenize(marker.encode(), add_bos=False, special=False) != ids:
            stop_ids.add(ids[0])
    formatter = llama_chat_format.Jinja2ChatFormatter(
        template=template, eos_token=text(vocab.token_eos()), bos_token=text(vocab.token_bos()),
        stop_token_ids=sorted(i for i in stop_ids if i >= 0))
    name = f"afs-{alias}"
    llama_chat_format.LlamaChatCompletionHandlerRegistry().register_chat_completion_handler(
        name, formatter.to_chat_handler(), overwrite=True)
    vocab.close()
    return name


def build_app(model: Path, alias: str, *, n_ctx: int, host: str = "127.0.0.1", port: int = 8000,
              n_threads: Optional[int] = None, retrieval: Optional[Path] = None):
    """The wrapped ASGI app serving `model` as `alias` (loads the model: takes a moment)."""
    from llama_cpp.server.app import create_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    os.environ.pop("CONFIG_FILE", None)  # create_app would read its settings from there instead
    extra = {"n_threads": n_threads} if n_threads else {}
    settings = ModelSettings(model=str(model), model_alias=alias, n_ctx=n_ctx,
                             chat_format=chat_format(model, alias), verbose=False, **extra)
    app = create_app(server_settings=ServerSettings(host=host, port=port),
                     model_settings=[settings])
    app = OnlyAlias(app, alias)
    if retrieval is not None:  # /v1/embeddings, /v1/search and chat that retrieves first
        from .retrieval.endpoints import wrap

        app = wrap(app, retrieval, alias)
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
    parser.add_argument("--n-threads", type=int, default=None)
    parser.add_argument("--token", default="", help="marks a server afs started (afs stop)")
    parser.add_argument("--retrieval", type=Path, default=None,
                        help="retrieval settings written by deploy (afs_build.retrieval.endpoints)")
    args = parser.parse_args(argv)
    # ggml's OpenMP threads spin while idle otherwise; must be set before llama_cpp loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    import uvicorn

    app = build_app(args.model, args.alias, n_ctx=args.n_ctx, host=args.host, port=args.port,
                    n_threads=args.n_threads, retrieval=args.retrieval)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
