"""Before renting a GPU: a base is checked from its small files (config, tokenizer, template), by
`afs validate` (architecture), by base:<model> (fetching a hub model's files when the network
allows, offline here: from a Hugging Face cache the test builds) and by the script's first step."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import base_shapes
from afs_build import manifest as manifest_module
from afs_build.errors import AfsError
from afs_build.training import embedded, inspection, loop, script
from afs_build.training.digest import safetensors_params
from conftest import REPO, at

SUPPORTED = "expected one of: 'LlamaForCausalLM', 'Qwen2ForCausalLM'"
QWEN = "Qwen/Qwen2.5-0.5B-Instruct"


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("shapes")
    return {name: getattr(base_shapes, name)(root / name) for name in ("qwen25", "llama3", "mistral")}


# --- the checks, on folders shaped like real models ---------------------------------------------


def test_qwen25_shaped_files_pass(shapes):
    report = inspection.inspect_base(shapes["qwen25"])
    assert report["architecture"] == "Qwen2ForCausalLM"
    assert report["end_of_turn"] == {"token": "<|im_end|>", "id": 2}
    assert report["eos_token_ids"] == [0, 2]  # <|im_end|> and <|endoftext|>, as Qwen ships it
    assert report["pad"] == {"token": "<|endoftext|>", "id": 0, "same_as_end_of_turn": False}
    assert (report["add_bos"], report["generation_markers"]) == (False, False)
    assert report["params"] is None  # no weights fetched
    assert report["params_from_config"] == 494_032_768  # Qwen2.5-0.5B's published count
    assert report["warnings"] == []


def test_llama3_shaped_files_pass_with_the_double_bos_warning(shapes):
    report = inspection.inspect_base(shapes["llama3"])
    assert report["architecture"] == "LlamaForCausalLM"
    assert report["end_of_turn"] == {"token": "<|eot_id|>", "id": 4}
    assert report["bos"] == {"token": "<|begin_of_text|>", "id": 0, "in_template": True}
    assert report["params_from_config"] == 1_235_814_400  # Llama-3.2-1B's published count
    assert report["warnings"] == [
        "the chat template writes <|begin_of_text|> and the tokenizer adds it again: tokenize "
        "rendered chats with add_special_tokens=False"]


def test_an_unsupported_architecture_names_the_ones_afs_converts(shapes):
    with pytest.raises(inspection.BaseModelError) as err:
        inspection.inspect_base(shapes["mistral"])
    assert str(err.value) == (
        f"{shapes['mistral']}: architecture 'MistralForCausalLM' cannot be converted to GGUF by "
        f"afs, so a specialist trained on it could not be served; {SUPPORTED}")


def test_the_scripts_first_step_runs_the_same_checks(shapes, tmp_path):
    """loop.preflight, the rendered script's first step, on the same folders (no weights)."""
    config = script.config(write_project(tmp_path, {"hub": QWEN, "params_b": 0.5}), "alpha", base=QWEN)
    for name in ("qwen25", "llama3"):
        tokenizer, warnings = loop.preflight(config, str(shapes[name]), None)
        assert warnings == inspection.inspect_base(shapes[name])["warnings"]
    with pytest.raises(loop.ConfigError) as err:
        loop.preflight(config, str(shapes["mistral"]), None)
    assert str(err.value) == (
        "the base model fails the checks afs makes before training:\n"
        f"{shapes['mistral']}: architecture 'MistralForCausalLM' cannot be converted to GGUF by "
        f"afs, so a specialist trained on it could not be served; {SUPPORTED}")


