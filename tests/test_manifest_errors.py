"""Every kind of manifest mistake gets its exact message, position and key path."""

from __future__ import annotations

import pytest
import yaml

from afs_build.errors import ManifestError
from afs_build.manifest import load
from conftest import at


def problems(path) -> list[str]:
    with pytest.raises(ManifestError) as info:
        load(path)
    return [str(p) for p in info.value.problems]


def test_minimal_manifest_loads_into_frozen_dataclasses(project, minimal):
    m = load(project.write(minimal))
    alpha = m.specialists["alpha"]
    assert (alpha.lora.r, alpha.epochs, alpha.quantize) == (16, 3, ("Q4_K_M", "Q5_K_M", "Q8_0"))
    assert m.mixes["general"].groups[0].sources == ("chat",)
    assert m.deploy.host == "127.0.0.1"
    with pytest.raises(AttributeError):
        alpha.port = 1  # frozen
    with pytest.raises(TypeError):
        m.specialists["gamma"] = alpha  # read-only mapping


def test_copies_of_a_served_model_default_to_two_where_two_cores_are_usable(project, minimal, monkeypatch):
    from afs_build import cores

    assert load(project.write(minimal)).eval.copies is None
    for usable, copies in ((1, 1), (2, 2), (16, 2)):
        monkeypatch.setattr(cores, "usable", lambda usable=usable: usable)
        assert load(project.write(minimal)).eval.model_copies == copies
    minimal["eval"] = {**(minimal.get("eval") or {}), "copies": 3}
    assert load(project.write(minimal)).eval.model_copies == 3
    minimal["eval"]["copies"] = 0
    assert any("eval.copies" in p for p in problems(project.write(minimal)))


def test_unknown_key_suggests_the_right_one(project):
    path = project.write("""\
        project: {name: demo}
        models: {tiny: {embedded: smollm2-135m-instruct}}
        specialists:
          alpha:
            role: First
            base: tiny
            train: false
            port: 6001
            learnig_rate: 0.001
        """)
    assert problems(path) == [
        f"{path}:9:5: specialists.alpha.learnig_rate: unknown key 'learnig_rate'; expected one of: "
        "'base', 'base_precision', 'batch_size', 'categories', 'checkpoint_every', 'context_length', "
        "'description', 'epochs', 'grad_accum', 'gradient_checkpointing', 'hardware', "
        "'learning_rate', 'lora', 'max_seq_len', 'mix', 'packing', 'port', 'quantize', 'retrieval', "
        "'role', 'sampling', 'serve_quant', 'system_prompt', 'train', 'version', 'warmup_ratio' "
        "(did you mean 'learning_rate'?)"]


def test_every_problem_is_reported_at_once_sorted_by_position(project):
    path = project.write("""\
        project: {name: demo, sed: 1}
        models: {tiny: {embedded: smollm2-135m-instruct}}
        specialists:
          alpha: {role: First, base: tiny, train: false, port: 80, quantize: [Q4_K_X]}
        """)
    assert problems(path) == [
        f"{at(path, 'sed')}: project.sed: unknown key 'sed'; expected one of: 'build_dir', "
        "'description', 'name', 'seed' (did you mean 'seed'?)",
        f"{at(path, '80')}: specialists.alpha.port: expected a number >= 1024, got 80",
        f"{at(path, 'Q4_K_X')}: specialists.alpha.quantize[0]: expected one of: 'BF16', 'F16', 'F32', "
        "'IQ2_M', 'IQ2_S', 'IQ2_XS', 'IQ2_XXS', 'IQ3_M', 'IQ3_S', 'IQ3_XS', 'IQ3_XXS', 'IQ4_NL', "
        "'IQ4_XS', 'Q2_K', 'Q2_K_S', 'Q3_K_L', 'Q3_K_M', 'Q3_K_S', 'Q4_0', 'Q4_1', 'Q4_K_M', "
        "'Q4_K_S', 'Q5_0', 'Q5_1', 'Q5_K_M', 'Q5_K_S', 'Q6_K', 'Q8_0', 'TQ1_0', 'TQ2_0'; got "
        "'Q4_K_X' (did you mean 'Q4_K_S'?)",
    ]


