"""Unpack an embedded GGUF base into a trainable float32 Hugging Face folder with its tokenizer."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from .. import log
from ..errors import StageError
from ..paths import SOURCE_FILE
from .embedded import EmbeddedModel, embedded, locate_embedded

# transformers' GGUF loader builds a plain GPT-2 byte-level pre-tokenizer whatever the GGUF's
# `tokenizer.ggml.pre` says; llama.cpp splits by that pre-type. Measured on SmolLM2: "   123"
# and "I'm 2nd ٣٤٥" tokenize differently until digits are split one by one as below.
PRE_TOKENIZERS = {
    "smollm": [{"type": "Digits", "individual_digits": True},
               {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}],
}


def materialize_embedded(name: str, dest: Path, *, task: str | None = None) -> Path:
    """Unpack embedded model `name` into `dest` as a float32 HF folder with its tokenizer.

    The GGUF is dequantized by transformers. The loaded model keeps a GGUF quantizer that
    refuses to save, so the weights move into a plain model built from the config (without
    `quantization_config`). Everything is written into a temporary folder beside `dest` and
    renamed at the end: a folder at `dest` is always complete.
    """
    model = embedded(name)
    gguf_path = locate_embedded(name)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{dest.name}.tmp-"
    for pattern in (prefix + "*", f".{dest.name}.old-*"):  # left by a killed run; one task per folder
        for stale in dest.parent.glob(pattern):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=dest.parent))
    try:
        meta = _gguf_meta(gguf_path)
        with log.step(task, "unpacking the tokenizer", file=model.file):
            tokenizer = _tokenizer(gguf_path, meta, model)
        with log.step(task, "dequantizing the weights to float32", file=model.file):
            plain = _plain_model(gguf_path, tokenizer)
        with log.step(task, "saving the trainable folder", folder=str(dest)):
            plain.save_pretrained(tmp)
            del plain
            tokenizer.save_pretrained(tmp)
            _pin_tokenizer_config(tmp, meta)
            _check_tokenizer_reloads(tmp, tokenizer)
            (tmp / SOURCE_FILE).write_text(json.dumps({
                "embedded": name, "package": model.pip_name, "file": model.file,
                "license": model.license, "dtype": "float32",
                "gguf_tokenizer_pre": meta["tokenizer.ggml.pre"]}, indent=2, sort_keys=True) + "\n")
        tmp.chmod(0o755)  # mkdtemp makes 0700; artifacts are not private
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old-{tmp.name[len(prefix):]}")
            dest.rename(old)
            tmp.rename(dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _gguf_meta(path: Path) -> dict:
    from ..post.gguf_info import read

    fields = read(path).fields
    keys = ("tokenizer.ggml.pre", "tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token")
    return {key: fields.get(key) for key in keys}


def _tokenizer(gguf_path: Path, meta: dict, model: EmbeddedModel):
    from tokenizers import pre_tokenizers
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name,
                                              local_files_only=True)
    pre = meta["tokenizer.ggml.pre"]
    if pre not in PRE_TOKENIZERS:
        raise StageError(f"{gguf_path}: no pre-tokenizer is known for the GGUF pre-type {pre!r}; "
                         f"add it to PRE_TOKENIZERS in {__name__}")
    tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [_pre_tokenizer(step) for step in PRE_TOKENIZERS[pre]])
    if model.pad_token:
        tokenizer.pad_token = model.pad_token
    return tokenizer


def _pre_tokenizer(step: dict):
    from tokenizers import pre_tokenizers

    kind = {"Digits": pre_tokenizers.Digits, "ByteLevel": pre_tokenizers.ByteLevel}[step["type"]]
    return kind(**{k: v for k, v in step.items() if k != "type"})


def _plain_model(gguf_path: Path, tokenizer):
    import copy

    import torch
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name,
                                                  local_files_only=True, dtype=torch.float32)
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.pad_token_id = tokenizer.pad_token_id
    with torch.device("meta"):  # no random init: every weight is assigned below
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    result = plain.load_state_dict(loaded.state_dict(), strict=False, assign=True)
    missing = [k for k in result.missing_keys if not _is_tied(config, k)]
    if missing or result.unexpected_keys:
        raise StageError(f"{gguf_path}: the dequantized weights do not fit {type(plain).__name__}: "
                         f"missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}")
    plain.tie_weights()
    on_meta = [n for n, p in plain.named_parameters() if p.device.type == "meta"]
    if on_meta:
        raise StageError(f"{gguf_path}: weights left unset after loading: {on_meta[:5]}")
    if getattr(config, "tie_word_embeddings", False):
        out, emb = plain.get_output_embeddings().weight, plain.get_input_embeddings().weight
        if out.data_ptr() != emb.data_ptr():
            raise StageError(f"{gguf_path}: tie_word_embeddings is set but the output projection "
                             f"is not tied to the embeddings after loading")
    plain.generation_config = copy.deepcopy(loaded.generation_config)
    plain.generation_config.pad_token_id = tokenizer.pad_token_id
    del loaded
    return plain.eval()


def _is_tied(config, key: str) -> bool:
    return bool(getattr(config, "tie_word_embeddings", False)) and key.endswith("lm_head.weight")


def _pin_tokenizer_config(folder: Path, meta: dict) -> None:
    """Write add_bos_token/add_eos_token as the GGUF has them (llama.cpp's defaults differ)."""
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    for key in ("is_local", "local_files_only"):  # how it was loaded, not what it is
        config.pop(key, None)
    config.update(add_bos_token=bool(meta["tokenizer.ggml.add_bos_token"]),
                  add_eos_token=bool(meta["tokenizer.ggml.add_eos_token"]))
    model_config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if model_config.get("max_position_embeddings"):
        config["model_max_length"] = model_config["max_position_embeddings"]
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _check_tokenizer_reloads(folder: Path, tokenizer) -> None:
    """transformers may rebuild a tokenizer by class on load; the saved one must tokenize alike."""
    from transformers import AutoTokenizer

    reloaded = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    for text in ("What is 12345 plus 30?", "   123  456\t7", "I'm 2nd, ٣٤٥ ½ ²", "Héllo 東京 🙂\n\n x"):
        if reloaded(text)["input_ids"] != tokenizer(text)["input_ids"]:
            raise StageError(f"{folder}: the saved tokenizer ({type(reloaded).__name__}) tokenizes "
                             f"{text!r} differently from the GGUF's")
