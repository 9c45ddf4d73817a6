"""Merging LoRA adapters tensor by tensor into GGUF, against peft's own merge and forward pass.

The adapters are made here with peft, with lora_B initialised non-zero (peft starts it at
zero, which would make every merge a no-op and every comparison vacuous). peft's merged folder
(``merge_and_unload`` + ``save_pretrained``) is test scaffolding here: the build never writes one.
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
from afs_build.post import gguf_convert, merge, parity  # noqa: E402
from afs_build.post.merge import check_merge, merged_tensors  # noqa: E402
from afs_build.post.weights import read_safetensors  # noqa: E402
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
def merged(tiny: Path, adapter: Path) -> Path:
    """peft's merged model saved as a folder, with the base's tokenizer: the reference."""
    import shutil

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tiny.parent / "peft-merged"
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny), adapter)
    model.merge_and_unload().save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(tiny / name, out / name)
    return out


def test_check_merge(tiny, adapter):
    before = sorted(p.name for p in tiny.parent.rglob("*"))
    report = check_merge(tiny, adapter)
    assert report["max_abs_logit_diff"] < 1e-4 and report["tolerance"] == 1e-3
    assert report["lora"] == {"r": 8, "lora_alpha": 16, "use_rslora": False,
                              "fan_in_fan_out": False, "target_modules": sorted(PROJECTIONS)}
    assert report["dtype"] == "float32" and len(report["prompts"]) == 3
    assert report["tensors_changed"] == 2 * len(PROJECTIONS)  # every projection of both layers
    assert sorted(p.name for p in tiny.parent.rglob("*")) == before  # no weights written


def test_check_merge_catches_a_wrong_merge(tiny, adapter, monkeypatch):
    """A streamed merge off by a factor (a wrong alpha/r) fails the check at its own tolerance."""
    load = merge.load_adapter

    def doubled(folder):
        config, pairs, replace = load(folder)
        for pair in pairs.values():
            pair["scale"] *= 2
        return config, pairs, replace

    monkeypatch.setattr(merge, "load_adapter", doubled)
    with pytest.raises(StageError, match="changes the model: the largest logit difference"):
        check_merge(tiny, adapter)


def test_streaming_merge_equals_peft(tiny, adapter, merged):
    streamed = dict(merged_tensors(tiny, adapter))
    saved = {n: t.numpy() for n, t in read_safetensors(merged)}
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
    base = dict(read_safetensors(tiny))["model.layers.0.self_attn.o_proj.weight"]
    a, b = weights[f"{key}.lora_A.weight"], weights[f"{key}.lora_B.weight"]
    expected = base.numpy() + (b.numpy() @ a.numpy()).T * (16 / 8)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6)


def test_streamed_gguf_equals_folder_gguf(tiny, adapter, merged, tmp_path):
    """Merging while converting writes the same GGUF as converting peft's merged folder."""
    import gguf

    streamed = tmp_path / "streamed.gguf"
    report = gguf_convert.convert_folder(tiny, streamed, outtype="F16", name="alpha",
                                         adapter=adapter)
    folder = gguf_convert.convert_folder(merged, tmp_path / "folder.gguf", outtype="F16",
                                         name="alpha")
    assert {k: v for k, v in report.items() if k != "file"} == \
        {k: v for k, v in folder.items() if k != "file"}
    ours, theirs = gguf.GGUFReader(streamed), gguf.GGUFReader(tmp_path / "folder.gguf")
    assert [(t.name, t.tensor_type, list(t.shape)) for t in ours.tensors] == \
        [(t.name, t.tensor_type, list(t.shape)) for t in theirs.tensors]
    for a, b in zip(ours.tensors, theirs.tensors):
        assert np.array_equal(np.asarray(a.data), np.asarray(b.data)), a.name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.gguf", "streamed.gguf"]
    # and llama.cpp on the streamed file answers as base + adapter do in peft
    parity.check(parity.tokenization_parity(tiny, streamed))
    result = parity.check(parity.generation_parity(
        tiny, streamed, ["What is 12 plus 30?", "Name the largest planet."], adapter=adapter))
    assert result["adapter"] == str(adapter)
    assert all(i["identical"] for i in result["items"])
    # the same check without the adapter must see a different model: the LoRA matters
    plain = parity.generation_parity(tiny, streamed, ["What is 12 plus 30?"])
    assert plain["items"][0]["max_abs_logit_diff"] > 100 * result["items"][0]["max_abs_logit_diff"]


def test_merge_fails_above_tolerance(tiny, adapter, tmp_path):
    with pytest.raises(StageError) as err:
        check_merge(tiny, adapter, tolerance=0.0)
    assert re.fullmatch(
        re.escape(f"merging {adapter} into {tiny} changes the model: the largest logit "
                  "difference between base + adapter (peft) and afs's streamed merge is ") +
        r"[0-9.e-]+" + re.escape(" (tolerance 0) on prompt ") + r"'[^']+'" +
        re.escape("; the adapter does not merge cleanly into this base"), str(err.value))


def test_dora_is_refused(tiny, adapter, tmp_path):
    folder = tmp_path / "dora"
    folder.mkdir()
    config = json.loads((adapter / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    with pytest.raises(StageError) as err:
        list(merged_tensors(tiny, folder))
    assert str(err.value) == (f"{folder / 'adapter_config.json'}: use_dora = True is not supported "
                              "by afs's streaming merge, which merges plain LoRA adapters; train "
                              "the adapter without it")


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
