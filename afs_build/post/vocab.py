"""The tokenizer a GGUF carries: tokens, types, merges, special ids, flags and the pre-tokenizer.

Read through transformers, written the way llama.cpp's reference ``convert_hf_to_gguf.py``
writes a byte-level BPE vocabulary, plus three explicit facts the reference leaves to
llama.cpp's guessing: ``add_bos_token`` and ``add_eos_token`` always, and the end-of-turn
token found by rendering the chat template. The tokenizer's pre-tokenizer name, which decides
how llama.cpp splits text before BPE, is found the reference's way (a hash of the ids of a
check text, for published tokenizers) and, for a tokenizer trained in house, from the split
rules transformers actually applies. Whatever the name, only a parity check
(:mod:`afs_build.post.parity`) proves llama.cpp tokenizes like transformers.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..errors import StageError, one_of

# The reference converter's check text (`get_vocab_base_pre` in llama.cpp's
# convert_hf_to_gguf.py), written with escapes so that no editor can change it.
CHKTXT = (
    '\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n\U0001f680 (normal) \U0001f636\u200d'
    '\U0001f32b\ufe0f (multiple emojis concatenated) \u2705 \U0001f999\U0001f999 3 33 333 3333 '
    '33333 333333 3333333 33333333 3.3 3..3 3...3 \u1780\u17b6\u1793\u17cb\u178f\u17c2\u1796'
    '\u17b7\u179f\u17c1\u179f\u17a2\u17b6\u1785\U0001f601 ?\u6211\u60f3\u5728apple\u5de5\u4f5c'
    '1314151\u5929\uff5e ------======= \u043d\u0435\u0449\u043e \u043d\u0430 \u0411\u044a\u043b'
    '\u0433\u0430\u0440\u0441\u043a\u0438 \'\'\'\'\'\'```````""""......!!!!!!?????? I\'ve been '
    '\'told he\'s there, \'RE you sure? \'M not sure I\'ll make it, \'D you like some tea? '
    'We\'Ve a\'lL'
)
# sha256(str(ids of CHKTXT)) -> llama.cpp pre-tokenizer name, for published tokenizers (values
# from the reference converter, which llama.cpp's convert_hf_to_gguf_update.py generates).
PRE_BY_HASH = {
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",  # Qwen1.5/2/2.5
    "d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c": "qwen2",  # Qwen3
    "b3f499bb4255f8ca19fccd664443283318f2fd2414d5e0b040fbdd0cc195d6c5": "deepseek-r1-qwen",
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",  # SmolLM, SmolLM2
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",  # Llama 3
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",
}
# A tokenizer trained in house has its own vocabulary, so no hash can know it; what decides
# llama.cpp's split is the pre-tokenizer's rules, as transformers applies them (transformers 5
# rebuilds a qwen2 tokenizer's rules whatever tokenizer.json says, so read them off the loaded
# tokenizer, not the file). Each entry is the llama.cpp name and the exact rule list.
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
               r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_BYTES = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False}
PRE_BY_RULES = (
    ("qwen2", [{"type": "Split", "pattern": {"Regex": QWEN2_SPLIT}, "behavior": "Isolated",
                "invert": False}, _BYTES]),
    ("llama-bpe", [{"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT}, "behavior": "Isolated",
                    "invert": False}, _BYTES]),
    ("smollm", [{"type": "Digits", "individual_digits": True}, {**_BYTES, "use_regex": True}]),
    ("gpt-2", [{**_BYTES, "use_regex": True}]),
)
SAFE_NORMALIZERS = (None, {"type": "NFC"})
PROBE = [{"role": "user", "content": "AFS-PROBE-QUESTION"},
         {"role": "assistant", "content": "AFS-PROBE-ANSWER"}]


@dataclass
class Vocab:
    """The tokenizer facts a GGUF carries, read through transformers."""

    tokens: list[str]
    toktypes: list[int]
    merges: list[str]
    pre: str
    pre_source: str  # "hash" or "rules": how the pre-tokenizer name was found
    special: dict[str, int] = field(default_factory=dict)  # bos, eos, eot, pad, unk -> id
    add_bos: bool = False
    add_eos: bool = False
    chat_template: Optional[str] = None


def pre_tokenizer_name(tokenizer, folder: Path) -> tuple[str, str]:
    """llama.cpp's pre-tokenizer name for `tokenizer`, and ``hash`` or ``rules`` (how found)."""
    ids = tokenizer.encode(CHKTXT)
    digest = hashlib.sha256(str(ids).encode()).hexdigest()
    if digest in PRE_BY_HASH:
        return PRE_BY_HASH[digest], "hash"
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    rules = _rules(backend.get("pre_tokenizer"))
    if backend.get("normalizer") in SAFE_NORMALIZERS:
        for pre, known in PRE_BY_RULES:
            if rules == known:
                return pre, "rules"
    raise StageError(
        f"cannot convert the tokenizer in {folder} to GGUF: afs does not know llama.cpp's name "
        f"for its pre-tokenizer (check-text hash {digest}; rules {json.dumps(rules)}), and with "
        f"a wrong name llama.cpp splits text differently from transformers. Fix: use a base "
        f"model whose tokenizer llama.cpp knows as one of "
        f"{one_of({n for n, _ in PRE_BY_RULES} | set(PRE_BY_HASH.values()))}, or add the "
        f"name llama.cpp's convert_hf_to_gguf_update.py gives this tokenizer to PRE_BY_HASH in "
        f"afs_build/post/vocab.py")