def test_missing_required_keys_and_wrong_types(project):
    path = project.write("""\
        project: {name: demo, seed: many}
        models: {tiny: {embedded: smollm2-135m-instruct}}
        specialists:
          alpha: {base: tiny, train: false}
        """)
    assert problems(path) == [
        f"{at(path, 'many')}: project.seed: expected an integer, got 'many'",
        f"{at(path, '{base')}: specialists.alpha.port: missing required key 'port'; expected port of "
        "this specialist's OpenAI-compatible server",
        f"{at(path, '{base')}: specialists.alpha.role: missing required key 'role'; expected short role, "
        "e.g. Quest Specialist",
    ]


def test_unsafe_names_are_rejected_with_a_suggestion(project, minimal):
    minimal["specialists"]["Majora"] = minimal["specialists"].pop("beta")
    path = project.write(minimal)
    assert problems(path) == [
        f"{at(path, 'Majora')}: specialists.Majora: 'Majora' is not a safe name; expected a safe name: "
        "lowercase letters, digits, '-' or '_', starting with a letter, at most 48 characters "
        "(did you mean 'majora'?)"]
    minimal["specialists"]["../x"] = minimal["specialists"].pop("Majora")
    path = project.write(minimal)
    assert problems(path)[0].endswith("'../x' is not a safe name; expected a safe name: lowercase "
                                      "letters, digits, '-' or '_', starting with a letter, at "
                                      "most 48 characters (did you mean 'x'?)")


def test_unknown_names_get_did_you_mean(project, minimal):
    minimal["specialists"]["alpha"].update(base="tiny2", mix="genral", hardware="gpu")
    minimal["mixes"]["general"]["groups"]["all"]["sources"] = ["chatt"]
    minimal["eval"] = {"judges": ["alpah"]}
    path = project.write(minimal)
    assert problems(path) == [
        f"{at(path, 'chatt')}: mixes.general.groups.all.sources[0]: unknown source 'chatt'; expected one "
        "of: 'chat' (did you mean 'chat'?)",
        f"{at(path, 'tiny2')}: specialists.alpha.base: unknown model 'tiny2'; expected one of: 'tiny' "
        "(did you mean 'tiny'?)",
        f"{at(path, 'genral')}: specialists.alpha.mix: unknown mix 'genral'; expected one of: 'general' "
        "(did you mean 'general'?)",
        f"{at(path, 'gpu')}: specialists.alpha.hardware: unknown hardware 'gpu'; expected one of: 'cpu' "
        "(did you mean 'cpu'?)",
        f"{at(path, 'alpah')}: eval.judges[0]: unknown specialist 'alpah'; expected one of: 'alpha', "
        "'beta' (did you mean 'alpha'?)",
    ]


def test_shares_must_add_up_to_one(project, minimal):
    minimal["sources"]["more"] = {"kind": "custom", "path": "chat.jsonl", "format": "alpaca"}
    minimal["mixes"]["general"]["groups"] = {
        "expert": {"share": 0.6, "sources": ["chat"]}, "general": {"share": 0.25, "sources": ["more"]},
        "synthetic": {"share": 0.1, "sources": ["chat"]}}
    path = project.write(minimal)
    assert problems(path) == [
        f"{at(path, 'expert')}: mixes.general.groups: shares add up to 0.95 (expert 0.6 + general 0.25 + "
        "synthetic 0.1); expected them to add up to 1"]


def test_mix_size_needs_samples_or_tokens(project, minimal):
    minimal["mixes"]["general"]["tokens"] = 1000
    path = project.write(minimal)
    assert problems(path) == [
        f"{at(path, 'samples')}: mixes.general: expected exactly one of 'samples' or 'tokens' (the size of "
        "the training split); got both"]


def test_duplicate_and_out_of_range_ports(project, minimal):
    minimal["specialists"]["beta"]["port"] = 6001
    minimal["specialists"]["gamma"] = dict(minimal["specialists"]["alpha"], port=70000)
    path = project.write(minimal)
    first_line = at(path, "6001").split(":")[1]
    assert problems(path) == [
        f"{at(path, '6001', 1)}: specialists.beta.port: port 6001 is already used by 'alpha' "
        f"(line {first_line}); expected a unique port per specialist",
        f"{at(path, '70000')}: specialists.gamma.port: expected a number <= 65535, got 70000"]


