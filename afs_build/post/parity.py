"""Parity checks: does llama.cpp, given the GGUF, tokenize and answer like transformers?

A GGUF with a wrong pre-tokenizer name, a wrong end-of-sequence id or an add-BOS flag that
differs from the tokenizer loads and runs without a warning, then answers worse in LM Studio
or Ollama than in Python. These checks compare the two sides directly:

* :func:`tokenization_parity`: ids of a fixed set of strings (digits, unicode, whitespace runs,
  code, the special tokens, the chat template's own markers, a rendered chat, the reference
  converter's check text), tokenized by llama.cpp the way a server does (its own add-BOS flag,
  special tokens parsed); plus the special ids and the chat template.
* :func:`generation_parity`: greedy answers of the F16 GGUF and the HF model on chat-templated
  prompts, and llama.cpp's top-1 next token at every position of the HF answer. A top-1
  difference counts only where the HF model's own margin between the two tokens is above
  `tie_tolerance`: F16 weights legitimately flip near-ties. For a specialist the HF model is
  its base with the LoRA adapter loaded by peft, in memory: what training produced, not a
  merged copy.

Each returns a JSON-ready report with per-item results and ``ok``; :func:`check` raises
StageError listing the mismatches.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from ..errors import StageError

TEXTS = (
    "Hello world",
    "What is 12 plus 30? 12 plus 30 is 42.",
    "Digits: 0 7 42 123 2024 1234567890 3.14159 1,000,000 0x1F $420B",
    "Unicode: café, naïve, 東京, Ελληνικά, русский, emoji 🙂🚀, ∑∫√, ü ß",
    "   three leading spaces, two trailing  ",
    "tabs\tand\t\ttabs, newlines\n\n\nand  double  spaces   here",
    "\n",
    " ",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
    "LDA #$80\nSTA $2100\nREP #$20",
    "I'm sure they'll say we've done it, don't you? 'RE 'LL",
)
CHAT = (
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is 12 plus 30?"},
    {"role": "assistant", "content": "12 plus 30 is 42."},
    {"role": "user", "content": "And 7 times 6?"},
)
CONTEXT = 512  # tokens of llama.cpp context for a prompt and its answer


def _llama(gguf_path: Path, **kwargs):
    """A llama_cpp.Llama on `gguf_path`, quiet, with passive OpenMP threads."""
    from ..llamacpp import load

    llama_cpp = load()

    try:
        return llama_cpp.Llama(model_path=str(gguf_path), verbose=False, **kwargs)
    except (ValueError, RuntimeError) as exc:
        raise StageError(f"llama.cpp cannot load {gguf_path}: {exc}") from exc


def _markers(tokenizer) -> list[str]:
    """The chat template's own text around messages, e.g. '<|im_start|>assistant\\n'."""
    from .vocab import PROBE

    if not getattr(tokenizer, "chat_template", None):
        return []
    text = tokenizer.apply_chat_template(PROBE, tokenize=False, add_generation_prompt=True)
    parts = text.replace(PROBE[0]["content"], "\0").replace(PROBE[1]["content"], "\0").split("\0")
    return [p for p in parts if p]