def _rules(pre: Optional[dict]) -> list:
    """The pre-tokenizer as a flat list, without fields that do not change the ids."""
    if pre is None:
        return []
    steps = pre["pretokenizers"] if pre.get("type") == "Sequence" else [pre]
    return [{k: v for k, v in step.items() if k != "trim_offsets"} for step in steps]


def end_of_turn(tokenizer) -> Optional[int]:
    """The special token the chat template puts right after an assistant answer, if any."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    text = tokenizer.apply_chat_template(PROBE, tokenize=False)
    after = text.split(PROBE[1]["content"], 1)[1] if PROBE[1]["content"] in text else ""
    ids = tokenizer.encode(after, add_special_tokens=False) if after else []
    if ids and ids[0] in tokenizer.added_tokens_decoder and tokenizer.added_tokens_decoder[ids[0]].special:
        return ids[0]
    return None


def looks_special(token: str) -> bool:
    """Added tokens the reference marks CONTROL though their tokenizer does not say special."""
    return (token in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
            or (token.startswith("<|") and token.endswith("|>"))
            or (token.startswith("<\uff5c") and token.endswith("\uff5c>"))  # deepseek's fullwidth bars
            or (token.startswith("<unused") and token.endswith(">")))


def read_vocab(folder: Path, config: dict) -> Vocab:
    """Tokens, types, merges, special ids and flags, the way the reference reads a BPE vocab."""
    import gguf
    from transformers import AutoTokenizer

    folder = Path(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    model = json.loads(backend.to_str())["model"] if backend is not None else {}
    if model.get("type") != "BPE" or model.get("byte_fallback"):
        raise StageError(f"cannot convert the tokenizer in {folder} to GGUF: afs's converter "
                         f"supports byte-level BPE tokenizers (tokenizer.json), not "
                         f"{model.get('type') or type(tokenizer).__name__}")
    vocab = tokenizer.get_vocab()
    n_vocab = config.get("vocab_size", len(vocab))
    if max(vocab.values()) >= n_vocab:
        raise StageError(f"{folder}: the tokenizer has ids up to {max(vocab.values())} but "
                         f"config.json says vocab_size {n_vocab}")
    pre, source = pre_tokenizer_name(tokenizer, folder)

    reverse = {i: t for t, i in vocab.items()}
    added = tokenizer.get_added_vocab()
    decoder = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(n_vocab):
        token = reverse.get(i)
        if token is None:  # the embedding is padded past the tokenizer (Qwen2.5: 151936 rows)
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        if token in added:
            # llama.cpp takes added tokens as pre-normalized, as the reference notes
            if not decoder[i].normalized:
                token = tokenizer.decode(tokenizer.encode(token, add_special_tokens=False))
            if decoder[i].special or looks_special(token):
                types.append(gguf.TokenType.CONTROL)
            else:
                token = token.replace("\u2581", " ")
                types.append(gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
        tokens.append(token)

    merges = gguf.SpecialVocab(folder, load_merges=True, n_vocab=n_vocab).merges
    if not merges:
        raise StageError(f"{folder}: tokenizer.json has no BPE merges")
    special = {}
    for kind in ("bos", "eos", "pad", "unk"):
        tid = getattr(tokenizer, f"{kind}_token_id", None)
        if tid is None:  # as the reference does: config.json names what the tokenizer does not
            value = config.get(f"{kind}_token_id")
            tid = value[0] if isinstance(value, list) and value else value
        if isinstance(tid, int) and 0 <= tid < n_vocab:
            special[kind] = tid
    if (eot := end_of_turn(tokenizer)) is not None:
        special["eot"] = eot
    probe_on = tokenizer.encode("a", add_special_tokens=True)
    probe_off = tokenizer.encode("a", add_special_tokens=False)
    add_bos = "bos" in special and probe_on[:1] == [special["bos"]] and probe_off[:1] != probe_on[:1]
    add_eos = "eos" in special and probe_on[-1:] == [special["eos"]] and probe_off[-1:] != probe_on[-1:]
    template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else None
    return Vocab(tokens=tokens, toktypes=[int(t) for t in types], merges=merges, pre=pre,
                 pre_source=source, special=special, add_bos=add_bos, add_eos=add_eos,
                 chat_template=template)


def add_vocab(writer, vocab: Vocab) -> None:
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.toktypes)
    writer.add_token_merges(vocab.merges)
    for kind, tid in vocab.special.items():
        getattr(writer, {"unk": "add_unk_token_id", "pad": "add_pad_token_id"}.get(
            kind, f"add_{kind}_token_id"))(tid)
    writer.add_add_bos_token(vocab.add_bos)
    writer.add_add_eos_token(vocab.add_eos)
    if vocab.chat_template:
        writer.add_chat_template(vocab.chat_template)


def vocab_facts(vocab: Vocab) -> dict:
    """The tokenizer part of the report: what a reader of gguf.json wants to check."""
    import gguf

    names = {int(t): t.name.lower() for t in gguf.TokenType}
    counts: dict[str, int] = {}
    for t in vocab.toktypes:
        counts[names[t]] = counts.get(names[t], 0) + 1
    return {
        "model": "gpt2", "pre": vocab.pre, "pre_found_by": vocab.pre_source,
        "tokens": len(vocab.tokens), "merges": len(vocab.merges), "token_types": counts,
        "special": {k: {"id": v, "text": vocab.tokens[v]} for k, v in sorted(vocab.special.items())},
        "add_bos": vocab.add_bos, "add_eos": vocab.add_eos,
        "chat_template": bool(vocab.chat_template),
    }
