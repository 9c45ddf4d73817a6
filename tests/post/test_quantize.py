"""Quantization on tiny real models: types, silent fallbacks, perplexity, the report.

The F16 files come from afs's own converter (``tinymodel.tiny_gguf``), which
``tests/post/test_gguf.py`` compares with llama.cpp's reference converter.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before ggml loads: see FIELD-NOTES

from afs_build.errors import StageError  # noqa: E402
from afs_build.post import quantize as q  # noqa: E402
from tinymodel import tiny_gguf  # noqa: E402

import llama_cpp  # noqa: E402  (required: a declared dependency must fail, not skip, when missing)

REPO = Path(__file__).resolve().parents[2]
CHAT = [
    [{"role": "user", "content": "What is 12 plus 30?"},
     {"role": "assistant", "content": "12 plus 30 is 42."}],
    [{"role": "system", "content": "You are a helpful assistant. Answer briefly and precisely."},
     {"role": "user", "content": "What does register $2100 do on the SNES?"},
     {"role": "assistant", "content": "INIDISP: it sets screen brightness and forced blank."}],
    [{"role": "user", "content": "Write add(a, b) in Python."},
     {"role": "assistant", "content": "def add(a, b):\n    return a + b"}],
]


def tiny_f16(folder: Path, hidden: int) -> Path:
    """A tiny Qwen2 model of `hidden` size as an F16 GGUF file (and its HF folder beside it)."""
    return tiny_gguf(folder, hidden=hidden)


@pytest.fixture(scope="module")
def tiny256(tmp_path_factory) -> Path:
    return tiny_f16(tmp_path_factory.mktemp("tiny256"), 256)


@pytest.fixture(scope="module")
def tiny320(tmp_path_factory) -> Path:
    return tiny_f16(tmp_path_factory.mktemp("tiny320"), 320)


@pytest.fixture(scope="module")
def texts(tiny256: Path) -> list[str]:
    path = tiny256.parent / "eval.jsonl"
    path.write_text("".join(json.dumps({"messages": m}) + "\n" for m in CHAT), encoding="utf-8")
    return q.eval_texts(path, tiny256.parent / "hf")


def loads(path: Path) -> int:
    """Load a GGUF file with llama.cpp and evaluate a few tokens; the vocabulary size."""
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=64, n_threads=1, verbose=False)
    try:
        llm.eval(llm.tokenize(b"Paris is the capital of France."))
        return llm.n_vocab()
    finally:
        llm.close()


def schema_quantize_types() -> list[str]:
    schema = json.loads((REPO / "specs" / "manifest.schema.json").read_text())
    found = []

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("quantize"), dict):
                found.append(node["quantize"]["items"]["enum"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    assert len(found) == 1
    return found[0]


def test_every_schema_type_maps_to_a_llama_cpp_ftype():
    assert list(q.QTYPES) == schema_quantize_types()
    for name, constant in q.QTYPES.items():
        assert isinstance(getattr(llama_cpp, constant), int), name


def test_unknown_type_is_a_stage_error(tmp_path):
    with pytest.raises(StageError) as error:
        q.quantize(tmp_path / "a.gguf", tmp_path / "b.gguf", "Q4_K_X")
    assert str(error.value) == (
        "unknown quantization type 'Q4_K_X' (did you mean 'Q4_K_S'?); expected one of: "
        "'BF16', 'F16', 'F32', 'IQ2_M', 'IQ2_S', 'IQ2_XS', 'IQ2_XXS', 'IQ3_M', 'IQ3_S', "
        "'IQ3_XS', 'IQ3_XXS', 'IQ4_NL', 'IQ4_XS', 'Q2_K', 'Q2_K_S', 'Q3_K_L', 'Q3_K_M', "
        "'Q3_K_S', 'Q4_0', 'Q4_1', 'Q4_K_M', 'Q4_K_S', 'Q5_0', 'Q5_1', 'Q5_K_M', 'Q5_K_S', "
        "'Q6_K', 'Q8_0', 'TQ1_0', 'TQ2_0'")
    assert not (tmp_path / "b.gguf").exists()


@pytest.mark.parametrize("qtype, main", [("Q8_0", "Q8_0"), ("Q4_K_M", "Q4_K"),
                                         ("Q5_K_M", "Q5_K")])
def test_quantized_files_load_without_fallback(tiny256, qtype, main):
    dst = tiny256.parent / f"tiny-{qtype}.gguf"
    result = q.quantize(tiny256, dst, qtype, threads=2)
    assert loads(dst) == loads(tiny256)
    assert result["requested"] == qtype and result["file"] == dst.name
    assert result["fallback_tensors"] == {} and result["fallback_count"] == 0
    assert result["logged_fallback_count"] == 0 and result["warning"] is None
    assert result["tensor_types"][main] >= 10 and result["tensor_types"]["F32"] == 11
    assert sum(result["tensor_types"].values()) == 26 and result["weight_tensors"] == 15
    assert result["size_bytes"] == dst.stat().st_size < tiny256.stat().st_size
    assert list(result) == sorted(result)
    assert not [p for p in dst.parent.iterdir() if p.name.endswith(".tmp")]


def test_k_quant_fallback_is_recorded_with_a_warning(tiny320):
    dst = tiny320.parent / "tiny-Q4_K_M.gguf"
    result = q.quantize(tiny320, dst, "Q4_K_M", threads=2)
    loads(dst)
    rows320 = [f"blk.{n}.{t}.weight" for n in (0, 1)
               for t in ("attn_k", "attn_output", "attn_q", "ffn_gate", "ffn_up")]
    assert result["fallback_tensors"] == {
        **{name: "Q5_0" for name in rows320}, "blk.0.attn_v.weight": "Q5_0",
        "blk.1.attn_v.weight": "Q8_0", "token_embd.weight": "Q8_0"}
    assert result["fallback_count"] == 13
    # llama.cpp does not count the tied embedding it puts in Q8_0 instead of Q6_K
    assert result["logged_fallback_count"] == 12
    assert result["tensor_types"] == {"F32": 11, "Q4_K": 1, "Q5_0": 11, "Q6_K": 1, "Q8_0": 2}
    assert result["warning"] == (
        "tiny-Q4_K_M.gguf: 13 of 15 weight tensors are not Q4_K_M: their rows are not a "
        "multiple of 256, so llama.cpp stored them as Q5_0 x11, Q8_0 x2 (llama.cpp counted "
        "12); the file is larger and its quality differs from a true Q4_K_M")


def test_file_and_log_detection_agree_where_llama_cpp_counts_the_embedding(tiny320):
    result = q.quantize(tiny320, tiny320.parent / "tiny-Q4_0.gguf", "Q4_0", threads=2)
    assert result["fallback_tensors"] == {"token_embd.weight": "Q8_0"}
    assert result["fallback_count"] == result["logged_fallback_count"] == 1


def test_llama_cpp_failures_are_stage_errors_and_leave_no_file(tiny256, tmp_path):
    dst = tmp_path / "tiny-IQ2_XXS.gguf"
    with pytest.raises(StageError) as error:
        q.quantize(tiny256, dst, "IQ2_XXS")
    assert str(error.value) == (
        f"{tiny256}: llama.cpp cannot make IQ2_XXS without an importance matrix, which afs does "
        "not compute; choose another type (IQ3_S, IQ4_XS, Q2_K or any Q*_K_* type)")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(StageError, match="would overwrite its source file"):
        q.quantize(tiny256, tiny256, "F16")
    with pytest.raises(StageError, match="the GGUF file to quantize is missing"):
        q.quantize(tmp_path / "none.gguf", dst, "Q8_0")


@pytest.mark.slow
def test_report_measures_quality_and_speed(tiny256, texts):
    assert len(texts) == 3 and texts[0].startswith("<|im_start|>user\nWhat is 12 plus 30?")
    files = {"F16": tiny256}
    quantized = {}
    for kind in ("Q8_0", "Q4_K_M"):
        files[kind] = tiny256.parent / f"tiny-{kind}.gguf"
        quantized[kind] = q.quantize(tiny256, files[kind], kind, threads=2)
    result = q.report(files, texts, quantized=quantized, threads=2)
    assert list(result) == ["eval_texts", "quants", "reference", "warnings"]
    assert result["reference"] == "F16" and result["warnings"] == []
    assert list(result["quants"]) == ["F16", "Q4_K_M", "Q8_0"]
    f16, q8, q4 = (result["quants"][k] for k in ("F16", "Q8_0", "Q4_K_M"))
    for entry in (f16, q8, q4):
        assert set(entry) == {"file", "size_bytes", "load_s", "gen_tokens", "tokens_per_s",
                              "perplexity", "ppl_tokens", "ppl_texts", "n_ctx", "threads",
                              "fallback", "perplexity_change", "size_ratio", "quantize_s"}
        assert entry["tokens_per_s"] > 0 and entry["load_s"] > 0 and entry["ppl_texts"] == 3
    n_vocab = loads(tiny256)
    # random weights: close to uniform over the vocabulary
    assert math.isfinite(f16["perplexity"]) and n_vocab / 3 < f16["perplexity"] < n_vocab * 3
    assert f16["ppl_tokens"] == q8["ppl_tokens"] > 50
    assert f16["perplexity_change"] == 0 and f16["size_ratio"] == 1 and f16["fallback"] is None
    assert abs(q8["perplexity_change"]) < 0.03
    assert q8["size_ratio"] < 0.7 and q4["size_ratio"] < q8["size_ratio"]
    assert q4["fallback"]["fallback_count"] == 0 and q4["fallback"]["warning"] is None
    assert q4["fallback"]["logged_fallback_count"] == 0 and q4["quantize_s"] > 0
    assert f16["quantize_s"] is None


def test_perplexity_is_capped_and_reported_per_file(tiny256, texts):
    result = q.measure(tiny256, texts, max_tokens=20, gen_tokens=4, threads=1)
    assert result["ppl_tokens"] == 20 and result["ppl_texts"] == 1
    assert result["file"] == tiny256.name and result["size_bytes"] == tiny256.stat().st_size
    assert math.isfinite(result["perplexity"]) and result["gen_tokens"] == 4


def test_long_texts_are_cut_into_context_windows(tiny256, texts):
    llm = llama_cpp.Llama(model_path=str(tiny256), n_ctx=64, n_threads=1, verbose=False)
    lengths = [len(llm.tokenize(t.encode(), add_bos=True, special=True)) for t in texts]
    llm.close()
    windows = [min(16, n - at) for n in lengths for at in range(0, n, 16)]
    result = q.measure(tiny256, texts, n_ctx=16, gen_tokens=100, threads=1)
    assert result["ppl_tokens"] == sum(w - 1 for w in windows if w >= 2)
    assert result["gen_tokens"] < 16 and result["n_ctx"] == 16


def test_perplexity_matches_transformers_on_the_same_texts(tiny256, texts):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = tiny256.parent / "hf"
    tokenizer, model = AutoTokenizer.from_pretrained(hf), AutoModelForCausalLM.from_pretrained(hf)
    nll, count = 0.0, 0
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(text, return_tensors="pt").input_ids
            loss = model(ids, labels=ids).loss  # the mean over every token but the first
            nll, count = nll + float(loss) * (ids.shape[1] - 1), count + ids.shape[1] - 1
    result = q.measure(tiny256, texts, gen_tokens=1, threads=1)
    assert result["ppl_tokens"] == count  # same tokens: llama.cpp and transformers agree
    assert result["perplexity"] == pytest.approx(math.exp(nll / count), rel=2e-3)


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_K_M"])
def test_a_quantized_file_decodes_in_a_fresh_process(tiny256, tmp_path, qtype):
    """Loaded and asked as afs loads a model (afs_build.llamacpp): on a CPU with AMX, llama.cpp's
    AMX buffers made this process segfault (rc -11) on the first decode."""
    import os
    import subprocess
    import sys

    from afs_build.llamacpp import ENV

    path = tmp_path / f"tiny-{qtype}.gguf"
    q.quantize(tiny256, path, qtype)
    code = ("import sys; from afs_build.llamacpp import load\n"
            "llm = load().Llama(model_path=sys.argv[1], n_ctx=64, n_threads=2, verbose=False)\n"
            "llm.eval(llm.tokenize(b'Paris is the capital of France.'))\n"
            "print('ok')\n")
    env = {k: v for k, v in os.environ.items() if k != ENV}
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", (out.returncode, out.stderr[-2000:])
