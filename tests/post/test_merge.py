"""Merging LoRA adapters: peft's merge into a folder, and the streaming merge into GGUF.

The adapters are made here with peft, with lora_B initialised non-zero (peft starts it at
zero, which would make every merge a no-op and every comparison vacuous).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before ggml loads: see FIELD-NOTES

from afs_build.errors import StageError  # noqa: E402
from afs_build.post import gguf_convert, parity  # noqa: E402
from afs_build.post.merge import merge_adapter, merged_tensors  # noqa: E402
from tinymodel import build_tiny_model  # noqa: E402

PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_adapter(base: Path, out: Path, *, seed: int = 1, **lora) -> Path:
    """A peft LoRA adapter on `base` with random, non-zero B matrices, saved to `out`."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    options = {"r": 8, "lora_alpha": 16, "target_modules": PROJECTIONS, "lora_dropout": 0.0,
               **lora}
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(task_type="CAUSAL_LM", **options))
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    model.save_pretrained(out)
    return out


def peft_merged(base: Path, adapter: Path) -> dict[str, np.ndarray]:
    """peft's merge_and_unload() state dict, as numpy."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter)
    merged = model.merge_and_unload()
    return {k: v.numpy() for k, v in merged.state_dict().items() if k != "lm_head.weight"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "hf")


@pytest.fixture(scope="module")
def adapter(tiny: Path) -> Path:
    return make_adapter(tiny, tiny.parent / "adapter")


@pytest.fixture(scope="module")
def merged(tiny: Path, adapter: Path) -> tuple[Path, dict]:
    out = tiny.parent / "merged"
    return out, merge_adapter(tiny, adapter, out)


def test_merge_adapter(tiny, adapter, merged):
    out, report = merged
    assert report["max_abs_logit_diff"] < 1e-4 and report["tolerance"] == 1e-3
    assert report["lora"] == {"r": 8, "lora_alpha": 16, "use_rslora": False,
                              "fan_in_fan_out": False, "target_modules": sorted(PROJECTIONS)}
    assert report["dtype"] == "float32" and len(report["prompts"]) == 3
    assert sorted(p.name for p in out.iterdir()) == [
        "chat_template.jinja", "config.json", "generation_config.json", "model.safetensors",
        "tokenizer.json", "tokenizer_config.json"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["adapter", "hf", "merged"]
    # the tokenizer travels unchanged (an explicit add_bos_token included)
    assert (out / "tokenizer_config.json").read_bytes() == (tiny / "tokenizer_config.json").read_bytes()
    base = dict(gguf_convert.read_safetensors(tiny))
    after = dict(gguf_convert.read_safetensors(out))
    assert sorted(base) == sorted(after)
    changed = sorted(n for n in base if not np.array_equal(base[n].numpy(), after[n].numpy()))
    assert len(changed) == 2 * len(PROJECTIONS)  # every projection of both layers: it matters


def test_merge_replaces_existing_folder(tiny, adapter, tmp_path):
    out = tmp_path / "merged"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    merge_adapter(tiny, adapter, out)
    assert not (out / "stale.txt").exists() and (out / "model.safetensors").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["merged"]


def test_streaming_merge_equals_peft(tiny, adapter, merged):
    streamed = dict(merged_tensors(tiny, adapter))
    saved = {n: t.numpy() for n, t in gguf_convert.read_safetensors(merged[0])}
    assert sorted(streamed) == sorted(saved)
    for name, tensor in saved.items():
        np.testing.assert_allclose(streamed[name], tensor, rtol=0, atol=1e-6, err_msg=name)


def test_streaming_merge_rslora_and_patterns(tiny, tmp_path):
    adapter = make_adapter(tiny, tmp_path / "adapter", seed=2, r=4, lora_alpha=8, use_rslora=True,
                           rank_pattern={"down_proj": 2}, alpha_pattern={"o_proj": 3})
    streamed = dict(merged_tensors(tiny, adapter))
    reference = peft_merged(tiny, adapter)
    assert sorted(streamed) == sorted(reference)
    for name, tensor in reference.items():
        np.testing.assert_allclose(streamed[name], tensor, rtol=0, atol=1e-6, err_msg=name)


def test_streaming_merge_fan_in_fan_out(tiny, adapter, tmp_path):
    """GPT-2-style Conv1D layers store W transposed: delta is (B @ A).T."""
    from safetensors.torch import load_file, save_file

    flipped = tmp_path / "flipped"
    flipped.mkdir()
    config = json.loads((adapter / "adapter_config.json").read_text())
    (flipped / "adapter_config.json").write_text(json.dumps({**config, "fan_in_fan_out": True}))
    weights = load_file(str(adapter / "adapter_model.safetensors"))
    key = "base_model.model.model.layers.0.self_attn.o_proj"  # square: transposable in place
    save_file({f"{key}.lora_A.weight": weights[f"{key}.lora_A.weight"],
               f"{key}.lora_B.weight": weights[f"{key}.lora_B.weight"]},
              str(flipped / "adapter_model.safetensors"))
    out = dict(merged_tensors(tiny, flipped))["model.layers.0.self_attn.o_proj.weight"]
    base = dict(gguf_convert.read_safetensors(tiny))["model.layers.0.self_attn.o_proj.weight"]
    a, b = weights[f"{key}.lora_A.weight"], weights[f"{key}.lora_B.weight"]
    expected = base.numpy() + (b.numpy() @ a.numpy()).T * (16 / 8)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6)


def test_streamed_gguf_equals_folder_gguf(tiny, adapter, merged, tmp_path):
    """Merging while converting writes the same GGUF as converting the merged folder."""
    import gguf

    config = json.loads((tiny / "config.json").read_text())
    streamed = tmp_path / "streamed.gguf"
    report = gguf_convert.convert(config, tiny, merged_tensors(tiny, adapter), streamed,
                                  outtype="F16", name="alpha")
    folder = gguf_convert.convert_folder(merged[0], tmp_path / "folder.gguf", outtype="F16",
                                         name="alpha")
    assert {k: v for k, v in report.items() if k != "file"} == \
        {k: v for k, v in folder.items() if k != "file"}
    ours, theirs = gguf.GGUFReader(streamed), gguf.GGUFReader(tmp_path / "folder.gguf")
    assert [(t.name, t.tensor_type, list(t.shape)) for t in ours.tensors] == \
        [(t.name, t.tensor_type, list(t.shape)) for t in theirs.tensors]
    for a, b in zip(ours.tensors, theirs.tensors):
        assert np.array_equal(np.asarray(a.data), np.asarray(b.data)), a.name
    # and the streamed file is the merged model, in llama.cpp
    parity.check(parity.tokenization_parity(merged[0], streamed))
    result = parity.check(parity.generation_parity(
        merged[0], streamed, ["What is 12 plus 30?", "Name the largest planet."]))
    assert all(i["identical"] for i in result["items"])


def test_merge_fails_above_tolerance(tiny, adapter, tmp_path):
    with pytest.raises(StageError) as err:
        merge_adapter(tiny, adapter, tmp_path / "merged", tolerance=0.0)
    assert re.fullmatch(
        re.escape(f"merging {adapter} into {tiny} changed the model: the largest logit "
                  "difference between the adapter model and the merged model is ") +
        r"[0-9.e-]+" + re.escape(" (tolerance 0) on prompt ") + r"'[^']+'" +
        re.escape("; the adapter does not merge cleanly into this base"), str(err.value))
    assert list(tmp_path.iterdir()) == []


def test_dora_is_refused(tiny, adapter, tmp_path):
    folder = tmp_path / "dora"
    folder.mkdir()
    config = json.loads((adapter / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    with pytest.raises(StageError) as err:
        list(merged_tensors(tiny, folder))
    assert str(err.value) == (f"{folder / 'adapter_config.json'}: use_dora = True is not supported "
                              "by afs's streaming merge; merge with merge_adapter() and convert "
                              "the folder")


def test_adapter_for_another_base(tiny, adapter, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "other"
    folder.mkdir()
    (folder / "adapter_config.json").write_bytes((adapter / "adapter_config.json").read_bytes())
    weights = {k.replace("layers.1.", "layers.7."): v
               for k, v in load_file(str(adapter / "adapter_model.safetensors")).items()}
    save_file(weights, str(folder / "adapter_model.safetensors"))
    with pytest.raises(StageError) as err:
        list(merged_tensors(tiny, folder))
    assert str(err.value) == (
        f"adapter {folder} does not fit base {tiny}: no base tensor for "
        "model.layers.7.mlp.down_proj, model.layers.7.mlp.gate_proj, model.layers.7.mlp.up_proj, "
        "model.layers.7.self_attn.k_proj, model.layers.7.self_attn.o_proj, "
        "model.layers.7.self_attn.q_proj ...")
