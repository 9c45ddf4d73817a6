"""Merge a LoRA adapter into its base tensor by tensor, as the GGUF is written, and check it.

* :func:`merged_tensors` never builds the merged model: it reads the base's safetensors one
  tensor at a time and adds ``scale * B @ A`` where the adapter has a LoRA pair, so
  :func:`afs_build.post.gguf_convert.convert_folder` writes the specialist's GGUF directly and
  no merged copy of the model is ever written (for a 7B base that copy is about 15 GB).
* :func:`check_merge` is the ``merge:<specialist>`` task: the streamed merge must compute what
  peft computes with the adapter, on logits; it writes no weights.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from ..errors import StageError

if TYPE_CHECKING:
    import numpy as np

PROMPTS = ("What is the capital of France?", "Explain DMA in one sentence.",
           "Write a haiku about the sea.")
# float32 merges differ from the adapter's forward pass by rounding only; half-precision bases
# round the merged weights themselves.
TOLERANCE = {"float32": 1e-3, "bfloat16": 0.25, "float16": 0.05}
PREFIX = "base_model.model."
# adapter_config.json settings the streaming merge does not implement, with their no-op value
UNSUPPORTED = {"use_dora": False, "lora_bias": False, "layer_replication": None,
               "target_parameters": None, "trainable_token_indices": None}


# --- the streaming merge -----------------------------------------------------------------------


def adapter_config(adapter_folder: Path) -> dict:
    """adapter_config.json, checked for what the streaming merge supports."""
    path = Path(adapter_folder) / "adapter_config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StageError(f"{adapter_folder}: no adapter_config.json; is this a peft adapter "
                         "saved with save_pretrained?") from None
    if config.get("peft_type", "LORA") != "LORA":
        raise StageError(f"{path}: peft_type {config.get('peft_type')!r} cannot be merged; "
                         "afs merges LORA adapters")
    for key, neutral in UNSUPPORTED.items():
        if config.get(key) not in (neutral, [], {}):
            raise StageError(f"{path}: {key} = {config[key]!r} is not supported by afs's "
                             "streaming merge, which merges plain LoRA adapters; train the "
                             "adapter without it")
    return config


def _pattern_value(patterns: dict, module: str, default: Any) -> Any:
    """peft's rank_pattern/alpha_pattern lookup (`get_pattern_key`): a suffix regex match."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def load_adapter(adapter_folder: Path) -> tuple[dict, dict[str, dict], dict[str, Any]]:
    """``(config, {module: {"A", "B", "scale"}}, {tensor name: replacement})`` of an adapter."""
    from safetensors.torch import load_file

    config = adapter_config(adapter_folder)
    path = Path(adapter_folder) / "adapter_model.safetensors"
    if not path.is_file():
        raise StageError(f"{adapter_folder}: no adapter_model.safetensors; save the adapter "
                         "with save_pretrained(..., safe_serialization=True)")
    pairs: dict[str, dict] = {}
    replace: dict[str, Any] = {}
    for key, tensor in load_file(str(path)).items():
        name = key[len(PREFIX):] if key.startswith(PREFIX) else key
        match = re.fullmatch(r"(.+)\.lora_([AB])(?:\.[^.]+)?\.weight", name)
        if match:
            pairs.setdefault(match.group(1), {})[match.group(2)] = tensor
        elif "lora_" in name:
            raise StageError(f"{path}: tensor {key!r} is not supported by afs's streaming merge "
                             "(embedding LoRA or DoRA); train a plain LoRA on linear layers")
        else:  # modules_to_save and trained biases: whole tensors that replace the base's
            replace[name] = tensor
    for module, pair in pairs.items():
        if set(pair) != {"A", "B"}:
            raise StageError(f"{path}: module {module!r} has lora_{next(iter(pair))} only")
        r = pair["A"].shape[0]
        alpha = _pattern_value(config.get("alpha_pattern") or {}, module, config["lora_alpha"])
        pair["scale"] = alpha / (r ** 0.5) if config.get("use_rslora") else alpha / r
    return config, pairs, replace