def test_sizes_from_the_config_match_the_weights(tmp_path):
    """config_params counts what safetensors holds: a tiny Qwen2 (biases, tied) and Llama (untied)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tinymodel import build_tiny_model

    qwen = build_tiny_model(tmp_path / "qwen")
    torch.manual_seed(0)
    llama = tmp_path / "llama"
    LlamaForCausalLM(LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                                 tie_word_embeddings=False)).save_pretrained(llama)
    for folder in (qwen, llama):
        from transformers import AutoConfig

        text = AutoConfig.from_pretrained(folder).get_text_config()
        assert inspection.config_params(text) == safetensors_params(folder), folder.name


def test_a_size_far_from_params_b_is_named():
    report = {"params": None, "params_from_config": 494_032_768}
    problem, warning = inspection.size_problem("qwen", 0.1, report)
    assert problem == ("models.qwen.params_b is 0.1 but the model has about 0.494B parameters; "
                       "memory, time and cost estimates use params_b: set params_b: 0.494 (the "
                       "hardware fit check used the smaller number)") and warning is None
    assert inspection.size_problem("qwen", 0.5, report) == (None, None)
    problem, warning = inspection.size_problem("qwen", 7.0, report)
    assert problem is None and warning.startswith("models.qwen.params_b is 7 but the model has about 0.494B")


# --- afs validate ---------------------------------------------------------------------------------


def write_project(root: Path, model: dict, **spec):
    data = {
        "project": {"name": "demo"},
        "models": {"base": model},
        "hardware": {"cpu": {"vram_gb": 16}},
        "sources": {"chat": {"kind": "custom", "path": "chat.jsonl", "format": "alpaca"}},
        "mixes": {"general": {"samples": 4, "groups": {"all": {"share": 1.0, "sources": ["chat"]}}}},
        "specialists": {"alpha": {"role": "r", "base": "base", "mix": "general", "hardware": "cpu",
                                  "port": 6001, **spec}},
    }
    (root / "afs.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    (root / "chat.jsonl").write_text(json.dumps({"instruction": "a", "output": "b"}) + "\n")
    return manifest_module.load(root / "afs.yaml")


def test_validate_refuses_a_path_model_the_converter_cannot_write(shapes, tmp_path, capsys):
    from afs_build.cli import main

    shutil.copytree(shapes["mistral"], tmp_path / "mistral")
    with pytest.raises(AfsError) as err:
        write_project(tmp_path, {"path": "mistral", "params_b": 0.5})
    assert str(err.value).splitlines() == [
        f"{at(tmp_path / 'afs.yaml', 'mistral')}: models.base.path: mistral/config.json: "
        f"architecture 'MistralForCausalLM' cannot be converted to GGUF by afs, so a specialist "
        f"trained on it could not be served; {SUPPORTED}"]
    assert main(["validate", str(tmp_path / "afs.yaml")]) == 1
    assert "architecture 'MistralForCausalLM' cannot be converted" in capsys.readouterr().err
    shutil.copytree(shapes["qwen25"], tmp_path / "qwen")  # a convertible one validates
    write_project(tmp_path, {"path": "qwen", "params_b": 0.5})


def test_validate_wants_a_config_json_in_a_path_model(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(AfsError) as err:
        write_project(tmp_path, {"path": "empty", "params_b": 0.5})
    assert str(err.value).endswith(
        "models.base.path: not a model folder: empty has no config.json; expected a local "
        "Hugging Face model folder (config.json, weights, tokenizer), relative to the manifest")


def test_validate_refuses_an_embedded_model_of_another_architecture(tmp_path, monkeypatch):
    import dataclasses

    name = "smollm2-135m-instruct"  # the schema lists the table's names: change the entry itself
    monkeypatch.setitem(embedded.EMBEDDED, name, dataclasses.replace(embedded.EMBEDDED[name],
                                                                     architecture="GPT2LMHeadModel"))
    with pytest.raises(AfsError) as err:
        write_project(tmp_path, {"embedded": name})
    assert str(err.value).splitlines() == [
        f"{at(tmp_path / 'afs.yaml', name)}: models.base.embedded: embedded model '{name}': "
        f"architecture 'GPT2LMHeadModel' cannot be converted to GGUF by afs, so a specialist "
        f"trained on it could not be served; {SUPPORTED}"]


# --- hub models: fetched and checked by base:<model>, or moved to the training machine ------------


def fake_hub_cache(cache: Path, repo: str, files: Path, commit: str = "0" * 39 + "1") -> Path:
    """A Hugging Face cache holding `files` as `repo`'s snapshot at `main` (what a fetch leaves)."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    shutil.copytree(files, folder / "snapshots" / commit)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)
    return folder / "snapshots" / commit


@pytest.fixture
def offline(monkeypatch):
    """huggingface_hub's own offline switch (HF_HUB_OFFLINE=1), so no test reaches the network."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_hub_files_are_fetched_from_the_cache_and_checked(offline, shapes, tmp_path):
    fake_hub_cache(tmp_path / "hub", QWEN, shapes["qwen25"])
    report = inspection.hub_report(QWEN, "main", tmp_path / "hub")
    assert report["checked"] is True and report["commit"] == "0" * 39 + "1"
    assert report["files"] == ["chat_template.jinja", "config.json", "generation_config.json",
                               "tokenizer.json", "tokenizer_config.json"]
    assert report["end_of_turn"] == {"token": "<|im_end|>", "id": 2}
    assert report["params_from_config"] == 494_032_768


def test_out_of_reach_hub_moves_the_checks_to_the_training_machine(offline, tmp_path):
    report = inspection.hub_report(QWEN, "main", tmp_path / "hub")
    assert report == {"hub": QWEN, "revision": "main", "checked": False, "checks": inspection.MOVED,
                      "warnings": [f"the Hugging Face hub is out of reach (offline?), so {QWEN}@main is "
                                   f"not checked here: {inspection.MOVED}"]}


def doit(root: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "doit", "-f", str(REPO / "dodo.py"), *args], cwd=root,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "AFS_MANIFEST": "afs.yaml", "HF_HUB_OFFLINE": "1"})


def test_base_stage_checks_a_hub_model_once_it_can(shapes, tmp_path):
    from afs_build import plan
    from afs_build.paths import Layout

    manifest = write_project(tmp_path, {"hub": QWEN, "params_b": 0.5})
    files = Layout.of(manifest).base("base")
    first = doit(tmp_path, "base:base")
    assert first.returncode == 0, first.stdout + first.stderr
    report = json.loads(files.report.read_text())["report"]
    assert report["checked"] is False and "moved to the training machine" in first.stdout + first.stderr
    (runs,) = [t for t in plan.task_plans(manifest) if t.name == "base:base"]
    assert runs.reasons == ("hub model not checked yet (the hub was out of reach)",)

    fake_hub_cache(files.hub, QWEN, shapes["qwen25"])  # as a fetch with the network would leave it
    second = doit(tmp_path, "base:base")
    assert second.returncode == 0, second.stdout + second.stderr
    saved = json.loads(files.report.read_text())
    assert saved["report"]["checked"] is True and saved["digest"] == f"{QWEN}@{'0' * 39}1"
    (runs,) = [t for t in plan.task_plans(manifest) if t.name == "base:base"]
    assert runs.reasons == ()

    write_project(tmp_path, {"hub": QWEN, "params_b": 0.1})  # the hardware fit used 0.1B
    third = doit(tmp_path, "base:base")
    assert third.returncode != 0 and "Traceback" not in third.stdout + third.stderr
    assert (f"{tmp_path / 'afs.yaml'}: models.base.params_b is 0.1 but the model has about 0.494B "
            f"parameters") in third.stdout + third.stderr
