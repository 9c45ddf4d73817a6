"""Convert a Hugging Face causal LM (Llama or Qwen2 family) to one GGUF file, streaming.

afs's own converter on the `gguf` package: it takes the tensors as an iterator of
``(HF name, array)`` so a caller can hand in weights merged on the fly (see
:func:`afs_build.post.merge.merged_tensors`) and nothing but one tensor is held in memory.
GGUF puts the tensor table before the data; the table follows from config.json
(:func:`plan_tensors`), so the header is written first and each tensor is written once, at
its place, in whatever order it arrives. The file is renamed into place at the end, so a
killed run leaves no file behind.

It writes what llama.cpp's reference ``convert_hf_to_gguf.py`` writes for the same folder
(``tests/post/test_gguf.py`` compares the two), plus three explicit facts the reference leaves
to llama.cpp's guessing: ``add_bos_token`` and ``add_eos_token`` always, and the end-of-turn
token found by rendering the chat template. The tokenizer's pre-tokenizer name, which decides
how llama.cpp splits text before BPE, is found the reference's way (a hash of the ids of a
check text, for published tokenizers) and, for a tokenizer trained in house, from the split
rules transformers actually applies. Whatever the name, only a parity check
(:mod:`afs_build.post.parity`) proves llama.cpp tokenizes like transformers.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

import numpy as np

from ..atomic import atomic_path
from ..errors import StageError, one_of
from .architectures import FAMILIES

OUTTYPES = ("F16", "BF16", "F32")

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


# --- tensors -----------------------------------------------------------------------------------


SAFETENSORS_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}
CHUNK = 1 << 24  # values converted at a time: a block of rows, never a whole float32 embedding


def read_safetensors(folder: Path) -> Iterator[tuple[str, Any]]:
    """Yield ``(name, torch tensor)`` from a folder's safetensors files, one tensor at a time.

    Plain reads, not the mmap `safetensors.safe_open` uses: a mapped file's pages count as
    this process's memory until the file is closed, so a streaming pass over a mapped 1 GB
    file peaks at 1 GB more than it needs.
    """
    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise StageError(f"{folder}: no *.safetensors files; save the model with "
                         "save_pretrained(..., safe_serialization=True)")
    for path in files:
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
            header.pop("__metadata__", None)
            for name, info in sorted(header.items(), key=lambda item: item[1]["data_offsets"]):
                if info["dtype"] not in SAFETENSORS_DTYPES:
                    raise StageError(f"{path}: tensor {name!r} is {info['dtype']}; afs converts "
                                     f"float tensors ({', '.join(SAFETENSORS_DTYPES)}) only")
                # no local names the tensor: the consumer's `del` must be able to free it
                yield name, _read_tensor(f, 8 + size, info, path, name)


def _read_tensor(f, data_start: int, info: dict, path: Path, name: str):
    import torch

    dtype = getattr(torch, SAFETENSORS_DTYPES[info["dtype"]])
    begin, end = info["data_offsets"]
    if begin == end:
        return torch.empty(info["shape"], dtype=dtype)
    f.seek(data_start + begin)
    buffer = bytearray(end - begin)
    if f.readinto(buffer) != len(buffer):
        raise StageError(f"{path}: truncated file (tensor {name!r})")
    return torch.frombuffer(buffer, dtype=dtype).reshape(info["shape"])


def to_numpy(array: Any) -> np.ndarray:
    """A float array as numpy: torch tensors (bf16 included) and numpy arrays alike."""
    if isinstance(array, np.ndarray):
        return array
    import torch

    if array.dtype not in (torch.float16, torch.float32):
        array = array.to(torch.float32)  # numpy has no bfloat16
    return array.detach().cpu().numpy()


def encode(array: Any, qtype) -> np.ndarray:
    """`array` (torch or numpy, any float dtype) as GGML type `qtype`, a block of rows at a time.

    F16 goes through torch: the same round-to-nearest-even as numpy's ``astype`` (the reference
    converter's), several times faster.
    """
    import gguf
    import torch

    f16 = qtype == gguf.GGMLQuantizationType.F16
    if array.ndim <= 1:
        blocks, step = [array], None
    else:
        step = max(1, CHUNK // max(1, int(np.prod(array.shape[1:]))))
        blocks = (array[i:i + step] for i in range(0, array.shape[0], step))
    out = None
    for i, block in enumerate(blocks):
        if f16:
            block = torch.as_tensor(block).to(torch.float16).numpy()
        else:
            block = gguf.quants.quantize(np.asarray(to_numpy(block), dtype=np.float32), qtype)
        if step is None:
            return block
        if out is None:
            out = np.empty((array.shape[0], *block.shape[1:]), dtype=block.dtype)
        out[i * step:i * step + len(block)] = block
    return out


def permute_qk(weights: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder q/k rows from HF's rotate-half layout to llama.cpp's interleaved rope layout."""
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


# --- config ------------------------------------------------------------------------------------