def _first_difference(a: Sequence[int], b: Sequence[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def _compare(kind: str, text: str, hf: list[int], gg: list[int], tokenizer, llm) -> dict:
    """One string's result; on a mismatch, the pieces each side cut around the difference."""
    item = {"kind": kind, "text": text, "transformers": hf, "llama_cpp": gg, "ok": hf == gg}
    if hf != gg:
        i = _first_difference(hf, gg)
        item["first_difference"] = i
        item["transformers_pieces"] = [tokenizer.decode([t]) for t in hf[i:i + 4]]
        item["llama_cpp_pieces"] = [llm.detokenize([t], special=True).decode("utf-8", "replace")
                                    for t in gg[i:i + 4]]
    return item


def tokenization_parity(hf_folder: Path, gguf_path: Path) -> dict:
    """Compare transformers' and llama.cpp's ids on a fixed set of strings, and special ids."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(hf_folder)
    llm = _llama(gguf_path, vocab_only=True)
    try:
        return _tokenization(tokenizer, llm, hf_folder, gguf_path)
    finally:
        llm.close()


def _tokenization(tokenizer, llm, hf_folder: Path, gguf_path: Path) -> dict:
    from .vocab import CHKTXT, end_of_turn

    model = llm._model
    add_bos = bool(model.add_bos_token())
    specials = [t for t in tokenizer.all_special_tokens]
    markers = _markers(tokenizer)
    texts = list(TEXTS) + [CHKTXT] + specials + [f"x{s}y {s} z" for s in specials[:4]] + markers
    items = []
    for text in dict.fromkeys(texts):  # in order, without repeats
        hf = tokenizer.encode(text, add_special_tokens=True)
        gg = llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)
        items.append(_compare("text", text, hf, gg, tokenizer, llm))
    if getattr(tokenizer, "chat_template", None):
        rendered = tokenizer.apply_chat_template(list(CHAT), tokenize=False,
                                                 add_generation_prompt=True)
        hf = tokenizer.apply_chat_template(list(CHAT), tokenize=True, add_generation_prompt=True,
                                           return_dict=False)
        gg = llm.tokenize(rendered.encode("utf-8"), add_bos=add_bos, special=True)
        items.append(_compare("chat", rendered, list(hf), gg, tokenizer, llm))

    def hf_id(value: Optional[int]) -> int:
        return -1 if value is None else int(value)

    special = {
        "bos": (hf_id(tokenizer.bos_token_id), model.token_bos()),
        "eos": (hf_id(tokenizer.eos_token_id), model.token_eos()),
        "eot": (hf_id(end_of_turn(tokenizer)), model.token_eot()),
        "add_bos": (int(tokenizer.encode("a")[:1] != tokenizer.encode("a", add_special_tokens=False)[:1]),
                    int(add_bos)),
    }
    for kind, (hf, gg) in special.items():
        if kind == "bos" and hf == -1 and not add_bos:
            continue  # a BOS the tokenizer never adds and llama.cpp never adds is harmless
        item = {"kind": "special", "text": kind, "transformers": hf, "llama_cpp": gg, "ok": hf == gg}
        if kind != "add_bos":
            item["transformers_piece"] = tokenizer.convert_ids_to_tokens(hf) if hf >= 0 else None
            item["llama_cpp_piece"] = (llm.detokenize([gg], special=True).decode("utf-8", "replace")
                                       if gg >= 0 else None)
        items.append(item)
    hf_template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else None
    gg_template = llm.metadata.get("tokenizer.chat_template")
    items.append({"kind": "template", "text": "chat_template", "transformers": hf_template,
                  "llama_cpp": gg_template, "ok": hf_template == gg_template})
    pre = llm.metadata.get("tokenizer.ggml.pre")
    return {"check": "tokenization", "gguf": str(gguf_path), "hf_folder": str(hf_folder),
            "pre": pre, "items": items, "mismatches": sum(not i["ok"] for i in items),
            "ok": all(i["ok"] for i in items)}


def generation_parity(hf_folder: Path, gguf_path: Path, prompts: Sequence[str | list[dict]], *,
                      adapter: Optional[Path] = None, max_new_tokens: int = 16,
                      n_threads: int = 2, tie_tolerance: float = 0.1) -> dict:
    """Compare greedy answers and top-1 next tokens of the GGUF with the HF model's.

    The HF model is `hf_folder` in float32, with the peft `adapter` on it if one is given.
    Both sides start from transformers' ids of the chat-templated prompt (tokenization is
    :func:`tokenization_parity`'s job), and stop at their own end tokens.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(hf_folder)
    model = AutoModelForCausalLM.from_pretrained(hf_folder, dtype=torch.float32).eval()
    generation_config = model.generation_config
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).eval()
    stops = generation_config.eos_token_id
    if stops is None:
        stops = tokenizer.eos_token_id
    stops = set(stops if isinstance(stops, list) else [] if stops is None else [stops])
    llm = _llama(gguf_path, n_ctx=CONTEXT, n_threads=n_threads, n_threads_batch=n_threads,
                 logits_all=True, seed=0)
    try:
        items = [_generation(prompt, tokenizer, model, llm, stops, max_new_tokens, tie_tolerance)
                 for prompt in prompts]
    finally:
        llm.close()
    return {"check": "generation", "gguf": str(gguf_path), "hf_folder": str(hf_folder),
            "adapter": None if adapter is None else str(adapter),
            "max_new_tokens": max_new_tokens, "tie_tolerance": tie_tolerance, "items": items,
            "mismatches": sum(not i["ok"] for i in items), "ok": all(i["ok"] for i in items)}


def _generation(prompt: str | list[dict], tokenizer, model, llm, stops: set[int],
                max_new_tokens: int, tie_tolerance: float) -> dict:
    """One prompt (a user message, or a conversation to continue): both greedy answers, and
    llama.cpp's top-1 along the HF answer."""
    import numpy as np

    import llama_cpp

    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    ids = list(tokenizer.apply_chat_template(messages,
                                             tokenize=True, add_generation_prompt=True,
                                             return_dict=False))
    if len(ids) + max_new_tokens > CONTEXT:
        raise StageError(f"generation parity: prompt {prompt[:40]!r} is too long for the check "
                         f"({len(ids)} tokens, {CONTEXT - max_new_tokens} at most)")
    vocab = llm._model.vocab
    hf_ids, hf_logits = _hf_greedy(model, ids, max_new_tokens, stops)
    gg_ids = _llama_greedy(llm, ids, max_new_tokens,
                           lambda t: llama_cpp.llama_vocab_is_eog(vocab, t))
    llm.reset()  # llama.cpp's top-1 at each position of the HF answer (teacher forcing)
    llm.eval(ids + hf_ids)
    gg_logits = np.array(llm.scores[len(ids) - 1: len(ids) + len(hf_ids) - 1])
    flips = []
    for pos, (hf_row, gg_row) in enumerate(zip(hf_logits, gg_logits)):
        a, b = int(hf_row.argmax()), int(gg_row.argmax())
        if a != b:
            margin = float(hf_row[a] - hf_row[b])
            flips.append({"position": pos, "transformers": a, "llama_cpp": b,
                          "margin": round(margin, 6), "near_tie": margin <= tie_tolerance})
    same = hf_ids == gg_ids
    diverged, parting, benign = parting_point(hf_ids, gg_ids, hf_logits, flips, tie_tolerance)
    return {
        "prompt": prompt, "transformers": hf_ids, "llama_cpp": gg_ids,
        "transformers_text": tokenizer.decode(hf_ids), "llama_cpp_text": tokenizer.decode(gg_ids),
        "identical": same, "first_difference": diverged, "parting_margin": parting,
        "top1_agree": len(hf_ids) - len(flips), "top1_total": len(hf_ids), "top1_flips": flips,
        "max_abs_logit_diff": round(float(np.abs(np.array(hf_logits) - gg_logits).max()), 6),
        "ok": all(f["near_tie"] for f in flips) and (same or benign),
    }


def parting_point(hf_ids: Sequence[int], gg_ids: Sequence[int], hf_logits, flips: Sequence[dict],
                  tie_tolerance: float) -> tuple[Optional[int], Optional[float], bool]:
    """Where two greedy answers part (None when they do not), the HF logit margin there between
    HF's token and llama.cpp's, and whether they part at a near-tie (both answers right).

    A near-tie is a flip of the teacher-forced top-1 at that position within the tolerance, or
    llama.cpp's own greedy token within the tolerance of HF's on HF's logits: llama.cpp's
    one-token decodes round apart from its batch pass, so its teacher-forced top-1 may agree
    with HF's where its greedy answer took the other side of a tie (measured: 0.004 apart).
    """
    if list(hf_ids) == list(gg_ids):
        return None, None, False
    diverged = _first_difference(hf_ids, gg_ids)
    parting = None
    if diverged < min(len(hf_ids), len(gg_ids)):
        row = hf_logits[diverged]
        parting = round(float(row[hf_ids[diverged]] - row[gg_ids[diverged]]), 6)
    benign = any(f["near_tie"] and f["position"] == diverged for f in flips) or \
        (parting is not None and parting <= tie_tolerance)
    return diverged, parting, benign


def _hf_greedy(model, ids: list[int], max_new_tokens: int, stops: set[int]):
    """Greedy continuation of `ids` and the logits row that chose each new token."""
    import torch

    out, rows, cache = [], [], None
    step = torch.tensor([ids])
    with torch.no_grad():
        for _ in range(max_new_tokens):
            result = model(input_ids=step, cache=cache, use_cache=True)
            cache = result.cache
            row = result.logits[0, -1].float().numpy()
            token = int(row.argmax())
            rows.append(row)
            out.append(token)
            if token in stops:
                break
            step = torch.tensor([[token]])
    return out, rows


def _llama_greedy(llm, ids: list[int], max_new_tokens: int, is_end) -> list[int]:
    """Greedy continuation by argmax over llama.cpp's logits (no sampler in between)."""
    llm.reset()
    llm.eval(ids)
    out = []
    for _ in range(max_new_tokens):
        token = int(llm.scores[llm.n_tokens - 1].argmax())
        out.append(token)
        if is_end(token):
            break
        llm.eval([token])
    return out


def _describe(item: dict, check: str) -> str:
    if check == "generation":
        if item["identical"]:
            flips = [f for f in item["top1_flips"] if not f["near_tie"]]
            return (f"prompt {item['prompt']!r}: same answer, but llama.cpp's top-1 differs at "
                    f"position(s) {', '.join(str(f['position']) for f in flips)}")
        return (f"prompt {item['prompt']!r}: answers differ from token {item['first_difference']}: "
                f"transformers {item['transformers_text']!r}, llama.cpp {item['llama_cpp_text']!r}")
    if item["kind"] == "special" and item["text"] == "add_bos":
        return (f"add_bos: transformers {bool(item['transformers'])}, "
                f"GGUF {bool(item['llama_cpp'])}")
    if item["kind"] == "special":
        return (f"{item['text']} id: transformers {item['transformers']} "
                f"({item['transformers_piece']!r}), GGUF {item['llama_cpp']} "
                f"({item['llama_cpp_piece']!r})")
    if item["kind"] == "template":
        return "chat template: the GGUF's differs from the tokenizer's"
    return (f"{item['kind']} {item['text'][:60]!r}: split differently from token "
            f"{item['first_difference']}: transformers {item['transformers_pieces']}, "
            f"llama.cpp {item['llama_cpp_pieces']}")


def check(report: dict) -> dict:
    """Return `report` if it is ok; raise StageError listing every mismatch otherwise."""
    if report["ok"]:
        return report
    bad = [i for i in report["items"] if not i["ok"]]
    lines = "\n".join(f"  - {_describe(i, report['check'])}" for i in bad)
    hint = {"tokenization": f"the GGUF's tokenizer (pre-tokenizer {report.get('pre')!r}) does "
                            "not match the HF tokenizer; reconvert after fixing the tokenizer facts",
            "generation": "the GGUF does not compute what the HF model computes; check the "
                          "tensor conversion"}[report["check"]]
    raise StageError(f"{report['check']} parity failed for {report['gguf']}: {len(bad)} of "
                     f"{len(report['items'])} item(s) differ; {hint}:\n{lines}")
