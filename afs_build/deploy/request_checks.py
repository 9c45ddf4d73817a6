"""What a good request to a specialist's server is: parsed, validated, made safe to run.

:class:`RequestChecker` reads a POST body the way llama-cpp-python would and refuses, with an
OpenAI-style error, what it would answer with a 500 or worse:

- a body that is not UTF-8, not JSON (NaN and lone surrogates included) or not an object;
- another model's name (404 ``model_not_found``); a missing one is filled in with the alias,
  so the answer never names the server's file;
- what the endpoint's own request model (llama-cpp-python's pydantic types) rejects;
- token ids outside the vocabulary, an empty prompt, several prompts in one request;
- a grammar llama.cpp cannot parse (``grammar``, or the one a ``response_format`` or
  ``tool_choice`` schema becomes): llama-cpp-python hands an unparsed grammar on as a null
  sampler, and the server process dies;
- messages the chat template cannot render, a prompt longer than the context.

It also asks for a few tokens less than the room the context leaves: llama-cpp-python runs
a generation that reaches the very end of the context into a llama_decode failure.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Optional

# POST endpoints that are served, and llama-cpp-python's model of each one's body.
REQUEST_TYPES = {
    "/v1/chat/completions": "CreateChatCompletionRequest",
    "/v1/completions": "CreateCompletionRequest",
    "/extras/tokenize": "TokenizeInputRequest",
    "/extras/tokenize/count": "TokenizeInputRequest",
    "/extras/detokenize": "DetokenizeInputRequest",
}
MAX_PROBLEMS = 3
# Tokens kept free at the end of the context: llama-cpp-python generates past max_tokens
# while the text so far ends in what looks like part of a UTF-8 character.
CONTEXT_MARGIN = 8


def error(message: str, kind: str = "invalid_request_error", code: Optional[str] = None,
          param: Optional[str] = None) -> dict:
    """An OpenAI-style error body."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def not_served(model: str, alias: str) -> dict:
    """The error body for a request naming another model."""
    return error(f"model '{model}' is not served here; this server serves '{alias}'",
                 code="model_not_found")


class BadRequest(Exception):
    """A request the guard answers itself: the status and the error body."""

    def __init__(self, status: int, body: dict, close: bool = False):
        super().__init__(body["error"]["message"])
        self.status, self.body = status, body
        self.close = close  # end the connection after answering (its body was left unread)


class RequestChecker:
    """Checks the POST bodies sent to `alias`: see the module docstring.

    `grammar_ok`, `count_tokens` and `render_chat` come from the served model (its
    vocabulary and chat template); without them those checks are skipped.
    """

    def __init__(self, alias: str, *, n_ctx: int, n_vocab: Optional[int] = None,
                 grammar_ok: Optional[Callable[[str], bool]] = None,
                 count_tokens: Optional[Callable[[str, int], int]] = None,
                 render_chat: Optional[Callable[..., Any]] = None):
        self.alias, self.n_ctx, self.n_vocab = alias, n_ctx, n_vocab
        self.grammar_ok = grammar_ok  # GBNF text -> whether llama.cpp parses it
        self.count_tokens = count_tokens  # (prompt, at most) -> its tokens, as the server counts
        self.render_chat = render_chat  # the chat template, as the server renders it

    def __call__(self, path: str, body: bytes) -> dict:
        """The parsed body of a POST to `path`, the model filled in; BadRequest otherwise."""
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as err:
            raise BadRequest(400, error(f"the request body is not valid UTF-8 (byte "
                                        f"{err.start})")) from None
        try:
            data = json.loads(text, parse_constant=_no_constant)
        except json.JSONDecodeError as err:
            raise BadRequest(400, error(f"the request body is not valid JSON: {err.msg} (line "
                                        f"{err.lineno}, column {err.colno})")) from None
        except (ValueError, RecursionError):  # an integer of thousands of digits, deep nesting
            raise BadRequest(400, error("the request body is not JSON this server can read "
                                        "(a number too long or nesting too deep)")) from None
        if not isinstance(data, dict):
            raise BadRequest(400, error(f"expected a JSON object as the request body, got "
                                        f"{type(data).__name__}"))
        try:
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:  # "\ud800": valid JSON, but not Unicode text
            raise BadRequest(400, error("the request holds a lone surrogate (\\ud800 to "
                                        "\\udfff), which is not Unicode text")) from None
        model = data.get("model")
        if model is None:
            data["model"] = self.alias
        elif not isinstance(model, str):
            raise BadRequest(400, error("model: expected a string", param="model"))
        elif model != self.alias:
            raise BadRequest(404, not_served(model, self.alias))
        if path == "/v1/chat/completions":
            _plain_messages(data)
        _validate(REQUEST_TYPES[path], data)
        self._check_tokens(path, data)
        self._check_grammars(path, data)
        if path in ("/v1/completions", "/v1/chat/completions"):
            self._check_generation(path, data)
        return data

    def _check_generation(self, path: str, data: dict) -> None:
        """What llama-cpp-python fails on with a 500 rather than an answer."""
        prompt = data.get("prompt", "")
        if path == "/v1/completions":
            prompt = prompt if isinstance(prompt, str) else "".join(prompt)
            if not prompt:
                raise BadRequest(400, error("prompt: empty; expected text to continue",
                                            param="prompt"))
        elif self.render_chat is not None:
            try:
                prompt = self.render_chat(messages=data["messages"], tools=data.get("tools"),
                                          functions=data.get("functions")).prompt
            except Exception as err:  # the template's own raise_exception, or its type errors
                raise BadRequest(400, error(f"messages: this model's chat template cannot "
                                            f"render them: {str(err)[:200]}",
                                            param="messages")) from None
        else:
            return
        # llama-cpp-python fills "as many as fit" (no max_tokens in a chat, or one <= 0) and
        # cuts a larger number down to the room left, but a generation that reaches the very
        # end of the context then fails in llama_decode (a 500, the answer lost). Ask for a
        # few tokens less than the room left.
        wanted = data.get("max_tokens")
        if "max_tokens" not in data and path == "/v1/completions":
            wanted = 16  # the request model's default
        if wanted is None or wanted <= 0:
            wanted = self.n_ctx
        if self.count_tokens is not None:
            used = self.count_tokens(prompt, self.n_ctx) + (
                self.count_tokens(data["suffix"], self.n_ctx) if data.get("suffix") else 0)
            if used >= self.n_ctx:
                raise BadRequest(400, error(f"This model's maximum context length is "
                                            f"{self.n_ctx} tokens; the prompt has at least "
                                            f"{used}",
                                            code="context_length_exceeded", param="messages"
                                            if path == "/v1/chat/completions" else "prompt"))
            wanted = max(1, min(wanted, self.n_ctx - used - CONTEXT_MARGIN))
        data["max_tokens"] = wanted

    def _check_grammars(self, path: str, data: dict) -> None:
        """Every grammar the request would sample with must parse (see the module docstring)."""
        if self.grammar_ok is None:
            return
        for param, grammar in _grammars(path, data):
            if not self.grammar_ok(grammar):
                raise BadRequest(400, error(f"{param}: llama.cpp cannot parse this grammar "
                                            f"(GBNF, with a 'root' rule)", param=param))

    def _check_tokens(self, path: str, data: dict) -> None:
        """Token ids must lie in the vocabulary (llama.cpp does not check them itself)."""
        if self.n_vocab is None:
            return
        ids: list[tuple[str, Any]] = []
        if path == "/extras/detokenize":
            ids += [("tokens", t) for t in data.get("tokens") or ()]
        if data.get("logit_bias") and data.get("logit_bias_type") != "tokens":
            ids += [("logit_bias", k) for k in data["logit_bias"]]
        for param, value in ids:
            try:
                token = int(value)
            except (TypeError, ValueError):
                token = -1
            if not 0 <= token < self.n_vocab:
                raise BadRequest(400, error(f"{param}: {value!r} is not a token id of this "
                                            f"model (0 to {self.n_vocab - 1})", param=param))
        if path == "/v1/completions" and isinstance(data.get("prompt"), list) \
                and len(data["prompt"]) > 1:
            raise BadRequest(400, error("prompt: one prompt per request", param="prompt"))