def family(config: dict) -> tuple[str, str, bool]:
    """``(HF architecture, GGUF architecture, permute q/k)`` of a config, or a StageError."""
    archs = config.get("architectures") or [config.get("model_type", "?")]
    hf_arch = archs[0]
    if hf_arch not in FAMILIES:
        raise StageError(f"cannot convert architecture {hf_arch!r} to GGUF: afs's converter "
                         f"supports {one_of(FAMILIES)}")
    return (hf_arch, *FAMILIES[hf_arch])


def rope_theta(config: dict) -> float:
    """The rope base; a config with rope scaling is refused (its GGUF would answer wrongly)."""
    rope = config.get("rope_parameters") or {}
    scaling = config.get("rope_scaling") or {}
    kind = rope.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    if kind != "default":
        raise StageError(f"cannot convert a model with rope scaling {kind!r} to GGUF: afs's "
                         "converter supports plain rope only")
    return float(rope.get("rope_theta", config.get("rope_theta", 10000.0)))


def add_hparams(writer, config: dict, arch: str, name: str, ftype) -> None:
    """The model's shape keys, as the reference converter writes them for `arch`."""
    heads = config["num_attention_heads"]
    writer.add_type("model")
    writer.add_name(name)
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.get("num_key_value_heads", heads))
    writer.add_rope_freq_base(rope_theta(config))
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    if (head_dim := config.get("head_dim")) is not None:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_file_type(ftype)
    if arch == "llama":
        writer.add_vocab_size(config["vocab_size"])
        writer.add_rope_dimension_count(head_dim or config["hidden_size"] // heads)
    writer.add_quantization_version(2)  # GGML_QNT_VERSION, as the reference writes it


def plan_tensors(config: dict, arch: str, qtype) -> dict[str, tuple[tuple[int, ...], Any]]:
    """Every tensor the GGUF will hold, in file order: ``{name: (numpy shape, GGML type)}``.

    Known before the first tensor arrives, so the header is written first and each tensor
    goes straight to its place in the file, whatever order the stream brings them in. It is
    also the check that the stream is complete and that the weights fit config.json.
    As the reference: 1-D tensors and norms stay F32 (llama.cpp expects them so).
    """
    import gguf

    h, heads = config["hidden_size"], config["num_attention_heads"]
    head_dim = config.get("head_dim") or h // heads
    q, kv = heads * head_dim, config.get("num_key_value_heads", heads) * head_dim
    ff, vocab = config["intermediate_size"], config["vocab_size"]
    attn_bias = arch == "qwen2" or bool(config.get("attention_bias"))
    plan = {"token_embd.weight": (vocab, h)}
    for i in range(config["num_hidden_layers"]):
        b = f"blk.{i}."
        plan.update({b + "attn_norm.weight": (h,), b + "attn_q.weight": (q, h),
                     b + "attn_k.weight": (kv, h), b + "attn_v.weight": (kv, h),
                     b + "attn_output.weight": (h, q)})
        if attn_bias:  # Qwen2 biases q, k and v; a Llama with attention_bias all four
            plan.update({b + "attn_q.bias": (q,), b + "attn_k.bias": (kv,), b + "attn_v.bias": (kv,)})
            if arch == "llama":
                plan[b + "attn_output.bias"] = (h,)
        plan.update({b + "ffn_norm.weight": (h,), b + "ffn_gate.weight": (ff, h),
                     b + "ffn_up.weight": (ff, h), b + "ffn_down.weight": (h, ff)})
        if arch == "llama" and config.get("mlp_bias"):
            plan.update({b + "ffn_gate.bias": (ff,), b + "ffn_up.bias": (ff,), b + "ffn_down.bias": (h,)})
    plan["output_norm.weight"] = (h,)
    if not config.get("tie_word_embeddings", False):
        plan["output.weight"] = (vocab, h)
    f32 = gguf.GGMLQuantizationType.F32
    return {name: (shape, f32 if len(shape) == 1 or name.endswith("_norm.weight") else qtype)
            for name, shape in plan.items()}


def nbytes(shape: tuple[int, ...], qtype) -> int:
    import gguf

    block, size = gguf.GGML_QUANT_SIZES[qtype]
    return int(np.prod(shape)) // block * size


# --- tokenizer ---------------------------------------------------------------------------------


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
        f"afs_build/post/gguf_convert.py")


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


# --- conversion --------------------------------------------------------------------------------


