"""The request checker on the tiny model's real vocabulary and chat template, no server:
the room asked for a generation, token counting, and what is filled in or refused."""

from __future__ import annotations

import json

import pytest

from afs_build import serve
from afs_build.deploy.request_checks import CONTEXT_MARGIN, BadRequest, RequestChecker
from deploy_helpers import shared_tiny_gguf

N_CTX = 256


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    return shared_tiny_gguf(tmp_path_factory)


@pytest.fixture(scope="module")
def checker(tiny_gguf):
    _, n_vocab, formatter = serve.inspect_model(tiny_gguf, "majora")
    vocabulary = serve.Vocabulary(tiny_gguf)
    return RequestChecker("majora", n_ctx=N_CTX, n_vocab=n_vocab, grammar_ok=vocabulary.parses,
                          count_tokens=vocabulary.count, render_chat=formatter), vocabulary


def check(checker, path: str, body: dict) -> dict:
    return checker[0](path, json.dumps(body).encode())


def test_counting_matches_llama_cpp_and_skips_what_cannot_fit(checker, tiny_gguf):
    from llama_cpp import Llama

    vocabulary = checker[1]
    llama = Llama(model_path=str(tiny_gguf), vocab_only=True, verbose=False)
    for text in ("Hello", "What is 12 plus 30? <|im_end|>", "café 東京 🙂 " * 50):
        assert vocabulary.count(text) == len(llama.tokenize(text.encode(), add_bos=True,
                                                            special=True))
    huge = "a" * (vocabulary.longest * N_CTX * 2)
    assert vocabulary.count(huge, N_CTX) > N_CTX  # answered from its length alone
    assert vocabulary.count("a" * 40000) == len(llama.tokenize(b"a" * 40000, add_bos=True,
                                                               special=True))
    assert vocabulary.parses('root ::= "yes" | "no"') and not vocabulary.parses("root ::= (")


def test_the_room_asked_for_stops_short_of_the_end_of_the_context(checker):
    vocabulary = checker[1]
    used = vocabulary.count("Hello")
    for asked, expected in ((None, N_CTX - used - CONTEXT_MARGIN), (0, N_CTX - used - CONTEXT_MARGIN),
                            (10 ** 6, N_CTX - used - CONTEXT_MARGIN), (5, 5)):
        body = {"prompt": "Hello", **({} if asked is None else {"max_tokens": asked})}
        data = check(checker, "/v1/completions", body)
        assert data["max_tokens"] == (16 if asked is None else expected)
    data = check(checker, "/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}]})
    prompt = checker[0].render_chat(messages=[{"role": "user", "content": "Hi"}]).prompt
    assert data["max_tokens"] == N_CTX - vocabulary.count(prompt) - CONTEXT_MARGIN
    assert data["model"] == "majora"


def test_what_is_refused_says_where(checker):
    with pytest.raises(BadRequest) as err:
        check(checker, "/v1/chat/completions", {"messages": [{"role": "assistant"}], "top_p": "x"})
    assert err.value.status == 400 and err.value.body["error"]["param"] == "top_p"
    with pytest.raises(BadRequest) as err:
        check(checker, "/v1/completions", {"model": "other", "prompt": "x"})
    assert err.value.status == 404 and err.value.body["error"]["code"] == "model_not_found"
    with pytest.raises(BadRequest) as err:
        check(checker, "/v1/completions", {"prompt": "x " * 1000})
    assert err.value.body["error"]["code"] == "context_length_exceeded"
