"""Read a Hugging Face model folder's weights one tensor at a time: safetensors and config.json.

What the converter and the streaming merge read a base from. Nothing here builds a model:
tensors come off the disk one by one, so a pass over a 15 GB base holds one tensor at a time.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, Iterator, Optional

from ..errors import StageError

SAFETENSORS_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}
# What the build reads of a hub base: never the .bin/.pt copies some repositories also carry.
HUB_FILES = ("*.safetensors", "*.json", "*.jinja", "*.txt", "*.model", "*.tiktoken")


def read_config(folder: Path) -> dict:
    """config.json of a saved model folder."""
    folder = Path(folder)
    try:
        return json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StageError(f"{folder}: no config.json; is this a saved Hugging Face model "
                         "folder?") from None
    except ValueError as err:
        raise StageError(f"{folder / 'config.json'}: not valid JSON ({err})") from None


def read_safetensors(folder: Path) -> Iterator[tuple[str, Any]]:
    """Yield ``(name, torch tensor)`` from a folder's safetensors files, one tensor at a time.

    Plain reads, not the mmap `safetensors.safe_open` uses: a mapped file's pages count as
    this process's memory until the file is closed, so a streaming pass over a mapped 1 GB
    file peaks at 1 GB more than it needs.
    """
    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise StageError(f"{folder}: no *.safetensors files; save the model with "
                         "save_pretrained(..., safe_serialization=True)")
    for path in files:
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
            header.pop("__metadata__", None)
            for name, info in sorted(header.items(), key=lambda item: item[1]["data_offsets"]):
                if info["dtype"] not in SAFETENSORS_DTYPES:
                    raise StageError(f"{path}: tensor {name!r} is {info['dtype']}; afs converts "
                                     f"float tensors ({', '.join(SAFETENSORS_DTYPES)}) only")
                # no local names the tensor: the consumer's `del` must be able to free it
                yield name, _read_tensor(f, 8 + size, info, path, name)


def _read_tensor(f, data_start: int, info: dict, path: Path, name: str):
    import torch

    dtype = getattr(torch, SAFETENSORS_DTYPES[info["dtype"]])
    begin, end = info["data_offsets"]
    if begin == end:
        return torch.empty(info["shape"], dtype=dtype)
    f.seek(data_start + begin)
    buffer = bytearray(end - begin)
    if f.readinto(buffer) != len(buffer):
        raise StageError(f"{path}: truncated file (tensor {name!r})")
    return torch.frombuffer(buffer, dtype=dtype).reshape(info["shape"])


def to_numpy(array: Any):
    """A float array as numpy: torch tensors (bf16 included) and numpy arrays alike."""
    import numpy as np

    if isinstance(array, np.ndarray):
        return array
    import torch

    if array.dtype not in (torch.float16, torch.float32):
        array = array.to(torch.float32)  # numpy has no bfloat16
    return array.detach().cpu().numpy()


def hub_folder(repo: str, revision: Optional[str] = None) -> Path:
    """A hub model's folder on this machine: its config, tokenizer and safetensors.

    Fetched into Hugging Face's own cache once; later calls find it there. The merge, the
    converter and the parity checks read a base from a folder, one tensor at a time.
    """
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo, revision=revision or None,
                                      allow_patterns=list(HUB_FILES)))
    except Exception as err:  # hub errors come in many types; all say the same to a user
        raise StageError(f"cannot fetch the base model {repo!r}"
                         f"{f' at revision {revision!r}' if revision else ''} from the Hugging "
                         f"Face hub: {type(err).__name__}: {err}") from None