def test_serve_quant_must_be_produced(project, minimal):
    minimal["specialists"]["alpha"].update(quantize=["Q8_0"], serve_quant="Q4_K_M")
    path = project.write(minimal)
    assert problems(path) == [
        f"{at(path, 'Q4_K_M')}: specialists.alpha.serve_quant: 'Q4_K_M' is not among this specialist's "
        "quantize types; expected one of: 'Q8_0'"]


def test_hardware_too_small_for_the_base_model(project, minimal):
    minimal["models"]["big"] = {"hub": "Qwen/Qwen2.5-Coder-7B-Instruct", "params_b": 7.6}
    minimal["hardware"]["gtx1080"] = {"backend": "skypilot", "gpu": "GTX1080", "vram_gb": 8,
                                      "price_per_hour": 0.068}
    minimal["specialists"]["alpha"].update(base="big", hardware="gtx1080")
    path = project.write(minimal)
    assert problems(path) == [
        f"{at(path, 'gtx1080', 1)}: specialists.alpha.hardware: 'gtx1080' has 8 GiB per GPU but LoRA on 'big' "
        "(7.6B parameters, bfloat16 weights) needs about 18.5 GiB (estimate); expected hardware "
        "with more memory, or base_precision: 4bit (QLoRA, about 6.6 GiB)"]
    minimal["specialists"]["alpha"]["base_precision"] = "4bit"
    load(project.write(minimal))  # QLoRA fits


def test_hub_and_path_models_need_a_size_and_exactly_one_origin(project, minimal):
    minimal["models"]["hubbed"] = {"hub": "Qwen/Qwen2.5-0.5B-Instruct"}
    minimal["models"]["both"] = {"hub": "Qwen/Qwen2.5-0.5B-Instruct", "path": "m", "params_b": 0.5}
    minimal["models"]["local"] = {"path": "no-such-folder", "params_b": 0.5}
    path = project.write(minimal)
    assert problems(path) == [
        f"{at(path, 'hub:')}: models.hubbed.params_b: missing required key 'params_b'; expected the "
        "parameter count in billions (e.g. 7.6) for a hub or path model, used for memory and time "
        "estimates",
        f"{at(path, 'hub:', 1)}: models.both: expected exactly one of 'hub', 'path' or 'embedded'; got 'hub' "
        "and 'path'",
        f"{at(path, 'no-such-folder')}: models.local.path: folder not found: no-such-folder; expected a local "
        "Hugging Face model folder (config.json, weights, tokenizer), relative to the manifest",
    ]


def test_source_files_must_exist(project, minimal):
    minimal["sources"]["chat"]["path"] = "missing.jsonl"
    path = project.write(minimal)
    assert problems(path) == [
        f"{at(path, 'missing.jsonl')}: sources.chat.path: file not found: missing.jsonl (looked in "
        f"{project.root}); expected an existing file, relative to the manifest's folder"]


def test_duplicate_yaml_keys_are_an_error(project):
    path = project.write("""\
        project: {name: demo}
        models: {tiny: {embedded: smollm2-135m-instruct}}
        specialists:
          alpha: {role: First, base: tiny, train: false, port: 6001}
          alpha: {role: Again, base: tiny, train: false, port: 6002}
        """)
    assert problems(path) == [
        f"{path}:5:3: specialists.alpha: duplicate key 'alpha' (first defined at line 4); "
        "expected each key once: remove or rename one"]


def test_yaml_syntax_error_has_a_position(project):
    path = project.write("project: {name: demo\nmodels: [\n")
    assert problems(path) == [
        f"{path}:2:7: YAML syntax error: expected ',' or '}}', but got ':'; expected valid YAML "
        "(check indentation, colons and quotes)"]


@pytest.mark.parametrize("text", ["", "\n  \n", "# only a comment\n"])
def test_empty_file(project, text):
    path = project.write(text)
    assert problems(path) == [f"{path}:1:1: file is empty; expected a mapping with at least "
                              "'project' and 'specialists'"]