def merged_tensors(base_folder: Path, adapter_folder: Path) -> Iterator[tuple[str, np.ndarray]]:
    """Yield the base's tensors with the LoRA merged in, reading the base lazily.

    The arithmetic is peft's (`get_delta_weight` then ``W += delta``): ``delta = B @ A``,
    transposed for ``fan_in_fan_out``, times ``alpha / r`` (``alpha / sqrt(r)`` with rsLoRA).
    Merged tensors come out float32; the others keep their dtype (bfloat16 becomes float32,
    which numpy lacks).
    """
    from .weights import read_safetensors, to_numpy

    config, pairs, replace = load_adapter(adapter_folder)
    fan_in_fan_out = bool(config.get("fan_in_fan_out", False))
    used = set()
    for name, tensor in read_safetensors(base_folder):
        if name in replace:
            used.add(name)
            tensor = replace[name]
        module = name[: -len(".weight")] if name.endswith(".weight") else None
        if module in pairs:
            pair = pairs[module]
            delta = pair["B"].float() @ pair["A"].float()
            if fan_in_fan_out:
                delta = delta.T
            tensor = tensor.float() + delta * pair["scale"]
            used.add(module)
        array = to_numpy(tensor)
        del tensor  # not held by this frame while the consumer works
        yield name, array
        del array
    unused = sorted(set(pairs) - used) + sorted(set(replace) - used)
    if unused:
        raise StageError(f"adapter {adapter_folder} does not fit base {base_folder}: no base "
                         f"tensor for {', '.join(unused[:6])}{' ...' if len(unused) > 6 else ''}")


# --- the check against peft ------------------------------------------------------------------


def _prompt_ids(tokenizer, prompts) -> list[list[int]]:
    if getattr(tokenizer, "chat_template", None):
        return [list(tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=True,
                                                   add_generation_prompt=True, return_dict=False))
                for p in prompts]
    return [tokenizer.encode(p) for p in prompts]


def _logits(model, batches: list[list[int]]) -> list[Any]:
    import torch

    with torch.no_grad():
        return [model(input_ids=torch.tensor([ids])).logits[0].float() for ids in batches]


def _base_parameters(model) -> dict[str, Any]:
    """The base weights inside a peft model, under the names the base's safetensors use.

    peft keeps a wrapped layer's own weight as ``<module>.base_layer.weight`` and a replaced
    module's as ``<module>.original_module.weight``; with the adapter switched off, those are
    what the model computes with.
    """
    out = {}
    for name, param in model.get_base_model().named_parameters(remove_duplicate=False):
        if "lora_" in name or ".modules_to_save." in name:
            continue
        out[name.replace(".base_layer.", ".").replace(".original_module.", ".")] = param
    return out


def check_merge(base_folder: Path, adapter_folder: Path, *, prompts=PROMPTS,
                tolerance: float | None = None) -> dict:
    """Check that :func:`merged_tensors` computes what base + adapter compute in peft.

    One model in memory and no weights written: the base is loaded with the adapter as peft
    runs it, and its logits on a few chat-templated prompts are the reference. Then each tensor
    the streaming merge yields is copied over the base weight it replaces, and with the adapter
    switched off the same prompts run again. The largest logit difference must be within the
    tolerance of the base's dtype (rounding only), or this raises StageError.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_folder, adapter_folder = Path(base_folder), Path(adapter_folder)
    config = adapter_config(adapter_folder)
    tokenizer = AutoTokenizer.from_pretrained(base_folder)
    base = AutoModelForCausalLM.from_pretrained(base_folder, dtype="auto")
    dtype = str(base.dtype).removeprefix("torch.")
    limit = tolerance if tolerance is not None else TOLERANCE.get(dtype, 0.25)
    model = PeftModel.from_pretrained(base, adapter_folder).eval()
    batches = _prompt_ids(tokenizer, prompts)
    before = _logits(model, batches)
    params = _base_parameters(model)
    changed = 0
    with torch.no_grad():
        for name, array in merged_tensors(base_folder, adapter_folder):
            if name not in params:
                raise StageError(f"{base_folder}: tensor {name!r} of the safetensors files is not "
                                 "a weight of the model transformers loads from this folder")
            weight = torch.from_numpy(array).to(params[name].dtype)
            changed += not torch.equal(params[name], weight)
            params[name].copy_(weight)
            del array, weight
    with model.disable_adapter():
        after = _logits(model, batches)
    diffs = [float((a - b).abs().max()) for a, b in zip(before, after)]
    worst = max(range(len(diffs)), key=diffs.__getitem__)
    if diffs[worst] > limit:
        raise StageError(f"merging {adapter_folder} into {base_folder} changes the model: the "
                         f"largest logit difference between base + adapter (peft) and afs's "
                         f"streamed merge is {diffs[worst]:.3g} (tolerance {limit:g}) on prompt "
                         f"{prompts[worst]!r}; the adapter does not merge cleanly into this base")
    return {
        "base": str(base_folder), "adapter": str(adapter_folder), "dtype": dtype,
        "lora": {k: sorted(v) if isinstance(v, list) else v for k, v in (
            (k, config.get(k)) for k in ("r", "lora_alpha", "use_rslora", "fan_in_fan_out",
                                         "target_modules"))},
        "tensors_changed": changed, "prompts": list(prompts),
        "max_abs_logit_diff": max(diffs), "tolerance": limit,
    }