def _no_constant(name: str):
    raise BadRequest(400, error(f"the request body is not valid JSON: {name} is not a JSON "
                                f"number"))


def _plain_messages(data: dict) -> None:
    """Chat contents as the template takes them: text parts joined, null as empty text.

    OpenAI clients may send a message's content as a list of parts; this model reads text
    only, so text parts are joined and any other part is refused.
    """
    messages = data.get("messages")
    if not isinstance(messages, list):
        return  # the request model says what is wrong
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if content is None:
            message["content"] = ""
        elif isinstance(content, list):
            texts = []
            for part in content:
                kind = part.get("type") if isinstance(part, dict) else None
                if kind != "text" or not isinstance(part.get("text"), str):
                    raise BadRequest(400, error(f"messages.{i}.content: this model reads text "
                                                f"only; got a part of type {kind!r}",
                                                param=f"messages.{i}.content"))
                texts.append(part["text"])
            message["content"] = "\n".join(texts)


def _grammars(path: str, data: dict) -> list[tuple[str, str]]:
    """The grammars llama-cpp-python would build for this request, as it builds them."""
    from llama_cpp import llama_chat_format, llama_grammar

    out = []
    if data.get("grammar") is not None:
        out.append(("grammar", data["grammar"]))
    if path != "/v1/chat/completions":
        return out
    response_format = data.get("response_format")
    if response_format and response_format.get("type") == "json_object":
        made = llama_chat_format._grammar_for_response_format(response_format)
        if made is not None:
            out.append(("response_format", made._grammar))
    choice, tools = data.get("tool_choice"), data.get("tools")
    if isinstance(choice, dict) and tools is not None:
        name = choice["function"]["name"]
        tool = next((t for t in tools if t["function"]["name"] == name), None)
        if tool is None:
            raise BadRequest(400, error(f"tool_choice: no tool named {name!r} in tools",
                                        param="tool_choice"))
        try:
            made = llama_grammar.LlamaGrammar.from_json_schema(
                json.dumps(tool["function"].get("parameters")), verbose=False)
            out.append(("tool_choice", made._grammar))
        except Exception:  # llama-cpp-python falls back to plain JSON: a grammar that parses
            pass
    return out


def _validate(type_name: str, data: dict) -> None:
    """Check `data` with llama-cpp-python's own request model; BadRequest naming the fields."""
    import pydantic
    from llama_cpp.server import types

    try:
        getattr(types, type_name).model_validate(data)
    except pydantic.ValidationError as err:
        problems = err.errors(include_input=False, include_url=False)
        shown = "; ".join(f"{'.'.join(map(str, p['loc'])) or 'body'}: {p['msg']}"
                          for p in problems[:MAX_PROBLEMS])
        more = f" (and {len(problems) - MAX_PROBLEMS} more)" if len(problems) > MAX_PROBLEMS else ""
        param = ".".join(map(str, problems[0]["loc"])) if problems else None
        raise BadRequest(400, error(shown + more, param=param or None)) from None
