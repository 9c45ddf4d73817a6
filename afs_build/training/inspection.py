"""Check a base model before anything trains on it: architecture, sizes, chat template, stop tokens.

The checks are the ones whose failure shows up only later: a model the GGUF converter cannot
write, or one that answers well in Python and rambles in LM Studio or Ollama (a missing chat
template, an assistant turn that does not end with a token the model stops at, a pad token
that is the end-of-turn token, a BOS added twice). They live in :func:`loop.check_base
<afs_build.training.loop.check_base>`, which the rendered script also runs as its first step:
one set of checks, here and on the training machine.

A local folder (a ``path`` model, an unpacked embedded one) is read directly. A hub model's
small files (config, tokenizer, template; never the weights) are fetched with huggingface_hub
at the pinned revision into the build folder and checked the same way; where the hub cannot be
reached, the report says so and the checks move to the training machine.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional

from ..errors import StageError
from ..paths import SOURCE_FILE
from ..post.architectures import FAMILIES
from .digest import safetensors_params
from .loop import check_base, unsupported_architecture

SUPPORTED = tuple(sorted(FAMILIES))
# A hub model's files that the checks read: configs, tokenizer, chat template; no weights.
HUB_FILES = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
             "special_tokens_map.json", "added_tokens.json", "chat_template.jinja",
             "chat_template.json", "vocab.json", "merges.txt", "tokenizer.model", "*.tiktoken"]
MOVED = ("the checks of its config, tokenizer and chat template moved to the training machine: "
         "train.py runs them as its first step, before loading any weight")


class BaseModelError(StageError):
    """A base model folder that would train, but not chat or convert: names the folder and the fix."""


def architecture_problem(architecture: Optional[str]) -> Optional[str]:
    """Why the GGUF converter cannot write `architecture`, or None when it can."""
    return unsupported_architecture(architecture, SUPPORTED)


def read_architecture(folder: Path) -> Optional[str]:
    """The first architecture named by ``folder/config.json`` (raises OSError or ValueError)."""
    config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    if not isinstance(config, dict):
        raise ValueError("config.json is not a JSON object")
    names = config.get("architectures") or [None]
    return names[0] if isinstance(names, list) else None


def inspect_base(folder: Path, architectures: tuple[str, ...] = SUPPORTED) -> dict:
    """Check a local base folder; a JSON-ready report.

    Raises BaseModelError listing every problem (folder, what is wrong, the fix). Loads the
    config, tokenizer and generation config only; `params` comes from safetensors headers
    (None without weights, as for a hub model's fetched files), `params_from_config` from the
    config's sizes.
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
    found = check_base(str(folder), tokenizer, config, generation.eos_token_id, generation_file,
                       architectures)
    warnings = found["warnings"]
    pinned = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8")) \
        if (folder / "tokenizer_config.json").is_file() else {}
    if tokenizer.bos_token_id is not None and "add_bos_token" not in pinned:
        warnings.append(f"tokenizer_config.json does not set add_bos_token: llama.cpp may add "
                        f"{tokenizer.bos_token} where training did not; write add_bos_token: "
                        f"{str(found['add_bos']).lower()}")
    if found["problems"]:
        raise BaseModelError("\n".join(found["problems"]))
    return {
        "architecture": found["architecture"],
        "model_type": config.model_type,
        "params": safetensors_params(folder),
        "params_from_config": config_params(text),
        "vocab_size": found["vocab_size"],
        "hidden_size": getattr(text, "hidden_size", None),
        "num_layers": getattr(text, "num_hidden_layers", None),
        "tie_word_embeddings": bool(getattr(text, "tie_word_embeddings", False)),
        "tokenizer_class": type(tokenizer).__name__,
        "pre_tokenizer": _pre_tokenizer_summary(tokenizer),
        "gguf_tokenizer_pre": _source(folder).get("gguf_tokenizer_pre"),
        "chat_template_sha256": hashlib.sha256(found["template"].encode()).hexdigest(),
        "end_of_turn": found["end_of_turn"],
        "eos": found["eos"],
        "eos_token_ids": found["eos_token_ids"],
        "pad": found["pad"],
        "bos": found["bos"],
        "add_bos": found["add_bos"],
        "generation_markers": found["generation_markers"],
        "warnings": warnings,
    }


def config_params(text) -> Optional[int]:
    """Parameters of a Llama- or Qwen2-shaped decoder, from its config's sizes (None otherwise).

    Embeddings (once when tied), per layer q/k/v/o (grouped key/value heads, Qwen2's q/k/v
    biases), the gated MLP and two norms, and the final norm: what safetensors would hold.
    """
    try:
        hidden, layers, vocab = text.hidden_size, text.num_hidden_layers, text.vocab_size
        inner, heads = text.intermediate_size, text.num_attention_heads
    except AttributeError:
        return None
    if not all(isinstance(v, int) and v > 0 for v in (hidden, layers, vocab, inner, heads)):
        return None
    kv = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or hidden // heads
    attention = 2 * hidden * heads * head_dim + 2 * hidden * kv * head_dim
    if getattr(text, "model_type", None) == "qwen2":
        attention += heads * head_dim + 2 * kv * head_dim
    elif getattr(text, "attention_bias", False):
        attention += heads * head_dim + 2 * kv * head_dim + hidden
    mlp = 3 * hidden * inner + (2 * inner + hidden if getattr(text, "mlp_bias", False) else 0)
    embeddings = vocab * hidden * (1 if getattr(text, "tie_word_embeddings", False) else 2)
    return layers * (attention + mlp + 2 * hidden) + embeddings + hidden


def fetch_hub(hub_id: str, revision: str, cache: Path) -> Optional[Path]:
    """The small files of `hub_id` at `revision`, in a Hugging Face cache under `cache`.

    None when the hub cannot be reached and nothing is cached (offline, no network): the
    caller moves the checks to the training machine. A model or revision that does not exist
    (or needs a token this machine lacks) is an error now: it would fail there too.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                        OfflineModeIsEnabled, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    try:
        return Path(snapshot_download(hub_id, revision=revision, cache_dir=str(cache),
                                      allow_patterns=HUB_FILES))
    except GatedRepoError as err:
        raise StageError(f"hub model {hub_id}: access is restricted ({_first_line(err)}); accept its "
                         f"licence on huggingface.co and set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise StageError(f"hub model {hub_id} not found on the Hugging Face hub (or private: set "
                         f"HF_TOKEN); check models.*.hub in the manifest") from None
    except RevisionNotFoundError:
        raise StageError(f"hub model {hub_id} has no revision {revision!r}; check the model's "
                         f"revision in the manifest (a branch, tag or commit)") from None
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, HfHubHTTPError, OSError):
        return None


def hub_report(hub_id: str, revision: str, cache: Path) -> dict:
    """Fetch and check a hub model's small files; where the hub is out of reach, say where they run."""
    folder = fetch_hub(hub_id, revision, cache)
    if folder is None:
        return {"hub": hub_id, "revision": revision, "checked": False, "checks": MOVED,
                "warnings": [f"the Hugging Face hub is out of reach (offline?), so {hub_id}@{revision} "
                             f"is not checked here: {MOVED}"]}
    report = inspect_base(folder)
    return {"hub": hub_id, "revision": revision, "commit": folder.name, "checked": True,
            "files": sorted(p.name for p in folder.iterdir()), **report}


def size_problem(name: str, declared_b: Optional[float], report: dict) -> tuple[Optional[str], Optional[str]]:
    """(problem, warning) when the manifest's ``params_b`` is far from the model's real size.

    Memory, time and cost estimates and the hardware fit check use ``params_b``: declared much
    smaller than the model, a rented GPU may run out of memory; declared much larger, the
    estimates only overstate.
    """
    real = report.get("params") or report.get("params_from_config")
    if not declared_b or not real:
        return None, None
    actual_b = real / 1e9
    text = (f"models.{name}.params_b is {declared_b:g} but the model has about {actual_b:.3g}B "
            f"parameters; memory, time and cost estimates use params_b: set params_b: {actual_b:.3g}")
    if actual_b > declared_b * 1.5:
        return text + " (the hardware fit check used the smaller number)", None
    if actual_b < declared_b / 1.5:
        return None, text
    return None, None


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _pre_tokenizer_summary(tokenizer):
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return json.loads(backend.to_str()).get("pre_tokenizer") if backend is not None else None


def _source(folder: Path) -> dict:
    path = folder / SOURCE_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