def convert(config: dict, tokenizer_folder: Path, tensors: Iterable[tuple[str, Any]], out: Path,
            *, outtype: str = "F16", name: str) -> dict:
    """Write `tensors` (HF names, streamed) and the tokenizer as one GGUF file at `out`.

    Norms, biases and other 1-D tensors stay F32; 2-D weights take `outtype`. Returns a
    JSON-ready report. Raises StageError for an unsupported architecture, tokenizer, outtype,
    an unknown tensor name or a stream that misses tensors.
    """
    import gguf

    if outtype not in OUTTYPES:
        raise StageError(f"GGUF outtype {outtype!r} is not supported; expected one of: "
                         f"{one_of(OUTTYPES)} (quantize afterwards for Q8_0, Q4_K_M, ...)")
    hf_arch, arch, permute = family(config)
    ftype = {"F32": gguf.LlamaFileType.ALL_F32, "F16": gguf.LlamaFileType.MOSTLY_F16,
             "BF16": gguf.LlamaFileType.MOSTLY_BF16}[outtype]
    qtype = gguf.GGMLQuantizationType[outtype]
    n_head = config["num_attention_heads"]
    n_kv = config.get("num_key_value_heads", n_head)
    tied = bool(config.get("tie_word_embeddings", False))
    vocab = read_vocab(tokenizer_folder, config)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], config["num_hidden_layers"])

    plan = plan_tensors(config, arch, qtype)
    out = Path(out)
    with atomic_path(out) as tmp:
        data_start, offsets, params = write_header(tmp, config, arch, name, ftype, plan, vocab)
        written: set[str] = set()
        with open(tmp, "r+b") as f:
            for hf_name, array in tensors:
                if hf_name.endswith(".rotary_emb.inv_freq"):
                    continue
                if tied and hf_name == "lm_head.weight":
                    continue  # llama.cpp reuses token_embd when output.weight is absent
                new_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
                if new_name is None or new_name not in plan:
                    raise StageError(f"cannot convert tensor {hf_name!r} of a {hf_arch} to GGUF: "
                                     "the name is not part of this architecture"
                                     + ("" if new_name is None else " as config.json describes it"))
                shape, qt = plan[new_name]
                if tuple(array.shape) != shape or new_name in written:
                    raise StageError(f"cannot convert tensor {hf_name!r} to GGUF: " + (
                        "it came twice" if new_name in written else
                        f"its shape {list(array.shape)} is not {list(shape)}, which config.json "
                        "implies"))
                if permute and hf_name.endswith(("q_proj.weight", "q_proj.bias")):
                    array = permute_qk(to_numpy(array), n_head)
                elif permute and hf_name.endswith(("k_proj.weight", "k_proj.bias")):
                    array = permute_qk(to_numpy(array), n_kv)
                data = encode(array, qt)
                del array  # one tensor in two forms at most
                f.seek(data_start + offsets[new_name])
                data.tofile(f)
                written.add(new_name)
                del data
            missing = [n for n in plan if n not in written]
            if missing:
                raise StageError(f"cannot write {out}: the {hf_arch} tensors are incomplete; "
                                 f"missing {len(missing)}: {', '.join(missing[:8])}"
                                 f"{' ...' if len(missing) > 8 else ''}")
            f.truncate(data_start + offsets[""])  # the padding after the last tensor
        size = os.path.getsize(tmp)
    types: dict[str, int] = {}
    for _, qt in plan.values():
        types[qt.name] = types.get(qt.name, 0) + 1
    return {
        "file": str(out), "name": name, "architecture": arch, "hf_architecture": hf_arch,
        "outtype": outtype, "tensors": len(plan), "tensor_types": dict(sorted(types.items())),
        "parameters": params, "bytes": size, "tied_embeddings": tied,
        "context_length": config["max_position_embeddings"], "tokenizer": vocab_facts(vocab),
    }


def write_header(path: Path, config: dict, arch: str, name: str, ftype, plan: dict,
                 vocab: Vocab) -> tuple[int, dict[str, int], int]:
    """Write the GGUF header, keys and tensor table; ``(data start, {tensor: offset}, params)``.

    Offsets are relative to the data start and padded as GGUFWriter pads them; the key ``""``
    holds the end of the data.
    """
    import gguf

    writer = gguf.GGUFWriter(path, arch)
    offsets, end = {}, 0
    for tensor, (shape, qtype) in plan.items():
        size = nbytes(shape, qtype)
        writer.add_tensor_info(tensor, shape, np.float32, size, raw_dtype=qtype)
        offsets[tensor] = end
        end += gguf.GGUFWriter.ggml_pad(size, writer.data_alignment)
    offsets[""] = end
    add_hparams(writer, config, arch, name, ftype)
    params = writer.get_total_parameter_count()
    writer.add_size_label(gguf.size_label(*params))
    add_vocab(writer, vocab)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
    finally:
        writer.close()
    return gguf.GGUFWriter.ggml_pad(os.path.getsize(path), writer.data_alignment), offsets, params[0]


def convert_folder(hf_folder: Path, out: Path, *, outtype: str = "F16", name: str) -> dict:
    """Convert a saved HF folder (config, safetensors, tokenizer), reading tensors lazily."""
    hf_folder = Path(hf_folder)
    try:
        config = json.loads((hf_folder / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StageError(f"{hf_folder}: no config.json; is this a saved Hugging Face model "
                         "folder?") from None
    return convert(config, hf_folder, read_safetensors(hf_folder), out, outtype=outtype, name=name)