def test_not_a_mapping(project):
    path = project.write("- just\n- a list\n")
    assert problems(path) == [f"{path}:1:1: expected a mapping of sections (project, models, "
                              "specialists, ...), got a list"]


def test_non_utf8_bytes(project):
    path = project.write("project: {name: demo}\n")
    path.write_bytes(b"project:\n  name: d\xe9mo\n")
    assert problems(path) == [f"{path}:2:10: byte 0xe9 is not valid UTF-8; expected a UTF-8 text "
                              "file: re-save it as UTF-8"]


def test_missing_file_and_folder(project):
    missing = project.root / "nope.yaml"
    assert problems(missing) == [f"{missing}:1:1: file not found; expected a YAML manifest here "
                                 "(create it, or pass another path)"]
    assert problems(project.root) == [f"{project.root}:1:1: is a folder; expected a YAML manifest "
                                      "file (for example afs.yaml)"]


def test_entity_expansion_bomb_is_refused(project):
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for prev, name in zip("abcdefg", "bcdefgh"):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    path = project.write("\n".join(lines) + "\n")
    assert problems(path) == [
        f"{path}:6:1: f: YAML aliases expand to more than 100,000 values (an entity-expansion "
        "bomb?); expected a manifest without deeply nested aliases"]


def test_cyclic_alias_is_refused(project):
    path = project.write("project: &p\n  name: demo\n  again: *p\n")
    assert problems(path) == [
        f"{path}:1:10: project.again: an alias refers to the mapping or list that contains it (a "
        "cycle); expected a tree: copy the values instead"]


def test_python_tags_are_refused(project):
    path = project.write("project: !!python/object/apply:os.system [echo hi]\n")
    assert problems(path) == [
        f"{path}:1:10: project: cannot read this value: tag "
        "'tag:yaml.org,2002:python/object/apply:os.system' is not allowed; expected a plain "
        "mapping or list"]


def test_anchors_and_merge_keys_still_work(project, minimal):
    text = """\
        project: {name: demo}
        models: {tiny: {embedded: smollm2-135m-instruct}}
        hardware: {cpu: {vram_gb: 8}}
        sources: {chat: {kind: custom, path: chat.jsonl, format: alpaca}}
        mixes: {general: {samples: 4, groups: {all: {share: 1, sources: [chat]}}}}
        specialists:
          alpha: &common {role: First, base: tiny, mix: general, hardware: cpu, port: 6001}
          beta:
            <<: *common
            role: Second
            port: 6002
        """
    m = load(project.write(text))
    assert (m.specialists["beta"].role, m.specialists["beta"].mix) == ("Second", "general")


def test_deep_nesting_is_refused(project):
    path = project.write("a: " + "[" * 3000 + "]" * 3000 + "\n")
    assert problems(path) == [f"{path}:1:1: lists or mappings are nested too deeply; expected a "
                              "manifest a few levels deep"]


def test_control_characters_are_refused_with_a_position(project):
    path = project.write("project: {name: a\x00}\n")
    assert problems(path) == [f"{path}:1:18: character #x0000 is not allowed in YAML; expected "
                              "printable text: remove it"]


def test_quantization_types_that_need_an_importance_matrix(project, minimal):
    minimal["specialists"]["alpha"]["quantize"] = ["Q8_0", "IQ2_XS"]
    path = project.write(minimal)
    assert problems(path) == [
        f"{at(path, 'IQ2_XS')}: specialists.alpha.quantize[1]: IQ2_XS needs an importance matrix, "
        "which afs does not compute; expected another type (IQ3_S, IQ4_XS, Q2_K or any Q*_K_* type)"]


