"""A fast approximate token count, for mix targets and statistics before a tokenizer is chosen.

The estimate splits text into word runs (``\\w+``) and single symbol characters and counts
1.3 tokens per word run and 1 per symbol. Subword tokenizers (Llama, Qwen, GPT-4 style BPE)
spend about 1.3 tokens on an English word once rare words and suffixes are split off, and
about one per punctuation or operator character in code. Whitespace is free: indentation runs
mostly merge into one token with their neighbour. Expect the estimate within about 20% of a
real BPE count on English and code; the real tokenizer replaces it when training is planned.
"""

from __future__ import annotations

import re
import string

from afs_build.data.records import canonical_json

TOKENS_PER_WORD = 1.3
TOKENS_PER_SYMBOL = 1.0
# Role markers and separators a chat template adds around each message.
TOKENS_PER_MESSAGE = 4

# One pass: a word run matches with its group set, a symbol matches with the group empty.
_PIECES = re.compile(r"(\w+)|[^\w\s]")
# ASCII text (most of it) is counted five times faster with bytes.translate, same result:
# word characters become 'a' and the rest spaces to count word runs; deleting word
# characters and whitespace leaves the symbols.
_WORD_BYTES = (string.ascii_letters + string.digits + "_").encode()
_SPACE_BYTES = b"\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f "  # what re's \s matches in ASCII
_NOT_SYMBOLS = _WORD_BYTES + _SPACE_BYTES
_RUNS = bytes(ord("a") if byte in _WORD_BYTES else ord(" ") for byte in range(256))


def estimate_tokens(text: str) -> int:
    """About how many tokens ``text`` takes: 1.3 per word run plus 1 per symbol character."""
    if not text:
        return 0
    if text.isascii():
        raw = text.encode()
        words = len(raw.translate(_RUNS).split())
        symbols = len(raw.translate(None, _NOT_SYMBOLS))
    else:
        pieces = _PIECES.findall(text)
        symbols = pieces.count("")
        words = len(pieces) - symbols
    return int(words * TOKENS_PER_WORD + symbols * TOKENS_PER_SYMBOL + 0.5)


def sample_tokens(sample: dict) -> int:
    """About how many tokens a canonical sample takes once rendered with a chat template.

    A precomputed integer ``metadata["tokens"]`` (set by a stage with a real tokenizer) wins.
    """
    known = sample.get("metadata", {}).get("tokens")
    if isinstance(known, int) and not isinstance(known, bool):
        return known
    total = 0
    for message in sample["messages"]:
        total += TOKENS_PER_MESSAGE + estimate_tokens(message.get("content") or "")
        for call in message.get("tool_calls") or ():
            arguments = call.get("arguments")
            if not isinstance(arguments, str):
                arguments = canonical_json(arguments)
            total += estimate_tokens(call.get("name", "")) + estimate_tokens(arguments)
    if sample.get("tools"):
        total += estimate_tokens(canonical_json(sample["tools"]))
    return total