@pytest.mark.parametrize("written, message", [
    ("1" * 5000, "number too large (5,000 digits); expected an integer of at most "
                 "9,223,372,036,854,775,807"),
    ("9223372036854775808", "number too large (19 digits); expected an integer of at most "
                            "9,223,372,036,854,775,807"),
    ("0x" + "f" * 5000, "number too large (5,002 digits); expected an integer of at most "
                        "9,223,372,036,854,775,807"),
    (".nan", "'.nan' is not a finite number; expected an ordinary number"),
    ("-.inf", "'-.inf' is not a finite number; expected an ordinary number"),
    ("!!int x", "cannot read 'x' as an integer (tag !!int); expected a value of that type, or "
                "quote it to make it a string"),
    ("!!bool maybe", "cannot read 'maybe' as true or false (tag !!bool); expected a value of "
                     "that type, or quote it to make it a string"),
    ("!!binary aGk=", "cannot read this value: tag 'tag:yaml.org,2002:binary' is not allowed; "
                      "expected a plain string, number, boolean or null"),
])
def test_numbers_no_manifest_can_use_are_errors_not_crashes(project, minimal, written, message):
    """Thousands of digits hit Python's int-string limit inside PyYAML: a problem, not a traceback."""
    text = yaml.safe_dump(minimal, sort_keys=False).replace("port: 6001", f"port: {written}")
    path = project.write(text)
    assert problems(path) == [f"{at(path, written)}: specialists.alpha.port: {message}"]


def test_a_key_of_thousands_of_digits_is_an_error_not_a_crash(project):
    path = project.write("project: {name: demo}\n? " + "1" * 5000 + "\n: x\n")  # an explicit key
    assert problems(path) == [f"{path}:2:3: number too large (5,000 digits); expected an integer "
                              "of at most 9,223,372,036,854,775,807"]


def test_yaml_dates_are_read_as_the_text_they_show(project, minimal):
    minimal["specialists"]["alpha"]["description"] = "DATE"
    path = project.write(yaml.safe_dump(minimal, sort_keys=False).replace("DATE", "2026-12-01"))
    assert load(path).specialists["alpha"].description == "2026-12-01"


def test_a_local_model_path_must_be_a_model_folder(project, minimal):
    minimal["models"]["local"] = {"path": "weights", "params_b": 0.5}
    minimal["models"]["system"] = {"path": "/etc", "params_b": 0.5}
    path = project.write(minimal, {"weights/readme.txt": "no model here"})
    assert problems(path) == [
        f"{at(path, 'weights')}: models.local.path: not a model folder: weights has no "
        "config.json; expected a local Hugging Face model folder (config.json, weights, "
        "tokenizer), relative to the manifest",
        f"{at(path, '/etc')}: models.system.path: not a model folder: /etc has no config.json; "
        "expected a local Hugging Face model folder (config.json, weights, tokenizer), relative "
        "to the manifest"]
    (project.root / "weights" / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    (project.root / "weights" / "readme.txt").unlink()
    del minimal["models"]["system"]
    load(project.write(minimal))


def test_max_seq_len_must_hold_the_system_prompt_and_an_answer(project, minimal):
    # "Answer briefly." is about 3.6 tokens (2 words, 1 symbol): 20 of them about 72.
    prompt = " ".join(["Answer briefly."] * 20)
    minimal["specialists"]["alpha"].update(system_prompt=prompt, max_seq_len=100)
    minimal["specialists"]["beta"].update(system_prompt=prompt, max_seq_len=100, train=False)
    path = project.write(minimal)
    assert problems(path) == [
        f"{at(path, '100')}: specialists.alpha.max_seq_len: max_seq_len 100 leaves no room for "
        "an answer: the system prompt (about 72 tokens) and the chat template's markers (about "
        "15) take about 87; expected at least 103 (an answer of 16 tokens), or a shorter "
        "system_prompt"]
    minimal["specialists"]["alpha"]["max_seq_len"] = 103
    load(project.write(minimal))  # just enough; beta is not trained, so its length is unused


def test_an_integer_setting_written_as_a_float_is_an_error(project, minimal):
    """JSON Schema counts 6001.0 as an integer; afs does not (it would reach the code a float)."""
    minimal["specialists"]["alpha"]["port"] = 6001.0
    minimal["mixes"]["general"]["samples"] = 4.0
    path = project.write(minimal)
    assert problems(path) == [
        f"{at(path, '4.0')}: mixes.general.samples: expected an integer or null, got 4.0",
        f"{at(path, '6001.0')}: specialists.alpha.port: expected an integer, got 6001.0"]
